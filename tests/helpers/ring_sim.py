"""Single-process simulation of MM-SP attention (U x R ranks) with any block kernel, forward and backward.

Uses the product's pieces (layout, `Block`, `merge_into`, the kernels' forward/backward) in the order the
ring runs them, without process groups: for every simulated ring rank, its Ulysses group's queries meet every
ring rank's KV block; the merged (out, lse) then drive every block's backward, and dK/dV are summed at the
block's owner. The Ulysses head split does not change the arithmetic, so heads stay whole here.
Used on GPU (flash kernel, one device) and checked on CPU against one-process attention.
"""

from __future__ import annotations

import torch

from longvila.parallel.blocks import Block, acc_dtype, empty_result, merge_into
from longvila.parallel.layout import local_indices


def group_positions(seq_len: int, ulysses: int, ring: int, ring_rank: int, layout: str) -> torch.Tensor:
    p = ulysses * ring
    return torch.cat([local_indices(seq_len, p, ring_rank * ulysses + i, layout) for i in range(ulysses)])


def simulate(q, k, v, dout, kernel, *, ulysses: int, ring: int, layout: str = "zigzag", causal: bool = True,
             cu_seqlens=None, scale: float | None = None):
    """Full-sequence q [B,S,H,D], k/v [B,S,Hkv,D], dout [B,S,H,D] -> out, dq, dk, dv in full-sequence order."""
    s = q.shape[1]
    scale = scale if scale is not None else q.shape[-1] ** -0.5
    pos = [group_positions(s, ulysses, ring, r, layout) for r in range(ring)]
    take = lambda t, r: t[:, pos[r].to(t.device)]
    acc = acc_dtype(q.dtype)
    out, dq = torch.zeros_like(q), torch.zeros(q.shape, dtype=acc, device=q.device)
    dk, dv = (torch.zeros(t.shape, dtype=acc, device=t.device) for t in (k, v))
    for r in range(ring):
        blocks = [Block(pos[r], pos[(r - t) % ring], causal, cu_seqlens, scale) for t in range(ring)]
        q_r, o_acc, lse = take(q, r), None, None
        for t, block in enumerate(blocks):
            src = (r - t) % ring
            o, l = empty_result(q_r) if block.empty() else kernel.forward(q_r, take(k, src), take(v, src), block)
            o_acc, lse = merge_into(o_acc, lse, o, l)
        o_r = o_acc.to(q.dtype)
        out[:, pos[r].to(q.device)] = o_r
        for t, block in enumerate(blocks):
            if block.empty():
                continue
            src = (r - t) % ring
            gq, gk, gv = kernel.backward(take(dout, r), q_r, take(k, src), take(v, src), o_r, lse, block)
            dq[:, pos[r].to(q.device)] += gq
            dk[:, pos[src].to(q.device)] += gk
            dv[:, pos[src].to(q.device)] += gv
    return out, dq, dk, dv
