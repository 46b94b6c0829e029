"""GPU: the flash_attn block kernel inside ring / zigzag / Ulysses attention, bf16, against fp32 attention.

Runs on one GPU: `sp_attention` at world size 1 (the autograd ring function with one block) and the
single-process simulation of U x R ranks (tests/helpers/ring_sim.py), which drives the kernel through exactly
the blocks, merges and block backwards that each rank runs. Tolerances are TransformerEngine's for bf16
context parallelism: 2.5e-2 (MHA), 3.5e-2 (GQA), atol and rtol. Run with `pytest -m gpu tests/gpu`.
"""

from __future__ import annotations

import pytest
import torch

from longvila.parallel import ParallelDims, sp_attention
from longvila.parallel.flash import FlashKernel
from longvila.parallel.blocks import attention_mask
from longvila.parallel.kernels import get_kernel
from longvila.parallel.math_kernel import math_attention
from tests.helpers.ring_sim import simulate

pytestmark = pytest.mark.gpu
DEV = "cuda"


def _inputs(seq_len, heads, kv_heads, head_dim=64, batch=1):
    torch.manual_seed(0)
    q = torch.randn(batch, seq_len, heads, head_dim, device=DEV, dtype=torch.bfloat16)
    k = torch.randn(batch, seq_len, kv_heads, head_dim, device=DEV, dtype=torch.bfloat16)
    v = torch.randn(batch, seq_len, kv_heads, head_dim, device=DEV, dtype=torch.bfloat16)
    return q, k, v, torch.randn_like(q)


def _reference(q, k, v, dout, causal, cu):
    leaves = [t.float().requires_grad_() for t in (q, k, v)]
    pos = torch.arange(q.shape[1], device=DEV)
    mask = attention_mask(pos, pos, causal, None if cu is None else cu.to(DEV))
    out, _ = math_attention(*leaves, mask)
    (out * dout.float()).sum().backward()
    return out.detach(), [t.grad for t in leaves]


def _close(got, want, tol, what):
    torch.testing.assert_close(got.float(), want, atol=tol, rtol=tol, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("heads, kv_heads", [(8, 8), (8, 2)], ids=["mha", "gqa"])
@pytest.mark.parametrize("ulysses, ring, layout", [(1, 1, "zigzag"), (1, 4, "zigzag"), (1, 4, "contiguous"),
                                                   (2, 4, "zigzag"), (4, 2, "zigzag")],
                         ids=["single", "ring4-zigzag", "ring4-contiguous", "2d-2x4", "2d-4x2"])
@pytest.mark.parametrize("causal, packed", [(True, False), (True, True), (False, True)],
                         ids=["causal", "causal-packed", "full-packed"])
def test_flash_kernel_in_simulated_ring(heads, kv_heads, ulysses, ring, layout, causal, packed):
    seq_len = 2048
    q, k, v, dout = _inputs(seq_len, heads, kv_heads)
    cu = torch.tensor([0, 300, 1100, 1101, seq_len]) if packed else None
    ref_out, ref_grads = _reference(q, k, v, dout, causal, cu)
    out, dq, dk, dv = simulate(q, k, v, dout, get_kernel("flash_attn", q), ulysses=ulysses, ring=ring,
                               layout=layout, causal=causal, cu_seqlens=cu)
    tol = 2.5e-2 if heads == kv_heads else 3.5e-2
    for name, got, want in (("out", out, ref_out), ("dq", dq, ref_grads[0]), ("dk", dk, ref_grads[1]),
                            ("dv", dv, ref_grads[2])):
        _close(got, want, tol, name)


@pytest.mark.parametrize("packed", [False, True])
def test_sp_attention_flash_backend_world_one(packed):
    q, k, v, dout = _inputs(1024, 8, 2, batch=2)
    cu = torch.tensor([0, 100, 700, 1024]) if packed else None
    ref_out, ref_grads = _reference(q, k, v, dout, True, cu)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = sp_attention(*leaves, ParallelDims(world_size=1), cu_seqlens=cu, backend="auto")
    (out * dout).sum().backward()
    _close(out, ref_out, 3.5e-2, "out")
    for name, leaf, want in zip(("dq", "dk", "dv"), leaves, ref_grads):
        _close(leaf.grad, want, 3.5e-2, name)


def test_auto_backend_on_cuda():
    q = torch.zeros(1, 8, 2, 64, device=DEV, dtype=torch.bfloat16)
    assert isinstance(get_kernel("auto", q), FlashKernel)
    assert get_kernel("auto", q.float()).name == "math"
