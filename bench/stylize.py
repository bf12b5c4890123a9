"""Issue 10 figures: neural style transfer with the embedded EfficientNet-Lite0, timed on the CPU.

Usage: python bench/stylize.py [--threads N] [FIGURE ...]   (figures listed in FIGURES below)
Writes docs/images/style/FIGURE.jpg (content | style | results, each 256 px on its longer side) and
appends one JSON line per stylised image to bench/results/stylize.jsonl with settings and seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from sklearn.datasets import load_sample_image

import headstart
from headstart.style import stylize

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
OUT = ROOT / "docs" / "images" / "style"


def sample(name: str) -> Image.Image:
    return Image.fromarray(load_sample_image(name))


IMAGES = {
    "china": lambda: sample("china.jpg"),
    "flower": lambda: sample("flower.jpg"),
    "sunflower": lambda: Image.open(SHARED / "oxford_flowers17" / "train" / "sunflower" / "image_0722.jpg"),
    "tigerlily": lambda: Image.open(SHARED / "oxford_flowers17" / "train" / "tigerlily" / "image_0482.jpg"),
    "bee": lambda: Image.open(SHARED / "hymenoptera" / "val" / "bees" / "10870992_eebeeb3a12.jpg"),
    "bees": lambda: Image.open(SHARED / "hymenoptera" / "val" / "bees" / "1032546534_06907fe3b3.jpg"),
}

# figure -> (content, style, [(caption, stylize options), ...])
FIGURES: dict[str, tuple[str, str, list[tuple[str, dict]]]] = {
    "china-flower": ("china", "flower", [("default (SWAG softmax)", {})]),
    "china-sunflower": ("china", "sunflower", [("default", {})]),
    "bee-tigerlily": ("bee", "tigerlily", [("default", {})]),
    "flower-bees": ("flower", "bees", [("default", {})]),
    "layers": (
        "china",
        "flower",
        [
            ("style: stem, stage0, stage1", {"style_layers": ["stem", "stage0", "stage1"]}),
            ("style: stage4, stage5", {"style_layers": ["stage4", "stage5"]}),
            ("style: default (all depths)", {}),
        ],
    ),
    "ablation": (
        "china",
        "flower",
        [
            ("Gatys, raw pixels", {"transform": "none", "parameterization": "pixels", "style_weight": 3.0}),
            ("Gatys, Fourier", {"transform": "none", "style_weight": 3.0}),
            ("SWAG softmax, Fourier", {}),
        ],
    ),
}


def thumbnail(image: Image.Image, side: int = 256) -> Image.Image:
    image = image.convert("RGB")
    scale = side / max(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)


def figure(panels: list[tuple[str, Image.Image]], path: Path) -> None:
    """Panels side by side with a caption line above each."""
    width = sum(im.width for _, im in panels) + 4 * (len(panels) - 1)
    height = max(im.height for _, im in panels) + 16
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for caption, im in panels:
        draw.text((x + 2, 2), caption, fill="black")
        canvas.paste(im, (x, 16))
        x += im.width + 4
    canvas.save(path, quality=88, optimize=True)  # JPEG: a 5-panel PNG figure would be ~400 KB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figures", nargs="*", metavar="FIGURE", help=f"default: all of {', '.join(FIGURES)}")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    results = Path(__file__).parent / "results" / "stylize.jsonl"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    backbone = headstart.create_backbone("efficientnet_lite0")
    unknown = sorted(set(args.figures) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figures {unknown}; choose from {list(FIGURES)}")
    for name in args.figures or list(FIGURES):
        content_name, style_name, runs = FIGURES[name]
        content, style = IMAGES[content_name](), IMAGES[style_name]()
        panels = [(f"content: {content_name}", thumbnail(content)), (f"style: {style_name}", thumbnail(style))]
        for caption, options in runs:
            started, cpu = time.perf_counter(), time.process_time()
            image = stylize(content, style, backbone=backbone, size=256, steps=args.steps, seed=0, progress=False, **options)
            row = {
                "figure": name,
                "content": content_name,
                "style": style_name,
                "caption": caption,
                "options": options,
                "size": list(image.size),
                "steps": args.steps,
                "seconds": round(time.perf_counter() - started, 1),
                "cpu_seconds": round(time.process_time() - cpu, 1),
                "threads": torch.get_num_threads(),
                "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
                "commit": commit,
            }
            print(json.dumps(row), flush=True)
            with results.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            panels.append((f"{caption} ({row['seconds']:.0f} s)", image))
        figure(panels, OUT / f"{name}.jpg")


if __name__ == "__main__":
    main()
