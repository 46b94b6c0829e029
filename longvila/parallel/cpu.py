"""The `torch_cpu` block kernel: the aten CPU flash-attention op (with LSE) on views of the block, no copies.

A block's queries and keys are runs of consecutive global positions (zigzag: two chunks per rank, U ranks per
Ulysses group), cut further at packed-sample boundaries (`segments`). Each (query run, key run) pair of one
sample is at most two op calls ("pieces", planned once per block and cached on it):
  visible   the keys before the first query of the run: every query sees them (non-causal call);
  diagonal  the keys from max(first key, first query) to min(last key, last query): the queries from that
            position on see them top-left causally, which is the CPU op's `is_causal` alignment.
Non-causal pieces that share their queries and have adjacent keys (or share their keys and have adjacent
queries) are joined into one call; a sample whose queries and keys are the same ascending runs, adjacent in
memory (a zigzag rank's own block), is one causal call. A causal block, any layout, any packing, even runs that straddle each
other: the pieces cover the mask exactly, and nothing needs the varlen gather that flash kernels need.

Every call takes strided views: [B, S, H, D] slices transposed to the op's [B, H, S, D] (the op reads
strides; its output and gradients come back in [B, S, H, D] memory), KV heads as they are (the op does GQA
itself and sums the KV-head gradients), the batch dimension as is. One piece covering the block: the op's
out/LSE (and gradients) are returned as they are; several: merged by LSE / accumulated into slices.
"""

from __future__ import annotations

import torch

from longvila.parallel.blocks import Block, acc_dtype, merge_into, segments

_fwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_bwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


def plan_pieces(block: Block) -> list[tuple[slice, slice, bool]]:
    """(query rows, key rows, causal) op calls that compute `block` exactly (see the module docstring)."""
    pieces = []
    q_runs, k_runs = segments(block.q_pos, block.cu_seqlens), segments(block.k_pos, block.cu_seqlens)
    for sample in dict.fromkeys(run[3] for run in q_runs):
        qr, kr = [r for r in q_runs if r[3] == sample], [r for r in k_runs if r[3] == sample]
        if block.causal and _one_causal_call(qr, kr):
            pieces.append((slice(qr[0][0], qr[-1][0] + qr[-1][2]), slice(kr[0][0], kr[-1][0] + kr[-1][2]), True))
            continue
        for ql, qg, qn, _ in qr:
            for kl, kg, kn, _ in kr:
                if not block.causal:
                    pieces.append((slice(ql, ql + qn), slice(kl, kl + kn), False))
                    continue
                visible = min(kn, qg - kg)                  # keys before the run's first query
                if visible > 0:
                    pieces.append((slice(ql, ql + qn), slice(kl, kl + visible), False))
                lo, hi = max(kg, qg), min(kg + kn, qg + qn)
                if lo < hi:
                    pieces.append((slice(ql + lo - qg, ql + qn), slice(kl + lo - kg, kl + hi - kg), True))
    return _join(_join(pieces, 1), 0)


def _one_causal_call(q_runs: list, k_runs: list) -> bool:
    """True when a sample's queries and keys are the same positions, ascending and adjacent in local memory
    (e.g. a zigzag rank's own block: chunks s and 2P-1-s): local order is then global order, and ONE top-left
    causal call over them is exact (instead of a diagonal, a visible part and a diagonal, merged)."""
    same = [(r[1], r[2]) for r in q_runs] == [(r[1], r[2]) for r in k_runs]
    ascending = all(a[1] + a[2] <= b[1] for a, b in zip(q_runs, q_runs[1:]))
    adjacent = all(a[0] + a[2] == b[0] for runs in (q_runs, k_runs) for a, b in zip(runs, runs[1:]))
    return same and ascending and adjacent


def _join(pieces: list, axis: int) -> list:
    """Join non-causal pieces whose other side is equal and whose `axis` side (0 queries, 1 keys) is adjacent."""
    out = []
    for piece in pieces:
        for i, other in enumerate(out):
            if (not piece[2] and not other[2] and piece[1 - axis] == other[1 - axis]
                    and other[axis].stop == piece[axis].start):
                joined = slice(other[axis].start, piece[axis].stop)
                out[i] = (other[0], joined, False) if axis else (joined, other[1], False)
                break
        else:
            out.append(piece)
    return out


def _t(x: torch.Tensor, rows: slice) -> torch.Tensor:
    """[B, S, H, D] -> rows as the op's [B, H, T, D] (a view)."""
    return x[:, rows].transpose(1, 2)


class TorchCpuKernel:
    """Block kernel on the aten CPU flash-attention op (see the module docstring)."""

    name = "torch_cpu"

    @staticmethod
    def _pieces(block: Block) -> list[tuple[slice, slice, bool]]:
        if "pieces" not in block._cache:
            block._cache["pieces"] = plan_pieces(block)
        return block._cache["pieces"]

    def forward(self, q, k, v, block: Block):
        acc = acc_dtype(q.dtype)
        pieces = self._pieces(block)
        if len(pieces) == 1 and pieces[0][0] == slice(0, q.shape[1]):   # one call gives every row its result
            qs, ks, causal = pieces[0]
            o, lse = _fwd(_t(q, qs), _t(k, ks), _t(v, ks), 0.0, causal, scale=block.scale)
            return o.transpose(1, 2), lse.to(acc)
        out = torch.zeros(q.shape, dtype=acc, device=q.device)            # rows no piece reaches: out 0,
        lse = torch.full((q.shape[0], q.shape[2], q.shape[1]), float("-inf"), dtype=acc, device=q.device)  # -inf
        for qs, ks, causal in pieces:
            o, l = _fwd(_t(q, qs), _t(k, ks), _t(v, ks), 0.0, causal, scale=block.scale)
            _, lse[:, :, qs] = merge_into(out[:, qs], lse[:, :, qs], o.transpose(1, 2), l.to(acc))  # out in place
        return out.to(q.dtype), lse

    def backward(self, dout, q, k, v, out, lse, block: Block):
        acc = acc_dtype(q.dtype)
        out, dout = out.to(q.dtype), dout.to(q.dtype)
        totals = [None, None, None]                          # dq, dk, dv
        for piece in self._pieces(block):
            grads = self._call(dout, q, k, v, out, lse, piece, block.scale)
            for i, (grad, like, rows) in enumerate(zip(grads, (q, k, v), (piece[0], piece[1], piece[1]))):
                grad = grad.transpose(1, 2)                   # [B, T, H, D] (the op's memory: contiguous)
                if totals[i] is None and rows == slice(0, like.shape[1]):
                    totals[i] = grad.to(acc)                  # the first piece over every row: its gradient
                    continue
                if totals[i] is None:
                    totals[i] = torch.zeros(like.shape, dtype=acc, device=like.device)
                totals[i][:, rows] += grad
            del grads, grad
        return tuple(torch.zeros(t.shape, dtype=acc, device=t.device) if g is None else g
                     for g, t in zip(totals, (q, k, v)))

    @staticmethod
    def _call(dout, q, k, v, out, lse, piece, scale):
        """The op's backward of one piece against the MERGED out / LSE -> dq, dk, dv as [B, H, T, D] views."""
        qs, ks, causal = piece
        return _bwd(_t(dout, qs), _t(q, qs), _t(k, ks), _t(v, ks), _t(out, qs), lse[:, :, qs].to(acc_dtype(q.dtype)),
                    0.0, causal, scale=scale)
