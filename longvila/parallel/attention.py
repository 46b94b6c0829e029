"""Sequence-parallel attention: `sp_attention` and the per-block `math` backend with log-sum-exp.

Shapes: B batch, S sequence (S_loc = local), H query heads, Hkv KV heads, D head dim.

One function covers every mode: Ulysses all-to-all inside the Ulysses group (head split, GQA), then ring
attention across the ring group (KV blocks travel, partial results merge by LSE): Ulysses-only (ring = 1),
ring-only (ulysses = 1) and 2D. Causal masks and packed samples (`cu_seqlens`, global boundaries) come from
global token positions, so every layout is exact. Backend built so far: `math` (any dtype, fp64 included).
"""

from __future__ import annotations

import math
from collections import Counter

import torch

from longvila.parallel.comm import all_to_all_4d
from longvila.parallel.dims import ParallelDims
from longvila.parallel.layout import local_indices
from longvila.parallel.ring import merge_partials, ring_shift

BACKENDS = ("auto", "math")


def attention_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, causal: bool,
                   cu_seqlens: torch.Tensor | None) -> torch.Tensor | None:
    """[Sq, Sk] bool, True where query i may attend key j (global positions; packed samples isolated)."""
    mask = None
    if causal:
        mask = k_pos[None, :] <= q_pos[:, None]
    if cu_seqlens is not None:
        cu = cu_seqlens.to(q_pos.device)
        if cu[0] != 0 or bool((cu[1:] <= cu[:-1]).any()):
            raise ValueError(f"cu_seqlens must start at 0 and increase strictly, got {cu.tolist()}")
        same = torch.bucketize(q_pos, cu[1:], right=True)[:, None] == torch.bucketize(k_pos, cu[1:], right=True)[None]
        mask = same if mask is None else mask & same
    return mask


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                   scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact attention with LSE. q [B,S,H,D], k/v [B,Sk,H,D] -> out [B,S,H,D], lse [B,H,S] (fp32 or fp64).

    Fully masked rows give out = 0 and lse = -inf.
    """
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    scores = torch.einsum("bshd,bthd->bhst", q.to(acc), k.to(acc)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)                                   # [B,H,S]
    probs = torch.exp(scores - lse.masked_fill(torch.isinf(lse), 0)[..., None])
    out = torch.einsum("bhst,bthd->bshd", probs, v.to(acc))
    return out.to(q.dtype), lse


def _kv_for_ulysses(k: torch.Tensor, ulysses: int) -> torch.Tensor:
    """Replicate KV heads when the Ulysses degree exceeds them (U % Hkv == 0), so each rank gets its group's."""
    hkv = k.shape[2]
    if ulysses > hkv:
        return k.repeat_interleave(ulysses // hkv, dim=2)
    return k


def sp_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dims: ParallelDims, *, causal: bool = True,
                 cu_seqlens: torch.Tensor | None = None, backend: str = "auto", layout: str = "zigzag",
                 scale: float | None = None, return_lse: bool = False, stats: Counter | None = None):
    """Attention over the SP group's sequence, from and to this rank's shard.

    Args:
        q: [B, S_loc, H, D]; k, v: [B, S_loc, Hkv, D], laid out by `shard_sequence(..., layout)`.
        dims: the topology (groups built, or world size 1).
        cu_seqlens: global boundaries of packed samples ([0, ..., S]); each sample attends only to itself.
        return_lse: also return this rank's LSE [B, H, S_loc] (fp32/fp64).
    Returns:
        out [B, S_loc, H, D] (and lse).
    Process groups: dims.group("ulysses") (all-to-all), dims.group("ring") (point-to-point).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; built: {BACKENDS}")
    dims.validate_heads(q.shape[2], k.shape[2])
    if dims.sp_degree > 1 and dims.group("sp") is None:
        raise ValueError(f"ParallelDims(ulysses={dims.ulysses}, ring={dims.ring}) has no process groups; call "
                         "dims.build() after init_process_group on every rank")
    group = dims.group("ulysses")
    # sequence-split -> head-split inside the Ulysses group: [B, S_loc, H, D] -> [B, U*S_loc, H/U, D]
    q_h = all_to_all_4d(q, group, scatter_dim=2, gather_dim=1, stats=stats)
    k_h = all_to_all_4d(_kv_for_ulysses(k, dims.ulysses), group, 2, 1, stats)
    v_h = all_to_all_4d(_kv_for_ulysses(v, dims.ulysses), group, 2, 1, stats)
    seq_len = q.shape[1] * dims.sp_degree
    if cu_seqlens is not None and int(cu_seqlens[-1]) != seq_len:
        raise ValueError(f"cu_seqlens ends at {int(cu_seqlens[-1])} but the sequence has {seq_len} tokens")
    out, lse = _ring_attention(q_h, k_h, v_h, dims, seq_len, causal, cu_seqlens, layout, scale, stats)
    out = all_to_all_4d(out, group, scatter_dim=1, gather_dim=2, stats=stats)       # back to sequence-split
    if not return_lse:
        return out
    lse = all_to_all_4d(lse.unsqueeze(-1), group, scatter_dim=2, gather_dim=1, stats=stats).squeeze(-1)
    return out, lse


def _group_positions(seq_len: int, dims: ParallelDims, ring_rank: int, layout: str, device) -> torch.Tensor:
    """Global positions of the tokens a Ulysses group holds after its all-to-all (its ranks' shards in order)."""
    if dims.sp_degree == 1:
        return torch.arange(seq_len, device=device)
    u = dims.ulysses
    return torch.cat([local_indices(seq_len, dims.sp_degree, ring_rank * u + i, layout) for i in range(u)]).to(device)


def _ring_attention(q, k, v, dims: ParallelDims, seq_len, causal, cu_seqlens, layout, scale, stats):
    """Head-split q/k/v [B, U*S_loc, H/U, D] of this ring rank -> (out, lse), over dims.group("ring")."""
    ring_rank = dims.axis_rank("ring")
    q_pos = _group_positions(seq_len, dims, ring_rank, layout, q.device)
    outs, lses = [], []
    for step in range(dims.ring):
        src = (ring_rank - step) % dims.ring           # whose KV block this rank holds at this step
        k_pos = _group_positions(seq_len, dims, src, layout, q.device)
        rep = q.shape[2] // k.shape[2]  # GQA: KV heads travel unexpanded, expand per block
        o, l = math_attention(q, k.repeat_interleave(rep, 2), v.repeat_interleave(rep, 2),
                              attention_mask(q_pos, k_pos, causal, cu_seqlens), scale)
        outs.append(o)
        lses.append(l)
        if step < dims.ring - 1:
            k, v = ring_shift(k, dims.group("ring"), stats), ring_shift(v, dims.group("ring"), stats)
    return merge_partials(outs, lses) if len(outs) > 1 else (outs[0], lses[0])
