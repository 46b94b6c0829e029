"""benchmarks/peers.py's stand-in kernel for yunchang (the aten CPU flash op behind yunchang's flash-attn contract)
equals torch's SDPA, and is what yunchang's kernel selection returns; the fp32 fix still applies to the pinned
yunchang. Skipped without yunchang (pip install -e .[peers])."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import REPO

pytest.importorskip("yunchang", reason="yunchang is not installed (pip install -e .[peers])")
_spec = importlib.util.spec_from_file_location("peers_impls", REPO / "benchmarks" / "peers_impls.py")
P = sys.modules.setdefault("peers_impls", importlib.util.module_from_spec(_spec))   # dataclasses look it up
_spec.loader.exec_module(P)


@pytest.mark.parametrize("kv_heads,causal", [(4, True), (2, True), (4, False)])
def test_standin_equals_sdpa(kv_heads, causal):
    torch.manual_seed(0)
    q = torch.randn(1, 24, 4, 16, requires_grad=True)                 # [B, S, H, D], yunchang's layout
    k, v = (torch.randn(1, 24, kv_heads, 16, requires_grad=True) for _ in range(2))
    dout = torch.randn(1, 24, 4, 16)
    bhsd = lambda x: x.transpose(1, 2)
    ref = bhsd(F.scaled_dot_product_attention(bhsd(q), bhsd(k), bhsd(v), is_causal=causal, enable_gqa=True))
    ref.backward(dout)
    scores = (bhsd(q) @ bhsd(k).repeat_interleave(4 // kv_heads, 1).transpose(-1, -2)) / 4.0
    if causal:
        scores = scores.masked_fill(torch.ones(24, 24, dtype=torch.bool).triu(1), float("-inf"))

    out, lse = P.yunchang_standin_fwd(q, k, v, 0.0, None, causal=causal)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse, scores.logsumexp(-1), atol=1e-5, rtol=1e-5)   # [B, H, S], flash-attn's
    bufs = [torch.empty_like(t) for t in (q, k, v)]
    P.yunchang_standin_bwd(dout, q, k, v, out, lse, *bufs, 0.0, None, causal)
    for buf, t in zip(bufs, (q, k, v)):
        torch.testing.assert_close(buf, t.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(P.yunchang_standin_attn(q, k, v, causal=causal), ref, atol=1e-5, rtol=1e-5)


def test_yunchang_selects_the_standin_and_the_fix_applies():
    from yunchang.kernels import AttnType
    from yunchang.ring import zigzag_ring_flash_attn as zigzag

    P.install_yunchang_standin()
    assert zigzag.select_flash_attn_impl(AttnType.TORCH_FLASH, stage="bwd-only") is P.yunchang_standin_bwd
    shipped = zigzag.zigzag_ring_flash_attn_backward
    try:
        P.yunchang_fp32_fixes(True)                                   # raises if the pinned source changed
        assert zigzag.zigzag_ring_flash_attn_backward is not shipped
    finally:
        P.yunchang_fp32_fixes(False)
    assert zigzag.zigzag_ring_flash_attn_backward is shipped
