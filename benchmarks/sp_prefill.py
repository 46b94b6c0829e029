"""Time to first token (TTFT) of sequence-parallel prefill (MM-SP), at several U x R side by side in one run.

Each case starts its own U x R local processes (the launcher of `longvila infer --sp`). Input: a video of
random frames and a short prompt, long enough for about --tokens tokens (frames x (tokens per frame + 1)).
Every rank encodes 1/P of the frames, the spliced prompt is prefilled with Ulysses x ring attention, and the
owner of the last token picks the first token (`sp_greedy`, max_new_tokens=1). Timed after one warm-up run,
best of --repeat: media (sharded frame encoding + splice), prefill (to the first token), TTFT = both.

CPU (default): tiny model, fp32, gloo; the machine's cores are split evenly between the ranks.
GPU (--gpu): one GPU per rank, NCCL, bf16, peak memory per rank. --find-max: for each case, double the length
from --tokens until a rank runs out of GPU memory (each length in fresh processes) and report the longest
that fit; --no-frames makes the input text tokens only (the LLM's prefill alone, no frames to hold).

    python benchmarks/sp_prefill.py                                    # tiny, CPU, ~8k tokens, 1x1 / 1x2 / 2x2
    python benchmarks/sp_prefill.py --tokens 16384 --cases 1x1,2x1,1x2,2x2,1x4
    python benchmarks/sp_prefill.py --gpu --size qwen2-1.5b-384 --tokens 32768 --cases 1x1,2x1 --find-max
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from longvila.utils.ranks import launch_local, parse_sp  # noqa: E402

VIDEO_ID, NEWLINE_ID = 151650, 198
TEXT_IDS = [151644, 872, 198, 3838, 374, 151645, 198, 151644, 77091, 198]   # ChatML: user ... assistant


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _build(size: str, device: torch.device):
    from longvila.model import LongVILAForCausalLM, build_config

    torch.manual_seed(0)
    with device:                                          # initialise in place (large sizes on the GPU)
        model = LongVILAForCausalLM(build_config(size))
    return model.to(torch.bfloat16 if device.type == "cuda" else torch.float32).eval()


@torch.no_grad()
def _inputs(model, tokens: int, with_frames: bool):
    """(frames [N, S, S, 3] uint8 as a zero-copy view of one random frame, or None; prompt ids)."""
    size = model.vision_tower.config.image_size
    if not with_frames:
        ids = torch.randint(1000, 100_000, (tokens,), generator=torch.Generator().manual_seed(0))
        return None, ids
    per_frame = model.encode_frames(torch.zeros(1, 3, size, size, device=model.device)).shape[1] + 1
    frame = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    frames = np.broadcast_to(frame, (max(1, (tokens - len(TEXT_IDS)) // per_frame), size, size, 3))
    return frames, torch.tensor(TEXT_IDS[:3] + [VIDEO_ID] + TEXT_IDS[3:])


def _one_ttft(model, frames, ids, dims):
    from longvila.infer.sp import encode_video_sharded, sp_greedy

    device = model.device
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        media = [] if frames is None else [model.media_embeds(encode_video_sharded(model, frames, dims), NEWLINE_ID)]
        embeds, _ = model.splice(ids.to(device), media, {VIDEO_ID})
    _sync(device)
    encode_s = time.perf_counter() - start
    out = sp_greedy(model, embeds, dims, max_new_tokens=1)
    return encode_s, out.prefill_s, out.prompt_len


def _rank(rank: int, world: int, cfg: dict) -> dict:
    from longvila.parallel import ParallelDims

    device = torch.device("cuda", torch.cuda.current_device()) if cfg["gpu"] else torch.device("cpu")
    if not cfg["gpu"]:
        torch.set_num_threads(cfg["threads"])
    dims = ParallelDims(*cfg["case"], world_size=world, layout=cfg["layout"]).build()
    model = _build(cfg["size"], device)
    small_frames, small_ids = _inputs(model, 64 * dims.sp_degree, cfg["frames"])
    _one_ttft(model, small_frames, small_ids, dims)                                        # warm-up
    frames, ids = _inputs(model, cfg["tokens"], cfg["frames"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runs = [_one_ttft(model, frames, ids, dims) for _ in range(cfg["repeat"])]
    best = min(runs, key=lambda r: r[0] + r[1])
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return dict(encode_s=best[0], prefill_s=best[1], tokens=best[2], peak_gib=peak)


def _run_case(case, tokens, args, threads):
    cfg = dict(case=case, tokens=tokens, size=args.size, gpu=args.gpu, threads=threads, layout=args.layout,
               repeat=args.repeat, frames=not args.no_frames)
    results = launch_local(_rank, case[0] * case[1], cfg, device="cuda" if args.gpu else "cpu")
    return dict(results[0], peak_gib=max(r["peak_gib"] for r in results))


def _row(case, r, base) -> str:
    ttft = r["encode_s"] + r["prefill_s"]
    ratio = f"{base / ttft:8.2f}x" if base else f"{'-':>9}"
    peak = f"{r['peak_gib']:>9.2f}" if r["peak_gib"] == r["peak_gib"] else f"{'-':>9}"     # NaN on the CPU
    return (f"{case[0]}x{case[1]:<3} {case[0] * case[1]:>2} {r['tokens']:>8} {r['encode_s']:>8.3f} "
            f"{r['prefill_s']:>9.3f} {ttft:>8.3f} {ratio} {peak}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="1x1,1x2,2x2", help="U x R degrees, comma separated (default 1x1,1x2,2x2)")
    parser.add_argument("--tokens", type=int, default=8192, help="prompt length (default 8192)")
    parser.add_argument("--size", default="tiny", help="model size (longvila.model.sizes; default tiny)")
    parser.add_argument("--layout", default="zigzag", choices=("zigzag", "contiguous"))
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per case; the best is reported")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per rank (default: cores / P)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per rank (NCCL, bf16)")
    parser.add_argument("--find-max", action="store_true", help="GPU: double --tokens until out of memory")
    parser.add_argument("--max-tokens", type=int, default=1 << 24, help="--find-max stops here (default 16M)")
    parser.add_argument("--no-frames", action="store_true", help="text tokens only (the LLM's prefill alone)")
    args = parser.parse_args(argv)
    cases = [parse_sp(c) for c in args.cases.split(",")]
    if args.find_max and not args.gpu:
        raise SystemExit("--find-max needs --gpu (on the CPU the length is bounded by time, not memory)")
    gpus = torch.cuda.device_count() if args.gpu else 0
    if args.gpu and max(u * r for u, r in cases) > gpus:
        raise SystemExit(f"--cases {args.cases} needs {max(u * r for u, r in cases)} GPUs; this machine has {gpus}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    split = f"{args.threads} threads per rank" if args.threads else "split between the ranks"
    where = f"{gpus} x {torch.cuda.get_device_name(0)}, bf16" if args.gpu else f"CPU, {cores} cores {split}, fp32"
    print(f"model {args.size}, {where}, layout {args.layout}, {'text only' if args.no_frames else 'frames + prompt'}; "
          f"best of {args.repeat}")
    print(f"{'UxR':<5} {'P':>2} {'tokens':>8} {'media s':>8} {'prefill s':>9} {'TTFT s':>8} {'vs first':>9} "
          f"{'peak GiB':>9}")
    base = None
    for case in cases:
        threads = args.threads or max(1, cores // (case[0] * case[1]))
        if not args.find_max:
            r = _run_case(case, args.tokens, args, threads)
            print(_row(case, r, base), flush=True)
            base = base or r["encode_s"] + r["prefill_s"]
            continue
        tokens, fit = args.tokens, None
        while tokens <= args.max_tokens:
            try:
                fit = _run_case(case, tokens, args, threads)
            except RuntimeError as e:             # torch.cuda.OutOfMemoryError, or an NCCL allocation failure
                if "memory" not in str(e):
                    raise
                print(f"{case[0]}x{case[1]:<3} out of memory at {tokens} tokens ({str(e)[:80]})", flush=True)
                break
            print(_row(case, fit, None), flush=True)
            tokens *= 2
        if fit is not None:
            print(f"{case[0]}x{case[1]}: longest prefill that fit: {fit['tokens']} tokens", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
