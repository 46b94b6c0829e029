"""Progressive RoPE base for stage 4: each context step raises rope_theta and max_position_embeddings.

Paper schedule: 64k -> 256k -> 512k -> 1M with theta 15.3M / 207,112,184 / 1,062,356,830 / 3,580,165,449 and
max positions 131,072 / 262,144 / 524,288 / 1,048,576. `set_rope_base` updates the LLM's config (which
`save_pretrained` writes into llm/config.json and the top-level llm_cfg) and rebuilds its rotary embedding
from the new config, through the public constructor (no patching of the cached inv_freq).
"""

from __future__ import annotations

import torch


def set_rope_base(model, theta: float, max_positions: int) -> None:
    """Set rope_theta / max_position_embeddings of `model` (a LongVILA model or a Qwen2 causal LM), in place."""
    if theta <= 0 or max_positions < 1:
        raise ValueError(f"rope theta {theta} and max positions {max_positions} must be positive")
    llm = getattr(model, "llm", model)
    cfg = llm.config
    params = dict(getattr(cfg, "rope_parameters", None) or {})
    params["rope_theta"] = float(theta)
    cfg.rope_parameters = params
    cfg.max_position_embeddings = int(max_positions)
    old = llm.model.rotary_emb
    device = old.inv_freq.device
    llm.model.rotary_emb = type(old)(config=cfg).to(device)


def inv_freq(model) -> torch.Tensor:
    """The rotary frequencies the model uses now."""
    return getattr(model, "llm", model).model.rotary_emb.inv_freq
