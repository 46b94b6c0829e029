"""Sequence-parallel answering: MM-SP frame encoding, sharded prefill, greedy decoding on a sharded KV cache.

What: the driver of SP inference, run by every rank of an SP group with the same arguments. The frames are
encoded 1/P per rank (`encode_video_sharded`: preprocessing here, the sharding in `parallel/mmsp.py`) and
spliced into the prompt on every rank (each rank holds the spliced prompt's embeddings [L, D] once, as
training's `prepare_sp_inputs` does). `sp_prefill` runs the LLM on this rank's shard of the prompt, padded at
the END to the layout's divisor, filling the sharded KV cache; `sp_greedy` then decodes greedily: the rank
that owns the last prompt token computes the logits, picks the token and broadcasts it, so all ranks stop
together. The cache, the decode attention and its exact log-sum-exp merge are `longvila.parallel.decode`.

Why: a long video's prompt does not fit one device; prefill memory and the KV cache are 1/P per rank, and
the greedy ids equal single-process `longvila.infer.single.answer` (tests/distributed/test_sp_inference.py).

How to run: `longvila infer ... --sp UxR` (infer/sp_launch.py starts the ranks), or as a library inside an
initialised process group (or P = 1 without one):

    text = sp_generate(model, tokenizer, "What happens?", dims, video="clip.mp4", num_frames=256)
    out = sp_greedy(model, embeds_LD, dims, max_new_tokens=32, eos_token_id=eos)   # same ids on every rank
    out.ids, out.prefill_s                                                        # prefill_s: to the 1st token

Shapes: L prompt length, S_loc this rank's shard, D hidden size. Communication per token: one broadcast of
its id from the owner (plus the decode attention's all-gathers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from longvila.data.video import load_image, load_video_frames, preprocess_frames
from longvila.model.conversation import IM_END, MEDIA_TOKENS, tokenize_conversation
from longvila.parallel.comm import collective_device, group_size
from longvila.parallel.decode import SPKVCache, apply_sp_inference
from longvila.parallel.dims import ParallelDims
from longvila.parallel.mmsp import encode_frames_sharded


# ---------------------------------------------------------------- media: MM-SP stage 1
@torch.no_grad()
def encode_video_sharded(model, frames_NHW3, dims: ParallelDims, batch: int = 16) -> torch.Tensor:
    """uint8 frames [N, H, W, 3] (the same on every rank) -> all frames' projector outputs [N, T, D] on every SP
    rank; each rank preprocesses and encodes only its N/P frames, in batches of `batch` (zero frames pad N to a
    multiple of P, their outputs are dropped). The sharding is `parallel.mmsp.encode_frames_sharded`; this adds
    the SigLIP preprocessing, per batch. Process group: dims.group("sp") (one all-gather)."""
    size, device = model.vision_tower.config.image_size, model.device
    return encode_frames_sharded(model, frames_NHW3, dims, batch=batch,
                                 prepare=lambda chunk: preprocess_frames(chunk, size).to(device))


# ---------------------------------------------------------------- prefill, greedy pick, greedy loop
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
        backend: of the prefill's `sp_attention` (the layout is dims.layout).
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


# ---------------------------------------------------------------- answering (any rank)
def sp_answer_ids(model, tokenizer, prompt: str, dims, *, video=None, image=None, frames=None, num_frames: int = 8,
                  max_new_tokens: int = 64, stop_at_eos: bool = True, backend: str = "auto",
                  progress: bool = False) -> SPOutput:
    """Greedy answer ids to `prompt` about a video file, an image file, uint8 `frames` [N, H, W, 3], or text only,
    as `longvila.infer.single.answer` builds it, with MM-SP prefill and a sharded KV cache.

    Every rank of dims.group("sp") calls it with the same arguments. Returns an `SPOutput` (ids, the same on
    every rank; prompt length; encode_s: reading + sharded encoding of the media; prefill_s; decode_s).
    """
    if sum(x is not None for x in (video, image, frames)) > 1:
        raise ValueError("give one of video, image or frames")
    start = time.perf_counter()
    kind = "image" if image is not None else "video" if video is not None or frames is not None else None
    if video is not None:
        frames, _ = load_video_frames(video, num_frames, progress=progress)
    elif image is not None:
        frames = load_image(image)[None]
    (newline_id,) = tokenizer("\n", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        media = [] if frames is None else [model.media_embeds(encode_video_sharded(model, frames, dims), newline_id)]
        encode_s = time.perf_counter() - start
        record = {"conversations": [{"from": "human", "value": prompt}]}
        tok = tokenize_conversation(tokenizer, record, kind, add_generation_prompt=True)
        media_ids = {tokenizer.convert_tokens_to_ids(t) for t in MEDIA_TOKENS.values()}
        embeds_LD, _ = model.splice(torch.tensor(tok.input_ids, device=model.device), media, media_ids)
    out = sp_greedy(model, embeds_LD, dims, max_new_tokens=max_new_tokens, backend=backend,
                    eos_token_id=tokenizer.convert_tokens_to_ids(IM_END) if stop_at_eos else None)
    out.encode_s = encode_s
    return out


def sp_generate(model, tokenizer, prompt: str, dims, **kwargs) -> str:
    """The answer text of `sp_answer_ids` (same keywords), the same on every rank."""
    out = sp_answer_ids(model, tokenizer, prompt, dims, **kwargs)
    return tokenizer.decode(out.ids, skip_special_tokens=True).strip()
