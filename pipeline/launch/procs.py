"""Process lifecycle of the local launcher's ranks: stop on SIGTERM/SIGHUP, die with the launcher, wait, stop.

Used by both backends: `pipeline.launch.local` and `pipeline.launch.submitit`.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time


@contextlib.contextmanager
def sigterm_as_exit():
    """SIGTERM / SIGHUP (Snakemake, SLURM or a lost terminal stopping the launcher) -> SystemExit, so
    `finally` stops the ranks."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}  # HUP: ssh dropped
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def die_with_parent() -> None:
    """preexec_fn of a local rank (Linux): SIGKILL it when the launcher dies, even by SIGKILL, so no orphan
    keeps training into the run folder that a rerun will use."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)     # PR_SET_PDEATHSIG = 1


def wait_all(procs: list) -> list[tuple[int, int]]:
    """Wait until every rank exited 0 ([]), or until one failed: [(rank, exit code)] of the failed ones."""
    while True:
        codes = [p.poll() for p in procs]
        failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
        if failed or all(c == 0 for c in codes):
            return failed
        time.sleep(0.1)


def stop(procs: list, grace_s: float = 5.0) -> None:
    alive = [p for p in procs if p.poll() is None]
    for p in alive:
        p.terminate()
    deadline = time.time() + grace_s
    for p in alive:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=max(0.1, deadline - time.time()))
        p.kill()                                 # no-op for one that has exited
        p.wait()
