"""The submitit backend of `pipeline.launch`: one SLURM job of `nodes x tasks_per_node` tasks per launch.

The job is submitted from a fresh folder `run_dir/submitit/<time>-<uid>` (job ids restart at 1 on a new
cluster: never reuse a folder). Its callable, `SubmititRank`, is Checkpointable: on USR2 (SLURM's signal
before the time limit; preemption) submitit checkpoints it and requeues the job, and the target resumes
from the newest complete checkpoint in the run dir. The launcher waits with `slurm_wait.wait_for`, which
also works without accounting (sacct): a job that ended without results (scancel, node failure) fails
the launch, and a rerun (Snakemake's `retries`) resumes from the checkpoints; so does a failed task whose
peers cannot notice (the job is cancelled). The ranks meet on a port rank 0 picks (`rendezvous_store`).
Every submission and its outcome is appended to `run_dir/logs/launcher.log`, which survives retries (a
rule's own log does not).
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import secrets
import time
from datetime import timedelta
from pathlib import Path

from submitit.helpers import Checkpointable, DelayedSubmission

from longvila.utils.io import write_json_atomic, write_text_atomic
from longvila.utils.logging import get_logger
from longvila.utils.ranks import STORE_TIMEOUT, host_store, join_store
from pipeline.launch.job import Job, describe, fresh_folder, shape, submitit_parameters
from pipeline.launch.local import thread_env
from pipeline.launch.procs import sigterm_as_exit
from pipeline.launch.rank import collateral, exit_now, rank_log, run_rank
from pipeline.launch.slurm_wait import ENDED, JobEndedWithoutResult, squeue_state, wait_for


def task_thread_env(environ, job_env: dict) -> dict:
    """Thread variables for a SLURM task: its CPUs (SLURM_CPUS_PER_TASK), unless the job's env sets them.
    sbatch exports the submitting environment, and there OMP_NUM_THREADS is the launcher rule's 1 thread
    (Snakemake sets it), which every rank would otherwise inherit."""
    cpus = environ.get("SLURM_CPUS_PER_TASK", "")
    return thread_env(int(cpus), job_env) if cpus.isdigit() and int(cpus) >= 1 else {}


RENDEZVOUS_TIMEOUT_S = STORE_TIMEOUT.total_seconds()    # how long ranks wait for each other (nodes start apart)
_NONCE_KEY = "longvila/rendezvous"


def rendezvous_store(rank: int, world: int, master_addr: str, port_file: Path, timeout_s: float = RENDEZVOUS_TIMEOUT_S,
                     probe_s: float = 10.0):
    """The job's TCPStore, on a port rank 0's kernel picks and rank 0 publishes in `port_file` ("port nonce").

    submitit's own MASTER_PORT is random in [20000, 60000] from the job id and nobody checks that it is free:
    once in CI it was taken (EADDRINUSE, docs/LOG.md 2026-11-26). Rank 0 binds port 0 instead, so the port is
    free by construction. The file lies in the launch's submitit folder, which every node already shares. A
    requeued job may find the file of its previous attempt: the other ranks accept a port only when the store
    behind it holds the file's nonce, and otherwise read the file again."""
    from torch.distributed import DistError

    if rank == 0:
        store = host_store(world, master_addr, timedelta(seconds=timeout_s))
        nonce = secrets.token_hex(8)
        store.set(_NONCE_KEY, nonce)
        write_text_atomic(port_file, f"{store.port} {nonce}\n")
        return store
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = port_file.read_text().split() if port_file.exists() else []
        if len(text) == 2:
            try:
                store = join_store(int(text[0]), world, master_addr, timedelta(seconds=probe_s))
                if store.get(_NONCE_KEY).decode() == text[1]:
                    store.set_timeout(timedelta(seconds=timeout_s))
                    return store
            except DistError:                    # an earlier attempt's port: nobody listens, or not rank 0
                pass
        time.sleep(0.2)
    raise TimeoutError(f"rank {rank}: rank 0 did not publish its rendezvous port in {port_file} within "
                       f"{timeout_s:.0f} s; see rank 0's log for why it did not start")


class SubmititRank(Checkpointable):
    """The callable submitit runs on every task: export the torch env, run the target, return its result.
    Checkpointable: on timeout/preemption submitit calls `checkpoint()` and requeues the same callable,
    and the target resumes from the newest complete checkpoint in its run dir."""

    def __init__(self, target: str, kwargs: dict, backend: str, run_dir: str, env: dict | None = None) -> None:
        self.target, self.kwargs, self.backend, self.run_dir, self.env = target, kwargs, backend, run_dir, env or {}

    def __call__(self):
        import submitit
        from submitit.helpers import TorchDistributedEnvironment

        os.environ.update(task_thread_env(os.environ, self.env))
        os.environ.update(self.env)
        # the GPU is picked from LOCAL_RANK in run_rank, whether SLURM shows a task all GPUs or one
        dist_env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        job_env = submitit.JobEnvironment()
        attempt = f"{job_env.job_id}-{os.environ.get('SLURM_RESTART_COUNT', '0')}"
        store = rendezvous_store(dist_env.rank, dist_env.world_size, dist_env.master_addr,
                                 Path(job_env.paths.folder, f"rendezvous-{attempt}.port"))
        os.environ["MASTER_PORT"] = str(store.port)
        result = run_rank(self.target, self.kwargs, self.backend, str(rank_log(self.run_dir, dist_env.rank)), store)
        # submitit pickles `result` after this returns: only then end the interpreter (see pipeline.launch)
        atexit.register(exit_now)
        return result

    def checkpoint(self, *args, **kwargs):
        """Requeue this same callable (the training state is in the run dir's checkpoints, not in self)."""
        get_logger().info("requeueing: the job resumes from the newest complete checkpoint")
        return DelayedSubmission(self, *args, **kwargs)


