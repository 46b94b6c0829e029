"""LoRA for stage 4 (paper: r = 8, alpha = 16 on q/k/v/o), and the merge that every stage-4 step ends with.

    n = apply_lora(model.llm, targets=("q_proj", "k_proj", "v_proj", "o_proj"), r=8, alpha=16)
    ...train...
    merge_lora(model.llm)        # W <- W + (alpha / r) * B @ A, plain nn.Linear again

`apply_lora` replaces each targeted `nn.Linear` (matched by the last part of its module name) with a
`LoRALinear` that keeps the frozen base weight and adds a trainable low-rank update (B starts at zero, so the
model is unchanged until trained). Everything else keeps its requires_grad flag, so norms and embeddings
can stay trainable as the release does (`trainable_extra`). No monkey patching: modules are swapped in
their parent with setattr.
"""

from __future__ import annotations

import math

import torch
from torch import nn

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


class LoRALinear(nn.Module):
    """y = base(x) + (alpha / r) * x A^T B^T with a frozen base."""

    def __init__(self, base: nn.Linear, r: int, alpha: float) -> None:
        super().__init__()
        if r < 1:
            raise ValueError(f"LoRA rank r={r} must be >= 1")
        self.base, self.r, self.scale = base, r, alpha / r
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        dev, dt = base.weight.device, base.weight.dtype
        self.lora_a = nn.Parameter(torch.empty(r, base.in_features, device=dev, dtype=dt))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, r, device=dev, dtype=dt))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    def delta(self) -> torch.Tensor:
        """The weight update (alpha / r) * B @ A, [out, in]."""
        return (self.lora_b @ self.lora_a) * self.scale

    def merged(self) -> nn.Linear:
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                        device=self.base.weight.device, dtype=self.base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.delta())
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def apply_lora(model: nn.Module, targets=DEFAULT_TARGETS, r: int = 8, alpha: float = 16.0,
               trainable_extra: tuple[str, ...] = ("norm", "embed_tokens")) -> int:
    """Wrap the targeted Linear layers; freeze all other parameters except names containing `trainable_extra`.
    Returns the number of wrapped layers (an error if none matched)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in targets]
    if not names:
        raise ValueError(f"no nn.Linear named {targets} in {type(model).__name__}; check lora targets")
    for p_name, p in model.named_parameters():
        p.requires_grad_(any(t in p_name for t in trainable_extra))
    for n in names:
        _swap(model, n, LoRALinear(model.get_submodule(n), r, alpha))
    return len(names)


def merge_lora(model: nn.Module) -> int:
    """Replace every LoRALinear by a plain Linear holding W + delta; returns how many were merged."""
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    for n in names:
        _swap(model, n, model.get_submodule(n).merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return len(names)
