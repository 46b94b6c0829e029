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

This module is the one place that picks a kernel (`get_kernel`): `math` (math_kernel.py: explicit einsum, any
dtype incl. fp64, arbitrary masks; materialises [Sq, Sk] scores), `torch_cpu` (cpu.py: the aten CPU
flash-attention op with LSE and its backward, called on strided views of each block's query/key runs) and
`flash_attn` (flash.py: CUDA; blocks planned into varlen calls, varlen.py); the last two never build a mask.
The block type and the LSE merge are in blocks.py.

Imports, bottom-up: blocks <- math_kernel, cpu, varlen <- flash <- kernels <- attention (ring.py takes a kernel
object and imports only blocks and comm).
"""

from __future__ import annotations

import torch

from longvila.parallel.cpu import TorchCpuKernel
from longvila.parallel.flash import FlashKernel
from longvila.parallel.math_kernel import MathKernel

KERNELS = ("auto", "math", "torch_cpu", "flash_attn")


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
        return TorchCpuKernel()
    return FlashKernel(q)
