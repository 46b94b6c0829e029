"""Ring attention over the ring group: KV blocks travel around the ring, partial results merge by LSE.

Shapes: B batch, S_q local queries, S_k keys of one block, H heads, D head dim.

Each step attends the local queries to the KV block currently held, then passes that block to the next rank
(`ring_shift`, point-to-point with batch_isend_irecv). The partial outputs merge exactly with their
log-sum-exps (fp32/fp64). Masks come from global token positions, so contiguous and zigzag layouts and
packed samples are all exact. The shift is an autograd function whose backward sends the gradient the
other way round the ring, so dK/dV return to the rank that owns the block.

Built for exactness first: the transfer of the next block is not yet overlapped with compute.
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.distributed as dist

from longvila.parallel.comm import _count, group_size


def _exchange(x: torch.Tensor, group, send_to: int, recv_from: int, stats) -> torch.Tensor:
    x = x.contiguous()
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    ops = [dist.P2POp(dist.isend, x, dist.get_global_rank(group, send_to), group),
           dist.P2POp(dist.irecv, out, dist.get_global_rank(group, recv_from), group)]
    for req in dist.batch_isend_irecv(ops):
        req.wait()
    _count(stats, "p2p", x.numel() * x.element_size())
    return out


class _RingShift(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, stats):
        ctx.group, ctx.stats = group, stats
        r, n = dist.get_rank(group), group_size(group)
        return _exchange(x, group, (r + 1) % n, (r - 1) % n, stats)

    @staticmethod
    def backward(ctx, grad):
        r, n = dist.get_rank(ctx.group), group_size(ctx.group)
        return _exchange(grad, ctx.group, (r - 1) % n, (r + 1) % n, ctx.stats), None, None


def ring_shift(x: torch.Tensor, group, stats: Counter | None = None) -> torch.Tensor:
    """Send `x` to the next rank of the ring and return the previous rank's (identity on one rank)."""
    if group_size(group) == 1:
        return x
    return _RingShift.apply(x, group, stats)


def merge_partials(outs: list[torch.Tensor], lses: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact merge of partial attention results. outs [B,S,H,D], lses [B,H,S] -> (out, lse).

    Rows masked in every block keep out = 0 and lse = -inf.
    """
    lse_all = torch.stack(lses)                                            # [n,B,H,S]
    lse = torch.logsumexp(lse_all, dim=0)
    safe = lse.masked_fill(torch.isinf(lse), 0.0)
    weights = torch.exp(lse_all - safe).nan_to_num(0.0)                    # [n,B,H,S]
    out = sum(w.permute(0, 2, 1).unsqueeze(-1) * o.to(w.dtype) for w, o in zip(weights, outs))
    return out.to(outs[0].dtype), lse
