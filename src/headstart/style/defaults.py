"""Style transfer's default layers and weights, torch-free so that ``headstart stylize --help`` shows them cheaply."""

DEFAULT_CONTENT_LAYER = "stage4"
DEFAULT_STYLE_LAYERS = ("stem", "stage1", "stage2", "stage3", "stage5")
DEFAULT_STYLE_WEIGHT = 30.0
DEFAULT_TV_WEIGHT = 1.0
DEFAULT_TEMPERATURE = 3.0
