"""GPU: time of one zigzag ring step of our flash_attn block kernel vs the ideal (the flash kernel alone).

For one simulated rank of a P-rank zigzag ring (Qwen2-7B attention shape by default: 28 query / 4 KV heads,
head dim 128, bf16), every ring step's block is timed two ways, forward and backward:
  ours   `FlashKernel.forward` + the LSE merge into the running output (forward), `FlashKernel.backward`
         (backward): planning is cached, so this is gathers + kernel calls + scatters + merge, what a rank
         runs per step;
  ideal  the same FlashAttention-2 varlen kernel calls on inputs already gathered (kernel time only).
Prints the ratio ideal / ours per step and over the whole ring (target >= 0.90). Transfer overlap is not
measured here (one GPU); the CPU benchmarks count the bytes.

    python benchmarks/gpu_attention.py [--seq-len 131072] [--ranks 8] [--rank 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from longvila.parallel.flash import FlashKernel  # noqa: E402
from longvila.parallel.blocks import Block, merge_into  # noqa: E402
from longvila.parallel.layout import local_indices  # noqa: E402


def timed(fn, repeats: int) -> float:
    """Median milliseconds of `repeats` runs (CUDA events), after 3 warm-ups."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seq-len", type=int, default=131072, help="global sequence length")
    p.add_argument("--ranks", type=int, default=8, help="ring size P (zigzag over P ranks)")
    p.add_argument("--rank", type=int, default=3, help="the simulated rank whose steps are timed")
    p.add_argument("--heads", type=int, default=28)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    dev, dt = "cuda", torch.bfloat16
    n, r = args.ranks, args.rank
    pos = [local_indices(args.seq_len, n, i, "zigzag") for i in range(n)]
    s_loc = len(pos[r])
    torch.manual_seed(0)
    q = torch.randn(1, s_loc, args.heads, args.head_dim, device=dev, dtype=dt)
    dout = torch.randn_like(q)
    kv = torch.randn(2, 1, s_loc, args.kv_heads, args.head_dim, device=dev, dtype=dt)
    kernel = FlashKernel(q)
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  kernel source: {type(kernel.impl).__name__}")
    print(f"S={args.seq_len:,} over P={n} (zigzag), rank {r}: {s_loc:,} local tokens, "
          f"H={args.heads}/{args.kv_heads}, D={args.head_dim}, bf16, median of {args.repeats}")
    print(f"{'step':>4} {'src':>3} {'kind':>8} {'fwd ours':>9} {'fwd ideal':>9} {'ratio':>6} "
          f"{'bwd ours':>9} {'bwd ideal':>9} {'ratio':>6}")
    totals = {"fo": 0.0, "fi": 0.0, "bo": 0.0, "bi": 0.0}
    out0, lse0 = kernel.forward(q, kv[0], kv[1], Block(pos[r], pos[r], True, None, args.head_dim ** -0.5))
    for step in range(n):
        src = (r - step) % n
        block = Block(pos[r], pos[src], True, None, args.head_dim ** -0.5)
        calls = kernel._calls(block, 1, q.device)
        kind = "diagonal" if step == 0 else ("half" if src < r else "half-q")
        qf, kf, vf = q.view(s_loc, *q.shape[2:]), kv[0].view(s_loc, *kv.shape[3:]), kv[1].view(s_loc, *kv.shape[3:])
        gathered = [(qf[c.q_idx], kf[c.k_idx], vf[c.k_idx], dout.view_as(qf)[c.q_idx], out0.view_as(qf)[c.q_idx],
                     lse0[0][:, c.q_idx].float().contiguous(), c) for c in calls]
        running = out0.float()
        fwd_ours = timed(lambda: merge_into(running, lse0, *kernel.forward(q, kv[0], kv[1], block)), args.repeats)
        fwd_ideal = timed(lambda: [kernel.impl.forward(g[0], g[1], g[2], g[6], block.scale) for g in gathered],
                          args.repeats)
        bwd_ours = timed(lambda: kernel.backward(dout, q, kv[0], kv[1], out0, lse0, block), args.repeats)
        bwd_ideal = timed(lambda: [kernel.impl.backward(g[3], g[0], g[1], g[2], g[4], g[5], g[6], block.scale)
                                   for g in gathered], args.repeats)
        for key, val in zip(("fo", "fi", "bo", "bi"), (fwd_ours, fwd_ideal, bwd_ours, bwd_ideal)):
            totals[key] += val
        print(f"{step:>4} {src:>3} {kind:>8} {fwd_ours:>8.2f}m {fwd_ideal:>8.2f}m {fwd_ideal / fwd_ours:>6.3f} "
              f"{bwd_ours:>8.2f}m {bwd_ideal:>8.2f}m {bwd_ideal / bwd_ours:>6.3f}", flush=True)
    print(f"whole ring, forward: ideal/ours = {totals['fi'] / totals['fo']:.3f}; backward: "
          f"{totals['bi'] / totals['bo']:.3f}; forward+backward: "
          f"{(totals['fi'] + totals['bi']) / (totals['fo'] + totals['bo']):.3f} (target >= 0.90)")


if __name__ == "__main__":
    main()
