"""Where each token lives: the one definition of the sequence layouts (`shard_sequence` / `gather_sequence`).

Layouts over the SP degree P = ulysses x ring (SP rank s = ring_rank * ulysses + ulysses_rank):
  contiguous  the sequence in P chunks; rank s holds chunk s. Any length: when P does not divide it, the first
              S mod P ranks hold one token more (uneven shards; sp_attention and gather_sequence infer the
              global length with a tiny all-gather unless given `seq_len=`). At least one token per rank.
  zigzag      the sequence in 2P equal chunks; rank s holds chunks s and 2P - 1 - s (TransformerEngine's
              global dual-chunk split). Causal work is balanced: every rank gets one early and one late chunk.
The layout is a property of the topology (`ParallelDims.layout`): `shard_sequence`, `gather_sequence`,
`sp_attention` and everything above them read it from `dims`, so a shard can never meet an attention built
for another layout. The data loader shards with the same function whatever the U x R split; attention
kernels recover global positions with `global_positions`.
"""

from __future__ import annotations

from collections import Counter

import torch

from longvila.parallel.comm import gather_along
from longvila.parallel.dims import LAYOUTS, ParallelDims


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


def infer_seq_len(local_len: int, dims: ParallelDims, layout: str | None = None) -> int:
    """The global length from this rank's shard: x P for zigzag (equal shards); for contiguous, the sum of
    every rank's length (a tiny all-gather over the SP group, not counted as payload), so that uneven shards
    give the same answer on every rank."""
    if dims.sp_degree == 1 or dims.check_layout(layout) == "zigzag":
        return local_len * dims.sp_degree
    import torch.distributed as dist

    from longvila.parallel.comm import collective_device

    mine = torch.tensor([local_len], dtype=torch.int64, device=collective_device())
    parts = [torch.zeros_like(mine) for _ in range(dims.sp_degree)]
    dist.all_gather(parts, mine, group=dims.group("sp"))
    return int(torch.cat(parts).sum())


def shard_lengths(seq_len: int, sp_degree: int, layout: str = "zigzag") -> list[int]:
    """Number of tokens each SP rank holds."""
    return [len(local_indices(seq_len, sp_degree, r, layout)) for r in range(sp_degree)]


def global_positions(seq_len: int, sp_degree: int, layout: str = "zigzag") -> torch.Tensor:
    """Global index of each token of the SP-rank-ordered concatenation of all local shards."""
    return torch.cat([local_indices(seq_len, sp_degree, r, layout) for r in range(sp_degree)])


def shard_sequence(x: torch.Tensor, dims: ParallelDims, dim: int = 1, layout: str | None = None) -> torch.Tensor:
    """This rank's part of the full sequence `x` (same on every SP rank), along `dim`, in `dims.layout`
    (`layout`, if given, must equal it)."""
    layout = dims.check_layout(layout)
    idx = local_indices(x.shape[dim], dims.sp_degree, dims.axis_rank("sp"), layout).to(x.device)
    return x.index_select(dim, idx)


def gather_sequence(x_local: torch.Tensor, dims: ParallelDims, dim: int = 1, layout: str | None = None,
                    stats: Counter | None = None, seq_len: int | None = None) -> torch.Tensor:
    """The full sequence on every SP rank from the local shards (autograd: gradients flow back to the
    shard that each token came from, summed over the ranks that used it).

    `seq_len`: the global length (default: inferred, see `infer_seq_len`).
    """
    p, layout = dims.sp_degree, dims.check_layout(layout)
    seq_len = infer_seq_len(x_local.shape[dim], dims) if seq_len is None else seq_len
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
