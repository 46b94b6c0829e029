"""Run a function on N real processes with gloo (on a store this process hosts), and collect each rank's result.

    results = run_distributed(fn, world_size=4, arg)   # fn(rank, world_size, arg) -> picklable

Every worker ends with barrier -> destroy_process_group -> flush -> os._exit(0): gloo on torch 2.13 can abort
at interpreter exit after the work is done (ENVIRONMENT.md 2.3), which must never make a test red. Before
os._exit the result queue is closed and its feeder thread joined, so a result is never lost on the way.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback

import torch.distributed as dist
import torch.multiprocessing as mp

from longvila.utils.ranks import host_store, join_store


_PRELOAD = ["torch", "torch.distributed", "transformers", "longvila.model", "longvila.parallel"]
if importlib.util.find_spec("deepspeed") is not None:
    _PRELOAD.append("deepspeed")                     # ~9 s to import, and the ZeRO tests spawn it 12 times
_CONTEXT = None


def _context():
    """The session's forkserver context (started on first use, with `_PRELOAD` imported)."""
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = mp.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(_PRELOAD)
    return _CONTEXT


def _worker(rank, world_size, port, fn, args, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    code = 0
    try:
        dist.init_process_group("gloo", store=join_store(port, world_size), rank=rank, world_size=world_size)
        queue.put((rank, "ok", fn(rank, world_size, *args)))
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:  # report, then exit non-zero
        queue.put((rank, "error", traceback.format_exc()))
        code = 1
    # Queue.put hands the item to a feeder thread: wait until it is written, or os._exit can lose it
    queue.close()
    queue.join_thread()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_distributed(fn, world_size: int, *args, timeout: float = 180) -> list:
    ctx = _context()
    queue = ctx.Queue()
    store = host_store(world_size)                   # alive until the ranks have ended
    procs = [ctx.Process(target=_worker, args=(r, world_size, store.port, fn, args, queue))
             for r in range(world_size)]
    for p in procs:
        p.start()
    results = {}
    for _ in range(world_size):
        rank, status, value = queue.get(timeout=timeout)
        if status == "error":
            for p in procs:
                p.kill()
            raise AssertionError(f"rank {rank} failed:\n{value}")
        results[rank] = value
    for p in procs:
        p.join(timeout=30)
    return [results[r] for r in range(world_size)]
