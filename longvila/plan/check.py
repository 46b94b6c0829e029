"""The training config check: `check_training(cfg)` validates `cfg.train` against the model and the data.

What: everything that would otherwise fail hours into a cluster job — world size vs SP degree, Ulysses
degree vs the model's heads, sequence length vs the layout's divisor, frames vs SP degree, RoPE schedule vs
context, global batch arithmetic — and the planner's memory gate (each run's predicted peak per rank vs the
GPU's, per `train.cluster.memory_check`). Returns the plan per run; each violation is a ValueError naming the
field and the valid values. Why here and not in `longvila.config`: it needs the model shapes
(`longvila.shapes`), `ParallelDims` and the planner, and the config package depends on none of them. It runs
at DAG build (`workflow/rules/common.smk`), in the launchers and in `--print-plan`; torch-free, since it runs
in every Snakemake process.

    from longvila.config import load_config_file
    from longvila.plan.check import check_training
    rows = check_training(load_config_file("workflow/configs/paper.yaml"))   # [{'run': 'stage4/64k', ...}, ...]
"""

from __future__ import annotations

from longvila.config.checks import check
from longvila.config.train import LR_SCHEDULES
from longvila.parallel.dims import ParallelDims
from longvila.plan.config import plan_run, run_questions
from longvila.plan.memory import GIB
from longvila.shapes import llm_shape
from longvila.utils.logging import get_logger


def check_training(cfg) -> list[dict]:
    """Validate `cfg.train` against the model and the data (see the module docstring); returns one plan row
    per run: name, world, SP = U x R, DP, sequence/frames, global batch."""
    t = cfg.train
    shape = llm_shape(cfg.model.size)
    heads, kv = shape.heads, shape.kv_heads
    contexts = {c.name: c.seq_len for c in cfg.pack.contexts}
    plan = []

    def topology(key: str, nodes: int, ulysses: int, ring: int) -> ParallelDims:
        world = nodes * t.cluster.gpus_per_node if t.cluster.gpus_per_node else t.cluster.cpu_processes
        check(nodes >= 1 and (not t.cluster.gpus_per_node or nodes <= t.cluster.nodes), f"train.{key}.nodes",
              f"{nodes} must be between 1 and cluster.nodes ({t.cluster.nodes})")
        check(not t.cluster.gpus_per_node or ulysses <= t.cluster.gpus_per_node, f"train.{key}.ulysses",
              f"{ulysses} exceeds gpus_per_node {t.cluster.gpus_per_node}: Ulysses groups stay inside a node")
        try:
            dims = ParallelDims(ulysses=ulysses, ring=ring, world_size=world, layout=t.layout)
            dims.validate_heads(heads, kv)
        except ValueError as e:
            raise ValueError(f"config 'train.{key}': {e} ({cfg.model.size}: {heads} heads / {kv} KV heads; "
                             f"world {world})") from e
        return dims

    for i, s in enumerate(t.stage4):
        key = f"stage4[{i}]"
        check(s.context in contexts, f"train.{key}.context",
              f"{s.context!r} is not in pack.contexts {sorted(contexts)}")
        check(s.steps >= 1 and s.grad_accum >= 1 and s.save_every >= 0 and s.zero_stage in (0, 1, 2, 3),
              f"train.{key}",
              "need steps >= 1, grad_accum >= 1, save_every >= 0, zero_stage in 0..3")
        check(t.engine != "deepspeed" or s.zero_stage in (2, 3), f"train.{key}.zero_stage",
              f"{s.zero_stage}: the DeepSpeed engine runs ZeRO stage 2 or 3")
        dims = topology(key, s.nodes, s.ulysses, s.ring)
        seq = contexts[s.context]
        div = dims.seq_len_divisor()
        check(seq % div == 0, f"train.{key}.context",
              f"seq_len {seq} is not a multiple of {div} ({dims.layout} over SP {dims.sp_degree})")
        check(s.max_positions >= seq and s.rope_theta > 0, f"train.{key}.max_positions",
              f"{s.max_positions} must be >= the context's seq_len {seq}, and rope_theta > 0")
        plan.append({"run": f"stage4/{s.context}", "world": dims.world_size, "sp": f"{s.ulysses}x{s.ring}",
                     "dp": dims.dp_degree, "tokens_per_sample": seq,
                     "global_batch": dims.dp_degree * s.grad_accum, "steps": s.steps})
    for i, r in enumerate(t.stage5):
        key = f"stage5[{i}]"
        least = min(r.frames, r.per_device_batch, r.grad_accum, r.epochs, 1 if r.max_steps is None else r.max_steps)
        check(least >= 1
              and r.lr > 0 and r.save_every >= 0 and r.zero_stage in (0, 1, 2, 3), f"train.{key}",
              "need frames, per_device_batch, grad_accum, epochs, max_steps >= 1, lr > 0, save_every >= 0, "
              "zero_stage in 0..3")
        check(r.lr_schedule in LR_SCHEDULES, f"train.{key}.lr_schedule",
              f"{r.lr_schedule!r}: use one of {', '.join(LR_SCHEDULES)}")
        check(t.engine != "deepspeed" or r.zero_stage in (2, 3), f"train.{key}.zero_stage",
              f"{r.zero_stage}: the DeepSpeed engine runs ZeRO stage 2 or 3")
        stage4 = [s.context for s in t.stage4]
        check(r.init_from is None or r.init_from in stage4, f"train.{key}.init_from",
              f"{r.init_from!r} is not a stage-4 context; use one of {stage4} (or null: the last one)")
        dims = topology(key, r.nodes, r.ulysses, r.ring)
        check(r.frames >= dims.sp_degree, f"train.{key}.frames",
              f"{r.frames} frames cannot give each of the {dims.sp_degree} SP ranks a frame to encode")
        div = dims.seq_len_divisor()
        check(r.max_length % div == 0, f"train.{key}.max_length", f"{r.max_length} is not a multiple of {div}")
        plan.append({"run": f"stage5/{r.frames}f", "world": dims.world_size, "sp": f"{r.ulysses}x{r.ring}",
                     "dp": dims.dp_degree, "frames": r.frames,
                     "global_batch": r.per_device_batch * dims.dp_degree * r.grad_accum, "epochs": r.epochs})
    _check_memory(cfg, plan)
    return plan