class _NoSacctNoise(logging.Filter):
    """submitit warns twice per status poll when sacct fails (no accounting); say it once instead."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Bypassing sacct error" not in record.getMessage():
            return True
        if not self.seen:
            self.seen = True
            get_logger().info("sacct is unavailable here (no SLURM accounting): job states come from squeue")
        return False


def _history(job: Job, text: str) -> None:
    """Log `text` and append it to run_dir/logs/launcher.log."""
    get_logger().info(f"{job.name}: {text}")
    with open(Path(job.run_dir, "logs", "launcher.log"), "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {job.name}: {text}\n")


def _newest_attempt(sj, folder: Path) -> float:
    """When the job's newest attempt met (its rendezvous port file's mtime; 0 before any)."""
    return max((f.stat().st_mtime for f in folder.glob(f"rendezvous-{sj.job_id}-*.port")), default=0.0)


def errors_written(sj, folder: Path, root_causes_only: bool = False) -> list:
    """(task, error) of every task that has written an error result, read from the result files: a local
    job's `task.exception()` waits for the whole job. `root_causes_only`: leave out a peer's lost-connection
    error (a preempted job's ranks write those while it is requeued) and errors older than the newest
    attempt's rendezvous (an earlier attempt's)."""
    from submitit.core.utils import FailedJobError, pickle_load

    newest = _newest_attempt(sj, folder)
    errors = []
    for t in range(sj.num_tasks):
        path = sj.task(t).paths.result_pickle
        try:
            outcome, trace = pickle_load(path)
            written = path.stat().st_mtime
        except (OSError, EOFError, pickle.UnpicklingError):          # no result yet, or one being written
            continue
        if outcome != "error" or (root_causes_only and (collateral(str(trace)) or written < newest)):
            continue
        errors.append((t, FailedJobError(f"Job (task={t}) failed during processing with trace:\n{trace}")))
    return errors


def stale_results(sj, folder: Path) -> list[int]:
    """Tasks whose result file predates the newest attempt's rendezvous: a requeued job's earlier attempt
    wrote it (e.g. a rank that lost its peer while the job was preempted), and the current attempt's task
    will overwrite it. submitit's `done()` counts such files, so a fast attempt can look finished early."""
    newest = _newest_attempt(sj, folder)
    stale = []
    for t in range(sj.num_tasks):
        try:
            if sj.task(t).paths.result_pickle.stat().st_mtime < newest:
                stale.append(t)
        except OSError:
            pass
    return stale


def await_fresh_results(sj, folder: Path, poll_s: float, state=squeue_state, sleep=time.sleep) -> None:
    """After `done()`: wait while a result is stale (see `stale_results`) and the job still runs (squeue); once
    it has ended, whatever is there is final."""
    while stale_results(sj, folder) and (current := state(sj.job_id)) is not None and current not in ENDED:
        sleep(poll_s)


def launch_submitit(job: Job, cfg, cluster: str) -> int:
    import submitit

    nodes, tasks, _, backend = shape(job, cfg)
    folder = fresh_folder(job)
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster,
                                         slurm_max_num_timeout=cfg.train.cluster.max_requeues)
    except RuntimeError as e:                    # no srun on PATH
        raise ValueError(f"train.launcher 'submitit' needs SLURM here ({e}); use train.launcher: local") from e
    executor.update_parameters(**submitit_parameters(job, cfg))
    plan = describe(job, cfg, folder=folder)
    write_json_atomic(Path(job.run_dir, "plan.json"), plan)
    noise = _NoSacctNoise()
    logging.getLogger("submitit").addFilter(noise)
    sj = executor.submit(SubmititRank(job.target, job.kwargs, backend, str(Path(job.run_dir).absolute()), job.env))
    _history(job, f"submitted job {sj.job_id} ({nodes} x {tasks} tasks, {backend}); logs {folder}")
    poll = cfg.train.cluster.poll_seconds
    try:
        with sigterm_as_exit():
            # squeue only on SLURM (a local executor's ids are process ids)
            finished = wait_for(sj, poll_s=poll, grace_s=3 * poll,
                                failed=lambda: bool(errors_written(sj, folder, root_causes_only=True)),
                                state=squeue_state if cluster == "slurm" else (lambda job_id: None))
            if finished:
                if cluster == "slurm":
                    await_fresh_results(sj, folder, poll)
                errors = [(t, e) for t in range(sj.num_tasks) if (e := sj.task(t).exception()) is not None]
            else:
                sj.cancel(check=False)
                _history(job, f"a task of job {sj.job_id} failed and the others did not end: job cancelled")
                errors = errors_written(sj, folder)
    except JobEndedWithoutResult as e:
        _history(job, str(e))
        raise
    except BaseException:                        # the launcher was stopped: do not leave the job running
        sj.cancel(check=False)
        _history(job, f"stopped; job {sj.job_id} cancelled")
        raise
    finally:
        logging.getLogger("submitit").removeFilter(noise)
    # the root cause first: a task with its own traceback, not one that lost a peer or was stopped
    errors = sorted(errors,
                    key=lambda te: (not isinstance(te[1], submitit.core.utils.FailedJobError),
                                    collateral(str(te[1])), te[0]))
    if errors:
        t, e = errors[0]
        paths = sj.task(t).paths
        _history(job, f"job {sj.job_id} failed in task {t} (state {sj.state}); logs {paths.stderr}")
        raise RuntimeError(f"job {job.name}: submitit job {sj.job_id} failed in task {t} (state {sj.state}); "
                           f"logs {paths.stderr} and {paths.stdout}\n{e}")
    _history(job, f"job {sj.job_id} finished")
    return 0
