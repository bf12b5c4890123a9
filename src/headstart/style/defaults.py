"""Style transfer's defaults, without torch: the command line prints them in ``--help`` before anything heavy loads."""

from __future__ import annotations

DEFAULT_CONTENT_LAYER = "stage4"
DEFAULT_STYLE_LAYERS = ("stem", "stage1", "stage2", "stage3", "stage5")
DEFAULT_STYLE_WEIGHT = 30.0
DEFAULT_TV_WEIGHT = 1.0
DEFAULT_TEMPERATURE = 3.0
TRANSFORMS = ("softmax", "none")
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")
