"""Lazy imports of optional heavy packages, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

# module -> the pyproject extra that installs it
EXTRAS = {"deepspeed": "train", "accelerate": "train", "flash_attn": "gpu", "matplotlib": "plots"}


def import_optional(module: str) -> ModuleType:
    """Import `module`, or raise ImportError saying which extra of longvila installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        extra = EXTRAS.get(module.split(".")[0])
        hint = f"pip install -e '.[{extra}]'" if extra else f"pip install {module.split('.')[0]}"
        raise ImportError(f"{module} is not installed; it is optional. Install it with: {hint}") from e
