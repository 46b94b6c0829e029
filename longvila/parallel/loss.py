"""The exact global token-mean loss under sequence and data parallelism.

Every rank holds a shard of one sample (SP) of its data-parallel replica's batch (DP). The loss of the
global batch is (sum of token losses over every rank) / (number of supervised tokens over every rank). Each
rank returns its own sum divided by the GLOBAL count, so that SUMMING gradients over all ranks (SP and DP)
gives the exact gradient of the global mean. Engines that AVERAGE gradients over the DP group (DDP, ZeRO)
must be given `loss * dims.dp_degree` (see `token_mean_loss`'s `dp_averaged`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from longvila.parallel.comm import world_sum
from longvila.parallel.dims import ParallelDims

IGNORE_INDEX = -100


def token_mean_loss(logits_SV: torch.Tensor, targets_S: torch.Tensor, dims: ParallelDims,
                    dp_averaged: bool = False, total: int | None = None,
                    head_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """(this rank's share of the global token-mean cross-entropy, the global supervised-token count).

    Args:
        logits_SV: [S_loc, V] this rank's logits; or its [S_loc, D] final hidden states when `head_weight`
            ([V, D], the LM head) is given: head and loss then run fused (`linear_cross_entropy`).
        targets_S: [S_loc] next-token targets (-100 = ignored), already shifted before sharding.
        dp_averaged: the engine averages gradients over DP ranks: scale by dp_degree to keep the exact mean.
        total: the global supervised-token count to divide by when the caller knows it (e.g. over a whole
            gradient-accumulation window); by default this call's count over the world (one all-reduce).
    Process group: the whole world (SP and DP) for the count.
    """
    if head_weight is not None:
        local_sum = linear_cross_entropy(logits_SV, head_weight, targets_S)
    else:
        local_sum = F.cross_entropy(logits_SV.float() if logits_SV.dtype in (torch.float16, torch.bfloat16)
                                    else logits_SV, targets_S, ignore_index=IGNORE_INDEX, reduction="sum")
    total = int(world_sum(int((targets_S != IGNORE_INDEX).sum()))) if total is None else total
    if total == 0:
        raise ValueError("no supervised token in the whole global batch (every label is -100); check the data")
    scale = dims.dp_degree if dp_averaged else 1
    return local_sum * scale / total, total


HEAD_CHUNK_ELEMENTS = 1 << 25          # logits computed at once (128 MiB in fp32; the planner's copy: plan/memory.py)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk_elements: int = HEAD_CHUNK_ELEMENTS) -> torch.Tensor:
    """sum over supervised tokens of cross_entropy(hidden @ weight.T, targets) (-100 = ignored), the same value
    and gradients as the two steps, without the [N, V] logits: tokens go through the head in chunks of
    `chunk_elements` logits, and each chunk's gradients (softmax - one-hot) are folded into dH and dW at once.
    Why: with Qwen2's 151,665-token vocabulary the logits dwarf everything else a small model computes, and
    log_softmax, its gradient and the autograd buffers pass over them five times (measured on the tiny CPU
    model: docs/LOG.md 2026-12-07). Softmax statistics in fp32 (fp64 for fp64 inputs); the matmuls in the
    hidden states' dtype (bf16 under autocast)."""
    return _LinearCrossEntropy.apply(hidden, weight, targets, chunk_elements)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_elements):
        acc = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(hidden.dtype)
            grad_h = torch.zeros_like(hidden) if hidden.requires_grad else None
            grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if weight.requires_grad else None
            total = torch.zeros((), dtype=acc, device=hidden.device)
            step = max(1, chunk_elements // max(1, weight.shape[0]))
            for start in range(0, hidden.shape[0], step):
                h, t = hidden[start:start + step], targets[start:start + step]
                keep = t != IGNORE_INDEX
                if not bool(keep.any()):
                    continue
                logits = (h @ w.T).to(acc)
                safe = t.clamp(min=0)
                picked = logits.gather(1, safe[:, None])[:, 0]
                top = logits.amax(dim=-1)
                g = logits.sub_(top[:, None]).exp_()                    # in place: one chunk of memory at a time
                del logits
                norm = g.sum(dim=-1)
                total += ((top + norm.log() - picked) * keep).sum()     # log-sum-exp - the target's logit
                if grad_h is None and grad_w is None:
                    del g
                    continue
                g.div_(norm[:, None])                                   # softmax
                g[torch.arange(len(t), device=t.device), safe] -= 1.0
                g *= keep[:, None].to(acc)
                g = g.to(hidden.dtype)
                if grad_h is not None:
                    grad_h[start:start + step] = g @ w
                if grad_w is not None and g.dtype == acc:
                    grad_w.addmm_(g.T, h)                                # no [V, D] temporary
                elif grad_w is not None:
                    grad_w += (g.T @ h).to(acc)
                del g                                                   # before the next chunk's logits
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        gh = None if grad_h is None else grad_h * grad_out.to(grad_h.dtype)
        gw = None if grad_w is None else (grad_w * grad_out).to(ctx.weight_dtype)
        return gh, gw, None, None
