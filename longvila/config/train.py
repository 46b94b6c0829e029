"""Typed configuration of training (`train:` in config.yaml): stages 4 and 5, parallelism, cluster.

Loaded by the same strict loader as the other sections (longvila/config/core.py); every field is documented,
and what can be checked from the field alone is checked in `__post_init__`. The checks that need the model's
shapes, `ParallelDims` or the capacity planner (world size vs SP degree, heads, divisors, frames, memory) are
`longvila.plan.check.check_training`, run at DAG build, in the launchers and in `--print-plan`.

    from longvila.config import TrainConfig
    TrainConfig(engine="deepspeed").stage5[0].zero_stage   # 3
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
    lr: float | None = None
    """This step's learning rate; null = train.lr."""
    lora: bool = True
    """Train LoRA adapters (train.lora_r / lora_alpha) on q/k/v/o and merge them, as the release does. false:
    fine-tune every LLM weight instead (the tiny demo's first step starts from a random model, which has
    nothing for a low-rank adapter to adapt)."""
    document_mask: bool = False
    """Each packed document attends only to itself (boundaries after every separator the packer wrote: its
    manifest's tokenizer.eos_id). false: the whole row is one causal sequence, documents see the ones packed before them."""

    def __post_init__(self) -> None:
        check(self.lr is None or self.lr > 0, "train.stage4[].lr", "use a positive rate, or null for train.lr")


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
    layout: str = "auto"
    """Sequence layout over the SP group: 'auto' (each run's split decides: zigzag when ring > 1, where it
    balances the causal work over the ring; contiguous when ring = 1, where zigzag balances nothing and costs
    time), 'zigzag' or 'contiguous'."""
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
        check(self.layout in ("auto", "zigzag", "contiguous"), "train.layout", "use auto, zigzag or contiguous")
        check(self.lr > 0 and self.warmup_steps >= 0 and self.lora_r >= 1 and self.lora_alpha > 0, "train.lr/lora",
              "need lr > 0, warmup_steps >= 0, lora_r >= 1, lora_alpha > 0")
