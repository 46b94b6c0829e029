"""Training checkpoints: everything a run needs to continue exactly, written atomically by all ranks.

    <run_dir>/checkpoints/step-000040/  state.pt (step, sampler, losses so far), rng-00000.pt ... (each rank's
                                        RNG), the engine's files (TorchEngine: engine.pt with the trainable
                                        parameters, optimizer and scheduler; DeepSpeed: its per-rank ZeRO
                                        shards), COMPLETE
Every rank writes its part into `.step-000040.tmp`; after a barrier rank 0 adds state.pt and the COMPLETE
marker and renames the folder into place. A run killed mid-save leaves at most the temporary folder, which
`latest` never picks (and the next save removes). Only the newest `keep` checkpoints are kept.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

MARKER = "COMPLETE"


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save(run_dir: str | Path, step: int, engine, state: dict, rank: int = 0, keep: int = 2) -> Path:
    """Collective: write checkpoint `step` (engine files from every rank, each rank's RNG, `state` from
    rank 0); prune older ones beyond `keep`. Returns the checkpoint folder."""
    folder = Path(run_dir) / "checkpoints" / f"step-{step:06d}"
    tmp = folder.with_name(f".{folder.name}.tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    engine.save(tmp, rank)
    torch.save(rng_state(), tmp / f"rng-{rank:05d}.pt")
    _barrier()
    if rank == 0:
        torch.save({**state, "step": step}, tmp / "state.pt")
        (tmp / MARKER).write_text("ok\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
        for old in complete(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in folder.parent.glob(".step-*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    _barrier()
    return folder


def complete(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if p.is_dir() and (p / MARKER).is_file())


def load_latest(run_dir: str | Path, engine, rank: int = 0) -> dict | None:
    """Collective: restore the newest complete checkpoint into `engine` and this rank's RNG; returns its
    state (step, sampler, losses), or None when there is none."""
    found = complete(run_dir)
    if not found:
        return None
    folder = found[-1]
    rng = folder / f"rng-{rank:05d}.pt"
    if not rng.is_file():
        raise ValueError(f"{folder} has no {rng.name}: it was written by a run with fewer ranks; resume with the "
                         "same world size, or start a fresh run directory")
    engine.load(folder, rank)
    set_rng_state(torch.load(rng, weights_only=False))
    return torch.load(folder / "state.pt", weights_only=False)


def train_fingerprint(train_cfg) -> dict:
    """The `train:` settings a run's result depends on (not the per-step lists, not where it runs)."""
    return {k: v for k, v in asdict(train_cfg).items() if k not in ("stage4", "stage5", "cluster", "launcher")}


def claim_run_dir(run_dir: str | Path, fingerprint: dict, rank: int = 0,
                  state: tuple[str, ...] = ("checkpoints", "metrics.jsonl")) -> None:
    """Collective: make `run_dir` this run's. Its `run.json` records what the run depends on (the step's
    config, the world size, the input files' stamps); if a previous run there depended on something else
    (a changed config or rebuilt input), its checkpoints and metrics are moved to `stale-<time>/` and training
    starts afresh instead of resuming a run of other inputs. Nothing is deleted. `state`: the entries of
    run_dir that belong to one fingerprint (an evaluation's finished cells, say)."""
    from longvila.utils.io import write_text_atomic
    from longvila.utils.logging import get_logger

    run_dir = Path(run_dir)
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        record = run_dir / "run.json"
        old = json.loads(record.read_text()).get("fingerprint") if record.is_file() else None
        leftovers = [run_dir / name for name in state if (run_dir / name).exists()]
        if old != digest and leftovers:
            stale = run_dir / f"stale-{time.strftime('%Y%m%d-%H%M%S')}"
            stale.mkdir()
            for p in leftovers:
                p.rename(stale / p.name)
            get_logger().warning(f"{run_dir}: its {', '.join(state)} are of another configuration or other inputs; "
                                 f"moved to {stale.name}/ and starting afresh")
        write_text_atomic(record, json.dumps({"fingerprint": digest, "depends_on": fingerprint}, indent=1,
                                             default=str))
    _barrier()
