"""Named model sizes: tiny ones that run on a CPU in tests and the default workflow, and the release's.

    cfg = build_config("tiny")            # 32-px frames, 2+2 layers, hidden 64
    cfg = build_config("qwen2-1.5b-384")  # the released 1.5B LongVILA shapes (SigLIP so400m at 384 px)
"""

from __future__ import annotations

from transformers import Qwen2Config, SiglipVisionConfig

from longvila.model.configuration import LongVILAConfig
from longvila.shapes import QWEN2_VOCAB, SIZES  # noqa: F401  (the table lives torch-free in longvila.shapes)


def build_config(size: str, **llm_overrides) -> LongVILAConfig:
    """The LongVILAConfig of a named size; `llm_overrides` change LLM fields (e.g. rope_theta)."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; known: {', '.join(SIZES)}")
    llm, vision = SIZES[size]
    return LongVILAConfig.from_parts(Qwen2Config(**{**llm, **llm_overrides}), SiglipVisionConfig(**vision))


def build_model(size: str, tokenizer, seed: int = 0):
    """A randomly initialised LongVILAForCausalLM of `size`, its embedding sized for `tokenizer` plus the media
    tokens (added to `tokenizer` in place)."""
    import torch

    from longvila.model.conversation import add_media_tokens
    from longvila.model.vlm import LongVILAForCausalLM

    add_media_tokens(tokenizer)
    torch.manual_seed(seed)
    model = LongVILAForCausalLM(build_config(size))
    model.resize_for_tokenizer(tokenizer)
    return model.eval()
