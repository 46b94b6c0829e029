"""lmms-eval model `longvila`: a LongVILA checkpoint (released layout) behind lmms-eval's simple-model API.

    python -m lmms_eval --model longvila --model_args pretrained=results/train_stage5/8f,num_frames=32 \\
        --tasks longvila_localmc --include_path results/make_bench_task --output_path out --log_samples

Registered through the `lmms_eval.models` entry point group (longvila/eval/lmms_entry.py, pyproject.toml) as
`longvila_repro`, alias `longvila` (it shadows lmms-eval's own vLLM-based `longvila`), so lmms-eval finds it
without LMMS_EVAL_PLUGINS. One process, batch size 1, greedy decoding, the ChatML prompt
of longvila/model/conversation.py. Visuals from a task's doc_to_visual: video paths (`num_frames` frames
sampled uniformly over the whole video, as `longvila infer` does) and/or PIL images (one frame each); all of
a doc's visuals are spliced in at one media token, in order. This module imports lmms-eval at the top: only
lmms-eval imports it (through the class path of the manifest).

Model args (`--model_args k=v,...`): pretrained (checkpoint folder), num_frames (default 8), max_new_tokens
(used when the task gives none; default 64), dtype (float32 | bfloat16 | float16; default bfloat16 on a GPU,
float32 on the CPU), device (default cuda when available, else cpu).

Shapes: L sequence length, D LLM hidden size, V vocabulary, T continuation tokens.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm import tqdm

from longvila.infer.single import load_for_inference
from longvila.model.conversation import IM_END, MEDIA_TOKENS, tokenize_conversation
from longvila.utils.logging import get_logger

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class LongVILALmms(lmms):
    """The `longvila` model of lmms-eval (see the module docstring)."""

    is_simple = True

    def __init__(self, pretrained: str, num_frames: int | str = 8, max_new_tokens: int | str = 64,
                 dtype: str | None = None, device: str | None = None, batch_size: int | str | None = 1,
                 **unused) -> None:
        super().__init__()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("the longvila lmms-eval model runs in one process; start lmms-eval with "
                             "`python -m lmms_eval`, not torchrun or accelerate launch")
        if batch_size not in (None, 1, "1"):
            raise ValueError(f"the longvila lmms-eval model runs batch size 1, got --batch_size {batch_size}")
        unused.pop("max_batch_size", None)
        if unused:
            get_logger().warning(f"longvila lmms-eval model: ignoring model args {sorted(unused)}")
        self.num_frames, self.max_new_tokens = int(num_frames), int(max_new_tokens)
        if self.num_frames < 1 or self.max_new_tokens < 1:
            raise ValueError("num_frames and max_new_tokens must be >= 1")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        name = dtype or ("bfloat16" if self.device.type == "cuda" else "float32")
        if name not in DTYPES:
            raise ValueError(f"dtype={name!r}: use one of {', '.join(DTYPES)}")
        self.model, self.tokenizer = load_for_inference(pretrained, dtype=DTYPES[name])
        self.model.to(self.device)
        self.media_ids = {self.tokenizer.convert_tokens_to_ids(t) for t in MEDIA_TOKENS.values()}
        (self.newline_id,) = self.tokenizer("\n", add_special_tokens=False)["input_ids"]
        self.eos_id = self.tokenizer.convert_tokens_to_ids(IM_END)
        self.calls = {"generate_until": 0, "loglikelihood": 0}

    # ---------------------------------------------------------------- media and prompts
    def _frames(self, visual) -> tuple[np.ndarray, bool]:
        """(uint8 frames [N, H, W, 3], is a video): a video path gives num_frames frames, a PIL image or an
        image path one."""
        from longvila.data.video import load_image, load_video_frames

        if isinstance(visual, (str, os.PathLike)):
            if os.path.splitext(str(visual))[1].lower() in IMAGE_SUFFIXES:
                return load_image(visual)[None], False
            return load_video_frames(visual, self.num_frames)[0], True
        if hasattr(visual, "convert"):                               # a PIL image
            return np.asarray(visual.convert("RGB"))[None], False
        raise ValueError(f"unsupported visual {type(visual).__name__}: the longvila model takes video paths and "
                         "PIL images (audio and other media are not supported)")

    @torch.no_grad()
    def _media(self, visuals) -> tuple[str | None, list[torch.Tensor]]:
        """(media kind, [one [M, D] embedding of all visuals]) or (None, []) for text-only docs."""
        from longvila.data.video import preprocess_frames

        if visuals is None:
            return None, []
        visuals = [v for v in (visuals if isinstance(visuals, (list, tuple)) else [visuals]) if v is not None]
        if not visuals:
            return None, []
        size = self.model.vision_tower.config.image_size
        parts, any_video = [], False
        for visual in visuals:
            frames, is_video = self._frames(visual)
            any_video |= is_video
            for start in range(0, len(frames), 16):                 # bounded vision-tower batches
                pixels = preprocess_frames(frames[start:start + 16], size).to(self.device)
                parts.append(self.model.media_embeds(self.model.encode_frames(pixels), self.newline_id))
        return ("video" if any_video else "image"), [torch.cat(parts)]

    def _prompt_ids(self, context: str, media_kind: str | None) -> torch.Tensor:
        record = {"conversations": [{"from": "human", "value": context}]}
        tok = tokenize_conversation(self.tokenizer, record, media_kind, add_generation_prompt=True)
        return torch.tensor(tok.input_ids, device=self.device)

    def _doc(self, task: str, split: str, doc_id: int) -> dict:
        return self.task_dict[task][split][doc_id]

    # ---------------------------------------------------------------- lmms-eval API
    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy answers; each stops at EOS, `max_new_tokens` or the first of the request's `until` strings."""
        out = []
        for req in tqdm(requests, desc="longvila generate", unit="doc", disable=self.rank != 0):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature") or 0) > 0:
                get_logger().warning("longvila lmms-eval model: decoding greedily (sampling settings ignored)")
            kind, media = self._media(doc_to_visual(self._doc(task, split, doc_id)))
            ids = self.model.generate_with_media(self._prompt_ids(context, kind), media, self.media_ids,
                                                 max_new_tokens=int(gen_kwargs.get("max_new_tokens")
                                                                    or self.max_new_tokens),
                                                 eos_token_id=self.eos_id)
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            for stop in until:
                if stop:
                    text = text.split(stop, 1)[0]
            out.append(text.strip())
            self.calls["generate_until"] += 1
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), out[-1])
        return out

    @torch.no_grad()
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """(sum of the continuation tokens' log-probabilities after the prompt, whether greedy decoding gives
        exactly the continuation) per request. The continuation follows the assistant header of the prompt."""
        out = []
        for req in tqdm(requests, desc="longvila loglikelihood", unit="doc", disable=self.rank != 0):
            context, continuation, doc_to_visual, doc_id, task, split = req.args
            doc = self._doc(task, split, doc_id)
            if callable(continuation):
                continuation = continuation(doc)
            if isinstance(continuation, (list, tuple)):
                continuation = continuation[0]
            kind, media = self._media(doc_to_visual(doc))
            prompt = self._prompt_ids(context[0] if isinstance(context, list) else context, kind)
            cont = torch.tensor(self.tokenizer(str(continuation), add_special_tokens=False)["input_ids"],
                                device=self.device, dtype=torch.long)
            if len(cont) == 0:
                out.append((0.0, True))
                continue
            embeds_LD, _ = self.model.splice(torch.cat([prompt, cont]), media, self.media_ids)
            logits_LV = self.model(inputs_embeds=embeds_LD[None]).logits[0].float()
            logprobs_TV = torch.log_softmax(logits_LV[-len(cont) - 1:-1], dim=-1)
            total = logprobs_TV.gather(1, cont[:, None]).sum().item()
            out.append((total, bool((logprobs_TV.argmax(-1) == cont).all())))
            self.calls["loglikelihood"] += 1
            self.cache_hook.add_partial("loglikelihood", (context, continuation), out[-1])
        return out

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("the longvila lmms-eval model answers single-turn tasks only (generate_until "
                                  "and loglikelihood); multi-round tasks are not supported")
