"""Assemble the SFT data: `sft.parquet`, VILA-format JSON per split, and a Markdown report with thumbnails.

Split by VIDEO FILE (records of several annotation files may share one), so no video has QA in both
splits: video files are ordered by a hash of (seed, path) and the first round(val_fraction x videos) go to
val — at least one and at most all but one when there are two or more videos; a single video trains. Each SFT
row: id, video (path relative to the dataset root), duration, num_frames hint, question type, split, the
backends that made it, and conversations [{from: human, value: "<video>\\n" + question}, {from: gpt,
value: answer}]. The VILA JSON (`vila_{train,val}.json`) is a list of {"id", "video", "conversations"}, what
the original trainer's LLaVADataset reads with media_dir = the dataset root.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa

from longvila.utils.io import atomic_path, write_text_atomic

CONVERSATION = pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))
SFT_SCHEMA = pa.schema([
    ("id", pa.string()), ("video", pa.string()), ("duration", pa.float64()), ("num_frames", pa.int64()),
    ("question_type", pa.string()), ("split", pa.string()), ("qa_backend", pa.string()),
    ("caption_backend", pa.string()), ("conversations", CONVERSATION),
])


def split_videos(video_ids, val_fraction: float, seed: int) -> dict[str, str]:
    """video id -> 'train' | 'val' (see the module docstring)."""
    ids = sorted(set(video_ids), key=lambda v: hashlib.sha256(f"{seed}:{v}".encode()).hexdigest())
    n_val = round(val_fraction * len(ids))
    if val_fraction > 0 and len(ids) >= 2:
        n_val = min(max(n_val, 1), len(ids) - 1)
    elif len(ids) < 2:
        n_val = 0                                       # one video: it trains
    return {v: ("val" if i < n_val else "train") for i, v in enumerate(ids)}


def sft_rows(qa: list[dict], videos: dict[str, dict], caption_backend: str, num_frames: int,
             val_fraction: float, seed: int) -> list[dict]:
    split = split_videos([videos[q["video_id"]]["path"] for q in qa], val_fraction, seed)
    rows = []
    for q in qa:
        v = videos[q["video_id"]]
        rows.append({"id": q["qa_id"], "video": v["path"], "duration": v["duration"], "num_frames": num_frames,
                     "question_type": q["question_type"], "split": split[v["path"]],
                     "qa_backend": q["backend"], "caption_backend": caption_backend,
                     "conversations": [{"from": "human", "value": "<video>\n" + q["question"]},
                                       {"from": "gpt", "value": q["answer"]}]})
    return rows


def write_vila_json(path: str | Path, rows: list[dict]) -> int:
    records = [{"id": r["id"], "video": r["video"], "conversations": r["conversations"]} for r in rows]
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    return len(records)


def write_report(out: Path, counts: dict, samples: list[dict], root: Path, clips_by_video: dict) -> None:
    """report.md: counts per step and reason, and sample QA with a strip of clip thumbnails each."""
    from PIL import Image

    from longvila.data.video import read_frames

    lines = ["# Stage-5 data report", "", "| step | in | out | rejected by reason |", "|---|---|---|---|"]
    for step, c in counts.items():
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(c.get("rejected", {}).items())) or "—"
        lines.append(f"| {step} | {c.get('in', '')} | {c.get('out', '')} | {reasons} |")
    lines += ["", f"Clips: {counts.get('s2s_clip', {}).get('clips', '?')}; captions: "
                  f"{counts.get('s2s_caption', {}).get('out', '?')}; QA pairs: {counts.get('s2s_qa', {}).get('qa_pairs', '?')}"
                  f" (pairs rejected: {counts.get('s2s_qa', {}).get('pairs_rejected', {}) or 'none'}). In/out count "
                  "records for s2s_index, videos for s2s_clip and s2s_qa, clips for s2s_caption, QA pairs after.",
              "", "## Samples", ""]
    (out / "thumbs").mkdir(exist_ok=True)
    for i, s in enumerate(samples):
        clips = clips_by_video.get(s["video_id"], [])[:8]
        try:
            frames = read_frames(root / s["video"], [(c["start_frame"] + c["end_frame"]) // 2 for c in clips])
        except ValueError:
            frames = None                                  # a thumbnail is not worth failing the step
        if clips and frames is not None:
            Image.fromarray(frames.transpose(1, 0, 2, 3).reshape(frames.shape[1], -1, 3)).save(
                out / "thumbs" / f"sample{i}.png")
            lines.append(f"![clips of {s['video']}](thumbs/sample{i}.png)")
        lines += [f"**{s['question_type']}** ({s['video']}, {s['qa_backend']})", "",
                  f"- Q: {s['conversations'][0]['value'].removeprefix('<video>').strip()}",
                  f"- A: {s['conversations'][1]['value']}", ""]
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
