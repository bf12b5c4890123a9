"""Where the on-disk caches live, in one place: both the embedding and the decoded-image cache need it."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir(kind: str = "embeddings") -> Path:
    """``$HEADSTART_CACHE/<kind>`` (default ``~/.cache/headstart/<kind>``): embeddings or decoded images."""
    return Path(os.environ.get("HEADSTART_CACHE", Path.home() / ".cache" / "headstart")) / kind
