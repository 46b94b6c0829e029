"""Video decode benchmark: does `load_video_frames` cost more than decord's own `get_batch`?

What it measures, in one run, on one long generated video and the same frame indices
(`uniform_indices(frames, N)` for each N in `--num-frames`):
  (a) raw decord: `decord.VideoReader(path, num_threads=0).get_batch(indices).asnumpy()`, i.e. open the file
      and decode the batch, the least code that does the job;
  (b) ours: `load_video_frames(path, N, backend="decord")` (open + probe + uniform_indices + one get_batch of
      the sorted unique indices + re-expansion).
frames/s = N requested frames delivered per second, file open included in both. (a) and (b) run interleaved
`--repeats` times after a warm-up, alternating which goes first; the shared 2-core VMs drift by +-15%, so the
verdict uses the median of the paired ratios b_i / a_i (frames/s); the ratio of medians and best/best
are printed too.
With `--pyav`, one timing of `load_video_frames(..., backend="pyav")` per N is added, for information.

The video: `--frames` frames (default 2400, 96 s at 25 fps) at `--width`x`--height` (default 320x180) of a
moving gradient and box, libx264 preset veryfast, crf 23, a keyframe every 50 frames (2 s, a common GOP),
generated with PyAV into a temporary folder (about 5-10 s on 2 cores). Pass `--video PATH` to use a file
instead (e.g. a real long video).

Target: (b) / (a) >= 0.9 (our wrapper costs little beyond decoding).

Run:  python benchmarks/video_decode.py [--frames 2400] [--num-frames 64 256] [--repeats 5] [--pyav]
                                        [--video PATH]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import decord
import numpy as np

from longvila.data.video import load_video_frames, probe_video, uniform_indices

TARGET_RATIO = 0.9


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=2400, help="length of the generated video")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=180)
    p.add_argument("--num-frames", type=int, nargs="+", default=[64, 256], help="frames sampled per video")
    p.add_argument("--repeats", type=int, default=5, help="timed, interleaved repeats of (a) and (b)")
    p.add_argument("--pyav", action="store_true", help="also time the PyAV backend once per N")
    p.add_argument("--video", type=Path, help="benchmark this file instead of a generated one")
    return p.parse_args(argv)


def make_video(path: Path, num: int, width: int, height: int, fps: int = 25) -> Path:
    """A moving gradient with a sliding box: cheap to generate, but not trivially compressible."""
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23", "g": "50"}
        for i in range(num):
            frame = np.stack([(xx + 3 * i) % 256, (yy + 2 * i) % 256, (xx + yy + i) % 256], -1).astype(np.uint8)
            x0 = (7 * i) % (width - 40)
            frame[height // 3: height // 3 + 40, x0: x0 + 40] = (255 - i % 256, i % 256, 128)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def raw_decord(path: Path, indices: list[int]) -> np.ndarray:
    return decord.VideoReader(str(path), num_threads=0).get_batch(indices).asnumpy()


def timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def bench(path: Path, n: int, repeats: int, pyav: bool) -> dict:
    indices = uniform_indices(probe_video(path)["frames"], n)
    _, raw = timed(raw_decord, path, indices)  # warm-up (page cache, decord's first open)
    _, (ours, ours_idx) = timed(load_video_frames, path, n, "decord")
    if ours_idx != indices or not np.array_equal(raw, ours):
        raise RuntimeError("load_video_frames returned other frames than decord's get_batch")
    raw_fps, ours_fps = [], []
    for r in range(repeats):
        order = ("raw", "ours") if r % 2 == 0 else ("ours", "raw")
        for which in order:
            if which == "raw":
                raw_fps.append(n / timed(raw_decord, path, indices)[0])
            else:
                ours_fps.append(n / timed(load_video_frames, path, n, "decord")[0])
    result = {"n": n, "raw": raw_fps, "ours": ours_fps,
              "paired": statistics.median(b / a for a, b in zip(raw_fps, ours_fps))}
    if pyav:
        result["pyav"] = n / timed(load_video_frames, path, n, "pyav")[0]
    return result


def report(res: dict) -> bool:
    raw_med, ours_med = statistics.median(res["raw"]), statistics.median(res["ours"])
    ok = res["paired"] >= TARGET_RATIO
    print(f"N={res['n']:5d}  (a) raw get_batch: median {raw_med:8.1f} frames/s (best {max(res['raw']):8.1f})  "
          f"(b) load_video_frames: median {ours_med:8.1f} frames/s (best {max(res['ours']):8.1f})")
    print(f"         b/a: median of paired ratios {res['paired']:.3f} (target >= {TARGET_RATIO}: "
          f"{'OK' if ok else 'BELOW TARGET'}), ratio of medians {ours_med / raw_med:.3f}, "
          f"best/best {max(res['ours']) / max(res['raw']):.3f}")
    if "pyav" in res:
        print(f"         PyAV backend (sequential decode, 1 run): {res['pyav']:8.1f} frames/s")
    return ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.video
        if path is None:
            t0 = time.perf_counter()
            path = make_video(Path(tmp) / "long.mp4", args.frames, args.width, args.height)
            print(f"generated {path.name}: {time.perf_counter() - t0:.1f} s, {path.stat().st_size / 1e6:.2f} MB")
        info = probe_video(path)
        print(f"video: {info['frames']} frames, {info['fps']:g} fps, {info['width']}x{info['height']}, "
              f"{info['duration']:.1f} s; decord {decord.__version__}, av {av.__version__}, "
              f"{args.repeats} interleaved repeats")
        results = [bench(path, n, args.repeats, args.pyav) for n in args.num_frames]
        ok = [report(res) for res in results]
    return 0 if all(ok) else 1


if __name__ == "__main__":
    raise SystemExit(main())
