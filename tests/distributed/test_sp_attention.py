"""Ulysses attention and the sequence gather on real gloo processes, against one process (fp64)."""

from __future__ import annotations

import pytest
import torch

from longvila.parallel import ParallelDims, gather_sequence, shard_sequence, sp_attention
from longvila.parallel.attention import attention_mask, math_attention
from tests.helpers.spawn import run_distributed

pytestmark = pytest.mark.distributed


def _reference(q, k, v, causal, cu):
    rep = q.shape[2] // k.shape[2]
    pos = torch.arange(q.shape[1])
    return math_attention(q, k.repeat_interleave(rep, 2), v.repeat_interleave(rep, 2),
                          attention_mask(pos, pos, causal, cu))


def _sp_case(rank, world, heads, kv_heads, causal, packed, layout, ring=1):
    from collections import Counter

    dims = ParallelDims(ulysses=world // ring, ring=ring, world_size=world).build()
    torch.manual_seed(0)
    b, s, d = 2, 8 * world, 4
    q = torch.randn(b, s, heads, d, dtype=torch.float64, requires_grad=True)
    k = torch.randn(b, s, kv_heads, d, dtype=torch.float64, requires_grad=True)
    v = torch.randn(b, s, kv_heads, d, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(b, s, heads, d, dtype=torch.float64)
    cu = torch.tensor([0, 3, s // 2 + 1, s]) if packed else None
    ref_out, ref_lse = _reference(q, k, v, causal, cu)
    (ref_out * grad_out).sum().backward()

    shard = lambda t, dim=1: shard_sequence(t.detach(), dims, dim=dim, layout=layout)
    ql, kl, vl = (shard(t).requires_grad_() for t in (q, k, v))
    stats = Counter()
    out, lse = sp_attention(ql, kl, vl, dims, causal=causal, cu_seqlens=cu, layout=layout, return_lse=True,
                            stats=stats)
    forward_calls, forward_p2p = stats["all_to_all.calls"], stats["p2p.calls"]
    (out * shard(grad_out)).sum().backward()
    errors = {"out": (out - shard(ref_out)).abs().max().item(), "lse": (lse - shard(ref_lse, 2)).abs().max().item()}
    for name, local, full in (("dq", ql, q), ("dk", kl, k), ("dv", vl, v)):
        errors[name] = (local.grad - shard(full.grad)).abs().max().item()
    errors["a2a_forward"], errors["a2a_backward"] = forward_calls, stats["all_to_all.calls"] - forward_calls
    errors["p2p_forward"], errors["p2p_backward"] = forward_p2p, stats["p2p.calls"] - forward_p2p
    return errors


@pytest.mark.parametrize("world, heads, kv_heads", [(1, 4, 2), (2, 4, 4), (2, 4, 2), (4, 4, 2), (4, 8, 1)],
                         ids=["w1-gqa", "w2-mha", "w2-gqa", "w4-replicated-kv", "w4-mqa"])
@pytest.mark.parametrize("causal, packed", [(True, False), (False, False), (True, True)],
                         ids=["causal", "full", "causal-packed"])
def test_ulysses_matches_one_process(world, heads, kv_heads, causal, packed):
    for r in run_distributed(_sp_case, world, heads, kv_heads, causal, packed, "zigzag"):
        assert max(r[k] for k in ("out", "lse", "dq", "dk", "dv")) < 1e-10, r
        # Ulysses: 4 all-to-alls forward (q, k, v, out) + 1 for the LSE asked for here; 4 backward (dout, dq, dk, dv)
        assert (r["a2a_forward"], r["a2a_backward"]) == ((0, 0) if world == 1 else (5, 4))


def _gather_case(rank, world, layout):
    dims = ParallelDims(ulysses=world, ring=1, world_size=world).build()
    torch.manual_seed(1)
    full = torch.randn(3, 4 * world, 2, dtype=torch.float64)
    local = shard_sequence(full, dims, layout=layout).requires_grad_()
    gathered = gather_sequence(local, dims, layout=layout)
    weights = torch.arange(full.numel(), dtype=torch.float64).reshape(full.shape) * (rank + 1)
    (gathered * weights).sum().backward()
    expected = torch.arange(full.numel(), dtype=torch.float64).reshape(full.shape) * sum(range(1, world + 1))
    return torch.equal(gathered, full), (local.grad - shard_sequence(expected, dims, layout=layout)).abs().max().item()


@pytest.mark.parametrize("layout", ["zigzag", "contiguous"])
@pytest.mark.parametrize("world", [2, 4])
def test_gather_sequence_is_exact_and_autograd_correct(world, layout):
    for same, grad_err in run_distributed(_gather_case, world, layout):
        assert same and grad_err == 0.0


@pytest.mark.parametrize("ulysses, ring, layout", [(1, 2, "zigzag"), (1, 4, "contiguous"), (1, 4, "zigzag"),
                                                   (2, 2, "zigzag"), (2, 2, "contiguous")],
                         ids=["ring2-zigzag", "ring4-contiguous", "ring4-zigzag", "2d-2x2-zigzag", "2d-2x2-contiguous"])
@pytest.mark.parametrize("causal, packed", [(True, False), (False, True), (True, True)],
                         ids=["causal", "full-packed", "causal-packed"])
def test_ring_and_2d_match_one_process(ulysses, ring, layout, causal, packed):
    world = ulysses * ring
    for r in run_distributed(_sp_case, world, 4, 2, causal, packed, layout, ring):
        assert max(r[k] for k in ("out", "lse", "dq", "dk", "dv")) < 1e-10, r
        # ring: K and V each travel R - 1 steps forward; dK and dV come back the same number of steps
        assert (r["p2p_forward"], r["p2p_backward"]) == (2 * (ring - 1), 2 * (ring - 1))
        assert r["a2a_forward"] == (5 if ulysses > 1 else 0)


@pytest.mark.slow
def test_2d_on_eight_ranks():
    for ulysses, ring in [(2, 4), (4, 2)]:
        for r in run_distributed(_sp_case, 8, 8, 4, True, True, "zigzag", ring):
            assert max(r[k] for k in ("out", "lse", "dq", "dk", "dv")) < 1e-10, (ulysses, ring, r)
