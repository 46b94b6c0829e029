"""What runs inside one rank, under either backend: resolve the target, join the process group, run, leave
(`run_rank`), and end without interpreter teardown (`exit_now`); `rank_main` is a local rank's entry
(`python -m pipeline.launch <payload>`). Also the rank's log file and how to read a failed rank's error."""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import traceback
from pathlib import Path

from longvila.utils.logging import init_logger
from longvila.utils.ranks import join_store


def resolve(target: str):
    module, _, name = target.partition(":")
    if not name:
        raise ValueError(f"launch target {target!r} must look like 'module:function'")
    return getattr(importlib.import_module(module), name)


def run_rank(target: str, kwargs: dict, backend: str, log_file: str | None, store):
    """Inside one rank with the torch env set: logger, process group on the launch's `store`, target, leave
    the group."""
    import torch
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    init_logger(rank=rank, log_file=log_file)
    if backend == "nccl":                        # one GPU per rank, whether a task sees all or one
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    dist.init_process_group(backend, store=store, rank=rank, world_size=int(os.environ["WORLD_SIZE"]))
    result = resolve(target)(**kwargs)
    dist.barrier()
    dist.destroy_process_group()
    return result


def exit_now(code: int = 0) -> None:
    """Flush and leave without interpreter teardown, where gloo can abort (ENVIRONMENT.md 2.3)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def rank_main(payload_file: str) -> None:
    """Entry of a local rank (`python -m pipeline.launch <payload>`); never returns."""
    try:
        payload = pickle.loads(Path(payload_file).read_bytes())
        # stderr is this rank's log file (rank 0: teed to the console), so every rank logs to stderr
        run_rank(payload["target"], payload["kwargs"], payload["backend"],
                 None if os.environ["RANK"] == "0" else "/dev/stderr",
                 join_store(int(os.environ["MASTER_PORT"]), int(os.environ["WORLD_SIZE"])))
    except BaseException:                        # report, then exit non-zero
        traceback.print_exc()
        exit_now(1)
    exit_now(0)


def collateral(text: str) -> bool:
    """Whether a rank's error is what it prints when a peer died first (gloo, NCCL): not the root cause."""
    return any(c in text for c in ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
                                   "remote worker crashing", "NCCL communicator was aborted"))


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def rank_log(run_dir: Path, rank: int) -> Path:
    return Path(run_dir, "logs", f"rank-{rank:05d}.log")
