"""Block kernels on CPU: math / torch_cpu against autograd, and the flash_attn kernel's varlen decomposition.

The flash kernel's plan (query segments -> varlen sequences, bottom-right causal) and its forward/backward
assembly are checked here by running the planned varlen calls through an exact CPU executor; the CUDA
kernels themselves are checked in tests/gpu.
"""

from __future__ import annotations

import pytest
import torch

from longvila.parallel.flash import FlashKernel, pad_lse, split_forward_result, unpad_lse
from longvila.parallel.varlen import plan_block
from longvila.parallel.cpu import TorchCpuKernel
from longvila.parallel.blocks import Block, attention_mask
from longvila.parallel.kernels import get_kernel
from longvila.parallel.math_kernel import MathKernel, math_attention
from longvila.parallel.dims import ParallelDims
from longvila.parallel.layout import local_indices


def _group_pos(seq_len, ulysses, ring, ring_rank, layout):
    p = ulysses * ring
    return torch.cat([local_indices(seq_len, p, ring_rank * ulysses + i, layout) for i in range(ulysses)])


def _blocks(seq_len=48, ulysses=2, ring=3, layout="zigzag", causal=True, packed=True):
    cu = torch.tensor([0, 5, 29, seq_len]) if packed else None
    for r in range(ring):
        for src in range(ring):
            yield Block(_group_pos(seq_len, ulysses, ring, r, layout), _group_pos(seq_len, ulysses, ring, src, layout),
                        causal, cu, 0.35)


class _CpuVarlen:
    """Runs a VarlenCall exactly on CPU: per sequence, bottom-right-aligned causal mask (flash-attn's rule)."""

    @staticmethod
    def _mask(c):
        lq, lk = (c.cu_q[1:] - c.cu_q[:-1]).tolist(), (c.cu_k[1:] - c.cu_k[:-1]).tolist()
        mask = torch.zeros(sum(lq), sum(lk), dtype=torch.bool)
        for i, (a, b) in enumerate(zip(lq, lk)):
            qa, ka = int(c.cu_q[i]), int(c.cu_k[i])
            block = torch.ones(a, b, dtype=torch.bool)
            if c.causal:
                block = torch.arange(b)[None] <= torch.arange(a)[:, None] + (b - a)
            mask[qa:qa + a, ka:ka + b] = block
        return mask

    def forward(self, q, k, v, c, scale):
        out, lse = math_attention(q[None], k[None], v[None], self._mask(c), scale)
        return out[0], lse[0]

    def backward(self, dout, q, k, v, out, lse, c, scale):
        block = Block(torch.zeros(0), torch.zeros(0), False, None, scale)
        block._cache[("mask", "cpu")] = self._mask(c)
        dq, dk, dv = MathKernel().backward(dout[None], q[None], k[None], v[None], out[None], lse[None], block)
        return dq[0], dk[0], dv[0]


def _flash_on_cpu() -> FlashKernel:
    kernel = object.__new__(FlashKernel)       # bypass the CUDA check: the executor above stands in for CUDA
    kernel.impl = _CpuVarlen()
    return kernel


def _data(sq, sk, heads=4, kv_heads=2, dtype=torch.float64):
    torch.manual_seed(0)
    return (torch.randn(2, sq, heads, 8, dtype=dtype), torch.randn(2, sk, kv_heads, 8, dtype=dtype),
            torch.randn(2, sk, kv_heads, 8, dtype=dtype))


@pytest.mark.parametrize("layout", ["zigzag", "contiguous"])
@pytest.mark.parametrize("ulysses, ring", [(1, 4), (2, 3), (4, 1)])
@pytest.mark.parametrize("causal, packed", [(True, False), (True, True), (False, True)])
def test_flash_plan_reproduces_the_mask(layout, ulysses, ring, causal, packed):
    for block in _blocks(48, ulysses, ring, layout, causal, packed):
        calls = plan_block(block, batch=1)
        covered = torch.zeros(len(block.q_pos), len(block.k_pos), dtype=torch.bool)
        for c in calls:
            m = _CpuVarlen._mask(c)
            qi, ki = c.q_idx[:, None].expand_as(m)[m], c.k_idx[None].expand_as(m)[m]
            assert not covered[qi, ki].any()                       # no (query, key) pair computed twice
            covered[qi, ki] = True
            assert len(set(c.q_idx.tolist())) == len(c.q_idx)      # a query row appears once per call
        want = attention_mask(block.q_pos, block.k_pos, causal, block.cu_seqlens)
        assert torch.equal(covered, want if want is not None else torch.ones_like(covered))
        assert len(calls) <= 2


