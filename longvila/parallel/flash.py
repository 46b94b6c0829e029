"""The `flash_attn` block kernel: FlashAttention-2 varlen kernels on CUDA, without materialising any mask.

Kernel source: the flash-attn package when it is installed (both return conventions: before 2.7
`_flash_attn_varlen_forward` returns (out, q, k, v, out_padded, lse, S_dmask, rng_state), from 2.7 on
(out, lse, S_dmask, rng_state); both varlen LSE shapes: padded [B, H, max_seqlen_q] in old releases, packed
[H, total_q] since), else the same FlashAttention-2 kernels compiled into PyTorch
(`torch.ops.aten._flash_attention_forward/_backward`, LSE [H, total_q]).

How a block becomes kernel calls (one causal and one non-causal varlen call at most, no mask): varlen.py.
"""

from __future__ import annotations

import importlib.util
import inspect
import torch

from longvila.parallel.varlen import VarlenCall, VarlenKernel


# ---------------------------------------------------------------- LSE conventions
def unpad_lse(lse: torch.Tensor, cu_q: torch.Tensor) -> torch.Tensor:
    """flash-attn's varlen LSE -> [H, total_q]: packed input is returned as is; padded [N, H, max_q] is packed."""
    if lse.ndim == 2:
        return lse
    lens = (cu_q[1:] - cu_q[:-1]).tolist()
    return torch.cat([lse[i, :, :n] for i, n in enumerate(lens)], dim=1)


def pad_lse(lse: torch.Tensor, cu_q: torch.Tensor, max_q: int) -> torch.Tensor:
    """[H, total_q] -> [N, H, max_q] (the layout old flash-attn releases take back in their backward)."""
    lens = (cu_q[1:] - cu_q[:-1]).tolist()
    out = lse.new_zeros(len(lens), lse.shape[0], max_q)
    for i, (start, n) in enumerate(zip(cu_q[:-1].tolist(), lens)):
        out[i, :, :n] = lse[:, start:start + n]
    return out


def split_forward_result(result: tuple) -> tuple[torch.Tensor, torch.Tensor, object]:
    """(out, lse, rng_state) from either return convention of `_flash_attn_varlen_forward`."""
    if len(result) == 8:        # flash-attn < 2.7: out, q, k, v, out_padded, lse, S_dmask, rng_state
        return result[0], result[5], result[7]
    if len(result) == 4:        # flash-attn >= 2.7: out, lse, S_dmask, rng_state
        return result[0], result[1], result[3]
    raise ValueError(f"unrecognised flash-attn forward result of {len(result)} items; supported: 4 (>= 2.7), 8 (< 2.7)")


def _window_kwargs(fn) -> dict:
    params = inspect.signature(fn).parameters
    kwargs = {"window_size": (-1, -1)} if "window_size" in params else {"window_size_left": -1, "window_size_right": -1}
    kwargs.update({k: v for k, v in (("softcap", 0.0), ("alibi_slopes", None)) if k in params})
    return kwargs


class _PackageImpl:
    """Calls into the flash-attn package (any 2.x with varlen forward/backward)."""

    def __init__(self) -> None:
        from flash_attn import flash_attn_interface as fai
        self.fwd, self.bwd = fai._flash_attn_varlen_forward, fai._flash_attn_varlen_backward
        self.padded = False

    def forward(self, q, k, v, c: VarlenCall, scale):
        kwargs = _window_kwargs(self.fwd)
        if "return_softmax" in inspect.signature(self.fwd).parameters:
            kwargs["return_softmax"] = False
        out, lse, _ = split_forward_result(self.fwd(q, k, v, c.cu_q, c.cu_k, c.max_q, c.max_k, 0.0, scale,
                                                    c.causal, **kwargs))
        self.padded = lse.ndim == 3
        return out, unpad_lse(lse, c.cu_q)

    def backward(self, dout, q, k, v, out, lse, c: VarlenCall, scale):
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        lse = pad_lse(lse, c.cu_q, c.max_q) if self.padded else lse
        kwargs = _window_kwargs(self.bwd)
        self.bwd(dout, q, k, v, out, lse, dq, dk, dv, c.cu_q, c.cu_k, c.max_q, c.max_k, 0.0, scale, c.causal,
                 deterministic=False, **kwargs)
        return dq, dk, dv


class _TorchImpl:
    """FlashAttention-2 as compiled into PyTorch (CUDA builds)."""

    def forward(self, q, k, v, c: VarlenCall, scale):
        out, lse, *_ = torch.ops.aten._flash_attention_forward(q, k, v, c.cu_q, c.cu_k, c.max_q, c.max_k, 0.0,
                                                               c.causal, False, scale=scale)
        return out, unpad_lse(lse, c.cu_q)          # [H, total_q] (checked on torch 2.11 CUDA); padded: packed

    def backward(self, dout, q, k, v, out, lse, c: VarlenCall, scale):
        rng = torch.zeros(2, dtype=torch.uint64, device=q.device)     # dropout 0: the RNG state is not read
        unused = torch.zeros((), dtype=torch.uint64, device=q.device)
        return torch.ops.aten._flash_attention_backward(dout, q, k, v, out, lse, c.cu_q, c.cu_k, c.max_q, c.max_k,
                                                        0.0, c.causal, rng, unused, scale=scale)


def flash_package_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


class FlashKernel(VarlenKernel):
    """Block kernel on FlashAttention-2 (see the module docstring)."""

    name = "flash_attn"

    def __init__(self, q: torch.Tensor) -> None:
        if not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"backend='flash_attn' needs fp16/bf16 CUDA tensors, got {q.dtype} on {q.device}; "
                             "use backend='torch_cpu' or 'math' on CPU")
        if q.shape[-1] > 256 or q.shape[-1] % 8:
            raise ValueError(f"flash-attn supports head dims that are multiples of 8 up to 256, got {q.shape[-1]}")
        super().__init__(_PackageImpl() if flash_package_available() else _TorchImpl())
