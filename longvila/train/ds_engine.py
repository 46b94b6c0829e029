"""The DeepSpeed ZeRO-2/3 training engine: the same protocol as `TorchEngine`, with sharded optimizer state.

    engine = DeepSpeedEngine(model, dims, lr=2e-5, lr_lambda=lambda s: 1.0, grad_accum=2, zero_stage=3)
    for _ in range(2):
        loss, _ = lm_loss(model.llm, row, dims)          # the model is called directly, not through DeepSpeed
        engine.backward(loss / 2)
    stats = engine.step()                               # {"grad_norm", "lr"}

How it maps onto DeepSpeed (0.19.8):
* Config: `ds_config(...)` builds the dict from typed arguments (no JSON file): ZeRO stage 2 or 3, gradient
  clipping, `gradient_accumulation_steps = grad_accum`, bf16 when asked. Optimizer and schedule are ours:
  torch AdamW over the trainable parameters (no fused / cpu_adam JIT builds) and a LambdaLR(lr_lambda) that
  DeepSpeed steps once per optimizer step.
* Process group: ZeRO shards and reduces over the WHOLE world (SP x DP), as DeepSpeed-Ulysses does with its
  sequence-data-parallel group. That is DeepSpeed's own group when no `mpu` is given, so none is passed: the
  SP groups of `ParallelDims` are used by the attention only, which DeepSpeed never sees.
* Loss scaling: each rank's loss is its share of the GLOBAL token mean, so the exact gradient is the SUM over
  ranks; ZeRO AVERAGES over its group, so `backward` multiplies the loss by the world size. The loop already
  divides by grad_accum, so DeepSpeed's own division is off (`scale_wrt_gas=False`).
* Micro-steps: DeepSpeed counts micro-steps in `engine.step()`, so `backward` calls it after every micro-step
  but the last; `step()` is then the accumulation boundary, where the update happens.
* Direct model calls: the loop calls `model` (or `model.llm`) itself, but DeepSpeed's per-micro-step
  bookkeeping (ZeRO-3 gradient-accumulation ids, backward prologue, parameter-trace resets) runs in the
  engine's forward. DeepSpeed therefore wraps `_LossPassThrough(model)`, whose forward returns the loss it is
  given, and `backward` passes the loss through it. Without that, ZeRO-3 overwrote the first micro-step's
  gradient with the second's (grad_accum 2: grad-norm 0.51 instead of 0.76). The model is the pass-through's
  child, so ZeRO-3's fetch hooks sit on every submodule and gather the weights whichever module is called;
  parameters must therefore be used through their modules' forward (not read as `module.weight` elsewhere),
  and outside `gathered()` a ZeRO-3 model's parameters are empty shards.
* CPU: without CUDA, DeepSpeed's CPU accelerator is set explicitly (`set_accelerator`, its public API), as a
  subclass without the shared-memory all-reduce kernel. DeepSpeed JIT-compiles that kernel on every first
  init on a machine (ENVIRONMENT.md 2.4; measured 160 s on a loaded 2-core machine, then 4.7 s cached) for
  `inference_all_reduce` only; training collectives go through torch.distributed (gloo) either way. Init
  without it: 6.6 s, no compiler run, nothing cached.
* Launch: DeepSpeed reads LOCAL_RANK (torchrun and pipeline.launch set it).

`deepspeed` is imported lazily (about 10 s), so `ds_config` costs nothing to import.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
import torch.distributed as dist

from longvila.parallel.dims import ParallelDims

TAG = "deepspeed"                     # the sub-folder of a checkpoint that holds DeepSpeed's files


def ds_config(*, grad_accum: int, zero_stage: int = 2, grad_clip: float | None = 1.0, bf16: bool = False,
              persistence_threshold: int | None = None) -> dict:
    """The DeepSpeed config dict for one engine.

    Args:
        grad_accum: micro-steps per optimizer step (DeepSpeed `gradient_accumulation_steps`).
        zero_stage: 2 (optimizer state and gradients sharded) or 3 (parameters too).
        grad_clip: max global gradient norm; None or 0 = no clipping.
        bf16: bf16 parameters and activations with fp32 master weights (GPU); fp32 otherwise.
        persistence_threshold: ZeRO-3 keeps parameters with at most this many elements unsharded; None =
            DeepSpeed's default (1e5). Tests use 0 so that every parameter is sharded.
    Returns:
        the dict for `deepspeed.initialize(config=...)`; one micro-batch (one packed row) per rank.
    """
    if zero_stage not in (2, 3):
        raise ValueError(f"zero_stage={zero_stage}: the DeepSpeed engine supports ZeRO stage 2 or 3 "
                         "(use train.engine=torch for unsharded training)")
    if grad_accum < 1:
        raise ValueError(f"grad_accum={grad_accum}: use at least 1 micro-step per optimizer step")
    if grad_clip is not None and grad_clip < 0:
        raise ValueError(f"grad_clip={grad_clip}: use a positive max norm, or 0 / None for no clipping")
    zero = {"stage": zero_stage}
    if zero_stage == 3 and persistence_threshold is not None:
        zero["stage3_param_persistence_threshold"] = persistence_threshold
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": float(grad_clip or 0.0),
        "zero_optimization": zero,
        "bf16": {"enabled": bool(bf16)},
        "steps_per_print": 2**31 - 1,                    # progress lines come from our loop
    }


class _LossPassThrough(torch.nn.Module):
    """DeepSpeed's root module: holds the model (so DeepSpeed owns its parameters) and returns its input."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, loss: torch.Tensor) -> torch.Tensor:
        return loss


