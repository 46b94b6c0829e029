"""The planner's questions for a config's training runs: one per stage-4 step and stage-5 run, on the GPUs (or
CPU processes) the config gives it, with its engine, precision, LoRA, checkpointing and frames.

`run_questions(cfg)` and `plan_run(cfg, question)` are what `longvila plan --config`, the training config
check (`check_training` in plan/check.py, at DAG build and in the launchers) and `--print-plan` all use, so
the memory a user is shown is the memory the launcher acts on. Torch-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from longvila.plan.cost import Hardware, SplitPlan, evaluate
from longvila.plan.memory import Recipe
from longvila.shapes import llm_shape, vision_shape

STAGE5_SUPERVISED_TOKENS = 256
"""Stage 5 computes logits only where a target is (the answers: a few sentences; at most ~150 tokens in the
tiny data); the planner budgets this many per sample."""


@dataclass(frozen=True)
class RunQuestion:
    """One training run as a planner question."""

    name: str                   # 'stage4/256k', 'stage5/512f'
    key: str                    # the config entry: 'stage4[1]', 'stage5[0]'
    seq_len: int
    nodes: int
    ulysses: int
    ring: int
    recipe: Recipe


CPU_RING_TERMS = dict(attn_half_block=0.0, ring_step_host_us=0.0, overlap_slowdown=0.0, merge_passes=0.0)
"""The GPU ring terms of `Hardware` (short-block kernel efficiency, host time per step, slowdown under NCCL,
merge passes at HBM speed) are GPU measurements; for CPU processes they are off (latency stays)."""


def host_memory_gib() -> float:
    """This machine's memory (the CPU-process runs share it)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return 16.0


def hardware(cfg, nodes: int) -> Hardware:
    """The hardware of a run on `nodes` nodes: GPUs with `cluster.gpu_mem_gib`, or the CPU processes sharing
    the node's memory (`cluster.mem_gb`, or this machine's when 0/null), with rough CPU speeds."""
    c = cfg.train.cluster
    if c.gpus_per_node:
        return Hardware(gpus=nodes * c.gpus_per_node, gpus_per_node=c.gpus_per_node, gpu_mem_gib=c.gpu_mem_gib)
    mem = c.mem_gb if c.mem_gb else host_memory_gib()                 # sbatch --mem=<n>G: SLURM's G is GiB
    return Hardware(gpus=c.cpu_processes, gpus_per_node=c.cpu_processes, gpu_mem_gib=mem / c.cpu_processes,
                    tflops=0.1, mfu=0.3, intra_gbps=5.0, inter_gbps=5.0, intra_latency_us=50.0, inter_latency_us=50.0,
                    **CPU_RING_TERMS)


def run_questions(cfg) -> list[RunQuestion]:
    """Every training run of `cfg`, in order."""
    t = cfg.train
    vision = vision_shape(cfg.model.size)
    precision = t.precision if t.precision != "auto" else ("bf16" if t.cluster.gpus_per_node else "fp32")
    device = "gpu" if t.cluster.gpus_per_node else "cpu"
    zero = lambda stage: stage if t.engine == "deepspeed" else 0                      # noqa: E731
    seq = {c.name: c.seq_len for c in cfg.pack.contexts}
    out = [RunQuestion(f"stage4/{s.context}", f"stage4[{i}]", seq.get(s.context, 0), s.nodes, s.ulysses, s.ring,
                       Recipe(zero=zero(s.zero_stage), precision=precision, lora=s.lora, grad_accum=s.grad_accum,
                              vision=vision, checkpointing=s.gradient_checkpointing, device=device,
                              fused_head=zero(s.zero_stage) != 3))
           for i, s in enumerate(t.stage4)]
    out += [RunQuestion(f"stage5/{r.frames}f", f"stage5[{i}]", r.max_length, r.nodes, r.ulysses, r.ring,
                        Recipe(zero=zero(r.zero_stage), precision=precision, grad_accum=r.grad_accum, vision=vision,
                               frames=r.frames, batch=r.per_device_batch, checkpointing=r.gradient_checkpointing,
                               logit_tokens=STAGE5_SUPERVISED_TOKENS, device=device))
            for i, r in enumerate(t.stage5)]
    return out


def plan_run(cfg, q: RunQuestion, hw: Hardware | None = None) -> tuple[Hardware, SplitPlan]:
    """The configured split of one run, evaluated on its hardware (or on `hw`)."""
    hw = hw or hardware(cfg, q.nodes)
    return hw, evaluate(llm_shape(cfg.model.size), cfg.model.size, q.seq_len, q.ulysses, q.ring, hw, q.recipe,
                        cfg.train.layout)
