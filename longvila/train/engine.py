"""A plain-PyTorch training engine for data x sequence parallelism (DeepSpeed is the other engine).

Parameters are replicated on every rank; each rank computes the loss of its shard as its share of the
GLOBAL token mean (`longvila.parallel.loss.token_mean_loss`), so the exact gradient of the global mean is
the SUM of every rank's gradient: `step()` all-reduces (sum) the gradients over the whole world (SP and DP
groups together), clips, steps the optimizer and zeroes the gradients.

    engine = TorchEngine(model, dims, torch.optim.AdamW(model.parameters(), lr=2e-5), grad_clip=1.0)
    loss, _ = lm_loss(model, row, dims)
    engine.backward(loss); stats = engine.step()
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from longvila.parallel.dims import ParallelDims
from longvila.parallel.layout import shard_sequence
from longvila.parallel.loss import IGNORE_INDEX, token_mean_loss


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
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            at = 0
            for p, g in zip(params, grads):
                p.grad = flat[at:at + g.numel()].view_as(g).clone()
                at += g.numel()
        norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip if self.grad_clip else float("inf"))
        lr = self.optimizer.param_groups[0]["lr"]            # the rate this step used
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"grad_norm": float(norm), "lr": lr}


def lm_loss(model, input_ids: torch.Tensor, dims: ParallelDims, layout: str = "zigzag"):
    """This rank's share of the next-token loss of one packed row [S] (stage 4): targets shifted before
    sharding, global position ids. Returns (loss share, supervised tokens in the whole row)."""
    targets = torch.cat([input_ids[1:], input_ids.new_full((1,), IGNORE_INDEX)])
    positions = torch.arange(len(input_ids), device=input_ids.device)
    shard = lambda t: shard_sequence(t, dims, dim=0, layout=layout)
    logits = model(input_ids=shard(input_ids)[None], position_ids=shard(positions)[None]).logits[0]
    return token_mean_loss(logits, shard(targets), dims)


def global_value(x: torch.Tensor | float, dims: ParallelDims) -> float:
    """The sum of a per-rank scalar over the world (the global loss from every rank's share), for logging."""
    t = torch.tensor([float(x)], dtype=torch.float64)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return float(t) / max(1, dims.dp_degree)
