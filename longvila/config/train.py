"""Typed configuration of training (`train:` in config.yaml): stages 4 and 5, parallelism, cluster.

`check_training(cfg)` validates everything that would otherwise fail hours into a cluster job — world size
vs SP degree, Ulysses degree vs the model's heads, sequence length vs the layout's divisor, frames vs SP
degree, RoPE schedule vs context, global batch arithmetic — and returns the plan per run; each violation
is an error naming the field and the valid values. It runs at DAG build and in `--print-plan`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from longvila.config.checks import check

ENGINES = ("torch", "deepspeed")
LAUNCHERS = ("local", "submitit")
MEMORY_CHECKS = ("error", "warn", "off")



@dataclass
class ClusterConfig:
    """Where training runs: this machine (`train.launcher: local`) or SLURM nodes (`submitit`)."""

    nodes: int = 1
    """Most nodes one job may use; each stage-4 step / stage-5 run asks for its own `nodes` (<= this)."""
    gpus_per_node: int = 0
    """GPUs per node, one rank (SLURM task) per GPU; 0 = CPU processes with gloo (the tiny configuration)."""
    cpu_processes: int = 4
    """Processes on this machine when gpus_per_node is 0."""
    partition: str | None = None
    """SLURM partition (sbatch --partition); null = the cluster's default."""
    account: str | None = None
    """SLURM account to charge (sbatch --account); null = your default account."""
    time_minutes: int = 240
    """SLURM time limit per job; runs are requeued on timeout/preemption and resume."""
    cpus_per_task: int = 8
    """CPU cores per SLURM task, i.e. per GPU (sbatch --cpus-per-task): data-loader workers plus one."""
    mem_gb: int | None = 0
    """Memory per node in GB (sbatch --mem); 0 = all of a node's memory, null = the partition's default."""
    max_requeues: int = 3
    """How often a timed-out job requeues itself (preempted jobs always do); submitit's max_num_timeout."""
    signal_delay_s: int = 120
    """Seconds before the time limit at which SLURM sends USR2, so the job can requeue itself in time."""
    poll_seconds: float = 10.0
    """How often the submitit launcher asks squeue about its job: one that ended without results (scancel,
    node failure) fails the rule instead of being waited for forever where sacct is unavailable."""
    gpu_mem_gib: float = 79.2
    """Memory per GPU in GiB as CUDA reports it (an "80 GB" H100/A100: 79.2): the capacity planner checks every
    run's predicted peak against it."""
    memory_check: str = "error"
    """What a run whose predicted peak memory per rank exceeds the GPU's (or, on CPU, its share of the node's)
    does at config check: 'error' (refused before anything is submitted), 'warn' (logged) or 'off'."""
    setup: list[str] = field(default_factory=list)
    """Shell lines the sbatch script runs before srun, e.g. 'source .venv/bin/activate'."""
    sbatch_extra: dict[str, str] = field(default_factory=dict)
    """More sbatch options, e.g. {qos: high, exclusive: ''} ('' = a flag without value); long names only, and
    none of those set from the keys above."""

    # sbatch options the launcher sets itself -> the key that sets them (None: submitit's own)
    _SBATCH_OWNED = {"nodes": "nodes of the step/run", "ntasks": "gpus_per_node", "ntasks-per-node": "gpus_per_node",
                     "gpus": "gpus_per_node", "gpus-per-node": "gpus_per_node", "cpus-per-task": "cpus_per_task",
                     "time": "time_minutes", "mem": "mem_gb", "partition": "partition", "account": "account",
                     "signal": "signal_delay_s", "requeue": None, "job-name": None, "output": None, "error": None,
                     "open-mode": None, "wckey": None}

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node if self.gpus_per_node else self.cpu_processes

    def __post_init__(self) -> None:
        for name in ("nodes", "cpu_processes", "time_minutes", "cpus_per_task"):
            check(getattr(self, name) >= 1, f"train.cluster.{name}", f"must be >= 1, got {getattr(self, name)}")
        check(self.poll_seconds > 0, "train.cluster.poll_seconds", f"must be > 0, got {self.poll_seconds}")
        check(self.gpu_mem_gib > 0, "train.cluster.gpu_mem_gib", f"must be > 0, got {self.gpu_mem_gib}")
        check(self.memory_check in MEMORY_CHECKS, "train.cluster.memory_check", f"use one of {MEMORY_CHECKS}")
        for name in ("gpus_per_node", "max_requeues", "signal_delay_s"):
            check(getattr(self, name) >= 0, f"train.cluster.{name}", f"must be >= 0, got {getattr(self, name)}")
        check(self.mem_gb is None or self.mem_gb >= 0, "train.cluster.mem_gb",
              f"must be >= 0 or null, got {self.mem_gb}")
        check(self.signal_delay_s < 60 * self.time_minutes, "train.cluster.signal_delay_s",
              f"{self.signal_delay_s} s must be shorter than time_minutes ({self.time_minutes} min)")
        for key in self.sbatch_extra:
            name = key.lstrip("-")
            check(len(name) > 1 and "_" not in name, f"train.cluster.sbatch_extra.{key}",
                  "write the long sbatch option name with dashes (e.g. mail-type, not mail_type or -A)")
            check(name not in self._SBATCH_OWNED, f"train.cluster.sbatch_extra.{key}",
                  f"--{name} is set by the launcher (from {self._SBATCH_OWNED.get(name) or 'submitit'}); "
                  "remove it from sbatch_extra")
            check(self.mem_gb is None or not name.startswith("mem-per-"), f"train.cluster.sbatch_extra.{key}",
                  "--mem-per-* excludes --mem: set cluster.mem_gb to null to use it")


