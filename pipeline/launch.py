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
  That backend lives in `pipeline.launch_submitit`.

    python -m pipeline.train_stage4 --config config.yaml --step 0 --print-plan [--json]
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import shlex
import subprocess
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from longvila.utils.io import write_json_atomic
from pipeline._procs import die_with_parent, sigterm_as_exit, stop, wait_all
from longvila.utils.logging import get_logger, init_logger
from longvila.utils.ranks import host_store, join_store

PLAN_KEYS = ("name", "launcher", "backend", "target", "kwargs", "run_dir", "nodes", "tasks_per_node",
             "gpus_per_node", "world_size", "training", "submitit")


@dataclass
class Job:
    """One distributed run: `target(**kwargs)` on every rank."""

    name: str
    """E.g. 'stage4-512'; names the SLURM job and the submitit folder."""
    target: str
    """'module:function', called on every rank as function(**kwargs) after the process group is up."""
    kwargs: dict
    """Picklable, JSON-able keyword arguments for the target (paths are best made absolute)."""
    run_dir: Path
    """Logs, the submitit folders and plan.json go here (the run's intermediate checkpoints live here too)."""
    nodes: int = 1
    """Nodes (SLURM); the local launcher runs on one."""
    run: str | None = None
    """The `check_training` plan row shown by --print-plan, e.g. 'stage4/512'; None = from name."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables for every rank."""


def _shape(job: Job, cfg) -> tuple[int, int, int, str]:
    """(nodes, tasks per node, GPUs per node, backend) of the job, or a ValueError naming the fix."""
    c, launcher = cfg.train.cluster, cfg.train.launcher
    if not c.gpus_per_node:
        if job.nodes != 1:
            raise ValueError(f"job {job.name}: {job.nodes} nodes need GPUs (train.cluster.gpus_per_node > 0); "
                             "a CPU run is one machine with train.cluster.cpu_processes ranks")
        return 1, c.cpu_processes, 0, "gloo"
    if launcher == "local" and job.nodes != 1:
        raise ValueError(f"job {job.name}: train.launcher 'local' runs on this machine only, but it asks for "
                         f"{job.nodes} nodes; use train.launcher: submitit (SLURM)")
    if not 1 <= job.nodes <= c.nodes:
        raise ValueError(f"job {job.name}: {job.nodes} nodes; use 1 to train.cluster.nodes ({c.nodes})")
    return job.nodes, c.gpus_per_node, c.gpus_per_node, "nccl"


def submitit_parameters(job: Job, cfg) -> dict:
    """Keyword arguments for `AutoExecutor.update_parameters`: generic names plus `slurm_*` ones."""
    c = cfg.train.cluster
    nodes, tasks, gpus, _ = _shape(job, cfg)
    params = {"name": job.name, "nodes": nodes, "tasks_per_node": tasks, "gpus_per_node": gpus or None,
              "cpus_per_task": c.cpus_per_task, "timeout_min": c.time_minutes,
              "mem_gb": c.mem_gb or None, "slurm_partition": c.partition, "slurm_account": c.account,
              "slurm_signal_delay_s": c.signal_delay_s, "slurm_setup": list(c.setup) or None,
              # a rank that fails ends the job step at once, instead of its peers waiting in a collective
              "slurm_srun_args": ["--kill-on-bad-exit=1"],
              # --requeue: `scontrol requeue` (submitit's requeue) needs a requeueable job
              "slurm_additional_parameters": {"requeue": True,
                                              **{k.lstrip("-"): v if v != "" else True
                                                 for k, v in c.sbatch_extra.items()}}}
    if c.mem_gb == 0:
        params["slurm_mem"] = "0"                # sbatch --mem=0: all of each node's memory
    return {k: v for k, v in params.items() if v is not None}


