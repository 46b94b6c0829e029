"""Sequence-parallel attention: `sp_attention`, one function for Ulysses, ring and 2D.

Shapes: B batch, S sequence (S_loc = local), H query heads, Hkv KV heads, D head dim.

Ulysses all-to-all inside the Ulysses group (sequence-split -> head-split; GQA, KV heads replicated when
U > Hkv), then ring attention across the ring group (KV blocks travel, partial results merge by LSE; see
ring.py), then the inverse all-to-all: Ulysses-only (ring = 1), ring-only (ulysses = 1) and 2D. With the zigzag
layout and U > 1 the pieces a Ulysses group receives are put in ascending position order first (one copy; the
inverse on the way back), so every ring block is one kernel call instead of up to seven small ones. Causal masks
and packed samples (`cu_seqlens`, global boundaries) come from global token positions, so every layout is
exact. Per-block kernels (picked in kernels.py): `math` (fp64-exact reference), `torch_cpu` (aten CPU flash op),
`flash_attn` (CUDA, flash.py); `auto` picks by device and dtype.
"""

from __future__ import annotations

from collections import Counter

import torch

from longvila.parallel.comm import all_to_all_4d
from longvila.parallel.dims import ParallelDims
from longvila.parallel.blocks import Block, attention_mask, check_cu_seqlens, default_scale
from longvila.parallel.kernels import KERNELS, get_kernel
from longvila.parallel.math_kernel import math_attention  # noqa: F401  (re-exported: the tests' reference)
from longvila.parallel.layout import infer_seq_len, local_indices, shard_lengths
from longvila.parallel.ring import ring_attention

BACKENDS = KERNELS
__all__ = ["BACKENDS", "attention_mask", "math_attention", "sp_attention"]


def _kv_for_ulysses(k: torch.Tensor, ulysses: int) -> torch.Tensor:
    """Replicate KV heads when the Ulysses degree exceeds them (U % Hkv == 0), so each rank gets its group's."""
    hkv = k.shape[2]
    if ulysses > hkv:
        return k.repeat_interleave(ulysses // hkv, dim=2)
    return k


def sp_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dims: ParallelDims, *, causal: bool = True,
                 cu_seqlens: torch.Tensor | None = None, backend: str = "auto", layout: str | None = None,
                 scale: float | None = None, seq_len: int | None = None, return_lse: bool = False,
                 stats: Counter | None = None):
    """Attention over the SP group's sequence, from and to this rank's shard.

    Args:
        q: [B, S_loc, H, D]; k, v: [B, S_loc, Hkv, D], laid out by `shard_sequence(..., dims)`.
        dims: the topology (groups built, or world size 1) and the layout (`dims.layout`; a `layout` given
            must equal it).
        cu_seqlens: global boundaries of packed samples ([0, ..., S]); each sample attends only to itself.
        backend: "auto", "math", "torch_cpu" or "flash_attn" (the per-block kernel).
        seq_len: global sequence length. Default: S_loc x P for zigzag (shards are always equal); for the
            contiguous layout the local lengths are all-gathered (8 bytes per rank) so that uneven shards
            are sized right on every rank; pass it to skip that exchange.
        return_lse: also return this rank's LSE [B, H, S_loc] (fp32/fp64; it carries no gradient).
    Returns:
        out [B, S_loc, H, D] (and lse).
    Process groups: dims.group("ulysses") (all-to-all), dims.group("ring") (point-to-point).
    """
    kernel = get_kernel(backend, q)
    layout = dims.check_layout(layout)
    dims.validate_heads(q.shape[2], k.shape[2])
    if dims.sp_degree > 1 and dims.group("sp") is None:
        raise ValueError(f"ParallelDims(ulysses={dims.ulysses}, ring={dims.ring}) has no process groups; call "
                         "dims.build() after init_process_group on every rank")
    if seq_len is None:
        seq_len = infer_seq_len(q.shape[1], dims)
    if seq_len < dims.sp_degree:
        raise ValueError(f"a {seq_len}-token sequence cannot be split over {dims.sp_degree} SP ranks; "
                         "give every rank at least one token (pad, or use a smaller SP degree)")
    lengths = shard_lengths(seq_len, dims.sp_degree, layout)
    if q.shape[1] != lengths[dims.axis_rank("sp")]:
        raise ValueError(f"SP rank {dims.axis_rank('sp')} holds {q.shape[1]} tokens, but a {seq_len}-token sequence "
                         f"gives it {lengths[dims.axis_rank('sp')]} ({layout}); pass seq_len= for uneven shards")
    if cu_seqlens is not None:
        check_cu_seqlens(cu_seqlens)
        if int(cu_seqlens[-1]) != seq_len:
            raise ValueError(f"cu_seqlens ends at {int(cu_seqlens[-1])} but the sequence has {seq_len} tokens")
        cu_seqlens = cu_seqlens.cpu()
    group, u = dims.group("ulysses"), dims.ulysses
    ring_rank = dims.axis_rank("ring")
    peers = lengths[ring_rank * u:(ring_rank + 1) * u]          # shard lengths inside this Ulysses group
    even = len(set(lengths)) == 1
    a2a = lambda x: all_to_all_4d(x, group, 2, 1, stats, gather_sizes=None if even else peers)
    # sequence-split -> head-split inside the Ulysses group: [B, S_loc, H, D] -> [B, sum(peers), H/U, D]
    q_h, k_h, v_h = a2a(q), a2a(_kv_for_ulysses(k, u)), a2a(_kv_for_ulysses(v, u))
    scale = default_scale(q, scale)
    cu_key = None if cu_seqlens is None else tuple(int(x) for x in cu_seqlens)
    order = dims.memo(("sp_order", seq_len, ring_rank, layout), lambda: _arrival_order(seq_len, dims, ring_rank, layout))
    if order is not None:                     # zigzag, U > 1: the group's pieces in ascending position order
        q_h, k_h, v_h = (_Pieces.apply(x, 1, order) for x in (q_h, k_h, v_h))
    blocks = dims.memo(("sp_blocks", seq_len, ring_rank, causal, cu_key, scale),
                       lambda: _blocks(seq_len, dims.ulysses, dims.ring, ring_rank, layout, causal, cu_key, scale))
    out, lse = ring_attention(q_h, k_h, v_h, kernel, blocks, dims.group("ring"), stats)
    if order is not None:
        inverse = _inverse(order)
        out, lse = _Pieces.apply(out, 1, inverse), None if not return_lse else _take(lse, 2, inverse)
    back = lambda x, dim: all_to_all_4d(x, group, dim, 2 if dim == 1 else 1, stats,
                                        scatter_sizes=None if even else peers)
    out = back(out, 1)                                                    # back to sequence-split
    if not return_lse:
        return out
    return out, back(lse.unsqueeze(-1), 2).squeeze(-1)


