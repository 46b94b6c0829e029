"""Clip arithmetic: cut each indexed video into clips -> `clips.parquet`.

Mode 'shots': one clip per annotated shot, [start, end) frames from the per-shot files, aligned to the
shot's caption (`shot_index`). Mode 'fixed' (the paper's ~10 s clips): windows of round(window_seconds x fps)
frames; a trailing window shorter than `min_seconds` joins the previous one; each window is aligned to the
shot it overlaps most (-1 when the spans are unknown). Videos without shot spans use 'fixed' in either mode.
"""

from __future__ import annotations

import pyarrow as pa

CLIPS_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("video_id", pa.string()), ("clip_index", pa.int64()), ("path", pa.string()),
    ("start_frame", pa.int64()), ("end_frame", pa.int64()), ("start_time", pa.float64()), ("end_time", pa.float64()),
    ("shot_index", pa.int64()), ("mode", pa.string()),
])


def fixed_windows(frames: int, fps: float, window_seconds: float, min_seconds: float) -> list[tuple[int, int]]:
    """[start, end) frame windows covering [0, frames) exactly."""
    size = max(1, round(window_seconds * fps))
    spans = [(s, min(s + size, frames)) for s in range(0, frames, size)]
    if len(spans) > 1 and (spans[-1][1] - spans[-1][0]) < min_seconds * fps:
        spans[-2:] = [(spans[-2][0], spans[-1][1])]
    return spans


def best_shot(start: int, end: int, shot_starts: list[int] | None, shot_ends: list[int] | None) -> int:
    """Index of the shot that overlaps [start, end) most (first on ties); -1 without spans."""
    if not shot_starts:
        return -1
    overlaps = [max(0, min(end, e) - max(start, s)) for s, e in zip(shot_starts, shot_ends)]
    best = max(range(len(overlaps)), key=lambda i: (overlaps[i], -i))
    return best if overlaps[best] > 0 else -1


def clips_for_video(video: dict, mode: str, window_seconds: float, min_seconds: float) -> list[dict]:
    """The clips of one videos.parquet row."""
    fps, starts, ends = video["fps"], video["shot_starts"], video["shot_ends"]
    if mode == "shots" and starts:
        frames = video["frames"]                        # clamp to the video; empty shots make no clip
        spans = [(min(s, frames), min(e, frames), k) for k, (s, e) in enumerate(zip(starts, ends))]
        spans = [x for x in spans if x[1] > x[0]]
        used = "shots"
    else:
        spans = [(s, e, best_shot(s, e, starts, ends))
                 for s, e in fixed_windows(video["frames"], fps, window_seconds, min_seconds)]
        used = "fixed"
    out = []
    for i, (s, e, shot) in enumerate(spans):
        out.append({"clip_id": f"{video['video_id']}#{i}", "video_id": video["video_id"], "clip_index": i,
                    "path": video["path"], "start_frame": s, "end_frame": e, "start_time": s / fps,
                    "end_time": e / fps, "shot_index": shot, "mode": used})
    return out
