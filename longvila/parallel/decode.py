"""Sequence-parallel decoding mechanisms: the sharded KV cache and the attention of a decoded token over it.

Why: at inference the prompt (a long video) is prefilled sharded over the SP group, and its KV cache stays
sharded: no rank ever holds all of it. This module is the parallel part of that; the driver that encodes the
media, prefills and runs the greedy loop is `longvila.infer.sp` (`sp_greedy`, `sp_answer_ids`).

Cache (`SPKVCache`): during the prefill every layer's attention call runs `sp_attention` (Ulysses x ring) on
this rank's shard and also stores this rank's K/V (post-rotary, all KV heads) for its REAL positions only.
The prompt is padded at the END to the layout's divisor, and padding is never cached, so no real token ever
attends to it, in prefill (causal, padding comes last) or in decoding. Activations and the cache are 1/P.

Decode (`decode_attention`): the new token is replicated on every rank with its global position. In each
layer every rank attends the token's query to its own cached keys, giving a partial (out, LSE); the SP group
all-gathers the partials and merges them exactly by log-sum-exp, in rank order, so every rank computes the
same output. The new token's K/V are appended on the rank that owns the last prompt token (`owner_rank`);
the driver lets the owner pick the greedy token and broadcast it (as in the paper).

The seam is Transformers' `AttentionInterface` (as in parallelize.py): `apply_sp_inference` registers the
attention function; the cache travels as the `sp_cache=` keyword of the decoder's forward, which
Transformers hands to the attention function unchanged; the LLM runs with use_cache=False (the cache is ours).

    apply_sp_inference(model, dims)
    cache = SPKVCache(dims, real_len=len(embeds_LD), max_new_tokens=32)
    llm.get_decoder()(inputs_embeds=..., position_ids=..., use_cache=False, sp_cache=cache)

Tested by tests/unit/test_sp_decode.py (merge, cache bookkeeping) and tests/distributed/test_sp_inference.py.

Shapes: B batch (1), S tokens, H query heads, Hkv KV heads (G = H / Hkv), D head dim.
Communication per decoded token and layer: one all-gather of B*H*(D+1) fp32 values over dims.group("sp").
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from transformers import AttentionInterface

from longvila.parallel.attention import sp_attention
from longvila.parallel.blocks import acc_dtype, merge_into
from longvila.parallel.comm import group_size
from longvila.parallel.dims import ParallelDims
from longvila.parallel.layout import local_indices

ATTENTION_NAME = "longvila_sp_inference"


def owner_rank(real_len: int, seq_len: int, sp_degree: int, layout: str = "zigzag") -> int:
    """The SP rank that holds global position real_len - 1 (the last prompt token) in a padded sequence."""
    for rank in range(sp_degree):
        if bool((local_indices(seq_len, sp_degree, rank, layout) == real_len - 1).any()):
            return rank
    raise AssertionError(f"position {real_len - 1} is in no shard of {seq_len} tokens")


class SPKVCache:
    """This rank's keys and values per layer ([B, S, Hkv, D]): its prompt shard's real tokens and, on the
    owner rank, the decoded tokens (room for `max_new_tokens` is reserved there)."""

    def __init__(self, dims: ParallelDims, *, real_len: int, backend: str = "auto",
                 max_new_tokens: int = 0) -> None:
        if real_len < 1:
            raise ValueError("the prompt is empty; give at least one token")
        self.dims, self.layout, self.backend, self.real_len = dims, dims.layout, backend, real_len
        self.seq_len = real_len + (-real_len % dims.seq_len_divisor())     # padded at the end
        self.positions = local_indices(self.seq_len, dims.sp_degree, dims.axis_rank("sp"), dims.layout)  # [S_loc]
        self.keep = self.positions < real_len                                     # real tokens of the shard
        self.owner = owner_rank(real_len, self.seq_len, dims.sp_degree, dims.layout)
        self.is_owner = dims.axis_rank("sp") == self.owner
        self.capacity = int(self.keep.sum()) + (max_new_tokens if self.is_owner else 0)
        self.decoding = False
        self._k, self._v, self._len = {}, {}, {}

    def last_index(self) -> int:
        """Local index of the last prompt token (owner only)."""
        assert self.is_owner
        return int((self.positions == self.real_len - 1).nonzero()[0, 0])

    def store(self, layer: int, k_BSKD: torch.Tensor, v_BSKD: torch.Tensor) -> None:
        """Keep the prefill shard's K/V of `layer`, real positions only."""
        keep = self.keep.to(k_BSKD.device)
        n = int(self.keep.sum())
        for buffers, x in ((self._k, k_BSKD), (self._v, v_BSKD)):
            buf = x.new_empty(x.shape[0], self.capacity, *x.shape[2:])
            buf[:, :n] = x[:, keep]
            buffers[layer] = buf
        self._len[layer] = n

    def append(self, layer: int, k_B1KD: torch.Tensor, v_B1KD: torch.Tensor) -> None:
        """Add a decoded token's K/V (owner only)."""
        n = self._len[layer]
        if n + k_B1KD.shape[1] > self.capacity:
            raise ValueError(f"the KV cache holds {self.capacity} tokens on the owner rank; build SPKVCache with "
                             "max_new_tokens= at least the number of tokens to decode")
        self._k[layer][:, n:n + k_B1KD.shape[1]] = k_B1KD
        self._v[layer][:, n:n + v_B1KD.shape[1]] = v_B1KD
        self._len[layer] = n + k_B1KD.shape[1]

    def keys(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, V) [B, S_cached, Hkv, D] of `layer` on this rank."""
        n = self._len[layer]
        return self._k[layer][:, :n], self._v[layer][:, :n]

    def __len__(self) -> int:
        """Cached tokens on this rank (layer 0)."""
        return self._len.get(0, 0)


# ---------------------------------------------------------------- math: partial attention and the LSE merge
def partial_attention(q_B1HD: torch.Tensor, k_BSKD: torch.Tensor, v_BSKD: torch.Tensor,
                      scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One query token against some keys, all visible -> (out [B, 1, H, D], lse [B, H, 1]) in fp32 (fp64 for
    fp64). GQA without copying the cache: query head i reads KV head i // G. No keys: out 0, lse -inf."""
    b, _, h, d = q_B1HD.shape
    hkv, acc = k_BSKD.shape[2], acc_dtype(q_B1HD.dtype)
    if k_BSKD.shape[1] == 0:
        return q_B1HD.new_zeros(q_B1HD.shape, dtype=acc), q_B1HD.new_full((b, h, 1), float("-inf"), dtype=acc)
    q_BKGD = q_B1HD.reshape(b, hkv, h // hkv, d).to(k_BSKD.dtype)
    scores_BKGS = torch.einsum("bkgd,bskd->bkgs", q_BKGD, k_BSKD).to(acc) * scale
    lse_BKG = torch.logsumexp(scores_BKGS, dim=-1)
    probs = torch.exp(scores_BKGS - lse_BKG[..., None])
    out_BKGD = torch.einsum("bkgs,bskd->bkgd", probs.to(v_BSKD.dtype), v_BSKD).to(acc)
    return out_BKGD.reshape(b, 1, h, d), lse_BKG.reshape(b, h, 1)


def combine_partials(outs: list[torch.Tensor], lses: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact attention over the union of disjoint key sets from each set's (out [B,S,H,D], lse [B,H,S]),
    merged in list order (the same order on every rank gives the same bits)."""
    out = lse = None
    for o, l in zip(outs, lses):
        out, lse = merge_into(out, lse, o.clone(), l)
    return out, lse


def gather_partials(out: torch.Tensor, lse: torch.Tensor, group) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every rank's (out, lse) of `group`, in group-rank order: one all-gather of both, packed."""
    if group_size(group) == 1:
        return [out], [lse]
    packed = torch.cat([out.reshape(-1), lse.reshape(-1)])
    parts = [torch.empty_like(packed) for _ in range(group_size(group))]
    dist.all_gather(parts, packed, group=group)
    n = out.numel()
    return [p[:n].view_as(out) for p in parts], [p[n:].view_as(lse) for p in parts]


def decode_attention(q_B1HD, k_B1KD, v_B1KD, layer: int, cache: SPKVCache, scale: float) -> torch.Tensor:
    """The new token's attention over the whole sharded cache (its own K/V appended on the owner) -> [B,1,H,D].
    Process group: cache.dims.group("sp")."""
    if cache.is_owner:
        cache.append(layer, k_B1KD, v_B1KD)
    out, lse = partial_attention(q_B1HD, *cache.keys(layer), scale)
    out, _ = combine_partials(*gather_partials(out, lse, cache.dims.group("sp")))
    return out.to(q_B1HD.dtype)


# ---------------------------------------------------------------- the seam
def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, sp_cache=None, **kwargs):
    if sp_cache is None:
        raise ValueError("this LLM's attention was set by apply_sp_inference: run it through sp_prefill / sp_greedy "
                         "(they pass sp_cache=), or call llm.set_attn_implementation('sdpa') for one process")
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))          # [B, H, S, D] -> [B, S, H, D]
    if sp_cache.decoding:
        if q.shape[1] != 1:
            raise ValueError(f"decoding takes one token at a time, got {q.shape[1]}")
        return decode_attention(q, k, v, module.layer_idx, sp_cache, scaling), None
    sp_cache.store(module.layer_idx, k, v)
    out = sp_attention(q, k, v, sp_cache.dims, causal=True, scale=scaling,
                       backend=sp_cache.backend, seq_len=sp_cache.seq_len)
    return out, None


def apply_sp_inference(model, dims: ParallelDims) -> str:
    """Route `model`'s LLM attention through the SP inference function (in place); returns its name. The model
    then runs only through `longvila.infer.sp`'s `sp_prefill` / `sp_greedy`, which pass the cache
    (`llm.set_attn_implementation("sdpa")` undoes it)."""
    llm = getattr(model, "llm", model)
    cfg = llm.config
    dims.validate_heads(cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", cfg.num_attention_heads))
    AttentionInterface.register(ATTENTION_NAME, _attention)
    llm.set_attn_implementation(ATTENTION_NAME)
    return ATTENTION_NAME
