"""Named model sizes: tiny ones that run on a CPU in tests and the default workflow, and the release's.

    cfg = build_config("tiny")            # 32-px frames, 2+2 layers, hidden 64
    cfg = build_config("qwen2-1.5b-384")  # the released 1.5B LongVILA shapes (SigLIP so400m at 384 px)
"""

from __future__ import annotations

from transformers import Qwen2Config, SiglipVisionConfig

from longvila.model.configuration import LongVILAConfig

QWEN2_VOCAB = 151_648  # the released llm/config.json; the media tokens are added (and rows resized) at load

_SIGLIP_SO400M = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                      patch_size=14, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)

SIZES = {
    "tiny": (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6, vocab_size=QWEN2_VOCAB,
                  tie_word_embeddings=False),  # untied, like Qwen2-7B: resizing for media tokens grows both
             dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                  patch_size=4, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)),
    "qwen2-1.5b-384": (dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                            num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6,
                            vocab_size=QWEN2_VOCAB, tie_word_embeddings=True),
                       dict(_SIGLIP_SO400M, image_size=384)),
    "qwen2-7b-384": (dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                          num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1e6,
                          vocab_size=QWEN2_VOCAB, tie_word_embeddings=False, rms_norm_eps=1e-6),
                     dict(_SIGLIP_SO400M, image_size=384)),
    "qwen2-7b-448": (dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                          num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1e6,
                          vocab_size=QWEN2_VOCAB, tie_word_embeddings=False, rms_norm_eps=1e-6),
                     dict(_SIGLIP_SO400M, image_size=448)),
}


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
