"""Launching a distributed training job: local processes (torchrun-style) or SLURM through submitit.

A `Job` names a target `"module:function"` that every rank calls as `function(**kwargs)` once the process
group is up (the target finds its rank through `torch.distributed`). `launch(job, cfg)` runs it with the
backend that `train.launcher` picks, waits, and returns 0 or raises with the failing rank's error;
`describe(job, cfg)` is the plan that the training CLIs print with `--print-plan [--json]`. Both backends
record the plan in `run_dir/plan.json` first.

- `local`: one process per rank here: gloo with `cluster.cpu_processes` ranks when `cluster.gpus_per_node`
  is 0, else NCCL with one rank per GPU; a free port and torchrun's variables (RANK, WORLD_SIZE,
  LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Each rank writes `run_dir/logs/rank-XXXXX.log` (rank 0 also to
  this console); the first failing rank stops the others and its log tail is raised. Ranks end with
  barrier -> destroy_process_group -> flush -> os._exit: gloo on torch 2.13 can abort at interpreter exit
  after the work is done (ENVIRONMENT.md 2.3).
- `submitit`: one sbatch job of `nodes x gpus_per_node` tasks (one per GPU) from a fresh folder
  `run_dir/submitit/<time>-<uid>` (SLURM job ids restart on a new cluster: never reuse a folder). The
  callable, `SubmititRank`, is Checkpointable: on timeout or preemption it requeues itself and the target
  resumes from the newest complete checkpoint in the run dir. submitit pickles the return value after the
  callable returns, so a rank cannot os._exit there: it leaves the group (barrier, destroy_process_group)
  and, after success only, registers an exit hook that calls os._exit(0) once the result is saved (risk
  left: an abort before that hook shows a failed task that saved its result). Tests: `cluster="local"`.
  That backend lives in `pipeline.launch.submitit`.

    python -m pipeline.train_stage4 --config config.yaml --step 0 --print-plan [--json]

The files, lowest first (each imports only files named before it): `job` (the Job, its shape, its plan), `procs` and
`slurm_wait` (processes, SLURM job states), `rank` (inside one rank), `local` and `submitit` (the backends),
`dispatch` (`launch`); `__main__` starts a local rank.
"""

from pipeline.launch.dispatch import launch
from pipeline.launch.job import PLAN_KEYS, Job, describe, format_plan, print_plan, sbatch_script, submitit_parameters
from pipeline.launch.local import THREAD_VARS, rank_threads, thread_env
from pipeline.launch.rank import rank_log

__all__ = ["PLAN_KEYS", "THREAD_VARS", "Job", "describe", "format_plan", "launch", "print_plan", "rank_log",
           "rank_threads", "sbatch_script", "submitit_parameters", "thread_env"]