def _check_memory(cfg, plan: list[dict]) -> None:
    """Add the capacity planner's peak memory per rank to each row; refuse (or warn about) a run that does not
    fit, per `cluster.memory_check`."""
    t = cfg.train
    for row, q in zip(plan, run_questions(cfg), strict=True):
        hw, p = plan_run(cfg, q)
        row["memory_gib"], row["limit_gib"] = round(p.memory.total / GIB, 2), round(hw.gpu_mem_gib, 2)
        row["memory_breakdown_gib"] = {k: round(v, 3) for k, v in p.memory.gib().items() if k != "total" and v}
        if p.reason is None or t.cluster.memory_check == "off":
            continue
        where = (f"cluster.gpu_mem_gib {hw.gpu_mem_gib:g}" if t.cluster.gpus_per_node else
                 f"{hw.gpu_mem_gib:.1f} GiB, this node's memory shared by {hw.gpus} processes")
        top = sorted(((v, k) for k, v in p.memory.gib().items() if k != "total"), reverse=True)[:3]
        largest = ", ".join(f"{k} {v:.1f}" for v, k in top)
        message = (f"config 'train.{q.key}': predicted peak {p.memory.total / GIB:.1f} GiB per rank > {where} "
                   f"(largest: {largest}); set gradient_checkpointing: true, more nodes or a longer ring "
                   f"(`longvila plan --config CFG --stage {q.name}` ranks the splits), or "
                   "cluster.memory_check: warn to run anyway")
        if t.cluster.memory_check == "error":
            raise ValueError(message)
        get_logger().warning(message)
