"""Reading weight files without running foreign code.

Every checkpoint headstart reads goes through :func:`load_state_dict`: safetensors, or
``torch.load(weights_only=True)`` for ``.pth``/``.pt``/``.bin`` files. A pickle that would execute
code is refused by torch before anything runs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load_file

_NESTED_KEYS = ("state_dict", "model", "model_state", "module")


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a flat ``{name: tensor}`` mapping from a safetensors or weights-only torch file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found; pass the path of a .safetensors or .pth file")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error types for a damaged or foreign file
            with path.open("rb") as handle:
                start = handle.read(2)
            hint = "it looks like a torch.save file: rename it to .pth" if start == b"PK" or start[:1] == b"\x80" else "pass a .safetensors or .pth weights file"
            raise ValueError(f"{path}: not a safetensors file ({_first_line(error)}); {hint}") from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for bad pickles
        raise ValueError(
            f"{path}: not a plain weights file ({_first_line(error)}); headstart only loads tensors "
            "(safetensors or torch.save(state_dict)), never pickled code"
        ) from None
    for key in _NESTED_KEYS:
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a mapping of parameter names to tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def state_fingerprint(module: torch.nn.Module) -> str:
    """A short content hash of a module's parameters and buffers (used as a cache key)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
