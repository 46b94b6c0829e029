"""`apply_sequence_parallel`: route a Transformers model's attention through `sp_attention`.

The seam is Transformers' public `AttentionInterface`: a function registered under a name of its own and
selected with `set_attn_implementation`, so the model classes stay unmodified (no monkey patches). Inputs of
the patched model are this rank's shard: `inputs_embeds` / `input_ids` laid out by `shard_sequence`, and
`position_ids` the tokens' GLOBAL positions (so rotary embeddings see the true positions). Packed samples
pass their global boundaries as `cu_seq_lens_q=` to the model's forward; they reach the attention call.
Attention is causal over the global sequence; a padding `attention_mask` and attention dropout are NOT
applied: pad at the END of the sequence (as `prepare_sp_inputs` does) with labels -100, so no real token
attends to padding and padded outputs carry no loss.

    apply_sequence_parallel(model, dims)          # model: LongVILAForCausalLM or a Transformers causal LM
    apply_sequence_parallel(model, dims, backend="flash_attn")   # pick the block kernel (default: auto)
"""

from __future__ import annotations

from transformers import AttentionInterface

from longvila.parallel.attention import sp_attention
from longvila.parallel.dims import ParallelDims

SP_ATTENTION_PREFIX = "longvila_sp_"
"""The start of every attention implementation name `apply_sequence_parallel` registers."""


def apply_sequence_parallel(model, dims: ParallelDims, *, backend: str = "auto") -> str:
    """Make `model`'s LLM attend over the SP group of `dims`, in `dims.layout` (in place); returns the
    registered name.

    `backend`: the block kernel of `sp_attention` ("auto", "math", "torch_cpu", "flash_attn").
    """
    llm = getattr(model, "llm", model)
    cfg = llm.config
    dims.validate_heads(cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", cfg.num_attention_heads))
    # Transformers treats any implementation name containing "flash" as a flash-attn kernel to load: keep it out
    name = f"{SP_ATTENTION_PREFIX}u{dims.ulysses}_r{dims.ring}_{dims.layout}_{backend.replace('flash_attn', 'fused')}_{id(dims):x}"

    def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        # Transformers passes [B, H, S_loc, D]; sp_attention takes [B, S_loc, H, D]
        out = sp_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), dims, causal=True,
                           cu_seqlens=kwargs.get("cu_seq_lens_q"), scale=scaling,
                           backend=backend)
        return out, None

    AttentionInterface.register(name, attention)
    llm.set_attn_implementation(name)
    return name