@pytest.mark.parametrize("kernel_name", ["math", "torch_cpu", "flash_on_cpu"])
def test_kernels_match_autograd_on_every_block(kernel_name):
    kernel = _flash_on_cpu() if kernel_name == "flash_on_cpu" else get_kernel(kernel_name, torch.zeros(1))
    for block in _blocks(48, 2, 3, "zigzag", True, True):
        q, k, v = _data(len(block.q_pos), len(block.k_pos))
        mask = attention_mask(block.q_pos, block.k_pos, True, block.cu_seqlens)
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        ref_out, ref_lse = math_attention(*leaves, mask, block.scale)
        dout = torch.randn_like(ref_out)
        (ref_out * dout).sum().backward()
        out, lse = kernel.forward(q, k, v, block)
        assert torch.allclose(out, ref_out, atol=1e-12) and torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
        assert torch.allclose(lse[~torch.isinf(lse)], ref_lse[~torch.isinf(ref_lse)], atol=1e-12)
        if torch.isinf(lse).all():
            continue
        # the block's own out/lse are the "merged" ones when the block is the whole ring
        grads = kernel.backward(dout, q, k, v, ref_out.detach(), ref_lse, block)
        for got, leaf in zip(grads, leaves):
            assert torch.allclose(got, leaf.grad, atol=1e-11), kernel_name


def test_torch_cpu_kernel_reports_empty_rows_as_minus_inf():
    block = Block(torch.tensor([0, 1, 5, 6]), torch.tensor([2, 3]), True, None, 0.5)   # rows 0, 1 see nothing
    q, k, v = _data(4, 2)
    out, lse = TorchCpuKernel().forward(q, k, v, block)
    assert torch.isneginf(lse[..., :2]).all() and not torch.isinf(lse[..., 2:]).any()
    assert (out[:, :2] == 0).all()


def test_flash_lse_conventions():
    cu = torch.tensor([0, 3, 4, 9])
    packed = torch.randn(2, 9)                                        # [H, total_q] (flash-attn >= 2.x varlen)
    padded = pad_lse(packed, cu, max_q=5)                             # [N, H, max_q] (older releases)
    assert padded.shape == (3, 2, 5) and torch.equal(padded[1, :, :1], packed[:, 3:4])
    assert torch.equal(unpad_lse(padded, cu), packed) and unpad_lse(packed, cu) is packed
    out, lse, rng = torch.zeros(1), torch.ones(1), torch.full((1,), 7)
    assert split_forward_result((out, lse, None, rng)) == (out, lse, rng)                       # >= 2.7
    assert split_forward_result((out, None, None, None, None, lse, None, rng)) == (out, lse, rng)  # < 2.7
    with pytest.raises(ValueError, match="unrecognised flash-attn forward result of 3 items"):
        split_forward_result((out, lse, rng))


def test_backend_choice_and_refusals():
    assert get_kernel("auto", torch.zeros(1, dtype=torch.float64)).name == "math"
    assert get_kernel("auto", torch.zeros(1)).name == "torch_cpu"
    with pytest.raises(ValueError, match="unknown attention backend 'xformers'"):
        get_kernel("xformers", torch.zeros(1))
    with pytest.raises(ValueError, match="backend='flash_attn' needs fp16/bf16 CUDA tensors"):
        get_kernel("flash_attn", torch.zeros(1))
    straddle = Block(torch.arange(4, 8), torch.arange(2, 6), True, None, 1.0)
    with pytest.raises(ValueError, match="straddles"):
        plan_block(straddle, 1)


