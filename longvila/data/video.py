"""Video and image inputs for the vision tower: uniform frame sampling, decoding, SigLIP preprocessing.

What: `uniform_indices` picks which frames of a video to use, `probe_video` / `read_frames` /
`load_video_frames` decode them to uint8 RGB arrays, `load_image` reads a still image, and
`preprocess_frames` turns uint8 frames into the float tensor SigLIP takes.

Why: the released LongVILA checkpoints were trained and evaluated with the Dec-2024 sampling of
`llava/utils/media.py`: `round(linspace(0, frame_count - 1, n))` over the *whole* video, not the first
`n / fps` seconds (reference LONGVILA.md §3.7), and with `SiglipImageProcessor` resize to a square,
rescale 1/255, mean = std = 0.5 (§3.2). Matching both exactly is what keeps our inputs in distribution.

How: decord is the default decoder (`backend="auto"` picks it when importable). It indexes the file once
and `get_batch` decodes the sorted unique indices in one call, which lets it walk each GOP once; the result
is then re-expanded to the requested order and duplicates. PyAV is the fallback (`backend="pyav"`, or
"auto" without decord): it decodes sequentially and keeps only the wanted frames. Every decoder failure
becomes a `ValueError` naming the file and the decoder's reason. The backend is always an explicit
argument, never an environment variable.

Example (CPU, any mp4):
    >>> frames, indices = load_video_frames("clip.mp4", num_frames=8)     # uint8 [8, H, W, 3]
    >>> pixels = preprocess_frames(frames, size=384)                      # float32 [8, 3, 384, 384]
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from longvila.utils.logging import get_logger
from longvila.utils.optional import import_optional

if TYPE_CHECKING:
    import torch

Backend = Literal["auto", "decord", "pyav"]
BACKENDS = ("auto", "decord", "pyav")
_PROGRESS_CHUNK = 32  # frames per decord call when a progress bar is shown


def uniform_indices(frame_count: int, num_frames: int) -> list[int]:
    """Frame indices spread uniformly over the whole video: `round(linspace(0, frame_count - 1, num_frames))`.

    This is the release's canonical sampling (numpy's round-half-to-even, as in `np.round`). When the video
    has fewer frames than requested, exactly `num_frames` indices are still returned: the rounding repeats
    frames (e.g. 3 frames, 5 requested -> [0, 0, 1, 2, 2]), so the token count per video stays fixed; a
    warning is logged.

    Args:
        frame_count: number of frames in the video (>= 1).
        num_frames: number of frames to sample (>= 1).

    Returns:
        `num_frames` non-decreasing ints in [0, frame_count - 1].
    """
    if frame_count < 1:
        raise ValueError(f"frame_count={frame_count}: the video has no frames; probe it with probe_video and "
                         "skip or re-encode empty videos")
    if num_frames < 1:
        raise ValueError(f"num_frames={num_frames}: ask for at least one frame (e.g. num_frames=8)")
    if frame_count < num_frames:
        get_logger().warning("video has %d frames but %d were requested: frames are repeated to keep %d",
                             frame_count, num_frames, num_frames)
    return np.round(np.linspace(0, frame_count - 1, num_frames)).astype(int).tolist()


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _cannot_decode(path: str | Path, reason: object) -> ValueError:
    return ValueError(f"{path}: cannot decode video ({reason}); check that the file exists and is a complete "
                      "video (re-download or re-encode it)")


def _pyav_reason(path: str) -> str | None:
    """decord only logs why it failed to open a file; ask PyAV (when installed) for a readable reason."""
    if not _importable("av"):
        return None
    import av

    try:
        with av.open(path) as container:
            return None if container.streams.video else "no video stream"
    except av.FFmpegError as e:
        return str(e)


class VideoReader:
    """One open video file, decoded with decord or PyAV.

    Args:
        path: video file.
        backend: "decord", "pyav", or "auto" (decord when importable, else PyAV).

    Attributes:
        backend: the backend actually used ("decord" or "pyav").
        num_frames: frame count reported by the backend.
        fps: average frame rate (frames per second).
    """

    def __init__(self, path: str | Path, backend: Backend = "auto") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}: choose one of {BACKENDS}")
        self.path = str(path)
        if not Path(self.path).is_file():
            raise _cannot_decode(path, "no such file")
        self.requested = backend
        if backend == "auto":
            backend = "decord" if _importable("decord") else "pyav"
        self.backend = backend
        self._size: tuple[int, int] | None = None
        if backend == "decord":
            decord = import_optional("decord")
            try:
                self._vr = decord.VideoReader(self.path, num_threads=0)
            except Exception as e:  # decord raises a bare RuntimeError/DECORDError
                raise _cannot_decode(path, _pyav_reason(self.path) or e) from e
            self.num_frames, self.fps = len(self._vr), float(self._vr.get_avg_fps())
        else:
            self._open_pyav()

    def _open_pyav(self) -> None:
        av = import_optional("av")
        try:
            with av.open(self.path) as container:
                if not container.streams.video:
                    raise _cannot_decode(self.path, "no video stream")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                self.fps = float(rate) if rate else 0.0
                self._size = (stream.codec_context.height, stream.codec_context.width)
                # Some containers (mkv, webm) store no frame count: count packets, which needs no decoding.
                self.num_frames = stream.frames or sum(1 for p in container.demux(stream) if p.size)
        except av.FFmpegError as e:
            raise _cannot_decode(self.path, e) from e

    def probe(self) -> dict:
        """Returns dict(frames, fps, duration, width, height); duration = frames / fps in seconds."""
        if self._size is None:  # decord reports no size without decoding a frame
            self._size = self.read([0]).shape[1:3]
        height, width = self._size
        duration = self.num_frames / self.fps if self.fps else 0.0
        return {"frames": self.num_frames, "fps": self.fps, "duration": duration, "width": width, "height": height}

    def read(self, indices: list[int] | np.ndarray, progress: bool = False) -> np.ndarray:
        """Decode frames by index, in the requested order, duplicates kept.

        Args:
            indices: frame indices in [0, num_frames - 1], any order, repeats allowed.
            progress: show a tqdm bar (useful for long videos).

        Returns:
            uint8 array [len(indices), H, W, 3], RGB.
        """
        indices = np.asarray(indices, dtype=np.int64)
        if indices.ndim != 1 or indices.size == 0:
            raise ValueError(f"indices must be a non-empty 1-D list of frame numbers, got shape {indices.shape}")
        if indices.min() < 0 or indices.max() >= self.num_frames:
            raise ValueError(f"{self.path}: frame indices must lie in [0, {self.num_frames - 1}], got "
                             f"[{indices.min()}, {indices.max()}]; sample them with uniform_indices(frames, n)")
        unique, inverse = np.unique(indices, return_inverse=True)
        if self.backend == "decord":
            try:
                frames = self._read_decord(unique, progress)
            except ValueError as e:
                if self.requested != "auto":
                    raise
                # decord 0.6.0 fails on some frame sizes (e.g. widths it pads internally); PyAV decodes them.
                get_logger().warning(f"{e}; retrying with PyAV")
                self.backend = "pyav"
                self._open_pyav()
                frames = self._read_pyav(unique, progress)
        else:
            frames = self._read_pyav(unique, progress)
        if np.array_equal(unique, indices):  # already sorted and distinct: skip the copy
            return frames
        return frames[inverse]

    def _read_decord(self, unique: np.ndarray, progress: bool) -> np.ndarray:
        # One get_batch over sorted indices decodes each GOP once; chunk only to drive a progress bar.
        step = _PROGRESS_CHUNK if progress else unique.size
        chunks = [unique[i:i + step] for i in range(0, unique.size, step)]
        out = []
        try:
            for chunk in _bar(chunks, progress, self.path, "chunks"):
                batch = self._vr.get_batch(chunk.tolist())
                out.append(batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch))
        except Exception as e:  # noqa: BLE001 - decord raises bare RuntimeError/DECORDError mid-stream
            raise _cannot_decode(self.path, e) from e
        return out[0] if len(out) == 1 else np.concatenate(out)

    def _read_pyav(self, unique: np.ndarray, progress: bool) -> np.ndarray:
        av = import_optional("av")
        wanted, last = set(unique.tolist()), int(unique[-1])
        kept: dict[int, np.ndarray] = {}
        try:
            with av.open(self.path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for i, frame in enumerate(_bar(container.decode(stream), progress, self.path, "frames", last + 1)):
                    if i in wanted:
                        kept[i] = frame.to_ndarray(format="rgb24")
                    if i >= last:
                        break
        except av.FFmpegError as e:
            raise _cannot_decode(self.path, e) from e
        if len(kept) < unique.size:
            missing = min(wanted - kept.keys())
            raise _cannot_decode(self.path, f"frame {missing} is past the last decodable frame (truncated file?)")
        return np.stack([kept[i] for i in unique.tolist()])


def _bar(iterable, enabled: bool, path: str, unit: str, total: int | None = None):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=f"decode {Path(path).name}", unit=unit, leave=False, disable=not enabled)


def probe_video(path: str | Path, backend: Backend = "auto") -> dict:
    """Frame count, frame rate, duration and size of a video.

    Args:
        path: video file.
        backend: "auto" | "decord" | "pyav" (decord decodes frame 0 to learn the size).

    Returns:
        dict(frames: int, fps: float, duration: float seconds, width: int, height: int).
    """
    return VideoReader(path, backend).probe()


def read_frames(path: str | Path, indices: list[int] | np.ndarray, backend: Backend = "auto",
                progress: bool = False) -> np.ndarray:
    """Decode the given frames of a video.

    Args:
        path: video file.
        indices: frame indices, any order, repeats allowed.
        backend: "auto" | "decord" | "pyav".
        progress: show a tqdm bar.

    Returns:
        uint8 array [len(indices), H, W, 3], RGB, in the order of `indices`.
    """
    return VideoReader(path, backend).read(indices, progress=progress)


def load_video_frames(path: str | Path, num_frames: int, backend: Backend = "auto",
                      progress: bool = False) -> tuple[np.ndarray, list[int]]:
    """Sample `num_frames` frames uniformly over the whole video and decode them (the file is opened once).

    Args:
        path: video file.
        num_frames: frames to sample; a shorter video repeats frames (see `uniform_indices`).
        backend: "auto" | "decord" | "pyav".
        progress: show a tqdm bar (off by default; useful for long videos).

    Returns:
        (frames uint8 [num_frames, H, W, 3] RGB, the frame indices used: list of num_frames ints).
    """
    reader = VideoReader(path, backend)
    indices = uniform_indices(reader.num_frames, num_frames)
    return reader.read(indices, progress=progress), indices


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB (grey, palette and alpha images are converted with PIL's convert("RGB")).

    Args:
        path: image file (any format PIL reads).

    Returns:
        uint8 array [H, W, 3].
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ValueError(f"{path}: cannot read image ({e}); check that the file exists and is an image "
                         "PIL can open") from e


@functools.lru_cache(maxsize=8)
def _siglip_processor(size: int):
    from transformers import SiglipImageProcessor

    return SiglipImageProcessor(size={"height": size, "width": size})


def preprocess_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """SigLIP preprocessing, exactly as transformers' `SiglipImageProcessor` does it.

    Plain resize to size x size (bicubic, no crop: the release's `image_aspect_ratio="resize"`), rescale by
    1/255, normalise with mean = std = 0.5, so values lie in [-1, 1]. In transformers 5 without torchvision
    the processor resolves to its PIL backend (what the release's processor did); with torchvision
    installed transformers uses its torchvision backend, whose bicubic differs slightly.

    Args:
        frames: uint8 array [N, H, W, 3], RGB (e.g. from `load_video_frames`; use `image[None]` for one image).
        size: output side, 384 or 448 for the released towers (LONGVILA.md §3.2).

    Returns:
        float32 tensor [N, 3, size, size].
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [N, H, W, 3], got {frames.dtype} {frames.shape}; add a leading "
                         "axis for one image (image[None]) and convert to uint8 RGB first")
    if size < 1:
        raise ValueError(f"size={size}: use the vision tower's image size, e.g. 384")
    out = _siglip_processor(size)(images=list(frames), return_tensors="pt", input_data_format="channels_last")
    return out["pixel_values"]
