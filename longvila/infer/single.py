"""Single-process inference: a checkpoint folder + a video (or image) + a question -> an answer.

    model, tokenizer = load_for_inference("results/init_model/tiny")
    print(answer(model, tokenizer, video="clip.mp4", prompt="What happens?", num_frames=8))

Frames are sampled uniformly over the whole video, preprocessed as SigLIP expects, encoded in chunks (with a
progress bar for long videos), spliced into the ChatML prompt at `<vila/video>`, and the answer is decoded
greedily with a KV cache. This is `longvila infer` without --sp; sequence-parallel prefill for very long videos
is `longvila.infer.sp` (same prompt, same greedy ids).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoTokenizer

from longvila.model.conversation import MEDIA_TOKENS, add_media_tokens, tokenize_conversation
from longvila.model.vlm import LongVILAForCausalLM
from longvila.utils.hub import check_model_dir


def load_for_inference(model_dir: str | Path, dtype: torch.dtype = torch.float32):
    """(model in eval mode, tokenizer with the media tokens) from a checkpoint folder in the released layout."""
    root = check_model_dir(model_dir)
    if not (root / "llm" / "tokenizer_config.json").is_file():
        raise ValueError(f"{root / 'llm'} has no tokenizer files; a LongVILA checkpoint keeps its tokenizer in llm/")
    model = LongVILAForCausalLM.from_pretrained(root, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(root / "llm")
    add_media_tokens(tokenizer)
    model.resize_for_tokenizer(tokenizer)
    return model, tokenizer


@torch.no_grad()
def encode_media(model: LongVILAForCausalLM, frames_uint8, newline_id: int, batch: int = 16,
                 progress: bool = False) -> torch.Tensor:
    """uint8 frames [N, H, W, 3] -> media embeddings [N * (T + 1), D] (each frame + the "\\n" token)."""
    from longvila.data.video import preprocess_frames

    size = model.vision_tower.config.image_size
    chunks = []
    for start in tqdm(range(0, len(frames_uint8), batch), desc="encode frames", unit="batch", disable=not progress):
        pixels = preprocess_frames(frames_uint8[start:start + batch], size)
        chunks.append(model.encode_frames(pixels))
    return model.media_embeds(torch.cat(chunks), newline_id=newline_id)


def answer(model: LongVILAForCausalLM, tokenizer, prompt: str, video: str | Path | None = None,
           image: str | Path | None = None, num_frames: int = 8, max_new_tokens: int = 64,
           progress: bool = False) -> str:
    """Greedy answer to `prompt` about a video (uniformly sampled `num_frames`) or an image, or text only."""
    from longvila.data.video import load_image, load_video_frames

    if video is not None and image is not None:
        raise ValueError("give a video or an image, not both")
    media_kind, media = None, []
    (newline_id,) = tokenizer("\n", add_special_tokens=False)["input_ids"]
    if video is not None:
        frames, _ = load_video_frames(video, num_frames, progress=progress)
        media_kind, media = "video", [encode_media(model, frames, newline_id, progress=progress)]
    elif image is not None:
        media_kind, media = "image", [encode_media(model, load_image(image)[None], newline_id)]
    record = {"conversations": [{"from": "human", "value": prompt}]}
    tok = tokenize_conversation(tokenizer, record, media_kind, add_generation_prompt=True)
    media_ids = {tokenizer.convert_tokens_to_ids(t) for t in MEDIA_TOKENS.values()}
    out = model.generate_with_media(torch.tensor(tok.input_ids), media, media_ids, max_new_tokens=max_new_tokens,
                                    eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"))
    return tokenizer.decode(out, skip_special_tokens=True).strip()


def answer_frames(model: LongVILAForCausalLM, tokenizer, prompt: str, clips: list, max_new_tokens: int = 64) -> list[str]:
    """Greedy answers to one `prompt` for each clip (uint8 frames [N, H, W, 3] each); the frames of all clips
    go through the vision tower together, generation runs clip by clip."""
    if not clips:
        return []
    (newline_id,) = tokenizer("\n", add_special_tokens=False)["input_ids"]
    counts = [len(c) for c in clips]
    media = encode_media(model, np.concatenate(clips), newline_id)
    per_frame = media.shape[0] // sum(counts)
    record = {"conversations": [{"from": "human", "value": prompt}]}
    tok = tokenize_conversation(tokenizer, record, "video", add_generation_prompt=True)
    media_ids = {tokenizer.convert_tokens_to_ids(t) for t in MEDIA_TOKENS.values()}
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    out, at = [], 0
    for n in counts:
        clip_media = media[at * per_frame:(at + n) * per_frame]
        at += n
        ids = model.generate_with_media(torch.tensor(tok.input_ids), [clip_media], media_ids,
                                        max_new_tokens=max_new_tokens, eos_token_id=eos)
        out.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
    return out
