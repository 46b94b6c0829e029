"""Sequence-parallel inference: MM-SP prefill, then greedy decoding against a KV cache that stays sharded.

Prefill: the frames are encoded 1/P per rank (`encode_video_sharded`, MM-SP stage 1), spliced into the prompt
on every rank, padded at the END to the layout's divisor and sharded (`local_indices`). The LLM runs on this
rank's shard with `sp_attention` (Ulysses x ring), and every layer's attention call also stores this rank's
K/V (post-rotary, all KV heads) for its REAL positions only: padding is never cached, so no real token ever
attends to it, in prefill (causal, padding comes last) or in decoding. Each rank holds the spliced prompt's
embeddings [L, D] once, as training's `prepare_sp_inputs` does; activations and the KV cache are 1/P.

Decode: the new token is replicated on every rank with its global position. In each layer every rank attends
the token's query to its own cached keys, giving a partial (out, LSE); the SP group all-gathers the partials
and merges them exactly by log-sum-exp, in rank order, so every rank computes the same output. The new
token's K/V are appended on the rank that owns the last prompt token (the owner); the owner also computes
the logits, picks the greedy token and broadcasts it (as in the paper), so all ranks stop together.

The seam is Transformers' `AttentionInterface` (as in parallelize.py): the cache travels as the `sp_cache=`
keyword of the decoder's forward, which Transformers hands to the attention function unchanged; the LLM runs
with use_cache=False (the cache is ours).

    apply_sp_inference(model, dims)
    out = sp_greedy(model, embeds_LD, dims, max_new_tokens=32, eos_token_id=eos)   # same ids on every rank
    out.ids, out.prefill_s                                                        # prefill_s: to the 1st token

Shapes: B batch (1), S tokens, H query heads, Hkv KV heads (G = H / Hkv), D head dim, L prompt length.
Communication per decoded token and layer: one all-gather of B*H*(D+1) fp32 values over dims.group("sp");
per token: one broadcast of its id from the owner.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from transformers import AttentionInterface

from longvila.parallel.attention import sp_attention
from longvila.parallel.blocks import acc_dtype, merge_into
from longvila.parallel.comm import collective_device, gather_along, group_size
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
    then runs only through `sp_prefill` / `sp_greedy` (`llm.set_attn_implementation("sdpa")` undoes it)."""
    llm = getattr(model, "llm", model)
    cfg = llm.config
    dims.validate_heads(cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", cfg.num_attention_heads))
    AttentionInterface.register(ATTENTION_NAME, _attention)
    llm.set_attn_implementation(ATTENTION_NAME)
    return ATTENTION_NAME


# ---------------------------------------------------------------- prefill, decode, greedy loop
@torch.no_grad()
def encode_video_sharded(model, frames_NHW3, dims: ParallelDims, batch: int = 16) -> torch.Tensor:
    """uint8 frames [N, H, W, 3] (the same on every rank) -> all frames' projector outputs [N, T, D] on every SP
    rank; each rank preprocesses and encodes only its N/P frames (zero frames pad N to a multiple of P, their
    outputs are dropped), in batches of `batch`. Process group: dims.group("sp") (one all-gather)."""
    import numpy as np

    from longvila.data.video import preprocess_frames

    n, p = len(frames_NHW3), dims.sp_degree
    per_rank, rank = -(-n // p), dims.axis_rank("sp")
    mine = frames_NHW3[rank * per_rank:(rank + 1) * per_rank]
    if len(mine) < per_rank:
        mine = np.concatenate([mine, np.zeros((per_rank - len(mine), *frames_NHW3.shape[1:]), frames_NHW3.dtype)])
    size, device = model.vision_tower.config.image_size, model.device
    local = torch.cat([model.encode_frames(preprocess_frames(mine[i:i + batch], size).to(device))
                       for i in range(0, per_rank, batch)])
    return gather_along(local, dims.group("sp"), dim=0)[:n]


@torch.no_grad()
def sp_prefill(model, embeds_LD: torch.Tensor, cache: SPKVCache) -> torch.Tensor:
    """Run the LLM over this rank's shard of the prompt (`embeds_LD`, the same on every rank), filling `cache`;
    returns this rank's final hidden states [S_loc, D] (order: `cache.positions`; the padding's rows are
    meaningless). Process groups: those of `sp_attention`."""
    llm = getattr(model, "llm", model)
    if len(embeds_LD) != cache.real_len:
        raise ValueError(f"the cache was built for {cache.real_len} prompt tokens, got {len(embeds_LD)}")
    positions = cache.positions.to(embeds_LD.device)
    # this rank's rows, padding (past the end) as zeros, without a padded copy of the whole prompt
    local_SD = embeds_LD.index_select(0, positions.clamp(max=cache.real_len - 1))
    local_SD = local_SD * cache.keep.to(local_SD.device, local_SD.dtype)[:, None]
    cache.decoding = False
    hidden = llm.get_decoder()(inputs_embeds=local_SD[None], position_ids=positions[None], use_cache=False,
                               sp_cache=cache).last_hidden_state[0]
    cache.decoding = True
    return hidden


def _pick(llm, hidden_D: torch.Tensor | None, cache: SPKVCache) -> int:
    """The owner's greedy token, broadcast over the SP group."""
    token = torch.zeros(1, dtype=torch.int64, device=collective_device())
    if cache.is_owner:
        token[0] = llm.get_output_embeddings()(hidden_D).argmax()
    group = cache.dims.group("sp")
    if group_size(group) > 1:
        dist.broadcast(token, src=dist.get_global_rank(group, cache.owner), group=group)
    return int(token.item())


@dataclass
class SPOutput:
    ids: list[int]           # generated ids (with the eos token when it stopped there), the same on every rank
    prompt_len: int          # tokens in the prompt, media included
    prefill_s: float         # prefill + first token (time to first token after the media are encoded)
    decode_s: float          # the remaining tokens
    encode_s: float = 0.0    # sharded frame encoding (set by callers that encode media)

    @property
    def ttft_s(self) -> float:
        return self.encode_s + self.prefill_s


@torch.no_grad()
def sp_greedy(model, embeds_LD: torch.Tensor, dims: ParallelDims, *, max_new_tokens: int,
              eos_token_id: int | None = None, backend: str = "auto") -> SPOutput:
    """Greedy generation after the prompt `embeds_LD` [L, D] (the same on every rank of the SP group).

    Args:
        dims: the topology (groups built, or one process); U must divide the LLM's heads and KV heads.
        eos_token_id: stop after this token (None: always `max_new_tokens`).
        layout, backend: of the prefill's `sp_attention`.
    Returns:
        SPOutput, the same ids on every rank. Process groups: dims.group("sp") and those of `sp_attention`.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}; ask for at least one token")
    llm = getattr(model, "llm", model)
    apply_sp_inference(model, dims)
    cache = SPKVCache(dims, real_len=len(embeds_LD), backend=backend, max_new_tokens=max_new_tokens)
    start = time.perf_counter()
    hidden = sp_prefill(model, embeds_LD, cache)
    token = _pick(llm, hidden[cache.last_index()] if cache.is_owner else None, cache)
    prefill_s = time.perf_counter() - start
    ids, device, decoder = [token], embeds_LD.device, llm.get_decoder()
    while len(ids) < max_new_tokens and token != eos_token_id:
        position = torch.tensor([[cache.real_len + len(ids) - 1]], device=device)
        x = llm.get_input_embeddings()(torch.tensor([[token]], device=device))
        h = decoder(inputs_embeds=x, position_ids=position, use_cache=False, sp_cache=cache).last_hidden_state
        token = _pick(llm, h[0, -1] if cache.is_owner else None, cache)
        ids.append(token)
    return SPOutput(ids, cache.real_len, prefill_s, time.perf_counter() - start - prefill_s)
