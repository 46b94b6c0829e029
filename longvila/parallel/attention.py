"""Sequence-parallel attention: `sp_attention` and the per-block `math` backend with log-sum-exp.

Shapes: B batch, S sequence (S_loc = local), H query heads, Hkv KV heads, D head dim.

Built so far: world size 1 and Ulysses (all-to-all) over the SP group, with GQA, causal masks and packed
samples (`cu_seqlens`, global boundaries), on the exact `math` backend (any dtype, fp64 included). Ring and
2D (ring > 1) are the next step of the MM-SP work; asking for them raises a ValueError that says so.
"""

from __future__ import annotations

import math
from collections import Counter

import torch

from longvila.parallel.comm import all_to_all_4d
from longvila.parallel.dims import ParallelDims
from longvila.parallel.layout import global_positions

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


def _kv_for_ulysses(k: torch.Tensor, num_heads: int, ulysses: int) -> torch.Tensor:
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
    Process groups: dims.group("ulysses") (all-to-all).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; built: {BACKENDS}")
    if dims.ring > 1:
        raise ValueError("ring and 2D attention (ring > 1) are not built yet; use ring=1 (Ulysses) for now")
    num_heads, num_kv = q.shape[2], k.shape[2]
    dims.validate_heads(num_heads, num_kv)
    group = dims.group("ulysses")
    # sequence-split -> head-split: [B, S_loc, H, D] -> [B, S, H/U, D], tokens in SP-rank order
    q_full = all_to_all_4d(q, group, scatter_dim=2, gather_dim=1, stats=stats)
    k_full = all_to_all_4d(_kv_for_ulysses(k, num_heads, dims.ulysses), group, 2, 1, stats)
    v_full = all_to_all_4d(_kv_for_ulysses(v, num_heads, dims.ulysses), group, 2, 1, stats)
    rep = q_full.shape[2] // k_full.shape[2]
    k_full, v_full = k_full.repeat_interleave(rep, dim=2), v_full.repeat_interleave(rep, dim=2)
    seq_len = q_full.shape[1]
    pos = global_positions(seq_len, dims.sp_degree, layout).to(q.device) if dims.sp_degree > 1 else \
        torch.arange(seq_len, device=q.device)
    if cu_seqlens is not None and int(cu_seqlens[-1]) != seq_len:
        raise ValueError(f"cu_seqlens ends at {int(cu_seqlens[-1])} but the sequence has {seq_len} tokens")
    out, lse = math_attention(q_full, k_full, v_full, attention_mask(pos, pos, causal, cu_seqlens), scale)
    out = all_to_all_4d(out, group, scatter_dim=1, gather_dim=2, stats=stats)       # back to sequence-split
    if not return_lse:
        return out
    lse = all_to_all_4d(lse.unsqueeze(-1), group, scatter_dim=2, gather_dim=1, stats=stats).squeeze(-1)
    return out, lse
