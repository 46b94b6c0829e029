"""Caption every clip through a pluggable backend, resumably -> `captions.parquet`.

Backends:
  annotation  Shot2Story's own caption of the shot each clip is aligned to (no model; clips without a shot
              alignment are rejected as no_shot_alignment);
  longvila    our model (released-layout checkpoint; the captioner is longvila.infer.captioner's): `frames_per_clip` frames sampled uniformly in the clip,
              encoded in batches of clips, greedy caption;
  openai      an OpenAI-compatible chat endpoint with image input (frames as PNG data URLs).
Model captions are cached in a JSON-lines file keyed by a hash of (clip, video file, backend, model
identity, prompt, frames, length): each caption is appended and flushed as soon as it exists (per clip for
openai, per batch for longvila), so a killed run resumes where it stopped and a rerun repeats no work.
Endpoint failures after retries are rejected per clip as endpoint_error and not cached (a rerun tries
again); a wrong URL, key or model (HTTP 401/403/404) stops the step with an error instead.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from longvila.data.shot2story.common import Rejects
from longvila.utils.logging import get_logger

PROMPTS = Path(__file__).parent / "prompts"
CAPTIONS_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("video_id", pa.string()), ("clip_index", pa.int64()), ("start_time", pa.float64()),
    ("end_time", pa.float64()), ("caption", pa.string()), ("backend", pa.string()), ("model", pa.string()),
])


def read_prompt(name: str) -> str:
    path = Path(name) if Path(name).is_file() else PROMPTS / name
    if not path.is_file():
        raise ValueError(f"prompt file {name!r} not found (looked in {PROMPTS}); name a file there or give a path")
    return path.read_text(encoding="utf-8").strip()


def clip_frame_indices(start: int, end: int, n: int) -> list[int]:
    """n frame indices spread uniformly over [start, end) (round(linspace), as for whole videos)."""
    return [int(round(x)) for x in np.linspace(start, max(start, end - 1), n)]


class CaptionCache:
    """Append-only JSON-lines cache: key -> caption. A torn last line (killed writer) is ignored."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.entries: dict[str, str] = {}
        self.torn = 0
        raw = self.path.read_bytes() if self.path.is_file() else b""
        if raw:
            for line in raw.decode("utf-8", errors="replace").splitlines():
                try:
                    item = json.loads(line)
                    self.entries[item["key"]] = item["caption"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.torn += 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn_tail = bool(raw) and not raw.endswith(b"\n")
        self._file = open(self.path, "a", encoding="utf-8")
        if torn_tail:                          # end the torn line, or the next entry would be glued onto it
            self._file.write("\n")

    def get(self, key: str) -> str | None:
        return self.entries.get(key)

    def put(self, key: str, clip_id: str, caption: str) -> None:
        self.entries[key] = caption
        self._file.write(json.dumps({"key": key, "clip_id": clip_id, "caption": caption}, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def cache_key(clip: dict, video_file: Path, backend: str, model: str, prompt: str, frames: int, tokens: int) -> str:
    """Hash of what determines a caption: the clip (id, video path relative to the data root, its size, frame
    span), the backend, the model's identity (a fingerprint of the checkpoint's weights for longvila), the
    prompt and the sampling settings. Moving the data folder keeps the cache valid."""
    ident = [clip["clip_id"], clip["path"], video_file.stat().st_size, clip["start_frame"], clip["end_frame"],
             backend, model, prompt, frames, tokens]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()


def model_fingerprint(model_dir: str | Path) -> str:
    """The checkpoint folder plus the size and mtime of each weight file: a retrained model gets new keys."""
    root = Path(model_dir)
    files = sorted(p for p in root.rglob("*") if p.suffix in (".safetensors", ".bin", ".json"))
    if not files:
        raise ValueError(f"caption model {root} has no weights; run rule init_model or set caption.model_dir")
    ident = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return f"{root}@{hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]}"


class OpenAICaptioner:
    """An OpenAI-compatible endpoint, one request per clip; each caption is reported as soon as it returns."""

    def __init__(self, cfg) -> None:
        from longvila.data.shot2story.endpoint import ChatClient

        self.client, self.cfg = ChatClient(cfg.endpoint), cfg

    def caption_batch(self, items: list[tuple[object, np.ndarray]], prompt: str, done, failed) -> None:
        from longvila.data.shot2story.endpoint import EndpointError, user_message

        for item, frames in items:
            try:
                done(item, self.client.complete([user_message(prompt, list(frames))], self.cfg.max_new_tokens)[0])
            except EndpointError as e:          # counted per clip; a wrong URL/key/model raises instead
                failed(item, e)


def caption_clips(clips: list[dict], videos: dict[str, dict], root: Path, cfg, cache_path: Path,
                  rejects: Rejects, model_dir: str | None = None, progress: bool = False,
                  make_captioner: Callable[[], object] | None = None) -> list[dict]:
    """captions.parquet rows for `clips` (see the module docstring).

    `make_captioner()` builds the captioner (`caption_batch(items, prompt, done, failed)`), called only when
    some clip is not cached yet; default: `OpenAICaptioner(cfg)` for the openai backend. The longvila backend
    needs it: `lambda: LongVILACaptioner(model_dir, cfg)` from `longvila.infer.captioner` (the data package
    runs no model itself). `model_dir` names the model in the cache keys and the rows.
    """
    from longvila.data.video import read_frames

    if cfg.backend == "longvila" and make_captioner is None:
        raise ValueError("caption backend 'longvila' runs a model: pass make_captioner=lambda: "
                         "LongVILACaptioner(model_dir, cfg) (longvila.infer.captioner)")
    rows = []
    if cfg.backend == "annotation":
        for clip in clips:
            video = videos[clip["video_id"]]
            if clip["shot_index"] < 0:
                rejects.add("no_shot_alignment", "clip has no annotated shot (shot spans unknown)",
                            clip_id=clip["clip_id"])
                continue
            text = video["captions"][clip["shot_index"]]
            if not text.strip():
                rejects.add("empty_caption", "the shot's annotated caption is empty", clip_id=clip["clip_id"])
                continue
            rows.append(_row(clip, text, "annotation", "shot2story"))
        return rows
    prompt = read_prompt(cfg.prompt_file)
    name = model_fingerprint(model_dir) if cfg.backend == "longvila" else f"{cfg.endpoint.url}#{cfg.endpoint.model}"
    cache = CaptionCache(cache_path)
    if cache.torn:
        get_logger().warning(f"caption cache {cache_path}: ignored {cache.torn} torn line(s) of a killed run")
    keys, todo = {}, []
    for clip in clips:
        video_file = root / clip["path"]
        if not video_file.is_file():
            rejects.add("missing_video", f"{video_file} disappeared after indexing", clip_id=clip["clip_id"])
            continue
        keys[clip["clip_id"]] = key = cache_key(clip, video_file, cfg.backend, name, prompt, cfg.frames_per_clip,
                                                cfg.max_new_tokens)
        if cache.get(key) is None:
            todo.append((clip, key))
    get_logger().info(f"caption: {len(clips)} clips, {len(keys) - len(todo)} cached, {len(todo)} to caption "
                      f"with {cfg.backend}")
    captioner = None
    if todo:                                  # load the model (or open the client) only when there is work
        captioner = make_captioner() if make_captioner is not None else OpenAICaptioner(cfg)

    def done(item, text):
        if not isinstance(text, str):
            rejects.add("bad_caption", f"caption is {type(text).__name__}, not text", clip_id=item[0]["clip_id"])
        else:
            cache.put(item[1], item[0]["clip_id"], text.strip())

    def failed(item, error):
        rejects.add("endpoint_error", str(error), clip_id=item[0]["clip_id"])

    try:
        for start in tqdm(range(0, len(todo), cfg.batch), desc=f"caption ({cfg.backend})", unit="batch",
                          disable=not progress):
            batch = []
            for clip, key in todo[start:start + cfg.batch]:
                idx = clip_frame_indices(clip["start_frame"], clip["end_frame"], cfg.frames_per_clip)
                try:
                    batch.append(((clip, key), read_frames(root / clip["path"], idx)))
                except ValueError as e:
                    rejects.add("unreadable_clip", str(e), clip_id=clip["clip_id"])
            if batch:
                captioner.caption_batch(batch, prompt, done, failed)
    finally:
        cache.close()
    for clip in clips:
        key = keys.get(clip["clip_id"])
        if key is not None and cache.get(key) is not None:
            rows.append(_row(clip, cache.get(key), cfg.backend, name))
    return rows


def _row(clip: dict, caption: str, backend: str, model: str) -> dict:
    return {"clip_id": clip["clip_id"], "video_id": clip["video_id"], "clip_index": clip["clip_index"],
            "start_time": clip["start_time"], "end_time": clip["end_time"], "caption": caption,
            "backend": backend, "model": model}
