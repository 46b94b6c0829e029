"""Checks of command-line arguments, made before any model is loaded or data is read (torch-free).

argparse `type=` functions for one flag (`at_least(1)`, `between(0, 65535)`, `fraction(True)`, `sp_degrees`,
`nonempty(...)`), which argparse reports as "longvila infer: error: argument --num-frames: 0 is below 1 ...",
and checks of the files and folders a flag names (`check_checkpoint`, `check_video`, `check_image`,
`check_output`), which raise ValueError. Every message names the flag, the user's path as given, and what to do
instead. Media files are probed cheaply: PyAV reads the container header, PIL the image header; nothing is
decoded. The commands' own checks (several flags at once) are in longvila/cli_checks.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from longvila.utils.hub import check_model_dir
from longvila.utils.io import check_writable
from longvila.utils.ranks import parse_sp

VIDEO_KINDS = ".mp4, .mkv, .webm, .mov, .avi"
IMAGE_KINDS = ".png, .jpg, .webp"


# ---------------------------------------------------------------- argparse types (one flag each)
def _number(text: str, kind: type):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None


def at_least(low: int, hint: str = ""):
    """An int >= low."""
    def parse(text: str) -> int:
        value = _number(text, int)
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}" + (f"; {hint}" if hint else ""))
        return value
    return parse


def between(low: int, high: int, hint: str = ""):
    """An int in [low, high]."""
    def parse(text: str) -> int:
        value = _number(text, int)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}" + (f"; {hint}" if hint else ""))
        return value
    return parse


def positive(hint: str = ""):
    """A finite float > 0."""
    def parse(text: str) -> float:
        value = _number(text, float)
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{text} must be above 0" + (f"; {hint}" if hint else ""))
        return value
    return parse


def fraction(low_open: bool, hint: str = ""):
    """A float in (0, 1] (low_open) or [0, 1]."""
    def parse(text: str) -> float:
        value = _number(text, float)
        if not ((0 < value if low_open else 0 <= value) and value <= 1):
            raise argparse.ArgumentTypeError(f"{text} is outside {'(' if low_open else '['}0, 1]"
                                             + (f"; {hint}" if hint else ""))
        return value
    return parse


def sp_degrees(text: str) -> str:
    """An --sp value ("UxR" or "P"), checked now and kept as text (the commands parse it again)."""
    try:
        parse_sp(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--sp ")) from None
    return text


def nonempty(hint: str):
    """A string with something in it other than blanks."""
    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"{text!r} is empty; {hint}")
        return text
    return parse


# ---------------------------------------------------------------- files and folders
def check_checkpoint(path: str, flag: str = "--model") -> Path:
    """A checkpoint folder in the released layout: config.json (valid JSON) and llm/tokenizer_config.json."""
    root = check_model_dir(path, flag)                       # missing, a file, or a Hub id
    config = root / "config.json"
    if not config.is_file():
        inner = sorted(str(p.parent) for p in root.glob("*/config.json") if (p.parent / "llm").is_dir())[:3]
        hint = f"; did you mean {flag} {inner[0]}?" if inner else ""
        raise ValueError(f"{flag} {path}: not a LongVILA checkpoint (no config.json in it); point {flag} at the "
                         f"folder that holds config.json, llm/, vision_tower/ and mm_projector/{hint}")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{flag} {path}: {config} is not readable JSON ({e}); re-download or re-export the "
                         "checkpoint") from None
    if not (root / "llm" / "tokenizer_config.json").is_file():
        raise ValueError(f"{flag} {path}: no tokenizer in {root / 'llm'} (tokenizer_config.json); a LongVILA "
                         "checkpoint keeps its tokenizer in llm/; re-download or re-export the checkpoint")
    return root


def _existing_file(path: str, flag: str, kinds: str) -> Path:
    p = Path(path)
    if p.is_dir():
        inside = sorted(c.name for c in p.iterdir() if c.suffix.lower() in kinds.split(", "))[:3]
        example = f", e.g. {flag} {p / inside[0]}" if inside else f" ({kinds})"
        raise ValueError(f"{flag} {path}: is a folder; give a file inside it{example}")
    if not p.exists():
        raise ValueError(f"{flag} {path}: no such file (looked for {p.absolute()}); check the path")
    if not os.access(p, os.R_OK):
        raise ValueError(f"{flag} {path}: not readable by this user; fix its permissions or copy it")
    return p


def _image_format(path: Path, still: bool = False) -> str | None:
    """PIL's format name when `path` is an image (header only; with `still`, not an animated one), else None."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if still and getattr(image, "is_animated", False):
                return None
            return image.format or "image"
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def _video_header(path: Path) -> tuple[dict | None, str]:
    """({frames, fps} from the container header (frames 0: not stored, as in some mkv/webm), "") for a video
    with at least one frame, else (None, why not)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None, "no video stream"
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            if not stream.frames and next((p for p in container.demux(stream) if p.size), None) is None:
                return None, "its video stream holds no frame"
            return {"frames": stream.frames, "fps": float(rate) if rate else 0.0}, ""
    except av.FFmpegError as e:
        return None, e.strerror or str(e)


def check_video(path: str, flag: str = "--video") -> dict:
    """An existing, readable video file; returns its header's {frames, fps} (frames 0: unknown)."""
    p = _existing_file(path, flag, VIDEO_KINDS)
    image = _image_format(p, still=True)          # FFmpeg opens a still image as a one-frame "video"
    if image:
        hint = f"pass it as --image {path}" if flag == "--video" else f"give a video file ({VIDEO_KINDS})"
        raise ValueError(f"{flag} {path}: is an image ({image}), not a video; {hint}")
    header, why = _video_header(p)
    if header is None:
        raise ValueError(f"{flag} {path}: not a video ({why}); give a video file ({VIDEO_KINDS})")
    return header


def check_image(path: str, flag: str = "--image") -> None:
    """An existing image file PIL can identify."""
    p = _existing_file(path, flag, IMAGE_KINDS)
    if _image_format(p) is None:
        if _video_header(p)[0] is not None:
            raise ValueError(f"{flag} {path}: is a video, not an image; pass it as --video {path}")
        raise ValueError(f"{flag} {path}: not an image PIL can open; give an image file ({IMAGE_KINDS})")


def check_output(path: str | Path, flag: str, model: Path | None = None, avoid: dict | None = None) -> Path:
    """An output folder: writable (check_writable: no mount point, no file on the way, permissions), not a file,
    not inside the checkpoint `model`, and none of `avoid` ({flag: path} of inputs). Returns Path(path)."""
    out = check_writable(path, flag).resolve()
    for other, given in (avoid or {}).items():
        if given is not None and Path(given).resolve() == out:
            raise ValueError(f"{flag} {path}: is the {other} input; give a separate folder for the results")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag} {path}: is a file; give a folder (it is created if missing)")
    if model is not None:
        root = model.resolve()
        if out == root or root in out.parents:
            raise ValueError(f"{flag} {path}: is inside the checkpoint --model {model}; writing there changes the "
                             "checkpoint (and its cache key); give a folder outside it")
    return Path(path)
