"""The local backend: one process per rank on this machine (`python -m pipeline.launch <payload>`), torchrun's
variables, the job's thread budget split among the ranks, per-rank logs (rank 0 teed to this console), and
the first failing rank stopping the others."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from longvila.utils.logging import get_logger
from longvila.utils.ranks import host_store
from pipeline.launch.job import Job, shape
from pipeline.launch.procs import die_with_parent, sigterm_as_exit, stop, wait_all
from pipeline.launch.rank import collateral, rank_log, tail


def _tee(stream, path: Path) -> None:
    with open(path, "ab") as f:
        for line in iter(stream.readline, b""):
            f.write(line)
            f.flush()
            sys.stderr.write(line.decode(errors="replace"))
    stream.close()


# the thread-count variables Snakemake sets to a job's threads (and torch / BLAS libraries read)
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")


def rank_threads(local_ranks: int, environ=os.environ) -> int:
    """CPU threads per local rank: the job's thread budget split among its ranks. The budget is the inherited
    OMP_NUM_THREADS (Snakemake sets it to the rule's `threads`, SLURM users to the task's CPUs), else the
    CPU count. Every variable of THREAD_VARS is set to it for each rank. Passing them through unchanged, as
    torchrun does, gave each of 4 ranks the whole 2-thread budget: 8 threads on 2 cores made a stage-5 step
    2.6x slower (docs/LOG.md, session 5)."""
    try:
        budget = int(environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        budget = 0
    return max(1, (budget if budget > 0 else os.cpu_count() or 1) // local_ranks)


def thread_env(threads: int, job_env: dict) -> dict:
    """Every THREAD_VARS variable set to `threads`, except those the job's own env sets."""
    return {var: str(threads) for var in THREAD_VARS if var not in job_env}


def launch_local(job: Job, cfg) -> int:
    _, world, _, backend = shape(job, cfg)
    payload = Path(job.run_dir, "logs", f"launch-{uuid.uuid4().hex[:8]}.pkl")
    payload.write_bytes(pickle.dumps({"target": job.target, "kwargs": job.kwargs, "backend": backend}))
    store = host_store(world)                    # the ranks meet here (a port free by construction)
    env = {**os.environ, **job.env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port),
           "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world), "PYTHONUNBUFFERED": "1"}
    env.update(thread_env(rank_threads(world), job.env))   # torch reads MKL_NUM_THREADS over OMP_NUM_THREADS
    procs, threads = [], []
    get_logger().info(f"{job.name}: {world} local ranks ({backend}), logs {rank_log(job.run_dir, 0).parent}/rank-*.log")
    try:
        with sigterm_as_exit():
            for rank in range(world):
                path = rank_log(job.run_dir, rank)           # appended to: a resumed run keeps its history
                with open(path, "a") as f:
                    f.write(f"==== {job.name}: launch at {time.strftime('%Y-%m-%d %H:%M:%S')}, rank {rank}\n")
                rank_env = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}
                cmd = [sys.executable, "-m", "pipeline.launch", str(payload)]
                if rank == 0:                    # rank 0 to its file and to this console
                    p = subprocess.Popen(cmd, env=rank_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         preexec_fn=die_with_parent)
                    threads.append(threading.Thread(target=_tee, args=(p.stdout, path), daemon=True))
                    threads[-1].start()
                else:
                    with open(path, "ab") as f:
                        p = subprocess.Popen(cmd, env=rank_env, stdout=f, stderr=subprocess.STDOUT,
                                             preexec_fn=die_with_parent)
                procs.append(p)
            failed = wait_all(procs)
        stop(procs)                              # the survivors of a failure; then rank 0's output ends
        for t in threads:
            t.join(timeout=10)
        if failed:
            failed.sort(key=lambda rc: (collateral(tail(rank_log(job.run_dir, rc[0]))), rc[0]))
            report = "\n".join(f"--- rank {r} (exit code {c}), {rank_log(job.run_dir, r)}:\n"
                               f"{tail(rank_log(job.run_dir, r))}" for r, c in failed)
            raise RuntimeError(f"job {job.name}: rank {failed[0][0]} failed; the other ranks were stopped\n{report}")
        return 0
    finally:
        stop(procs)
        payload.unlink(missing_ok=True)