def _inverse(order: tuple[int, ...]) -> tuple[int, ...]:
    """The order that undoes `order` (`_take(_take(x, d, order), d, _inverse(order))` is x)."""
    return tuple(sorted(range(len(order)), key=order.__getitem__))


def _take(x: torch.Tensor, dim: int, order: tuple[int, ...]) -> torch.Tensor:
    """`x` cut into len(order) equal pieces along `dim`, concatenated as piece order[0], order[1], ..."""
    pieces = x.chunk(len(order), dim)
    return torch.cat([pieces[j] for j in order], dim)


class _Pieces(torch.autograd.Function):
    """`_take` with its inverse as the backward (one copy each way; no zero-filled gradient buffers)."""

    @staticmethod
    def forward(ctx, x, dim, order):
        ctx.dim, ctx.inverse = dim, _inverse(order)
        return _take(x, dim, order)

    @staticmethod
    def backward(ctx, grad):
        return _take(grad, ctx.dim, ctx.inverse), None, None


def _arrival_order(seq_len: int, dims: ParallelDims, ring_rank: int, layout: str) -> tuple[int, ...] | None:
    """The piece order that makes a Ulysses group's gathered sequence ascending (TransformerEngine's reorder
    after the all-to-all), or None when it already is. Zigzag with U > 1 only: each of the U ranks brings two
    chunks (g, 2P-1-g); in arrival order they interleave early and late chunks (0, 7, 1, 6 at 2x2), which
    cuts every causal block into more, smaller kernel calls. Ascending, they are the ring's zigzag pair
    (r, 2R-1-r) of a 2R-chunk split: at most two runs (one for R = 1)."""
    if layout != "zigzag" or dims.ulysses == 1 or dims.sp_degree == 1:
        return None
    starts = _arrived(seq_len, dims, ring_rank, layout)[:: seq_len // (2 * dims.sp_degree)].tolist()  # 2U chunks
    order = tuple(sorted(range(len(starts)), key=starts.__getitem__))
    return None if order == tuple(range(len(order))) else order


def _blocks(seq_len, ulysses, ring, ring_rank, layout, causal, cu_key, scale) -> tuple[Block, ...]:
    """The ring steps' blocks of one layout. `sp_attention` memoises them on the caller's `ParallelDims`
    (`dims.memo`): every layer and step of a run reuses them, with their varlen plans and device index
    tensors, instead of planning (and syncing the device) per call; they go when the dims object goes."""
    dims = ParallelDims(ulysses=ulysses, ring=ring, layout=layout)
    cu = None if cu_key is None else torch.tensor(cu_key)
    q_pos = _group_positions(seq_len, dims, ring_rank, layout)
    return tuple(Block(q_pos, _group_positions(seq_len, dims, (ring_rank - t) % ring, layout), causal, cu, scale)
                 for t in range(ring))


def _group_positions(seq_len: int, dims: ParallelDims, ring_rank: int, layout: str) -> torch.Tensor:
    """Global positions of the tokens a Ulysses group attends with, after its all-to-all and the reorder of
    `_arrival_order`: ascending in every layout."""
    return _arrived(seq_len, dims, ring_rank, layout).sort().values


def _arrived(seq_len: int, dims: ParallelDims, ring_rank: int, layout: str) -> torch.Tensor:
    """Global positions of a Ulysses group's tokens as its all-to-all delivers them (its ranks' shards in order)."""
    if dims.sp_degree == 1:
        return torch.arange(seq_len)
    u = dims.ulysses
    return torch.cat([local_indices(seq_len, dims.sp_degree, ring_rank * u + i, layout) for i in range(u)])
