"""Index: validate Shot2Story annotations, resolve and probe the videos -> `videos.parquet`.

Each annotation record needs the real fields (`video`, `nvid`, `id`, `whole_caption`, `video_names`,
`captions`; optional `image_id`, `whole_ASR`, `audio_captions`, `ASR`) with the right types and per-shot
lists of equal length. The multi-shot video is `<root>/<video_dir>/<nvid>`; shot spans come from the lengths
of the per-shot files `<root>/<shot_dir>/<video_names[i]>` when they are all there (Shot2Story gives no shot
timestamps). Rejections, counted by reason: invalid_record, invalid_utf8, duplicate_id, missing_video,
corrupt_video, zero_length, shots_exceed_video. Videos whose shot files are missing are kept with unknown
spans (counted as shot_spans_unknown; clipping then uses fixed windows).
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
from tqdm import tqdm

from longvila.data.shot2story.common import Rejects
from longvila.data.video import probe_video

FIELDS = {"video": str, "nvid": str, "id": int, "whole_caption": str, "video_names": list, "captions": list}
OPTIONAL = {"image_id": str, "whole_ASR": str, "audio_captions": list, "ASR": list}
PER_SHOT = ("captions", "audio_captions", "ASR")

VIDEOS_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("id", pa.int64()), ("annotation_file", pa.string()), ("nvid", pa.string()),
    ("path", pa.string()), ("frames", pa.int64()), ("fps", pa.float64()), ("duration", pa.float64()),
    ("width", pa.int64()), ("height", pa.int64()), ("shots", pa.int64()),
    ("shot_starts", pa.list_(pa.int64())), ("shot_ends", pa.list_(pa.int64())),
    ("whole_caption", pa.string()), ("whole_asr", pa.string()), ("captions", pa.list_(pa.string())),
    ("asr", pa.list_(pa.string())),
])


def _has_surrogates(value) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, list):
        return any(_has_surrogates(v) for v in value)
    return False


def validate_record(rec) -> str | None:
    """None if `rec` has the Shot2Story schema, else a description of the first problem."""
    if not isinstance(rec, dict):
        return f"a record must be an object, got {type(rec).__name__}"
    for name, tp in FIELDS.items():
        if name not in rec:
            return f"missing field '{name}'"
        if not isinstance(rec[name], tp) or (tp is int and isinstance(rec[name], bool)):
            return f"field '{name}' must be {tp.__name__}, got {type(rec[name]).__name__}"
    for name, tp in OPTIONAL.items():
        if rec.get(name) is not None and not isinstance(rec[name], tp):
            return f"field '{name}' must be {tp.__name__}, got {type(rec[name]).__name__}"
    shots = len(rec["video_names"])
    if shots == 0 or not all(isinstance(n, str) and n for n in rec["video_names"]):
        return "video_names must be a non-empty list of file names"
    for name in PER_SHOT:
        values = rec.get(name)
        if values is not None and len(values) != shots:
            return f"'{name}' must hold one string per shot ({shots}), got {len(values)} items"
        if values is not None and not all(isinstance(v, str) for v in values):
            return f"'{name}' must hold strings only"
    return None


def load_annotations(path: Path, rejects: Rejects) -> list[dict]:
    """Records of one annotation JSON file (a list); non-UTF-8 text rejects its record, not the file."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8", errors="surrogateescape"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"annotation file {path}: {e}; fix or remove it from shot2story.annotations") from e
    if not isinstance(data, list):
        raise ValueError(f"annotation file {path}: expected a JSON list of records, got {type(data).__name__}")
    good = []
    for i, rec in enumerate(data):
        where = {"file": path.name, "index": i, "id": rec.get("id") if isinstance(rec, dict) else None}
        problem = validate_record(rec)
        if problem:
            rejects.add("invalid_record", problem, **where)
        elif any(_has_surrogates(v) for v in rec.values()):
            rejects.add("invalid_utf8", "text that is not valid UTF-8", **where)
        else:
            good.append({**rec, "_file": path.name, "_index": i})
    return good


def _probe(path: Path) -> dict | str:
    try:
        return probe_video(path)
    except (ValueError, OSError, RuntimeError) as e:
        return str(e)


def shot_spans(shot_frames: list[int]) -> tuple[list[int], list[int]]:
    """Consecutive [start, end) frame spans from per-shot frame counts."""
    starts, ends, at = [], [], 0
    for n in shot_frames:
        starts.append(at)
        at += n
        ends.append(at)
    return starts, ends


def build_index(records: list[dict], root: Path, video_dir: str, shot_dir: str, rejects: Rejects,
                workers: int = 4, progress: bool = False) -> tuple[list[dict], Counter]:
    """videos.parquet rows for the records whose video is usable; notes (e.g. shot_spans_unknown) counted."""
    notes: Counter = Counter()
    seen: set[tuple[str, int]] = set()
    unique = []
    for rec in records:                      # ids are unique per annotation file (files may share videos)
        if (rec["_file"], rec["id"]) in seen:
            rejects.add("duplicate_id", f"id {rec['id']} appears again in {rec['_file']}", file=rec["_file"],
                        index=rec["_index"], id=rec["id"])
            continue
        seen.add((rec["_file"], rec["id"]))
        unique.append(rec)

    def probe_one(rec):
        video = root / video_dir / rec["nvid"]
        if not video.is_file():
            return rec, video, "missing", None
        info = _probe(video)
        shots = [root / shot_dir / n for n in rec["video_names"]]
        shot_info = [_probe(p) for p in shots] if all(p.is_file() for p in shots) else None
        return rec, video, info, shot_info

    rows = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for rec, video, info, shot_info in tqdm(pool.map(probe_one, unique), total=len(unique), desc="index videos",
                                                unit="video", disable=not progress):
            where = {"file": rec["_file"], "index": rec["_index"], "id": rec["id"], "path": str(video)}
            if info == "missing":
                rejects.add("missing_video", f"{video} not found", **where)
                continue
            if isinstance(info, str):
                rejects.add("corrupt_video", info, **where)
                continue
            if info["frames"] <= 0 or info["duration"] <= 0:
                rejects.add("zero_length", f"{info['frames']} frames, {info['duration']} s", **where)
                continue
            starts = ends = None
            if shot_info is None or any(isinstance(s, str) for s in shot_info):
                notes["shot_spans_unknown"] += 1
            else:
                starts, ends = shot_spans([s["frames"] for s in shot_info])
                if ends[-1] > info["frames"] + len(ends):        # allow one frame of rounding per shot
                    rejects.add("shots_exceed_video", f"shots hold {ends[-1]} frames, the video {info['frames']}",
                                **where)
                    continue
                ends[-1] = min(ends[-1], info["frames"])
            rows.append({"video_id": f"{Path(rec['_file']).stem}:{rec['id']}", "id": rec["id"],
                         "annotation_file": rec["_file"], "nvid": rec["nvid"],
                         "path": str(video.relative_to(root)), "frames": info["frames"], "fps": info["fps"],
                         "duration": info["duration"], "width": info["width"], "height": info["height"],
                         "shots": len(rec["video_names"]), "shot_starts": starts, "shot_ends": ends,
                         "whole_caption": rec["whole_caption"], "whole_asr": rec.get("whole_ASR"),
                         "captions": rec["captions"], "asr": rec.get("ASR")})
    return rows, notes