def sbatch_script(params: dict, folder: Path) -> str:
    """The sbatch file submitit's SlurmExecutor writes for these parameters, made by submitit's own
    `_make_sbatch_string` after the same renaming AutoExecutor does (generic -> SLURM names; a `slurm_*`
    value wins). Works without SLURM; the unit tests compare it with a real SlurmExecutor's file."""
    from submitit import AutoExecutor
    from submitit.slurm import slurm

    folder = Path(folder).expanduser().absolute()
    rename = slurm.SlurmExecutor._equivalence_dict()
    generic = {rename.get(k, k): v for k, v in params.items() if k in AutoExecutor._valid_parameters()}
    if "mem" in generic:
        generic["mem"] = slurm._convert_mem(generic["mem"])
    generic.update({k[len("slurm_"):]: v for k, v in params.items() if k.startswith("slurm_")})
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return slurm._make_sbatch_string(command=command, folder=folder, **generic)


def _fresh_folder(job: Job) -> Path:
    return Path(job.run_dir).absolute() / "submitit" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"


def describe(job: Job, cfg, *, folder: Path | None = None) -> dict:
    """The plan of `job` (JSON-able; keys `PLAN_KEYS`): shape, backend, the `check_training` row (for a
    'stage4/...' or 'stage5/...' run, None otherwise) and, for submitit, the parameters and the exact
    sbatch script. Raises ValueError for an impossible shape or training config."""
    from longvila.plan.check import check_training

    nodes, tasks, gpus, backend = _shape(job, cfg)
    run = job.run or job.name.replace("-", "/", 1)
    row = None
    if run.split("/")[0] in ("stage4", "stage5"):                        # a training run: validate, show its row
        row = next((r for r in check_training(cfg) if r["run"] == run), None)
    submit = None
    if cfg.train.launcher == "submitit":
        folder = Path(folder) if folder else _fresh_folder(job)
        params = submitit_parameters(job, cfg)
        submit = {"folder": str(folder), "parameters": params, "sbatch": sbatch_script(params, folder)}
    plan = {"name": job.name, "launcher": cfg.train.launcher, "backend": backend, "target": job.target,
            "kwargs": job.kwargs, "run_dir": str(job.run_dir), "nodes": nodes, "tasks_per_node": tasks,
            "gpus_per_node": gpus, "world_size": nodes * tasks, "training": row, "submitit": submit}
    return json.loads(json.dumps(plan, default=str))


def format_plan(plan: dict) -> str:
    """`describe`'s plan as a table (and the sbatch script) for a terminal."""
    row = plan["training"] or {}
    cols = {"job": plan["name"], "launcher": plan["launcher"], "backend": plan["backend"], "nodes": plan["nodes"],
            "tasks/node": plan["tasks_per_node"], "GPUs/node": plan["gpus_per_node"], "world": plan["world_size"],
            "SP (UxR)": row.get("sp", "?"), "DP": row.get("dp", "?"), "global batch": row.get("global_batch", "?"),
            "peak GiB/rank": row.get("memory_gib", "?"), "limit": row.get("limit_gib", "?")}
    widths = [max(len(k), len(str(v))) for k, v in cols.items()]
    lines = ["  ".join(k.ljust(w) for k, w in zip(cols, widths)),
             "  ".join(str(v).ljust(w) for v, w in zip(cols.values(), widths)),
             f"target: {plan['target']}", f"run dir: {plan['run_dir']}"]
    if row.get("memory_breakdown_gib"):
        parts = ", ".join(f"{k} {v:.3g}" for k, v in row["memory_breakdown_gib"].items())
        lines.append(f"predicted peak per rank (GiB; longvila plan --config CFG --stage {row['run']}): {parts} "
                     f"-> {row['memory_gib']:g}")
    if plan["submitit"]:
        lines += [f"sbatch script (submitit, folder {plan['submitit']['folder']}):", plan["submitit"]["sbatch"]]
    return "\n".join(lines)


