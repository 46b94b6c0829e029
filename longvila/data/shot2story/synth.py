"""An offline Shot2Story-format dataset: real multi-shot .mp4 videos and annotation JSON in the real schema.

What: `build_synthetic(cfg, out)` writes
    videos/<nvid>                 one multi-shot H.264 video per record (several shots, a minute or more)
    shots/<video_names[i]>        each shot as its own file (real Shot2Story ships both kinds)
    annotations/<name>.json       a list of records with the real fields: video, image_id, nvid, id,
                                  whole_caption, whole_ASR, video_names, captions, audio_captions, ASR
    manifest.json
Why: the default configuration must run end to end offline; the captions truly describe the pictures, so
a model can learn from them (stage-5 demo, needle eval). Every shot is a plain background with one to three
moving shapes: colour, shape, count, direction and background are drawn per shot and written into the
caption ("Two red circles move from left to right over a blue background."). Deterministic in the seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from longvila.utils.io import atomic_path

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (235, 215, 40),
           "white": (240, 240, 240), "black": (20, 20, 20), "purple": (150, 60, 190), "orange": (240, 140, 30)}
SHAPES = ("circle", "square", "triangle")
MOTIONS = {"from left to right": ((0.1, 0.5), (0.9, 0.5)), "from right to left": ((0.9, 0.5), (0.1, 0.5)),
           "from top to bottom": ((0.5, 0.1), (0.5, 0.9)), "from bottom to top": ((0.5, 0.9), (0.5, 0.1)),
           "diagonally down": ((0.1, 0.1), (0.9, 0.9))}
NUMBERS = {1: "One", 2: "Two", 3: "Three"}


@dataclass
class Shot:
    background: str
    colour: str
    shape: str
    count: int
    motion: str
    frames: int

    def caption(self) -> str:
        noun = self.shape + ("s" if self.count > 1 else "")
        verb = "moves" if self.count == 1 else "move"
        article = "an" if self.background[0] in "aeiou" else "a"
        return f"{NUMBERS[self.count]} {self.colour} {noun} {verb} {self.motion} over {article} {self.background} background."

    def narration(self) -> str:
        return f"Here {'is' if self.count == 1 else 'are'} the {self.colour} {self.shape}{'s' * (self.count > 1)}."


def draw_frame(shot: Shot, t: float, width: int, height: int) -> np.ndarray:
    """The shot's picture at time t in [0, 1]: uint8 [H, W, 3]."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = COLOURS[shot.background]
    (x0, y0), (x1, y1) = MOTIONS[shot.motion]
    yy, xx = np.mgrid[0:height, 0:width]
    r = max(3, min(width, height) // 8)
    for i in range(shot.count):
        offset = (i - (shot.count - 1) / 2) * 2.6 * r          # objects side by side, across the motion
        horizontal = abs(x1 - x0) >= abs(y1 - y0)
        cx = (x0 + (x1 - x0) * t) * width + (0 if horizontal else offset)
        cy = (y0 + (y1 - y0) * t) * height + (offset if horizontal else 0)
        dx, dy = xx - cx, yy - cy
        if shot.shape == "circle":
            inside = dx * dx + dy * dy <= r * r
        elif shot.shape == "square":
            inside = (np.abs(dx) <= r) & (np.abs(dy) <= r)
        else:                                                   # triangle, apex up
            inside = (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)
        frame[inside] = COLOURS[shot.colour]
    return frame


def write_video(path: Path, frames, fps: int, width: int, height: int) -> int:
    """Encode uint8 RGB frames as lossless H.264 .mp4 (atomically); returns the frame count.

    Lossless (qp 0), so that every process decodes exactly the same pixels. The bytes of the file are not
    guaranteed: measured with PyAV 18's libx264, the same frames encoded to different bytes in about 1 encode in
    40 once the heap had been dirtied (other allocations filled and freed), and the colour conversion's automatic
    slice threading changed them too (it runs on one thread here, as does x264, whose bitstream depends on its
    thread count). A lossy encode would turn such a difference into different pixels downstream.
    """
    import av

    n = 0
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"qp": "0", "preset": "veryfast"}
            stream.codec_context.thread_count = 1
            for frame in frames:
                picture = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p", threads=1)
                for packet in stream.encode(picture):
                    container.mux(packet)
                n += 1
            for packet in stream.encode():
                container.mux(packet)
    return n


def random_shots(rng: random.Random, cfg) -> list[Shot]:
    shots, previous = [], None
    for _ in range(rng.randint(cfg.min_shots, cfg.max_shots)):
        while True:
            background, colour = rng.sample(sorted(COLOURS), 2)
            shot = Shot(background, colour, rng.choice(SHAPES), rng.randint(1, 3), rng.choice(sorted(MOTIONS)),
                        int(round(rng.uniform(cfg.min_shot_seconds, cfg.max_shot_seconds) * cfg.fps)))
            if previous is None or shot.caption() != previous.caption():
                break
        shots.append(previous := shot)
    return shots


def whole_caption(shots: list[Shot]) -> str:
    parts = [f"The video has {len(shots)} scenes."]
    for i, shot in enumerate(shots):
        lead = "First," if i == 0 else ("Finally," if i == len(shots) - 1 else "Then,")
        text = shot.caption()
        parts.append(f"{lead} {text[0].lower()}{text[1:]}")
    return " ".join(parts)


def build_synthetic(cfg, out: str | Path, progress: bool = False) -> dict:
    """Write the dataset into `out` (see the module docstring); returns a summary."""
    from tqdm import tqdm

    out = Path(out)
    rng = random.Random(cfg.seed)
    records, total_frames = [], 0
    for i in tqdm(range(cfg.videos), desc="synthetic videos", unit="video", disable=not progress):
        shots = random_shots(rng, cfg)
        nvid = f"synth{i:04d}.mp4"
        names = [f"synth{i:04d}_{j}.mp4" for j in range(len(shots))]
        pictures = [[draw_frame(s, k / max(1, s.frames - 1), cfg.width, cfg.height) for k in range(s.frames)]
                    for s in shots]
        for name, frames in zip(names, pictures):
            write_video(out / "shots" / name, frames, cfg.fps, cfg.width, cfg.height)
        total_frames += write_video(out / "videos" / nvid, (f for p in pictures for f in p), cfg.fps, cfg.width,
                                    cfg.height)
        records.append({"video": nvid, "image_id": nvid, "nvid": nvid, "id": i,
                        "whole_caption": whole_caption(shots),
                        "whole_ASR": " ".join(s.narration() for s in shots),
                        "video_names": names, "captions": [s.caption() for s in shots],
                        "audio_captions": [f"A narrator names the {s.colour} {s.shape}." for s in shots],
                        "ASR": [s.narration() for s in shots]})
    with atomic_path(out / "annotations" / cfg.annotation_file) as tmp:
        tmp.write_text(json.dumps(records, indent=1))
    return {"videos": len(records), "shots": sum(len(r["captions"]) for r in records), "frames": total_frames,
            "seconds": total_frames / cfg.fps, "annotation_file": cfg.annotation_file}
