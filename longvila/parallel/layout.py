"""Where each token lives: the one definition of the sequence layouts (`shard_sequence` / `gather_sequence`).

Layouts over the SP degree P = ulysses x ring (SP rank s = ring_rank * ulysses + ulysses_rank):
  contiguous  the sequence in P equal chunks; rank s holds chunk s.
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
    parts = 2 * sp_degree if layout == "zigzag" else sp_degree
    if seq_len % parts:
        raise ValueError(f"sequence length {seq_len} is not divisible by {parts} ({layout} over {sp_degree} ranks); "
                         f"pad it to a multiple of {parts} with ignored tokens")
    c = seq_len // parts
    chunks = [sp_rank, 2 * sp_degree - 1 - sp_rank] if layout == "zigzag" else [sp_rank]
    return torch.cat([torch.arange(i * c, (i + 1) * c) for i in chunks])


def global_positions(seq_len: int, sp_degree: int, layout: str = "zigzag") -> torch.Tensor:
    """Global index of each token of the SP-rank-ordered concatenation of all local shards."""
    return torch.cat([local_indices(seq_len, sp_degree, r, layout) for r in range(sp_degree)])


def shard_sequence(x: torch.Tensor, dims: ParallelDims, dim: int = 1, layout: str = "zigzag") -> torch.Tensor:
    """This rank's part of the full sequence `x` (same on every SP rank), along `dim`."""
    idx = local_indices(x.shape[dim], dims.sp_degree, dims.axis_rank("sp"), layout).to(x.device)
    return x.index_select(dim, idx)


def gather_sequence(x_local: torch.Tensor, dims: ParallelDims, dim: int = 1, layout: str = "zigzag",
                    stats: Counter | None = None) -> torch.Tensor:
    """The full sequence on every SP rank from the local shards (autograd: gradients flow back to the
    shard that each token came from, summed over the ranks that used it)."""
    gathered = gather_along(x_local, dims.group("sp"), dim, stats)
    seq_len = x_local.shape[dim] * dims.sp_degree
    order = torch.argsort(global_positions(seq_len, dims.sp_degree, layout)).to(x_local.device)
    return gathered.index_select(dim, order)
