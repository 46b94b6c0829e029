"""Training checkpoints: everything a run needs to continue exactly, written atomically.

    <run_dir>/checkpoints/step-000040/  state.pt (trainable parameters, optimizer, scheduler, sampler, RNG,
                                         step, metrics so far) + COMPLETE
A checkpoint folder is written under a temporary name and renamed when complete, and carries a COMPLETE
marker written last: a run killed mid-save leaves at most a temporary folder, which `latest` never picks
(and the next save removes). Only the newest `keep` checkpoints are kept.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch

from longvila.utils.io import atomic_dir

MARKER = "COMPLETE"


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save(run_dir: str | Path, step: int, state: dict, keep: int = 2) -> Path:
    """Write `state` (+ RNG) as checkpoint `step`; prune older ones beyond `keep`."""
    folder = Path(run_dir) / "checkpoints" / f"step-{step:06d}"
    with atomic_dir(folder) as tmp:
        torch.save({**state, "step": step, "rng": rng_state()}, tmp / "state.pt")
        (tmp / MARKER).write_text("ok\n")
    for old in complete(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def complete(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if p.is_dir() and (p / MARKER).is_file())


def latest(run_dir: str | Path) -> dict | None:
    """The newest complete checkpoint's state (RNG restored by the caller with set_rng_state), or None."""
    found = complete(run_dir)
    if not found:
        return None
    return torch.load(found[-1] / "state.pt", weights_only=False)
