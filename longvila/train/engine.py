"""A plain-PyTorch training engine for data x sequence parallelism (DeepSpeed is the other engine).

Parameters are replicated on every rank; each rank computes the loss of its shard as its share of the
GLOBAL token mean (`longvila.parallel.loss.token_mean_loss`), so the exact gradient of the global mean is
the SUM of every rank's gradient: `step()` all-reduces (sum) the gradients over the whole world (SP and DP
groups together), clips, steps the optimizer and zeroes the gradients.

    engine = TorchEngine(model, dims, torch.optim.AdamW(model.parameters(), lr=2e-5), grad_clip=1.0)
    loss, _ = lm_loss(model, row, dims)
    engine.backward(loss); stats = engine.step()

The engine protocol the training loop relies on (`DeepSpeedEngine` implements it too): `model`, `dims`,
`backward(loss)` per micro-step, `step() -> {"grad_norm", "lr"}` per optimizer step, collective
`save(folder, rank)` / `load(folder, rank)` of parameters, optimizer and scheduler, and `gathered()`, a
context in which `model` holds its full parameters (a no-op here; ZeRO-3 gathers them).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.distributed as dist

from longvila.parallel.comm import world_sum
from longvila.parallel.dims import ParallelDims
from longvila.parallel.layout import shard_sequence
from longvila.parallel.loss import IGNORE_INDEX, token_mean_loss


GRAD_BUCKET_ELEMENTS = 1 << 23
"""Gradients are summed over the world in buckets of this many elements (32 MiB of fp32), like DDP's, so the
step needs one bucket more, not a second copy of every gradient (longvila.plan.memory models it)."""


def _all_reduce_in_buckets(tensors: list[torch.Tensor], bucket: int = GRAD_BUCKET_ELEMENTS) -> None:
    """Sum `tensors` over the world in place, a bucket of consecutive tensors per all-reduce (one tensor larger
    than a bucket goes alone, without a copy)."""
    group: list[torch.Tensor] = []
    size = 0

    def flush():
        nonlocal size
        if len(group) == 1 and group[0].is_contiguous():
            dist.all_reduce(group[0])
        elif group:
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.all_reduce(flat)
            at = 0
            for t in group:
                t.copy_(flat[at:at + t.numel()].view_as(t))
                at += t.numel()
        group.clear()
        size = 0

    for t in tensors:
        if group and size + t.numel() > bucket:
            flush()
        group.append(t)
        size += t.numel()
    flush()


class TorchEngine:
    def __init__(self, model: torch.nn.Module, dims: ParallelDims, optimizer: torch.optim.Optimizer,
                 scheduler=None, grad_clip: float | None = None) -> None:
        self.model, self.dims, self.optimizer, self.scheduler, self.grad_clip = model, dims, optimizer, scheduler, grad_clip

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> dict:
        """Sum gradients over all ranks, clip, optimizer step; returns {"grad_norm", "lr"}."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        if dist.is_initialized() and dist.get_world_size() > 1:
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            _all_reduce_in_buckets([p.grad for p in params])
        norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip if self.grad_clip else float("inf"))
        lr = self.optimizer.param_groups[0]["lr"]            # the rate this step used
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"grad_norm": float(norm), "lr": lr}

    def _trainable(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def save(self, folder: Path, rank: int) -> None:
        """Rank 0 writes engine.pt (trainable parameters, optimizer, scheduler): every rank holds the same."""
        if rank == 0:
            torch.save({"params": {n: p.detach().clone() for n, p in self._trainable().items()},
                        "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None},
                       Path(folder) / "engine.pt")

    def load(self, folder: Path, rank: int) -> None:
        path = Path(folder) / "engine.pt"
        if not path.is_file():
            raise ValueError(f"{folder} has no engine.pt: it was written by another engine (train.engine); "
                             "resume with the same engine or start a fresh run directory")
        state = torch.load(path, weights_only=False)
        with torch.no_grad():
            for name, p in self._trainable().items():
                p.copy_(state["params"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])

    @contextlib.contextmanager
    def gathered(self):
        yield self.model


def lm_loss(model, input_ids: torch.Tensor, dims: ParallelDims, separator: int | None = None):
    """This rank's share of the next-token loss of one packed row [S] (stage 4): targets shifted before
    sharding, global position ids. Returns (loss share, supervised tokens in the whole row).

    `separator`: the token id that ends each packed document (the packer's EOS). Given, every document attends
    only to itself (`document_bounds`; the model's attention must be `apply_sequence_parallel`'s, which reads
    them); None: the whole row is one causal sequence."""
    targets = torch.cat([input_ids[1:], input_ids.new_full((1,), IGNORE_INDEX)])
    positions = torch.arange(len(input_ids), device=input_ids.device)
    shard = lambda t: shard_sequence(t, dims, dim=0)
    extra = {}
    if separator is not None:
        from longvila.parallel.parallelize import SP_ATTENTION_PREFIX

        if not str(model.config._attn_implementation).startswith(SP_ATTENTION_PREFIX):
            raise ValueError("lm_loss(separator=...): call apply_sequence_parallel(model, dims) first; Transformers' "
                             f"{model.config._attn_implementation!r} attention ignores document bounds")
        extra["cu_seq_lens_q"] = document_bounds(input_ids, separator)
    head = model.get_output_embeddings()
    # two steps unless the head is a bias-free Linear whose weight this rank holds whole (ZeRO-3 partitions it:
    # only the module's own forward gathers it)
    if head is None or getattr(head, "bias", None) is not None or hasattr(head.weight, "ds_id"):
        logits = model(input_ids=shard(input_ids)[None], position_ids=shard(positions)[None], **extra).logits[0]
        return token_mean_loss(logits, shard(targets), dims)
    hidden = model.model(input_ids=shard(input_ids)[None], position_ids=shard(positions)[None],
                         **extra).last_hidden_state[0]
    return token_mean_loss(hidden, shard(targets), dims, head_weight=head.weight)    # head + loss fused


def document_bounds(input_ids: torch.Tensor, separator: int) -> torch.Tensor:
    """Global boundaries [0, ..., S] (int32) of the documents of a packed row [S]: one after every
    `separator` token (a document ends with its separator; a row may start or end mid-document)."""
    after = (input_ids[:-1] == separator).nonzero().flatten() + 1
    ends = torch.tensor([0, len(input_ids)], device=input_ids.device)
    return torch.cat([ends[:1], after, ends[1:]]).to(torch.int32)


def global_value(x: torch.Tensor | float, dims: ParallelDims) -> float:
    """The sum of a per-rank scalar over the world: the global batch's loss from every rank's share of the
    global token mean (SP and DP ranks alike; `token_mean_loss` already divides by the world's token count)."""
    return world_sum(float(x))


def use_bf16(precision: str) -> bool:
    """train.precision: 'bf16', 'fp32', or 'auto' = bf16 on CUDA, fp32 on CPU."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"train.precision {precision!r}: use auto, bf16 or fp32")
    return precision == "bf16" or (precision == "auto" and torch.cuda.is_available())


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast of the forward for the torch engine (fp32 master weights); a no-op when not enabled."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def load_for_training(init_dir, device: torch.device):
    """(LongVILA model from a released-layout checkpoint in fp32 master weights on `device`, in train mode;
    the checkpoint's own dtype, in which the run's output is saved)."""
    from longvila.model import LongVILAForCausalLM

    model = LongVILAForCausalLM.from_pretrained(init_dir)
    saved_dtype = next(model.parameters()).dtype
    return model.float().to(device).train(), saved_dtype


def enable_gradient_checkpointing(*modules) -> None:
    """Recompute each decoder layer of these Transformers models in the backward (non-reentrant
    `torch.utils.checkpoint`: frozen inputs and LoRA need no input gradients). The recomputed layer runs its
    SP attention again, collectives included, in the same order on every rank."""
    for m in modules:
        m.activation_checkpointing_enable({"use_reentrant": False})


def training_device() -> torch.device:
    """This rank's device: its CUDA device (the launcher sets it from LOCAL_RANK) when there is one, else CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def make_engine(kind: str, model: torch.nn.Module, dims: ParallelDims, *, lr: float, lr_lambda, grad_accum: int,
                zero_stage: int = 2, grad_clip: float | None = 1.0, weight_decay: float = 0.0, bf16: bool = False):
    """The engine `train.engine` names, over the model's trainable parameters: AdamW(lr, weight_decay) with a
    LambdaLR(lr_lambda) schedule stepped once per optimizer step. 'torch' = TorchEngine (fp32/param dtype);
    'deepspeed' = ZeRO-`zero_stage` (bf16 on GPU when asked), see longvila.train.ds_engine."""
    if kind == "deepspeed":
        from longvila.train.ds_engine import DeepSpeedEngine

        return DeepSpeedEngine(model, dims, lr=lr, lr_lambda=lr_lambda, grad_accum=grad_accum,
                               zero_stage=zero_stage, grad_clip=grad_clip, weight_decay=weight_decay, bf16=bf16)
    if kind != "torch":
        raise ValueError(f"engine {kind!r}: use 'torch' or 'deepspeed' (config train.engine)")
    params = [p for p in model.parameters() if p.requires_grad]
    # fused: one vectorised pass per tensor instead of a dozen elementwise ops (the same update; on the tiny CPU
    # model's 19.5M trainable weights 33 ms instead of 189 ms per step and rank, docs/LOG.md 2026-12-07)
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.bfloat16, torch.float16)
                for p in params)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
    return TorchEngine(model, dims, opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda), grad_clip=grad_clip)
