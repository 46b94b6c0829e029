"""Autograd-correct collectives over an explicit process group; each is the identity on a group of size 1.

    gather_along(x, group, dim)          all-gather; backward: sum the gradient over the group, keep own slice
    all_to_all_4d(x, group, scatter, gather)   Ulysses' re-shard (e.g. sequence-split -> head-split); backward:
                                         the inverse all-to-all
Every call is counted (calls and bytes sent by this rank) in the `stats` dict it is given, for the tests and
the communication benchmark.
"""

from __future__ import annotations

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
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        rank = dist.get_rank(ctx.group)
        return grad.chunk(group_size(ctx.group), dim=ctx.dim)[rank].contiguous(), None, None, None


def gather_along(x: torch.Tensor, group, dim: int, stats: Counter | None = None) -> torch.Tensor:
    """Concatenate every rank's `x` along `dim` (same shape on all ranks), with the correct backward."""
    if group_size(group) == 1:
        return x
    return _Gather.apply(x, group, dim, stats)


def _a2a(x: torch.Tensor, group, scatter_dim: int, gather_dim: int, stats) -> torch.Tensor:
    world = group_size(group)
    inputs = [t.contiguous() for t in x.chunk(world, dim=scatter_dim)]
    outputs = [torch.empty_like(inputs[0]) for _ in range(world)]
    dist.all_to_all(outputs, inputs, group=group)
    _count(stats, "all_to_all", inputs[0].numel() * inputs[0].element_size() * (world - 1))
    return torch.cat(outputs, dim=gather_dim)


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, scatter_dim, gather_dim, stats):
        ctx.args = (group, scatter_dim, gather_dim, stats)
        return _a2a(x, group, scatter_dim, gather_dim, stats)

    @staticmethod
    def backward(ctx, grad):
        group, scatter_dim, gather_dim, stats = ctx.args
        return _a2a(grad, group, gather_dim, scatter_dim, stats), None, None, None, None


def all_to_all_4d(x: torch.Tensor, group, scatter_dim: int, gather_dim: int,
                  stats: Counter | None = None) -> torch.Tensor:
    """Split `x` into group-size chunks along `scatter_dim`, send chunk j to rank j, and concatenate what is
    received along `gather_dim` (in rank order). `scatter_dim`'s size must divide by the group size."""
    world = group_size(group)
    if world == 1:
        return x
    if x.shape[scatter_dim] % world:
        raise ValueError(f"all-to-all over {world} ranks needs dim {scatter_dim} (size {x.shape[scatter_dim]}) "
                         f"divisible by {world}")
    return _AllToAll.apply(x, group, scatter_dim, gather_dim, stats)
