"""Long-video QA from the ordered clip captions -> `qa.parquet` (+ the LLMs' raw output in `qa_raw.jsonl`).

Backends:
  template      deterministic, rule-based questions built from the captions (the offline default; every row
                says backend = template). Types: summary (the whole caption), temporal_order (which of two
                clips comes first), event_localisation (the time span of a clip), counting (how many scenes:
                changes of caption), cause_effect (approximated by succession: what happens right after).
  openai        an OpenAI-compatible chat endpoint, prompted with a versioned prompt file;
  transformers  a local causal LM folder (chat template when the tokenizer has one).
LLM output is parsed as a JSON list of {type, question, answer}; common damage is repaired (code fences,
prose around the list, trailing commas, a single object instead of a list). Output that stays unusable is
rejected with a counted reason (no_json, not_a_list, missing_fields, unknown_type, empty), never a crash.
"""

from __future__ import annotations

import json
import random
import re

import pyarrow as pa

from longvila.config.video import QA_TYPES
from longvila.data.shot2story.common import Rejects

QA_SCHEMA = pa.schema([
    ("qa_id", pa.string()), ("video_id", pa.string()), ("question_type", pa.string()), ("question", pa.string()),
    ("answer", pa.string()), ("backend", pa.string()), ("model", pa.string()), ("prompt_version", pa.string()),
])


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text else text


def _scenes(clips: list[dict]) -> list[dict]:
    """Consecutive clips with the same caption merged into scenes (times joined)."""
    scenes = []
    for c in clips:
        if scenes and scenes[-1]["caption"] == c["caption"]:
            scenes[-1]["end_time"] = c["end_time"]
        else:
            scenes.append(dict(c))
    return scenes


def template_qa(video: dict, clips: list[dict], types: list[str], seed: int) -> list[dict]:
    """Deterministic QA pairs of the requested types (see the module docstring)."""
    rng = random.Random(f"{seed}:{video['video_id']}")
    scenes = _scenes(clips)
    out = []
    for t in types:
        if t == "summary":
            answer = video.get("whole_caption") or " ".join(s["caption"] for s in scenes)
            out.append((t, "Describe what happens in this video, from beginning to end.", answer))
        elif t == "temporal_order" and len(scenes) >= 2:
            i, j = sorted(rng.sample(range(len(scenes)), 2))
            a, b = scenes[i]["caption"].rstrip("."), scenes[j]["caption"].rstrip(".")
            first_listed = rng.random() < 0.5
            options = (b, a) if first_listed else (a, b)
            out.append((t, f"Which happens first in the video: (A) {_lower_first(options[0])}, or (B) "
                           f"{_lower_first(options[1])}?",
                        f"({'B' if first_listed else 'A'}) {a}, which comes before {_lower_first(b)}."))
        elif t == "event_localisation":
            s = scenes[rng.randrange(len(scenes))]
            out.append((t, f"When in the video does this happen: \"{s['caption']}\"?",
                        f"From about {s['start_time']:.0f} s to {s['end_time']:.0f} s."))
        elif t == "counting":
            n = len(scenes)
            out.append((t, "How many different scenes does the video show?", f"{n} scene{'s' * (n != 1)}."))
        elif t == "cause_effect" and len(scenes) >= 2:
            i = rng.randrange(len(scenes) - 1)
            out.append((t, f"What happens right after this: \"{scenes[i]['caption']}\"?", scenes[i + 1]["caption"]))
    return [{"type": t, "question": q, "answer": a} for t, q, a in out]


def build_prompt(template: str, video: dict, clips: list[dict], types: list[str]) -> str:
    lines = "\n".join(f"[{c['start_time']:.0f}-{c['end_time']:.0f} s] {c['caption']}" for c in clips)
    return template.format(captions=lines, summary=video.get("whole_caption") or "(none)", types=", ".join(types))


