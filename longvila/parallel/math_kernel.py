"""The `math` block kernel: explicit einsum attention with LSE, any dtype (fp64 for exactness proofs), any mask.

Shapes: B batch, S queries, Sk keys, H query heads, Hkv KV heads (GQA: H % Hkv == 0), D head dim.

It materialises the [Sq, Sk] scores, so it is the reference, not the fast path: `math_attention` is
differentiable by autograd (the tests' single-process reference), and `MathKernel` implements the block-kernel
interface of kernels.py, with the backward written out against the MERGED out/LSE as ring attention needs.
"""

from __future__ import annotations

import torch

from longvila.parallel.blocks import Block, acc_dtype, default_scale


def _expand(k: torch.Tensor, heads: int) -> torch.Tensor:
    return k.repeat_interleave(heads // k.shape[2], dim=2) if k.shape[2] != heads else k


def _reduce_heads(dk: torch.Tensor, kv_heads: int) -> torch.Tensor:
    b, s, h, d = dk.shape
    return dk.view(b, s, kv_heads, h // kv_heads, d).sum(3) if h != kv_heads else dk


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                   scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact attention with LSE. q [B,S,H,D], k/v [B,Sk,Hkv,D] -> out [B,S,H,D], lse [B,H,S] (fp32 or fp64).

    Fully masked rows give out = 0 and lse = -inf. Differentiable by autograd (the reference of the tests).
    """
    scale = default_scale(q, scale)
    acc = acc_dtype(q.dtype)
    k, v = _expand(k, q.shape[2]), _expand(v, q.shape[2])
    scores = torch.einsum("bshd,bthd->bhst", q.to(acc), k.to(acc)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)                                   # [B,H,S]
    probs = torch.exp(scores - lse.masked_fill(torch.isinf(lse), 0)[..., None])
    out = torch.einsum("bhst,bthd->bshd", probs, v.to(acc))
    return out.to(q.dtype), lse


class MathKernel:
    """Explicit einsum attention: any dtype (fp64 for exactness proofs), any mask."""

    name = "math"

    def forward(self, q, k, v, block: Block):
        return math_attention(q, k, v, block.mask(q.device), block.scale)

    def backward(self, dout, q, k, v, out, lse, block: Block):
        acc = acc_dtype(q.dtype)
        h, hkv = q.shape[2], k.shape[2]
        qa, ka, va = q.to(acc), _expand(k, h).to(acc), _expand(v, h).to(acc)
        scores = torch.einsum("bshd,bthd->bhst", qa, ka) * block.scale
        mask = block.mask(q.device)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = torch.exp(scores - lse.to(acc).masked_fill(torch.isinf(lse), 0)[..., None])
        do = dout.to(acc)
        dv = torch.einsum("bhst,bshd->bthd", probs, do)
        dp = torch.einsum("bshd,bthd->bhst", do, va)
        delta = (do * out.to(acc)).sum(-1).transpose(1, 2)                # [B,H,S]
        ds = probs * (dp - delta[..., None])
        dq = torch.einsum("bhst,bthd->bshd", ds, ka) * block.scale
        dk = torch.einsum("bhst,bshd->bthd", ds, qa) * block.scale
        return dq, _reduce_heads(dk, hkv), _reduce_heads(dv, hkv)
