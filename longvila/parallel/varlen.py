"""Varlen planning of attention blocks, and the block kernel built on any varlen executor.

A block's queries and keys are runs of consecutive global positions (zigzag: two chunks per rank, U ranks per
Ulysses group), cut further at packed-sample boundaries into segments. For each query segment, every key
segment of the same sample is either invisible (all keys later), fully visible (all keys earlier), or the
diagonal (same end, causal). The query segment becomes ONE varlen sequence whose keys are its fully visible
segments followed by the diagonal segment, so that the bottom-right causal alignment of flash-attention
kernels is exactly the global causal mask; non-causal query segments that see the same keys share one
sequence. Sequences with a diagonal go in one causal call, the rest in one non-causal call: every query row is
in at most one call, nothing needs merging inside a block, and no mask is ever materialised. Rows that see no
key keep out = 0, lse = -inf.

The `flash_attn` kernel (flash.py) runs on this plan; the `torch_cpu` kernel (cpu.py) needs no gather and calls
its op on views of the runs instead. `VarlenKernel(executor)` turns a varlen executor (forward(q, k, v, call, scale) -> out [T,H,D], lse [H,T];
backward(dout, q, k, v, out, lse, call, scale) -> dq, dk, dv) into a block kernel (the interface in kernels.py).
The runs of consecutive positions (`segments`) come from blocks.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longvila.parallel.blocks import Block, acc_dtype, segments


@dataclass
class VarlenCall:
    """One varlen kernel call: gathered query rows / key rows (flattened B*S index) and cumulative lengths.

    `q_rows` / `k_rows` index those rows: a slice (a view, no copy) when they are one ascending run, else the
    index tensor; decided once, on the CPU, when the call is planned (no device sync later).
    """

    causal: bool
    q_idx: torch.Tensor
    k_idx: torch.Tensor
    cu_q: torch.Tensor
    cu_k: torch.Tensor
    max_q: int
    max_k: int
    q_rows: object = None
    k_rows: object = None

    def __post_init__(self) -> None:
        self.q_rows = _as_slice(self.q_idx) if self.q_rows is None else self.q_rows
        self.k_rows = _as_slice(self.k_idx) if self.k_rows is None else self.k_rows

    def to(self, device) -> "VarlenCall":
        q_idx, k_idx = self.q_idx.to(device), self.k_idx.to(device)
        return VarlenCall(self.causal, q_idx, k_idx, self.cu_q.to(device, torch.int32),
                          self.cu_k.to(device, torch.int32), self.max_q, self.max_k,
                          self.q_rows if isinstance(self.q_rows, slice) else q_idx,
                          self.k_rows if isinstance(self.k_rows, slice) else k_idx)


def _as_slice(idx: torch.Tensor):
    n = len(idx)
    first = int(idx[0]) if n else 0
    run = n > 0 and int(idx[-1]) - first == n - 1 and bool((idx[1:] - idx[:-1] == 1).all())
    return slice(first, first + n) if run else idx


def _covers(rows, n: int) -> bool:
    """True when `rows` (a slice or an index tensor) is all of 0..n-1 in order."""
    return isinstance(rows, slice) and rows == slice(0, n)


def plan_block(block: Block, batch: int) -> list[VarlenCall]:
    """The varlen calls (at most one causal, one non-causal) that compute `block` exactly, for `batch` rows."""
    q_segs, k_segs = segments(block.q_pos, block.cu_seqlens), segments(block.k_pos, block.cu_seqlens)
    sq, sk = len(block.q_pos), len(block.k_pos)
    seqs = {True: [], False: []}                         # causal? -> [(q segment, [key segments])]
    for qs in q_segs:
        q_lo, q_end = qs[1], qs[1] + qs[2]
        visible, diagonal = [], None
        for ks in k_segs:
            if ks[3] != qs[3]:
                continue
            k_lo, k_end = ks[1], ks[1] + ks[2]
            if not block.causal or k_end - 1 <= q_lo:
                visible.append(ks)
            elif k_lo >= q_end:
                continue
            elif k_end == q_end and k_lo <= q_lo:
                diagonal = ks
            else:
                raise ValueError(f"flash_attn backend: key run [{k_lo}, {k_end}) straddles query run "
                                 f"[{q_lo}, {q_end}); use equal-size chunks (shard_sequence layouts) or backend='math'")
        if diagonal is not None:
            seqs[True].append(([qs], visible + [diagonal]))
        elif visible:
            # non-causal: query segments that see the same keys share one sequence (keys gathered once)
            same = [e for e in seqs[False] if e[1] == visible]
            if same:
                same[0][0].append(qs)
            else:
                seqs[False].append(([qs], visible))
    calls = []
    for causal, entries in seqs.items():
        if not entries:
            continue
        q_idx, k_idx, lq, lk = [], [], [], []
        for b in range(batch):
            for qss, kss in entries:
                q_idx.extend(torch.arange(qs[0], qs[0] + qs[2]) + b * sq for qs in qss)
                k_idx.extend(torch.arange(ks[0], ks[0] + ks[2]) + b * sk for ks in kss)
                lq.append(sum(qs[2] for qs in qss))
                lk.append(sum(ks[2] for ks in kss))
        cu = lambda lens: torch.tensor([0] + lens).cumsum(0)
        calls.append(VarlenCall(causal, torch.cat(q_idx), torch.cat(k_idx), cu(lq), cu(lk), max(lq), max(lk)))
    return calls


class VarlenKernel:
    """Block kernel over a varlen executor (see the module docstring); plans are cached on the block."""

    name = "varlen"

    def __init__(self, executor) -> None:
        self.impl = executor

    def _calls(self, block: Block, batch: int, device) -> list[VarlenCall]:
        key = ("varlen", batch, str(device))
        if key not in block._cache:
            block._cache[key] = [c.to(device) for c in plan_block(block, batch)]
        return block._cache[key]

    def forward(self, q, k, v, block: Block):
        b, sq, h, d = q.shape
        qf, kf, vf = q.reshape(b * sq, h, d), k.reshape(-1, *k.shape[2:]), v.reshape(-1, *v.shape[2:])
        calls = self._calls(block, b, q.device)
        acc = acc_dtype(q.dtype)
        if len(calls) == 1 and _covers(calls[0].q_rows, b * sq):      # one call covers every row in order
            c = calls[0]
            out, lse = self.impl.forward(qf, kf[c.k_rows], vf[c.k_rows], c, block.scale)
            lse = lse.to(acc)
        else:
            out = torch.zeros_like(qf)
            lse = torch.full((h, b * sq), float("-inf"), dtype=acc, device=q.device)
            for c in calls:
                rows = c.q_rows
                o, l = self.impl.forward(qf[rows], kf[c.k_rows], vf[c.k_rows], c, block.scale)
                out[rows] = o
                lse[:, rows] = l.to(acc)
        lse = lse.masked_fill_(torch.isposinf(lse), float("-inf"))          # flash: +inf for rows with no key
        return out.view(b, sq, h, d), lse.view(h, b, sq).transpose(0, 1)

    def backward(self, dout, q, k, v, out, lse, block: Block):
        b, sq, h, d = q.shape
        qf, kf, vf = q.reshape(b * sq, h, d), k.reshape(-1, *k.shape[2:]), v.reshape(-1, *v.shape[2:])
        of, dof = out.to(q.dtype).reshape(b * sq, h, d), dout.to(q.dtype).reshape(b * sq, h, d)
        acc = acc_dtype(q.dtype)
        lse_f = lse.transpose(0, 1).reshape(h, b * sq).to(acc)
        calls = self._calls(block, b, q.device)
        if len(calls) == 1 and _covers(calls[0].q_rows, b * sq) and _covers(calls[0].k_rows, kf.shape[0]):
            gq, gk, gv = self.impl.backward(dof, qf, kf, vf, of, lse_f.contiguous(), calls[0], block.scale)
            return gq.view(q.shape), gk.view(k.shape), gv.view(v.shape)      # one call over everything: as is
        dq = torch.zeros(qf.shape, dtype=acc, device=q.device)
        dk = torch.zeros(kf.shape, dtype=acc, device=q.device)
        dv = torch.zeros(vf.shape, dtype=acc, device=q.device)
        for c in self._calls(block, b, q.device):
            rows, keys = c.q_rows, c.k_rows
            gq, gk, gv = self.impl.backward(dof[rows], qf[rows], kf[keys], vf[keys], of[rows],
                                            lse_f[:, rows].contiguous(), c, block.scale)
            for total, index, grad in ((dq, rows, gq), (dk, keys, gk), (dv, keys, gv)):
                if isinstance(index, slice):
                    total[index] += grad
                else:
                    total.index_add_(0, index, grad.to(acc))
        return dq.view(q.shape), dk.view(k.shape), dv.view(v.shape)
