"""A launch's job and its plan: `Job`, the shape it takes on the cluster config (nodes, tasks per node, GPUs
per node, backend), submitit's parameters and the exact sbatch script, and `describe` / `format_plan` /
`print_plan` (what `--print-plan [--json]` shows). Nothing here starts a process."""

from __future__ import annotations

import json
import shlex
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

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


def shape(job: Job, cfg) -> tuple[int, int, int, str]:
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
    nodes, tasks, gpus, _ = shape(job, cfg)
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


def fresh_folder(job: Job) -> Path:
    return Path(job.run_dir).absolute() / "submitit" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"


def describe(job: Job, cfg, *, folder: Path | None = None) -> dict:
    """The plan of `job` (JSON-able; keys `PLAN_KEYS`): shape, backend, the `check_training` row (for a
    'stage4/...' or 'stage5/...' run, None otherwise) and, for submitit, the parameters and the exact
    sbatch script. Raises ValueError for an impossible shape or training config."""
    from longvila.plan.check import check_training

    nodes, tasks, gpus, backend = shape(job, cfg)
    run = job.run or job.name.replace("-", "/", 1)
    row = None
    if run.split("/")[0] in ("stage4", "stage5"):                        # a training run: validate, show its row
        row = next((r for r in check_training(cfg) if r["run"] == run), None)
    submit = None
    if cfg.train.launcher == "submitit":
        folder = Path(folder) if folder else fresh_folder(job)
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
