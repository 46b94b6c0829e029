"""The `longvila` commands' own checks (several flags at once, the file system), run before torch is imported,
a model loaded or anything written: `check_infer`, `check_needle`, `check_serve` (longvila/cli.py calls them
first). One-flag checks and the file checks they use are in longvila/utils/args.py.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import socket
from pathlib import Path

from longvila.parallel.dims import valid_ulysses_degrees
from longvila.utils.args import check_checkpoint, check_image, check_output, check_video
from longvila.utils.ranks import parse_sp


def check_sp_heads(model: Path, sp: str, flag: str = "--sp") -> None:
    """U of --sp UxR must split the LLM's query and KV heads (read from config.json's llm_cfg when present)."""
    ulysses, ring = parse_sp(sp)
    llm = json.loads((model / "config.json").read_text(encoding="utf-8")).get("llm_cfg") or {}
    heads, kv = llm.get("num_attention_heads"), llm.get("num_key_value_heads", llm.get("num_attention_heads"))
    if isinstance(heads, int) and isinstance(kv, int) and ulysses not in valid_ulysses_degrees(heads, kv):
        raise ValueError(f"{flag} {sp}: Ulysses degree {ulysses} cannot split the model's {heads} query / {kv} KV "
                         f"heads; valid Ulysses degrees: {valid_ulysses_degrees(heads, kv)}; or use a ring only: "
                         f"{flag} {ulysses * ring}")


# ---------------------------------------------------------------- one check per command
def check_infer(args: argparse.Namespace) -> Path:
    """`longvila infer`: the checkpoint, the media file and --sp against the heads; returns the model folder."""
    model = check_checkpoint(args.model)
    if args.video is not None:
        check_video(args.video)
    if args.image is not None:
        check_image(args.image)
    if args.sp is not None:
        check_sp_heads(model, args.sp)
    return model


def check_needle(args: argparse.Namespace) -> tuple[Path, Path]:
    """`longvila eval needle`: the grid flags, checkpoint, haystack (long enough), needles, --out and
    --cache-dir; returns (out, cache_dir)."""
    if args.interval > args.max_frames:
        raise ValueError(f"--interval {args.interval} is above --max-frames {args.max_frames}; the grid's columns "
                         "are --interval, 2 x --interval, ... up to --max-frames: lower --interval or raise "
                         "--max-frames")
    model = check_checkpoint(args.model)
    check_sp_heads(model, args.sp)
    hay = check_video(args.haystack, "--haystack")
    if hay["frames"] and hay["fps"]:
        step = max(1, round(hay["fps"]))
        have = math.ceil(hay["frames"] / step)
        if have < args.max_frames:
            raise ValueError(f"--haystack {args.haystack}: {have} frames at 1 frame/s (a "
                             f"{hay['frames'] / hay['fps']:.0f} s video) but --max-frames {args.max_frames} needs "
                             f"{args.max_frames}; give a longer video or lower --max-frames to at most {have}")
    if args.needles is not None:
        needles = Path(args.needles)
        if not (needles / "needles.json").is_file():
            raise ValueError(f"--needles {args.needles}: no needles.json in it; a needle folder holds needles.json "
                             '= [{"image": "file.png", "question": ..., "answer": ...}] and the images (or leave '
                             "--needles out for the built-in colour needles)")
    inputs = {"--haystack": args.haystack, "--needles": args.needles}
    out = check_output(args.out or Path("niah_output") / model.resolve().name, "--out", model, inputs)
    cache = out / "cache"
    if args.cache_dir is not None:
        cache = check_output(args.cache_dir, "--cache-dir", model, inputs)
    return out, cache


def check_serve(args: argparse.Namespace) -> None:
    """`longvila serve`: the checkpoint, and that --host:--port can be bound (tried and released at once)."""
    check_checkpoint(args.model)
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)   # the server's family (socketserver's default)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as http.server does
        probe.bind((args.host, args.port))
    except socket.gaierror as e:
        raise ValueError(f"--host {args.host}: not an address ({e.strerror}); give an IPv4 address or name of "
                         "this machine, e.g. --host 127.0.0.1 (this machine only) or --host 0.0.0.0 (all)") from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ValueError(f"--port {args.port}: already in use on {args.host}; choose another --port, or "
                             "--port 0 for any free one") from None
        if e.errno == errno.EACCES:
            raise ValueError(f"--port {args.port}: not allowed for this user (ports below 1024 need root); "
                             "choose --port 8000 or another above 1023") from None
        raise ValueError(f"--host {args.host}: cannot listen there ({e.strerror}); give an address of this "
                         "machine, e.g. --host 127.0.0.1 or --host 0.0.0.0") from None
    finally:
        probe.close()
