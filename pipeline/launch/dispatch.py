"""`launch(job, cfg)`: the backend `train.launcher` picks, local processes or SLURM through submitit."""

from __future__ import annotations

from pathlib import Path

from longvila.utils.io import write_json_atomic
from pipeline.launch.job import Job, describe
from pipeline.launch.local import launch_local


def launch(job: Job, cfg, *, cluster: str | None = None) -> int:
    """Run `job` with `cfg.train.launcher`, wait for it, and return 0; raise RuntimeError naming the failed
    rank (its traceback, its log) otherwise. `cluster` picks submitit's executor ('slurm' by default;
    'local' or 'debug' in tests)."""
    Path(job.run_dir, "logs").mkdir(parents=True, exist_ok=True)
    if cfg.train.launcher == "local":
        write_json_atomic(Path(job.run_dir, "plan.json"), describe(job, cfg))
        return launch_local(job, cfg)
    from pipeline.launch.submitit import launch_submitit

    return launch_submitit(job, cfg, cluster or "slurm")