def parse_qa(text: str, types: list[str]) -> tuple[list[dict], list[str]]:
    """(valid pairs, a rejection reason per unusable item) from an LLM's raw reply; a reply with no usable
    pair at all has at least one reason."""
    body = re.sub(r"```(?:json)?", "", text or "").strip()
    start = min([i for i in (body.find("["), body.find("{")) if i >= 0], default=-1)
    if start < 0:
        return [], ["no_json"]
    end = max(body.rfind("]"), body.rfind("}"))
    candidate = re.sub(r",\s*([\]}])", r"\1", body[start:end + 1])          # trailing commas
    try:
        data = json.loads(candidate)
    except json.JSONDecodeError:
        return [], ["no_json"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        return [], ["not_a_list"]
    pairs, reasons = [], []
    for item in data:
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) and item[k].strip()
                                                 for k in ("type", "question", "answer")):
            reasons.append("missing_fields")
            continue
        kind = item["type"].strip().lower().replace(" ", "_").replace("-", "_")
        if kind not in QA_TYPES or kind not in types:
            reasons.append("unknown_type")
            continue
        pairs.append({"type": kind, "question": item["question"].strip(), "answer": item["answer"].strip()})
    if not pairs and not reasons:
        reasons.append("empty")
    return pairs, reasons


class TransformersLM:
    """A local causal LM folder (Transformers), greedy or sampled."""

    def __init__(self, model_dir: str) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.name = str(model_dir)

    def complete(self, prompt: str, max_new_tokens: int, temperature: float) -> str:
        import torch

        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                           add_generation_prompt=True)
        else:
            text = prompt
        ids = tok(text, return_tensors="pt")
        with torch.no_grad():
            out = self.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                                      temperature=temperature if temperature > 0 else None,
                                      pad_token_id=tok.pad_token_id or tok.eos_token_id)
        return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def generate_qa(videos: list[dict], clips_by_video: dict[str, list[dict]], cfg, rejects: Rejects,
                prompt_template: str = "", prompt_version: str = "", progress: bool = False, pair_rejects=None):
    """(qa rows, raw LLM outputs) for every video with captions. A video without any usable pair is rejected
    (`rejects`, by reason); unusable items next to usable ones are counted in `pair_rejects` (a Counter)."""
    from collections import Counter

    from tqdm import tqdm

    from longvila.data.shot2story.endpoint import ChatClient, EndpointError, user_message

    pair_rejects = pair_rejects if pair_rejects is not None else Counter()
    lm = TransformersLM(cfg.model_dir) if cfg.backend == "transformers" else None
    client = ChatClient(cfg.endpoint) if cfg.backend == "openai" else None
    model = {"template": "rules", "openai": cfg.endpoint.model, "transformers": lm.name if lm else ""}[cfg.backend]
    rows, raw = [], []
    for video in tqdm(videos, desc=f"qa ({cfg.backend})", unit="video", disable=not progress):
        clips = clips_by_video.get(video["video_id"], [])
        if not clips:
            rejects.add("no_captions", "no captioned clip", video_id=video["video_id"])
            continue
        if cfg.backend == "template":
            pairs = template_qa(video, clips, cfg.types, cfg.seed)
            if not pairs:
                rejects.add("no_pairs", f"no question of types {cfg.types} fits {len(clips)} clip(s)",
                            video_id=video["video_id"])
                continue
        else:
            prompt = build_prompt(prompt_template, video, clips, cfg.types)
            try:
                text = (client.complete([user_message(prompt)], cfg.max_new_tokens, cfg.temperature)[0] if client
                        else lm.complete(prompt, cfg.max_new_tokens, cfg.temperature))
            except EndpointError as e:
                rejects.add("endpoint_error", str(e), video_id=video["video_id"])
                continue
            pairs, reasons = parse_qa(text, cfg.types)
            raw.append({"video_id": video["video_id"], "prompt": prompt, "output": text, "pairs": len(pairs),
                        "rejected": reasons})
            if not pairs:
                rejects.add(reasons[0], text[:200], video_id=video["video_id"])
                continue
            pair_rejects.update(reasons)
        for k, p in enumerate(pairs):
            rows.append({"qa_id": f"{video['video_id']}/{p['type']}/{k}", "video_id": video["video_id"],
                         "question_type": p["type"], "question": p["question"], "answer": p["answer"],
                         "backend": cfg.backend, "model": model, "prompt_version": prompt_version})
    return rows, raw
