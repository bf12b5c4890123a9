"""Datasets: image and audio folders, text tables and file listings, split and validated, and their loaders.

The names below are re-exported from the modules that define them (readers, dataset, images, splits,
examples, loaders, elpv), so ``from headstart.data import load_dataset`` keeps working.
"""

from headstart.data.dataset import Dataset, content_key, label_name, sort_classes
from headstart.data.elpv import load_elpv
from headstart.data.examples import as_items, check_items, from_examples, item_modality
from headstart.data.images import IMAGE_EXTENSIONS, LARGEST_DECODE, MAX_ASPECT_RATIO, CachedImage, Item, check_image, load_image
from headstart.data.loaders import ExampleDataset, loader_workers, make_loader, tensor_loader
from headstart.data.readers import (
    FILE_KINDS,
    INDEX_NAME,
    LABEL_COLUMNS,
    PATH_COLUMNS,
    SPLIT_NAMES,
    TABLE_EXTENSIONS,
    TEXT_COLUMNS,
    check_file,
    check_files,
    folder_modality,
    load_dataset,
    table_lists_files,
)
from headstart.data.splits import stratified_split

__all__ = [
    "FILE_KINDS",
    "IMAGE_EXTENSIONS",
    "INDEX_NAME",
    "LABEL_COLUMNS",
    "LARGEST_DECODE",
    "MAX_ASPECT_RATIO",
    "PATH_COLUMNS",
    "SPLIT_NAMES",
    "TABLE_EXTENSIONS",
    "TEXT_COLUMNS",
    "CachedImage",
    "Dataset",
    "ExampleDataset",
    "Item",
    "as_items",
    "check_file",
    "check_files",
    "check_image",
    "check_items",
    "content_key",
    "folder_modality",
    "from_examples",
    "item_modality",
    "label_name",
    "load_dataset",
    "load_elpv",
    "load_image",
    "loader_workers",
    "make_loader",
    "sort_classes",
    "stratified_split",
    "table_lists_files",
    "tensor_loader",
]
