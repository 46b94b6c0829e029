"""Run a function on N local ranks from a user command (`longvila infer --sp`, `longvila eval needle --sp`).

    results = launch_local(fn, 4, arg1, arg2)     # fn(rank, world_size, arg1, arg2) -> picklable, per rank
    results = launch_local(fn, 4, arg, device="cuda")   # NCCL, GPU `rank` per rank

One process per rank (torch.multiprocessing spawn), meeting on a store this process hosts: gloo on "cpu", NCCL
on "cuda". Every rank ends with barrier -> destroy_process_group -> flush -> os._exit (gloo can abort at
interpreter exit, ENVIRONMENT.md 2.3). The first failing rank stops all; a rank that dies without reporting is
detected. The Snakemake rules launch through pipeline/launch/ instead (per-rank logs, SLURM); this is the
plain local path of the library's commands.
"""

from __future__ import annotations

import os
import queue as queue_module
import re
import sys
import threading
import traceback
from datetime import timedelta

from longvila.utils.logging import init_logger


def default_device(world_size: int) -> str:
    """"cuda" when this machine has a GPU per rank, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() and torch.cuda.device_count() >= world_size else "cpu"


def parse_sp(text: str) -> tuple[int, int]:
    """'UxR' -> (ulysses, ring); a single number P -> (1, P), a ring, which every head count allows."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if match is None:
        raise ValueError(f"--sp {text!r}: write UxR (Ulysses x ring degrees, e.g. 2x2) or P (a ring of P ranks)")
    ulysses, ring = (int(match[1]), int(match[2])) if match[2] else (1, int(match[1]))
    if ulysses < 1 or ring < 1:
        raise ValueError(f"--sp {text!r}: both degrees must be >= 1")
    return ulysses, ring


STORE_TIMEOUT = timedelta(minutes=30)


def host_store(world_size: int, host: str = "127.0.0.1", timeout: timedelta = STORE_TIMEOUT):
    """The ranks' TCPStore, hosted by the launching process (or rank 0) on a port its kernel picks: free by
    construction. (Binding port 0, closing it and letting rank 0 bind the number again leaves a window in which
    another socket can take it; submitit's random port once collided in CI: EADDRINUSE.) Keep it alive until
    the ranks have ended; they join with `join_store(store.port, world_size, host)`."""
    from torch.distributed import TCPStore

    return TCPStore(host, 0, world_size, True, timeout, wait_for_workers=False)


def join_store(port: int, world_size: int, host: str = "127.0.0.1", timeout: timedelta = STORE_TIMEOUT):
    """A rank's client of the store `host_store` made (pass it to init_process_group with rank and world)."""
    from torch.distributed import TCPStore

    return TCPStore(host, port, world_size, False, timeout)


def _rank_entry(rank, world_size, port, device, fn, args, results):
    """One local rank: init the process group, run fn, report; then barrier -> destroy -> flush -> os._exit
    (gloo can abort at interpreter exit after the work is done)."""
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # os._exit skips the finalizers that unregister multiprocessing locks, and tqdm's default lock is one (the
    # parent would warn of "leaked semaphore objects"): a thread lock serves one process
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    code = 0
    try:
        if device == "cuda":
            torch.cuda.set_device(rank)
        dist.init_process_group("nccl" if device == "cuda" else "gloo", store=join_store(port, world_size),
                                rank=rank, world_size=world_size)
        init_logger(rank)
        results.put((rank, "ok", fn(rank, world_size, *args)))
        dist.barrier()
        dist.destroy_process_group()
    except (ValueError, OSError) as e:                  # user errors (a bad flag, a missing file)
        results.put((rank, "value", str(e)))
        code = 1
    except torch.cuda.OutOfMemoryError as e:
        results.put((rank, "oom", str(e)[:300]))
        code = 1
    except BaseException:
        results.put((rank, "error", traceback.format_exc()))
        code = 1
    results.close()
    results.join_thread()              # the result is written before the process ends
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _failure(rank: int, kind: str, message: str) -> Exception:
    import torch

    if kind == "value":
        return ValueError(message)
    if kind == "oom":
        return torch.cuda.OutOfMemoryError(f"rank {rank} ran out of GPU memory: {message}")
    return RuntimeError(f"rank {rank} failed:\n{message}")


def launch_local(fn, world_size: int, *args, device: str = "cpu") -> list:
    """Run `fn(rank, world_size, *args)` on `world_size` local processes (gloo on "cpu", NCCL with GPU `rank` on
    "cuda"); returns the results in rank order. The first failing rank stops all: a ValueError or OSError it
    raised is raised here as ValueError; GPU out-of-memory as torch.cuda.OutOfMemoryError; anything else as
    RuntimeError."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    results_queue, store = ctx.Queue(), host_store(world_size)
    procs = [ctx.Process(target=_rank_entry, args=(r, world_size, store.port, device, fn, args, results_queue))
             for r in range(world_size)]
    for p in procs:
        p.start()
    results = {}
    try:
        while len(results) < world_size:
            try:
                rank, kind, value = results_queue.get(timeout=1.0)
            except queue_module.Empty:
                dead = [r for r, p in enumerate(procs) if r not in results and p.exitcode not in (None, 0)]
                if dead:                       # a last look: it may have reported just before it ended
                    try:
                        rank, kind, value = results_queue.get(timeout=2.0)
                    except queue_module.Empty:
                        raise RuntimeError(f"rank {dead[0]} died (exit code {procs[dead[0]].exitcode}) without "
                                           "reporting; see its output above") from None
                else:
                    continue
            if kind != "ok":
                raise _failure(rank, kind, value)
            results[rank] = value
    finally:
        if len(results) < world_size:
            for p in procs:
                if p.is_alive():
                    p.kill()
        for p in procs:
            p.join(timeout=30)
        results_queue.close()
        results_queue.join_thread()
    return [results[r] for r in range(world_size)]