def print_plan(job: Job, cfg, *, as_json: bool = False) -> int:
    """Print the plan (--print-plan [--json]) without running anything; returns exit code 0."""
    plan = describe(job, cfg)
    print(json.dumps(plan, indent=2) if as_json else format_plan(plan), flush=True)
    return 0


def launch(job: Job, cfg, *, cluster: str | None = None) -> int:
    """Run `job` with `cfg.train.launcher`, wait for it, and return 0; raise RuntimeError naming the failed
    rank (its traceback, its log) otherwise. `cluster` picks submitit's executor ('slurm' by default;
    'local' or 'debug' in tests)."""
    Path(job.run_dir, "logs").mkdir(parents=True, exist_ok=True)
    if cfg.train.launcher == "local":
        write_json_atomic(Path(job.run_dir, "plan.json"), describe(job, cfg))
        return _launch_local(job, cfg)
    from pipeline.launch_submitit import launch_submitit

    return launch_submitit(job, cfg, cluster or "slurm")


# ---------------------------------------------------------------------------------------------- ranks

def _resolve(target: str):
    module, _, name = target.partition(":")
    if not name:
        raise ValueError(f"launch target {target!r} must look like 'module:function'")
    return getattr(importlib.import_module(module), name)


def _run_rank(target: str, kwargs: dict, backend: str, log_file: str | None, store):
    """Inside one rank with the torch env set: logger, process group on the launch's `store`, target, leave
    the group."""
    import torch
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    init_logger(rank=rank, log_file=log_file)
    if backend == "nccl":                        # one GPU per rank, whether a task sees all or one
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    dist.init_process_group(backend, store=store, rank=rank, world_size=int(os.environ["WORLD_SIZE"]))
    result = _resolve(target)(**kwargs)
    dist.barrier()
    dist.destroy_process_group()
    return result


def _exit_now(code: int = 0) -> None:
    """Flush and leave without interpreter teardown, where gloo can abort (ENVIRONMENT.md 2.3)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _rank_main(payload_file: str) -> None:
    """Entry of a local rank (`python -m pipeline.launch <payload>`); never returns."""
    try:
        payload = pickle.loads(Path(payload_file).read_bytes())
        # stderr is this rank's log file (rank 0: teed to the console), so every rank logs to stderr
        _run_rank(payload["target"], payload["kwargs"], payload["backend"],
                  None if os.environ["RANK"] == "0" else "/dev/stderr",
                  join_store(int(os.environ["MASTER_PORT"]), int(os.environ["WORLD_SIZE"])))
    except BaseException:                        # report, then exit non-zero
        traceback.print_exc()
        _exit_now(1)
    _exit_now(0)


def _tee(stream, path: Path) -> None:
    with open(path, "ab") as f:
        for line in iter(stream.readline, b""):
            f.write(line)
            f.flush()
            sys.stderr.write(line.decode(errors="replace"))
    stream.close()


def _collateral(text: str) -> bool:
    """Whether a rank's error is what it prints when a peer died first (gloo, NCCL): not the root cause."""
    return any(c in text for c in ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
                                   "remote worker crashing", "NCCL communicator was aborted"))


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def rank_log(run_dir: Path, rank: int) -> Path:
    return Path(run_dir, "logs", f"rank-{rank:05d}.log")


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


def _launch_local(job: Job, cfg) -> int:
    _, world, _, backend = _shape(job, cfg)
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
            failed.sort(key=lambda rc: (_collateral(_tail(rank_log(job.run_dir, rc[0]))), rc[0]))
            report = "\n".join(f"--- rank {r} (exit code {c}), {rank_log(job.run_dir, r)}:\n"
                               f"{_tail(rank_log(job.run_dir, r))}" for r, c in failed)
            raise RuntimeError(f"job {job.name}: rank {failed[0][0]} failed; the other ranks were stopped\n{report}")
        return 0
    finally:
        stop(procs)
        payload.unlink(missing_ok=True)


if __name__ == "__main__":
    _rank_main(sys.argv[1])
