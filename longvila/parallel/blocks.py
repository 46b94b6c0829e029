"""The attention block and what every kernel and the ring share; the bottom of `parallel/`: imports nothing of ours.

Shapes: B batch, Sq queries / Sk keys of one block, H query heads, D head dim.

A `Block` is one (queries x keys) pair of a ring step, described by global token positions; its visibility
(causal, packed samples) follows from those positions, so every layout is exact. Here too: the boolean mask a
block stands for (built only by the `math` kernel), the accumulation dtype (fp32, fp64 for fp64 inputs), the
result of a block that sees nothing (out = 0, lse = -inf), and the exact merge of two partial results by their
log-sum-exps (`merge_into`: ring steps, the CPU kernel's pieces of a block, SP decoding).

    block = Block(q_pos, k_pos, causal=True, cu_seqlens=None, scale=0.125)
    block.empty()                      # True when no query sees any key: the kernel is skipped
    out, lse = merge_into(out, lse, o_b, lse_b)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class Block:
    """One (queries x keys) block, described by global token positions (CPU int64 tensors).

    Visibility: key j is visible to query i when (not causal or k_pos[j] <= q_pos[i]) and both lie in the same
    packed sample (`cu_seqlens`, global boundaries [0, ..., S]). `_cache` holds what kernels derive from the
    block once (its mask per device, its varlen plans), so every layer and step of a run reuses them.
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
        """True when no query sees any key (the kernel is skipped). Decided from the runs of consecutive
        positions, without building a mask: a key run and a query run of one sample see each other unless
        causal and every key comes after every query."""
        if "empty" not in self._cache:
            q_runs, k_runs = segments(self.q_pos, self.cu_seqlens), segments(self.k_pos, self.cu_seqlens)
            self._cache["empty"] = not any(
                ks[3] == qs[3] and (not self.causal or ks[1] <= qs[1] + qs[2] - 1)
                for qs in q_runs for ks in k_runs)
        return self._cache["empty"]


def segments(pos: torch.Tensor, cu_seqlens: torch.Tensor | None) -> list[tuple[int, int, int, int]]:
    """Maximal runs of consecutive positions inside one sample: (local start, global start, length, sample)."""
    if len(pos) == 0:
        return []
    sample = (torch.bucketize(pos, cu_seqlens[1:].to(pos.dtype), right=True) if cu_seqlens is not None
              else torch.zeros_like(pos))
    cut = ((pos[1:] != pos[:-1] + 1) | (sample[1:] != sample[:-1])).nonzero().flatten() + 1
    starts = [0] + cut.tolist()
    ends = starts[1:] + [len(pos)]
    return [(s, int(pos[s]), e - s, int(sample[s])) for s, e in zip(starts, ends)]


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
    """The dtype partial results and gradients accumulate in: fp64 for fp64 inputs, else fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def default_scale(q: torch.Tensor, scale: float | None) -> float:
    return scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])


def empty_result(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) of a block in which no query sees a key: out = 0 [B,S,H,D], lse = -inf [B,H,S]."""
    b, s, h, _ = q.shape
    return torch.zeros_like(q), torch.full((b, h, s), float("-inf"), dtype=acc_dtype(q.dtype), device=q.device)


def merge_into(out, lse, o, lse_b):
    """Merge a block's (o [B,S,H,D], lse_b [B,H,S]) into the running (out, lse) -> (out, lse).

    out <- out + sigmoid(lse_b - lse) * (o - out) (one fused lerp over the big tensor), lse <- logaddexp; rows
    that saw no key in either part (both -inf) keep out = 0, lse = -inf. `out is None` starts the merge.
    """
    if out is None:
        return o.to(lse_b.dtype), lse_b
    weight = torch.sigmoid(lse_b - lse).nan_to_num_(0.0)                   # -inf - (-inf) = nan -> 0
    out = out.lerp_(o.to(out.dtype), weight.transpose(1, 2).unsqueeze(-1))
    return out, torch.logaddexp(lse, lse_b)
