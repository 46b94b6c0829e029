"""Waiting for a submitit SLURM job, on clusters with accounting and without.

submitit learns that a job ended from `sacct`. Without accounting (no slurmdbd: small clusters, our CI)
sacct fails, submitit reports the state UNKNOWN, counts that as still running, and a job that ended
without writing its result (`scancel`, a node failure, the OOM killer) is waited for forever -- and with it
the Snakemake rule that launched it. `wait_for` also asks `squeue` (which keeps finished jobs for
MinJobAge seconds) and fails once the job has ended without a result, so the rule fails, Snakemake's
`retries` resubmits it and the run resumes from its newest checkpoint. A requeued job (preemption,
timeout) goes back to PENDING and is simply waited for.
"""

from __future__ import annotations

import subprocess
import time

# squeue's job states after which no task will write a result any more
ENDED = frozenset({"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
                   "PREEMPTED", "TIMEOUT"})


class JobEndedWithoutResult(RuntimeError):
    """The SLURM job ended (squeue) and its tasks wrote no result."""


def squeue_state(job_id: str) -> str | None:
    """The job's state from squeue (finished jobs too, while MinJobAge keeps them), or None if unknown."""
    try:
        proc = subprocess.run(["squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%T"], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    states = proc.stdout.split() if proc.returncode == 0 else []
    return states[0] if states else None


def wait_for(job, *, poll_s: float = 5.0, grace_s: float = 30.0, state=squeue_state, sleep=time.sleep,
             clock=time.monotonic, failed=lambda: False) -> bool:
    """Wait for a job; True once `job.done()` (every task's result is there).

    Raise JobEndedWithoutResult when `state` says the job ended and no result appears within `grace_s` (the
    results may reach a shared file system after the job has ended). Return False when `failed()` (a task
    wrote an error) has held for `grace_s` while other tasks still run: a peer stuck where it cannot learn
    of the failure (waiting for a rendezvous, or in a collective with a long timeout) would otherwise hold the
    launch until its own timeout. The caller cancels the job."""
    ended_at = failed_at = None
    while not job.done():
        current = state(job.job_id)
        if current in ENDED:
            ended_at = clock() if ended_at is None else ended_at
            if clock() - ended_at >= grace_s:
                raise JobEndedWithoutResult(
                    f"SLURM job {job.job_id} ended in state {current} without a result (cancelled, failed or "
                    f"killed); rerun the rule to resume from the newest checkpoint (Snakemake: --retries N "
                    f"does it unattended)")
        else:
            ended_at = None
        if failed():
            failed_at = clock() if failed_at is None else failed_at
            if clock() - failed_at >= grace_s:
                return False
        sleep(poll_s)
    return True
