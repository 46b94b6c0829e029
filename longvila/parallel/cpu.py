"""The `torch_cpu` block kernel: the aten CPU flash-attention op (with LSE) and its backward, no mask built.

Blocks are planned into varlen calls (varlen.py); this executor runs each varlen sequence through
`aten._scaled_dot_product_flash_attention_for_cpu` (layout [B, H, S, D], returns out and LSE; backward takes
out and LSE, not a gradient of the LSE). A causal sequence holds Lq queries against Lk keys, bottom-right
aligned; the CPU op's `is_causal` is top-left aligned, so the sequence runs as two op calls merged by LSE:
the first Lk - Lq keys (fully visible) without a mask, and the last Lq keys (a square diagonal) with
is_causal. KV heads are expanded for GQA (the op needs equal head counts) and their gradients summed back.
"""

from __future__ import annotations

import torch

from longvila.parallel.blocks import acc_dtype, merge_into
from longvila.parallel.varlen import VarlenCall, VarlenKernel

_fwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_bwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


def _parts(c: VarlenCall):
    """Per sequence: (query slice, [(key slice, causal)]) into the call's packed rows."""
    cu_q, cu_k = c.cu_q.tolist(), c.cu_k.tolist()
    for i in range(len(cu_q) - 1):
        q0, q1, k0, k1 = cu_q[i], cu_q[i + 1], cu_k[i], cu_k[i + 1]
        if not c.causal:
            yield slice(q0, q1), [(slice(k0, k1), False)]
            continue
        split = k1 - (q1 - q0)
        parts = [(slice(k0, split), False)] if split > k0 else []
        yield slice(q0, q1), parts + [(slice(split, k1), True)]


def _bhsd(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[T, Hx, D] -> [1, heads, T, D] (KV heads repeated for GQA)."""
    if x.shape[1] != heads:
        x = x.repeat_interleave(heads // x.shape[1], dim=1)
    return x.transpose(0, 1).unsqueeze(0).contiguous()


class _CpuOpExecutor:
    def forward(self, q, k, v, c: VarlenCall, scale):
        h = q.shape[1]
        out = torch.empty_like(q)
        lse = torch.empty(h, q.shape[0], dtype=acc_dtype(q.dtype))
        for qs, parts in _parts(c):
            qb = _bhsd(q[qs], h)
            acc_o = acc_l = None
            for ks, causal in parts:                            # the parts merge by LSE, as ring blocks do
                o, l = _fwd(qb, _bhsd(k[ks], h), _bhsd(v[ks], h), 0.0, causal, scale=scale)
                acc_o, acc_l = merge_into(acc_o, acc_l, o.transpose(1, 2), l)   # [1, T, H, D], [1, H, T]
            out[qs] = acc_o[0].to(q.dtype)
            lse[:, qs] = acc_l[0]
        return out, lse

    def backward(self, dout, q, k, v, out, lse, c: VarlenCall, scale):
        h, hkv = q.shape[1], k.shape[1]
        acc = acc_dtype(q.dtype)                                   # accumulate in fp32 (fp64 for fp64)
        dq, dk, dv = (torch.zeros(t.shape, dtype=acc) for t in (q, k, v))
        lse = lse.to(acc_dtype(q.dtype))
        for qs, parts in _parts(c):
            qb, ob, dob = _bhsd(q[qs], h), _bhsd(out[qs], h), _bhsd(dout[qs], h)
            lb = lse[:, qs].unsqueeze(0).contiguous()
            for ks, causal in parts:
                gq, gk, gv = _bwd(dob, qb, _bhsd(k[ks], h), _bhsd(v[ks], h), ob, lb, 0.0, causal, scale=scale)
                dq[qs] += gq[0].transpose(0, 1)
                for total, g in ((dk, gk), (dv, gv)):
                    g = g[0].transpose(0, 1).to(acc)            # [T, H, D] -> sum the heads of each KV group
                    total[ks] += g.reshape(g.shape[0], hkv, h // hkv, g.shape[2]).sum(2)
        return dq, dk, dv


class TorchCpuKernel(VarlenKernel):
    """Block kernel on the aten CPU flash-attention op (see the module docstring)."""

    name = "torch_cpu"

    def __init__(self) -> None:
        super().__init__(_CpuOpExecutor())
