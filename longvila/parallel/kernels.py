"""Per-block attention kernels behind one interface: forward gives (out, LSE); backward takes the MERGED out/LSE.

Shapes: B batch, Sq queries / Sk keys of one block, H query heads, Hkv KV heads (GQA: H % Hkv == 0), D head dim.

    kernel.forward(q, k, v, block)                    -> out [B,Sq,H,D] (q's dtype), lse [B,H,Sq] (fp32/fp64)
    kernel.backward(dout, q, k, v, out, lse, block)   -> dq [B,Sq,H,D], dk/dv [B,Sk,Hkv,D] (fp32/fp64)

Ring attention needs exactly this pair: each block's forward is merged by LSE, and each block's backward is
computed with the final (merged) output and LSE, which makes the block gradients sum to the exact gradient
(softmax probabilities exp(s - lse_global), delta = rowsum(dout * out_global)). No kernel needs a gradient
w.r.t. its own LSE, which the CPU and flash kernels do not offer.

LSE conventions are normalised here: rows with no visible key have lse = -inf and out = 0 (the aten CPU kernel
returns lse = 0 for them, flash-attn +inf).

Kernels: `math` (explicit einsum, any dtype incl. fp64, arbitrary masks; materialises [Sq, Sk] scores),
`torch_cpu` (the aten CPU flash-attention op with LSE and its backward, cpu.py) and `flash_attn` (CUDA,
flash.py); the last two never build a mask: blocks are planned into varlen calls (plan.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

KERNELS = ("auto", "math", "torch_cpu", "flash_attn")


@dataclass
class Block:
    """One (queries x keys) block, described by global token positions (CPU int64 tensors).

    Visibility: key j is visible to query i when (not causal or k_pos[j] <= q_pos[i]) and both lie in the same
    packed sample (`cu_seqlens`, global boundaries [0, ..., S]).
    """

    q_pos: torch.Tensor
    k_pos: torch.Tensor
    causal: bool
    cu_seqlens: torch.Tensor | None
    scale: float
    _cache: dict = field(default_factory=dict, repr=False)

    def mask(self, device) -> torch.Tensor | None:
        """[Sq, Sk] bool visibility (None: everything visible)."""
        key = ("mask", str(device))
        if key not in self._cache:
            self._cache[key] = attention_mask(self.q_pos, self.k_pos, self.causal, self.cu_seqlens)
            if self._cache[key] is not None:
                self._cache[key] = self._cache[key].to(device)
        return self._cache[key]

    def empty(self) -> bool:
        """True when no query sees any key (the kernel is skipped). Decided from the segment plan: no mask."""
        if "empty" not in self._cache:
            if len(self.q_pos) == 0 or len(self.k_pos) == 0:
                self._cache["empty"] = True
            elif self.causal and int(self.k_pos.min()) > int(self.q_pos.max()):
                self._cache["empty"] = True
            else:
                from longvila.parallel.plan import plan_block
                try:
                    self._cache["empty"] = not plan_block(self, 1)
                except ValueError:                   # runs that no shard_sequence layout makes: ask the mask
                    m = self.mask("cpu")
                    self._cache["empty"] = m is not None and not bool(m.any())
        return self._cache["empty"]


def attention_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, causal: bool,
                   cu_seqlens: torch.Tensor | None) -> torch.Tensor | None:
    """[Sq, Sk] bool, True where query i may attend key j (global positions; packed samples isolated)."""
    mask = None
    if causal:
        mask = k_pos[None, :] <= q_pos[:, None]
    if cu_seqlens is not None:
        cu = cu_seqlens.to(q_pos.device)
        check_cu_seqlens(cu)
        same = torch.bucketize(q_pos, cu[1:], right=True)[:, None] == torch.bucketize(k_pos, cu[1:], right=True)[None]
        mask = same if mask is None else mask & same
    return mask


def check_cu_seqlens(cu: torch.Tensor) -> None:
    if cu.ndim != 1 or len(cu) < 2 or cu[0] != 0 or bool((cu[1:] <= cu[:-1]).any()):
        raise ValueError(f"cu_seqlens must start at 0 and increase strictly (1-D, at least [0, S]), got {cu.tolist()}")


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def empty_result(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b, s, h, _ = q.shape
    return torch.zeros_like(q), torch.full((b, h, s), float("-inf"), dtype=acc_dtype(q.dtype), device=q.device)


def _expand(k: torch.Tensor, heads: int) -> torch.Tensor:
    return k.repeat_interleave(heads // k.shape[2], dim=2) if k.shape[2] != heads else k


def _reduce_heads(dk: torch.Tensor, kv_heads: int) -> torch.Tensor:
    b, s, h, d = dk.shape
    return dk.view(b, s, kv_heads, h // kv_heads, d).sum(3) if h != kv_heads else dk


def default_scale(q: torch.Tensor, scale: float | None) -> float:
    return scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])


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


def get_kernel(name: str, q: torch.Tensor):
    """The kernel object for `name` ("auto": flash_attn on CUDA with fp16/bf16, torch_cpu on CPU for
    fp32/bf16, math otherwise)."""
    if name not in KERNELS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {KERNELS}")
    if name == "auto":
        if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
            name = "flash_attn"
        elif q.device.type == "cpu" and q.dtype in (torch.float32, torch.bfloat16):
            name = "torch_cpu"
        else:
            name = "math"
    if name == "math":
        return MathKernel()
    if name == "torch_cpu":
        if q.device.type != "cpu":
            raise ValueError(f"backend='torch_cpu' runs on CPU tensors, got {q.device}; use 'flash_attn' or 'math'")
        from longvila.parallel.cpu import TorchCpuKernel
        return TorchCpuKernel()
    from longvila.parallel.flash import FlashKernel
    return FlashKernel(q)
