"""Named model sizes as plain numbers, importable without torch or Transformers.

The config checks at DAG build (`longvila.plan.check.check_training`, run in every Snakemake process and
so in every SLURM job) and the launch plans need head counts and layer shapes, not a model: reading them
here keeps each of those processes from importing torch and Transformers (several seconds each).
`longvila.model.sizes.build_config` turns the same table into Transformers configs.

    shape = llm_shape("qwen2-7b-384")      # LLMShape(layers=28, hidden=3584, heads=28, kv_heads=4, ...)
"""

from __future__ import annotations

from dataclasses import dataclass

QWEN2_VOCAB = 151_648  # the released llm/config.json; the media tokens are added (and rows resized) at load

_SIGLIP_SO400M = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                      patch_size=14, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)

# size -> (Qwen2Config keyword arguments, SiglipVisionConfig keyword arguments)
SIZES: dict[str, tuple[dict, dict]] = {
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


@dataclass(frozen=True)
class LLMShape:
    """The LLM's shape: what the topology checks (heads) and memory/communication estimates need."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        """d_kv = KV heads x head dim: the width of K and of V."""
        return self.kv_heads * self.head_dim

    @classmethod
    def from_qwen2(cls, c: dict) -> "LLMShape":
        """From Qwen2Config fields (a SIZES entry or a checkpoint's llm/config.json); KeyError if one is missing."""
        return cls(layers=c["num_hidden_layers"], hidden=c["hidden_size"], heads=c["num_attention_heads"],
                   kv_heads=c.get("num_key_value_heads", c["num_attention_heads"]),
                   intermediate=c["intermediate_size"], vocab=c["vocab_size"],
                   tied=bool(c.get("tie_word_embeddings", False)))


def llm_shape(size: str) -> LLMShape:
    """The LLM shape of a named size (ValueError listing the known sizes otherwise)."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; known: {', '.join(SIZES)}")
    return LLMShape.from_qwen2(SIZES[size][0])


def downsampled_tokens(patches: int) -> int:
    """Tokens a square grid of `patches` leaves after `mlp_downsample`'s 2x2 merge (odd sides padded)."""
    half = (int(round(patches ** 0.5)) + 1) // 2
    return half * half


@dataclass(frozen=True)
class VisionShape:
    """The vision side of a LongVILA model: the SigLIP tower and the `mlp_downsample` projector into an LLM of
    width `llm_hidden` (what the planner needs for stage 5, where both are trained on the frames)."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    image_size: int
    patch_size: int
    llm_hidden: int

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def tokens_per_frame(self) -> int:
        """LLM tokens per frame after the 2x2 downsample (the frame's newline token not included)."""
        return downsampled_tokens(self.patches)

    @property
    def params(self) -> int:
        """SigLIP (patch embedding, positions, encoder layers, post-norm, the pooling head whose weights stay in
        the checkpoint) plus the projector (LayerNorm(4C), Linear(4C, D), Linear(D, D))."""
        c, i = self.hidden, self.intermediate
        layer = 2 * 2 * c + 4 * (c * c + c) + (c * i + i) + (i * c + c)
        head = c + (3 * c * c + 3 * c) + (c * c + c) + 2 * c + (c * i + i) + (i * c + c)
        tower = 3 * self.patch_size ** 2 * c + c + self.patches * c + self.layers * layer + 2 * c + head
        d = self.llm_hidden
        return tower + 2 * 4 * c + (4 * c * d + d) + (d * d + d)

    @classmethod
    def from_siglip(cls, c: dict, llm_hidden: int) -> "VisionShape":
        """From SiglipVisionConfig fields (a SIZES entry or a checkpoint's vision_tower/config.json)."""
        return cls(layers=c["num_hidden_layers"], hidden=c["hidden_size"], heads=c["num_attention_heads"],
                   intermediate=c["intermediate_size"], image_size=c["image_size"], patch_size=c["patch_size"],
                   llm_hidden=llm_hidden)


def vision_shape(size: str) -> VisionShape:
    """The vision tower + projector shape of a named size."""
    return VisionShape.from_siglip(SIZES[size][1], llm_shape(size).hidden)
