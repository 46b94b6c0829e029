"""Where each token lives: the one definition of the sequence layouts (`shard_sequence` / `gather_sequence`).

Layouts over the SP degree P = ulysses x ring (SP rank s = ring_rank * ulysses + ulysses_rank):
  contiguous  the sequence in P chunks; rank s holds chunk s. Any length: when P does not divide it, the first
              S mod P ranks hold one token more (uneven shards; pass `seq_len=` to sp_attention).
  zigzag      the sequence in 2P equal chunks; rank s holds chunks s and 2P - 1 - s (TransformerEngine's
              global dual-chunk split). Causal work is balanced: every rank gets one early and one late chunk.
The data loader shards with the same function whatever the U x R split; attention kernels recover global
positions with `global_positions`.
"""

from __future__ import annotations

from collections import Counter

import torch

from longvila.parallel.comm import gather_along
from longvila.parallel.dims import ParallelDims

LAYOUTS = ("zigzag", "contiguous")


def local_indices(seq_len: int, sp_degree: int, sp_rank: int, layout: str = "zigzag") -> torch.Tensor:
    """Global token indices held by `sp_rank`, in local order."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; use one of {LAYOUTS}")
    if sp_degree == 1:                              # one rank holds everything, in order (any length)
        return torch.arange(seq_len)
    if layout == "contiguous":
        base, extra = divmod(seq_len, sp_degree)
        start = sp_rank * base + min(sp_rank, extra)
        return torch.arange(start, start + base + (sp_rank < extra))
    parts = 2 * sp_degree
    if seq_len % parts:
        raise ValueError(f"sequence length {seq_len} is not divisible by {parts} ({layout} over {sp_degree} ranks); "
                         f"pad it to a multiple of {parts} with ignored tokens, or use layout='contiguous'")
    c = seq_len // parts
    return torch.cat([torch.arange(i * c, (i + 1) * c) for i in (sp_rank, parts - 1 - sp_rank)])


def shard_lengths(seq_len: int, sp_degree: int, layout: str = "zigzag") -> list[int]:
    """Number of tokens each SP rank holds."""
    return [len(local_indices(seq_len, sp_degree, r, layout)) for r in range(sp_degree)]


def global_positions(seq_len: int, sp_degree: int, layout: str = "zigzag") -> torch.Tensor:
    """Global index of each token of the SP-rank-ordered concatenation of all local shards."""
    return torch.cat([local_indices(seq_len, sp_degree, r, layout) for r in range(sp_degree)])


def shard_sequence(x: torch.Tensor, dims: ParallelDims, dim: int = 1, layout: str = "zigzag") -> torch.Tensor:
    """This rank's part of the full sequence `x` (same on every SP rank), along `dim`."""
    idx = local_indices(x.shape[dim], dims.sp_degree, dims.axis_rank("sp"), layout).to(x.device)
    return x.index_select(dim, idx)


def gather_sequence(x_local: torch.Tensor, dims: ParallelDims, dim: int = 1, layout: str = "zigzag",
                    stats: Counter | None = None, seq_len: int | None = None) -> torch.Tensor:
    """The full sequence on every SP rank from the local shards (autograd: gradients flow back to the
    shard that each token came from, summed over the ranks that used it).

    `seq_len`: the global length, needed for uneven contiguous shards (default: local length x P).
    """
    p = dims.sp_degree
    seq_len = x_local.shape[dim] * p if seq_len is None else seq_len
    lengths = shard_lengths(seq_len, p, layout)
    if x_local.shape[dim] != lengths[dims.axis_rank("sp")]:
        raise ValueError(f"SP rank {dims.axis_rank('sp')} holds {x_local.shape[dim]} tokens, but a {seq_len}-token "
                         f"sequence gives it {lengths[dims.axis_rank('sp')]} ({layout}); pass seq_len=")
    width = max(lengths)
    if x_local.shape[dim] < width:                  # uneven: pad to the widest shard, gather, drop the padding
        pad_shape = list(x_local.shape)
        pad_shape[dim] = width - x_local.shape[dim]
        x_local = torch.cat([x_local, x_local.new_zeros(pad_shape)], dim=dim)
    gathered = gather_along(x_local, dims.group("sp"), dim, stats)
    rows = torch.cat([torch.arange(r * width, r * width + n) for r, n in enumerate(lengths)])
    order = rows[torch.argsort(global_positions(seq_len, p, layout))].to(x_local.device)
    return gathered.index_select(dim, order)
