"""Ring attention over the ring group: KV blocks travel around the ring, partial results merge by LSE.

Shapes: B batch, S_q local queries, S_k keys of one block, H heads (Hkv for K/V), D head dim.

Forward, R ranks: at step t a rank holds the KV block of ring rank (r - t) mod R. Before computing on it, the
rank already posts the transfer of that block to the next rank (`batch_isend_irecv`, double-buffered: the
received block lands in a second buffer), so the transfer overlaps the block's attention. Partial outputs
merge exactly through their log-sum-exps in fp32 (fp64 for fp64 inputs); rows that see no key in a block
(LSE -inf) get weight 0.

Backward, explicit (no kernel offers a gradient w.r.t. its LSE): every block's backward uses the final output
and LSE; dQ accumulates locally; K/V travel the ring again (overlapped the same way), and the dK/dV of each
block travel WITH it, one step behind, so that after R steps each block's gradient is back at its owner:
forward R-1 K/V transfers, backward R-1 K/V transfers + R dK/dV transfers (fp32 accumulators).

Blocks may have different lengths (uneven contiguous layouts): every rank knows every block's positions, so
the receive buffers have the sender's shape.
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.distributed as dist

from longvila.parallel.comm import _count, group_size
from longvila.parallel.blocks import Block, acc_dtype, empty_result, merge_into


class _Transfer:
    """Tensors sent to the next ring rank while the previous rank's arrive (posted now, waited on later)."""

    def __init__(self, tensors, group, recv_len: int, stats: Counter | None) -> None:
        r, n = dist.get_rank(group), group_size(group)
        nxt, prv = dist.get_global_rank(group, (r + 1) % n), dist.get_global_rank(group, (r - 1) % n)
        self.out, ops = [], []
        for t in tensors:
            t = t.contiguous()
            recv = t.new_empty((t.shape[0], recv_len, *t.shape[2:]))
            ops += [dist.P2POp(dist.isend, t, nxt, group), dist.P2POp(dist.irecv, recv, prv, group)]
            self.out.append(recv)
            _count(stats, "p2p", t.numel() * t.element_size())
        self.reqs = dist.batch_isend_irecv(ops)

    def wait(self) -> list[torch.Tensor]:
        """The received tensors; what was sent (held by the requests until now) is let go."""
        for req in self.reqs:
            req.wait()
        self.reqs = []
        return self.out


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, kernel, blocks, group, stats):
        n = len(blocks)
        if n == 1:                                       # no ring: the kernel's own output, no merge or casts
            out, lse = empty_result(q) if blocks[0].empty() else kernel.forward(q, k, v, blocks[0])
        else:
            out = lse = None
            cur = [k, v]
            for step, block in enumerate(blocks):
                nxt = _Transfer(cur, group, len(blocks[step + 1].k_pos), stats) if step < n - 1 else None
                o, l = empty_result(q) if block.empty() else kernel.forward(q, cur[0], cur[1], block)
                out, lse = merge_into(out, lse, o, l)
                del o, l                                 # merged: not alive during the next block's kernel
                if nxt is not None:
                    cur = nxt.wait()
            out = out.to(q.dtype)
        out, lse = out.detach(), lse.detach()            # plain tensors, not views of the kernel's buffers
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.kernel, ctx.blocks, ctx.group, ctx.stats = kernel, blocks, group, stats
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse = ctx.saved_tensors
        blocks, n = ctx.blocks, len(ctx.blocks)
        if n == 1:
            if blocks[0].empty():
                return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v), None, None, None, None
            dq, dk, dv = ctx.kernel.backward(dout, q, k, v, out, lse, blocks[0])
            return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None
        acc = acc_dtype(q.dtype)
        dq = None
        cur, grads = [k, v], None
        for step, block in enumerate(blocks):
            nxt = _Transfer(cur, ctx.group, len(blocks[step + 1].k_pos), ctx.stats) if step < n - 1 else None
            if block.empty():
                dkv = [torch.zeros(t.shape, dtype=acc, device=t.device) for t in cur]
            else:                                        # the kernel's gradients are fresh: accumulate in place
                dq_b, *dkv = (g.to(acc) for g in ctx.kernel.backward(dout, q, cur[0], cur[1], out, lse, block))
                dq = dq_b if dq is None else dq.add_(dq_b)
                del dq_b
            if grads is not None:                        # this block's dK/dV so far, from the previous rank
                dkv = [d.add_(d_in) for d, d_in in zip(dkv, grads.wait())]
            # pass it on (no name here keeps it); after R steps it is back at its owner
            grads = _Transfer(dkv, ctx.group, len(blocks[(step + 1) % n].k_pos), ctx.stats)
            del dkv
            if nxt is not None:
                cur = nxt.wait()
        dk, dv = grads.wait()
        dq = torch.zeros_like(q) if dq is None else dq
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None


def ring_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel, blocks: list[Block], group,
                   stats: Counter | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of local q over the KV blocks of the whole ring -> (out [B,S_q,H,D], lse [B,H,S_q]).

    `blocks[t]` describes step t: this rank's queries against the block of ring rank (r - t) mod R.
    The LSE output carries no gradient.
    """
    if len(blocks) != group_size(group):
        raise ValueError(f"{len(blocks)} blocks for a ring of {group_size(group)} ranks")
    return _RingAttention.apply(q, k, v, kernel, blocks, group, stats)