@dataclass
class Stage4Step:
    """One context-extension step (paper: 64k, 256k, 512k, 1M)."""

    context: str = "512"
    """A context name from pack.contexts (its packed shards are the data)."""
    rope_theta: float = 15_300_000.0
    """RoPE base for this step."""
    max_positions: int = 131_072
    """max_position_embeddings written into the checkpoint (>= the context's seq_len)."""
    steps: int = 40
    """Optimizer steps."""
    grad_accum: int = 4
    """Micro-steps per optimizer step."""
    nodes: int = 1
    """Nodes for this step (the world is nodes x cluster.gpus_per_node, or cluster.cpu_processes)."""
    ulysses: int = 1
    """Ulysses degree (intra-node, heads split)."""
    ring: int = 1
    """Ring degree (inter-node)."""
    zero_stage: int = 2
    """DeepSpeed ZeRO stage (engine deepspeed)."""
    save_every: int = 20
    """Checkpoint every N steps (resume after preemption)."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer in the backward instead of keeping its activations (the release: on)."""


LR_SCHEDULES = ("cosine", "constant")


@dataclass
class Stage5Run:
    """One long-video SFT run (paper: 256, 512, 1024, 2048 frames)."""

    frames: int = 16
    """Frames per video."""
    nodes: int = 1
    """Nodes for this run."""
    ulysses: int = 1
    """Ulysses degree."""
    ring: int = 1
    """Ring degree."""
    per_device_batch: int = 1
    """Samples per SP group per micro-step."""
    grad_accum: int = 1
    """Micro-steps per optimizer step."""
    lr: float = 5e-5
    """Peak learning rate (reached after the warm-up, train.warmup_ratio of the steps)."""
    lr_schedule: str = "cosine"
    """After the warm-up: 'cosine' (decay to 0, the release's schedule) or 'constant' (HF's
    constant_with_warmup; the tiny demo's few hundred steps from scratch need the full rate to the end)."""
    epochs: int = 1
    """Epochs over the stage-5 data."""
    max_length: int = 4096
    """Longest token sequence (text + frame tokens); longer samples are skipped and counted."""
    zero_stage: int = 3
    """DeepSpeed ZeRO stage (engine deepspeed)."""
    save_every: int = 20
    """Checkpoint every N optimizer steps (resume after preemption)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (a short demo run); null = all epochs."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer (LLM and vision tower) in the backward instead of keeping its activations."""
    init_from: str | None = None
    """The stage-4 context (train.stage4[].context) whose merged model this run starts from; null = the last
    stage-4 step. The release: 256f from 64k, 512f and 1024f from 256k, 2048f from 512k."""


@dataclass
class TrainConfig:
    """Training stages 4 and 5."""

    engine: str = "torch"
    """'torch' (plain PyTorch DP x SP, CPU or GPU) or 'deepspeed' (ZeRO-2/3)."""
    launcher: str = "local"
    """'local' (processes on this machine) or 'submitit' (SLURM)."""
    layout: str = "zigzag"
    """Sequence layout over the SP group."""
    precision: str = "auto"
    """'auto' (bf16 on GPUs, fp32 on CPU), 'bf16' or 'fp32'; fp32 master weights either way."""
    seed: int = 0
    """Seed of data order and initialisation."""
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    """Where it runs."""
    lr: float = 2e-5
    """Stage-4 learning rate (constant after warm-up)."""
    warmup_steps: int = 2
    """Stage-4 warm-up steps."""
    lora_r: int = 8
    """Stage-4 LoRA rank."""
    lora_alpha: float = 16.0
    """Stage-4 LoRA alpha."""
    stage4: list[Stage4Step] = field(default_factory=lambda: [Stage4Step()])
    """Context-extension steps, in order; each starts from the previous one's merged checkpoint."""
    warmup_ratio: float = 0.03
    """Stage-5 warm-up share of the steps."""
    stage5: list[Stage5Run] = field(default_factory=lambda: [Stage5Run()])
    """Long-video SFT runs."""

    def __post_init__(self) -> None:
        check(self.engine in ENGINES, "train.engine", f"use one of {ENGINES}")
        check(self.launcher in LAUNCHERS, "train.launcher", f"use one of {LAUNCHERS}")
        check(self.precision in ("auto", "bf16", "fp32"), "train.precision", "use auto, bf16 or fp32")
        check(self.lr > 0 and self.warmup_steps >= 0 and self.lora_r >= 1 and self.lora_alpha > 0, "train.lr/lora",
              "need lr > 0, warmup_steps >= 0, lora_r >= 1, lora_alpha > 0")


def check_training(cfg) -> list[dict]:
    """Validate `cfg.train` against the model and the data (see the module docstring); returns one plan row
    per run: name, world, SP = U x R, DP, sequence/frames, global batch."""
    from longvila.parallel.dims import ParallelDims      # both torch-free: this runs in every Snakemake process
    from longvila.shapes import llm_shape

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
              f"seq_len {seq} is not a multiple of {div} ({t.layout} over SP {dims.sp_degree})")
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
    from longvila.plan.config import plan_run, run_questions
    from longvila.plan.memory import GIB

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
        from longvila.utils.logging import get_logger

        get_logger().warning(message)