def _select_accelerator() -> None:
    """Without CUDA: DeepSpeed's CPU accelerator minus the shared-memory all-reduce kernel (module docstring)."""
    if torch.cuda.is_available():
        return                                          # DeepSpeed detects CUDA itself
    from deepspeed.accelerator import get_accelerator, set_accelerator
    from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator

    class TrainingCPUAccelerator(CPU_Accelerator):
        def create_op_builder(self, op_name):
            # No builder -> DeepSpeed's TorchBackend skips the JIT build of this inference-only kernel
            return None if op_name == "ShareMemCommBuilder" else super().create_op_builder(op_name)

    if type(get_accelerator()).__name__ != TrainingCPUAccelerator.__name__:
        set_accelerator(TrainingCPUAccelerator())


class DeepSpeedEngine:
    """ZeRO-2/3 over the whole world; see the module docstring.

    Args:
        model: the model, already LoRA-wrapped and sequence-parallelised; its trainable parameters
            (requires_grad) are optimised, the others stay frozen (and, under ZeRO-3, sharded too).
        dims: the topology; `dims.world_size` must match the process group.
        lr, lr_lambda, weight_decay: AdamW and its LambdaLR schedule (stepped once per optimizer step).
        grad_accum, zero_stage, grad_clip, bf16, persistence_threshold: see `ds_config`.
    Process group: the whole world (collective construction, `save`, `load`, `gathered`).
    """

    def __init__(self, model: torch.nn.Module, dims: ParallelDims, *, lr: float, lr_lambda, grad_accum: int,
                 zero_stage: int = 2, grad_clip: float | None = 1.0, weight_decay: float = 0.0,
                 bf16: bool = False, persistence_threshold: int | None = None) -> None:
        config = ds_config(grad_accum=grad_accum, zero_stage=zero_stage, grad_clip=grad_clip, bf16=bf16,
                           persistence_threshold=persistence_threshold)
        if not dist.is_initialized():
            raise ValueError("the DeepSpeed engine needs torch.distributed initialised (launch through "
                             "pipeline.launch / torchrun), or use train.engine=torch in a single process")
        if dist.get_world_size() != dims.world_size:
            raise ValueError(f"dims.world_size={dims.world_size} but the process group has "
                             f"{dist.get_world_size()} ranks; build ParallelDims from the launched world")
        if "LOCAL_RANK" not in os.environ:              # DeepSpeed reads the process's rank on its node from it
            raise ValueError("DeepSpeed needs LOCAL_RANK in the environment: launch with torchrun (or submitit's "
                             "torch environment), or set LOCAL_RANK to the rank on its node before the engine")
        _select_accelerator()
        import deepspeed

        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameter (requires_grad); check LoRA / freezing")
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
        self.ds, _, _, _ = deepspeed.initialize(model=_LossPassThrough(model), model_parameters=params,
                                                optimizer=optimizer, lr_scheduler=scheduler, config=config,
                                                dist_init_required=False)
        self.model, self.dims, self.grad_accum, self.zero_stage = model, dims, grad_accum, zero_stage
        self._micro_steps = 0                            # backward calls since the last step()

    def backward(self, loss: torch.Tensor) -> None:
        """One micro-step: `loss` is this rank's share of the global mean, already divided by grad_accum."""
        if self._micro_steps >= self.grad_accum:
            raise ValueError(f"backward() called {self._micro_steps + 1} times without step(); this engine "
                             f"accumulates grad_accum={self.grad_accum} micro-steps per optimizer step")
        out = self.ds(loss * self.dims.world_size)       # x world: ZeRO averages, the exact gradient is the sum
        self.ds.backward(out, scale_wrt_gas=False)
        self._micro_steps += 1
        if not self.ds.is_gradient_accumulation_boundary():
            self.ds.step()                               # counts the micro-step; no update off the boundary

    def step(self) -> dict:
        """The optimizer step (clip, AdamW, LambdaLR); returns {"grad_norm" (before clipping), "lr" used}."""
        if self._micro_steps != self.grad_accum:
            raise ValueError(f"step() after {self._micro_steps} backward calls; this engine accumulates "
                             f"grad_accum={self.grad_accum} (make_engine(grad_accum=...) must match the loop)")
        lr = self.ds.get_lr()[0]
        self.ds.step()
        self._micro_steps = 0
        norm = self.ds.get_global_grad_norm()
        return {"grad_norm": float(norm) if norm is not None else float("nan"), "lr": lr}

    def save(self, folder: Path, rank: int) -> None:
        """Collective: every rank writes its ZeRO shards (and rank 0 the trainable weights and scheduler)
        under `folder/deepspeed`."""
        self.ds.save_checkpoint(str(folder), tag=TAG, save_latest=False, exclude_frozen_parameters=True)

    def load(self, folder: Path, rank: int) -> None:
        """Collective: restore parameters, optimizer shards and the schedule written by `save`."""
        if not (Path(folder) / TAG).is_dir():
            raise ValueError(f"{folder} has no {TAG}/: it was written by another engine (train.engine); "
                             "resume with the same engine or start a fresh run directory")
        # not strict: `save` leaves the frozen weights out (they come from the run's starting checkpoint)
        path, _ = self.ds.load_checkpoint(str(folder), tag=TAG, load_module_strict=False,
                                          load_optimizer_states=True, load_lr_scheduler_states=True)
        if path is None:
            raise ValueError(f"DeepSpeed could not load {folder}/{TAG}; resume with the same world size and "
                             "zero_stage, or start a fresh run directory")

    @contextlib.contextmanager
    def gathered(self):
        """Collective: within it, `model` holds its full parameters on every rank (ZeRO-3 gathers them; they
        are read, not written back, so rank 0 may merge LoRA into new modules and save)."""
        if self.zero_stage != 3:
            yield self.model                             # ZeRO-2 keeps full parameters on every rank
            return
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None):
            yield self.model