@pytest.mark.parametrize("ulysses, ring, layout", [(1, 4, "zigzag"), (2, 2, "zigzag"), (1, 3, "contiguous")])
def test_ring_simulation_matches_one_process(ulysses, ring, layout):
    """The single-process simulator that the GPU tests run on the flash kernel is itself exact (fp64)."""
    from tests.helpers.ring_sim import simulate

    s = 8 * ulysses * ring
    q, k, v = _data(s, s)
    q, k, v = (t[:1] for t in (q, k, v))
    dout = torch.randn_like(q)
    cu = torch.tensor([0, 7, s // 2 + 1, s])
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    pos = torch.arange(s)
    ref, _ = math_attention(*leaves, attention_mask(pos, pos, True, cu))
    (ref * dout).sum().backward()
    for kernel in (MathKernel(), TorchCpuKernel(), _flash_on_cpu()):
        out, dq, dk, dv = simulate(q, k, v, dout, kernel, ulysses=ulysses, ring=ring, layout=layout, cu_seqlens=cu)
        assert torch.allclose(out, ref, atol=1e-12), kernel
        for got, leaf in zip((dq, dk, dv), leaves):
            assert torch.allclose(got, leaf.grad, atol=1e-11), kernel


@pytest.mark.parametrize("causal", [True, False])
def test_block_emptiness_from_runs_equals_the_mask(causal):
    """`Block.empty()` decides from runs of positions (no mask, no varlen plan); it must agree with the mask on
    any positions: zigzag chunks, straddling runs no layout makes, packed samples, empty sides."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        n = int(torch.randint(1, 24, (1,), generator=gen))
        num_cuts = int(torch.randint(0, 3, (1,), generator=gen)) if n > 1 else 0
        cuts = sorted(set(torch.randint(1, max(n, 2), (num_cuts,), generator=gen).tolist()))
        cu = torch.tensor([0, *cuts, n]) if cuts else None
        pick = lambda: torch.randperm(n, generator=gen)[: int(torch.randint(0, n + 1, (1,), generator=gen))].sort().values
        q_pos, k_pos = pick(), pick()
        block = Block(q_pos, k_pos, causal, cu, 1.0)
        m = attention_mask(q_pos, k_pos, causal, cu)
        seen = bool(m.any()) if m is not None else (len(q_pos) > 0 and len(k_pos) > 0)
        assert block.empty() == (not seen), (q_pos.tolist(), k_pos.tolist(), cu)


def test_torch_cpu_pieces_are_exact_on_any_positions():
    """The CPU kernel calls its op on views of (query run, key run) pieces; on any positions (shuffled, runs
    straddling each other, packed samples, rows that see nothing, queries = keys, GQA, batch 2) it matches the
    masked math attention, forward and backward, in fp64; a contiguous causal block and a zigzag rank's own
    block are one op call each."""
    from longvila.parallel.cpu import plan_pieces

    threads = torch.get_num_threads()
    torch.set_num_threads(1)             # ~1000 op calls on tiny blocks: thread start-up would dominate
    try:
        _check_pieces_on_random_blocks(TorchCpuKernel(), torch.Generator().manual_seed(0), 200)
    finally:
        torch.set_num_threads(threads)
    assert plan_pieces(Block(torch.arange(8, 16), torch.arange(16), True, None, 1.0)) == [
        (slice(0, 8), slice(0, 8), False), (slice(0, 8), slice(8, 16), True)]
    assert plan_pieces(Block(torch.arange(16), torch.arange(16), True, None, 1.0)) == [
        (slice(0, 16), slice(0, 16), True)]
    own = local_indices(32, 4, 1, "zigzag")                        # chunks 1 and 6 of 8
    assert plan_pieces(Block(own, own, True, None, 1.0)) == [(slice(0, 8), slice(0, 8), True)]


def test_ulysses_group_is_reordered_to_ascending_runs():
    """Zigzag with U > 1: a Ulysses group's pieces arrive interleaved (chunks 0, 7, 1, 6 of 8 at 2x2); they are
    reordered to ascending positions (TransformerEngine's reorder), so the group's blocks are the ring's zigzag
    pair: every block of the ring, own or cross, is one op call (the whole sequence at 4x1). In arrival order
    ring rank 0's own block needed 7."""
    from longvila.parallel.attention import _arrival_order, _take
    from longvila.parallel.attention import _blocks as group_blocks
    from longvila.parallel.cpu import plan_pieces

    dims = ParallelDims(ulysses=2, ring=2)
    assert _arrival_order(32, dims, 0, "zigzag") == (0, 2, 3, 1)       # arrived 0, 7, 1, 6 -> 0, 1, 6, 7
    assert _arrival_order(32, dims, 1, "zigzag") == (0, 2, 3, 1)       # arrived 2, 5, 3, 4 -> 2, 3, 4, 5
    assert _arrival_order(32, dims, 0, "contiguous") is None
    assert _arrival_order(32, ParallelDims(ulysses=1, ring=4), 0, "zigzag") is None
    arrived = _group_pos(32, 2, 2, 0, "zigzag")
    assert torch.equal(_take(arrived, 0, (0, 2, 3, 1)), arrived.sort().values)
    assert len(plan_pieces(Block(arrived, arrived, True, None, 1.0))) == 7
    blocks = [group_blocks(32, 2, 2, r, "zigzag", True, None, 1.0) for r in range(2)]
    assert [[len(plan_pieces(b)) for b in bs] for bs in blocks] == [[1, 1], [1, 1]]
    assert torch.equal(blocks[0][0].q_pos, torch.cat([torch.arange(8), torch.arange(24, 32)]))
    whole = group_blocks(32, 4, 1, 0, "zigzag", True, None, 1.0)[0]      # 4x1: the whole sequence, one call
    assert torch.equal(whole.q_pos, torch.arange(32)) and len(plan_pieces(whole)) == 1


def _check_pieces_on_random_blocks(kernel, gen, count):
    from longvila.parallel.cpu import plan_pieces

    for it in range(count):
        n = int(torch.randint(1, 24, (1,), generator=gen))
        num_cuts = int(torch.randint(0, 3, (1,), generator=gen)) if n > 1 else 0
        cuts = sorted(set(torch.randint(1, max(n, 2), (num_cuts,), generator=gen).tolist()))
        cu = torch.tensor([0, *cuts, n]) if cuts else None
        pick = lambda: torch.randperm(n, generator=gen)[: int(torch.randint(1, n + 1, (1,), generator=gen))].sort().values
        q_pos, k_pos = pick(), pick()
        if it % 2:
            q_pos = q_pos[torch.randperm(len(q_pos), generator=gen)]
        if it % 5 < 2:                                   # a rank's own block: the same positions (sorted or not)
            k_pos = q_pos.clone()
        block = Block(q_pos, k_pos, bool(it % 3), cu, 0.4)
        q, k, v = (torch.randn(2, len(p), h, 8, dtype=torch.float64, generator=gen)
                   for p, h in ((q_pos, 4), (k_pos, 2), (k_pos, 2)))
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        ref_out, ref_lse = math_attention(*leaves, attention_mask(q_pos, k_pos, block.causal, cu), 0.4)
        dout = torch.randn(ref_out.shape, dtype=torch.float64, generator=gen)
        (ref_out * dout).sum().backward()
        out, lse = kernel.forward(q, k, v, block)
        seen = ~torch.isinf(ref_lse)
        assert torch.equal(~torch.isinf(lse), seen) and torch.allclose(out, ref_out, atol=1e-12)
        assert torch.allclose(lse[seen], ref_lse[seen], atol=1e-12)
        grads = kernel.backward(dout, q, k, v, ref_out.detach(), ref_lse, block)
        for got, leaf in zip(grads, leaves):
            assert torch.allclose(got, leaf.grad, atol=1e-11), (it, q_pos, k_pos, cu, plan_pieces(block))
