"""Autograd-correct collectives over an explicit process group; each is the identity on a group of size 1.

    gather_along(x, group, dim)          all-gather; backward: sum the gradient over the group, keep own slice
    all_to_all_4d(x, group, scatter, gather)   Ulysses' re-shard (e.g. sequence-split -> head-split), even or
                                         with per-rank sizes; backward: the inverse all-to-all
Every call is counted (calls and bytes sent by this rank) in the `stats` dict it is given, for the tests and
the communication benchmark.
"""

from __future__ import annotations

import math
from collections import Counter

import torch
import torch.distributed as dist


def group_size(group) -> int:
    return 1 if group is None else dist.get_world_size(group)


def _count(stats: Counter | None, op: str, nbytes: int) -> None:
    if stats is not None:
        stats[f"{op}.calls"] += 1
        stats[f"{op}.bytes"] += nbytes


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, dim, stats):
        ctx.group, ctx.dim = group, dim
        parts = [torch.empty_like(x) for _ in range(group_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        _count(stats, "all_gather", x.numel() * x.element_size() * (len(parts) - 1))
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()          # all_reduce is in place: never touch autograd's buffer
        dist.all_reduce(grad, group=ctx.group)
        rank = dist.get_rank(ctx.group)
        return grad.chunk(group_size(ctx.group), dim=ctx.dim)[rank].contiguous(), None, None, None


def gather_along(x: torch.Tensor, group, dim: int, stats: Counter | None = None) -> torch.Tensor:
    """Concatenate every rank's `x` along `dim` (same shape on all ranks), with the correct backward."""
    if group_size(group) == 1:
        return x
    return _Gather.apply(x, group, dim, stats)


def _split(x: torch.Tensor, dim: int, world: int, sizes: list[int] | None) -> list[torch.Tensor]:
    parts = x.split(sizes, dim=dim) if sizes is not None else x.chunk(world, dim=dim)
    return [t.contiguous() for t in parts]


def _a2a_even(x: torch.Tensor, group, scatter_dim: int, gather_dim: int, stats) -> torch.Tensor:
    """Equal chunks: the send buffer is `x` with the chunk index moved first (a copy only where the chunks are
    not already contiguous: none for the sequence dim at batch 1), the receive buffer is the output with the
    rank index moved first (a view: a copy only where the ranks' parts interleave, e.g. heads)."""
    world = group_size(group)
    send = x.unflatten(scatter_dim, (world, -1)).movedim(scatter_dim, 0).contiguous()
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)
    _count(stats, "all_to_all", send.numel() * send.element_size() * (world - 1) // world)
    return recv.movedim(0, gather_dim).flatten(gather_dim, gather_dim + 1)


def _a2a(x: torch.Tensor, group, scatter_dim: int, gather_dim: int, stats, scatter_sizes=None,
         gather_sizes=None) -> torch.Tensor:
    if scatter_sizes is None and gather_sizes is None:
        return _a2a_even(x, group, scatter_dim, gather_dim, stats)
    world, me = group_size(group), dist.get_rank(group)
    inputs = _split(x, scatter_dim, world, scatter_sizes)
    shapes = []
    for i in range(world):
        shape = list(inputs[me].shape)
        if gather_sizes is not None:
            shape[gather_dim] = gather_sizes[i]
        shapes.append(shape)
    # one flat all_to_all_single with split sizes: gloo's list form refuses chunks of different shapes
    out_numels = [math.prod(shape) for shape in shapes]
    flat_out = x.new_empty(sum(out_numels))
    dist.all_to_all_single(flat_out, torch.cat([t.reshape(-1) for t in inputs]), output_split_sizes=out_numels,
                           input_split_sizes=[t.numel() for t in inputs], group=group)
    _count(stats, "all_to_all", sum(t.numel() * t.element_size() for i, t in enumerate(inputs) if i != me))
    outputs = [part.view(shape) for part, shape in zip(flat_out.split(out_numels), shapes)]
    return torch.cat(outputs, dim=gather_dim)


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, scatter_dim, gather_dim, stats, scatter_sizes, gather_sizes):
        ctx.args = (group, scatter_dim, gather_dim, stats, scatter_sizes, gather_sizes)
        # detach: the result may be a view of the receive buffer; as a plain tensor it can be modified in place
        return _a2a(x, group, scatter_dim, gather_dim, stats, scatter_sizes, gather_sizes).detach()

    @staticmethod
    def backward(ctx, grad):
        group, scatter_dim, gather_dim, stats, scatter_sizes, gather_sizes = ctx.args
        return _a2a(grad, group, gather_dim, scatter_dim, stats, gather_sizes, scatter_sizes), *([None] * 6)


def all_to_all_4d(x: torch.Tensor, group, scatter_dim: int, gather_dim: int, stats: Counter | None = None,
                  scatter_sizes: list[int] | None = None, gather_sizes: list[int] | None = None) -> torch.Tensor:
    """Split `x` into group-size chunks along `scatter_dim`, send chunk j to rank j, and concatenate what is
    received along `gather_dim` (in rank order).

    Even by default (`scatter_dim`'s size must divide by the group size); uneven with `scatter_sizes` (the
    size of the chunk for each rank) and `gather_sizes` (the size along `gather_dim` that each rank sends),
    e.g. Ulysses over uneven sequence shards.
    """
    world = group_size(group)
    if world == 1:
        return x
    if scatter_sizes is None and x.shape[scatter_dim] % world:
        raise ValueError(f"all-to-all over {world} ranks needs dim {scatter_dim} (size {x.shape[scatter_dim]}) "
                         f"divisible by {world}")
    if scatter_sizes is not None and sum(scatter_sizes) != x.shape[scatter_dim]:
        raise ValueError(f"scatter_sizes {scatter_sizes} do not add up to dim {scatter_dim}'s size {x.shape[scatter_dim]}")
    return _AllToAll.apply(x, group, scatter_dim, gather_dim, stats, scatter_sizes, gather_sizes)


def collective_device() -> torch.device:
    """Where small bookkeeping tensors (counts, logged values) must live for a collective: the current CUDA
    device under NCCL, the CPU under gloo or without a process group."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def world_sum(value: float, group=None) -> float:
    """The sum of a per-rank number over `group` (default: the world) in float64; the value itself without a
    process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=collective_device())
    dist.all_reduce(t, group=group)
    return float(t.item())
