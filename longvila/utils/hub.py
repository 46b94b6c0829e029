"""Checkpoint folders given by the user, and Hugging Face Hub ids given instead of one (torch-free).

longvila never downloads at run time: a Hub id such as `Efficient-Large-Model/qwen2-7b-longvila-256f` given
where a folder is expected gets the command that downloads it once.
"""

from __future__ import annotations

import re
from pathlib import Path

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def check_model_dir(path: str | Path, flag: str = "--model") -> Path:
    """`path` as a local checkpoint folder; a Hugging Face Hub id without a local copy gets the command that
    downloads it (nothing is ever downloaded at run time), anything else missing a plain error."""
    root = Path(path)
    if root.is_dir():
        return root
    if root.exists():
        raise ValueError(f"{flag} {path}: is a file; give the checkpoint folder (holding config.json, llm/, "
                         "vision_tower/, mm_projector/)")
    if _HUB_ID.fullmatch(str(path)):
        local = f"checkpoints/{str(path).split('/')[-1]}"
        raise ValueError(f"{flag} {path}: no such folder. It looks like a Hugging Face Hub id, and longvila never "
                         f"downloads at run time; download it once, then point {flag} at the copy:\n"
                         f"    huggingface-cli download {path} --local-dir {local}\n"
                         f"    ... {flag} {local}")
    raise ValueError(f"{flag} {path}: no such folder (a LongVILA checkpoint folder, e.g. results/train_stage5/16f)")
