"""CPU training-step throughput and memory under sequence parallelism: strong and weak scaling, and SP off.

One optimizer step (forward + backward + AdamW, `TorchEngine`) of a small Qwen2 (4 layers, hidden 256,
8/4 heads, vocab 4096, fp32, `torch_cpu` kernel) on real gloo processes, rank 0 measured:
  strong  a fixed global sequence (--seq-len) at P = 1, 2 (Ulysses), 4 (2D 2x2)
  weak    --seq-len / 2 tokens per rank at P = 1, 2, 4
  SP off  one process, Transformers' own sdpa attention, no `apply_sequence_parallel` (the baseline)
Printed: step seconds (median of 3 after a warm-up), global tokens/s, the rise of rank 0's resident memory
over the step. On the 2-core CI machine P = 4 oversubscribes the cores: throughput there measures the
algorithm's overhead, not a speed-up; memory per rank is the point.

    python benchmarks/train_step.py [--seq-len 4096]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from tests.helpers.spawn import run_distributed  # noqa: E402

_spec = importlib.util.spec_from_file_location("sp_memory", HERE / "sp_memory.py")
sp_memory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sp_memory)
MODEL = sp_memory.MODEL


def _step(rank, world, ulysses, ring, seq_len, sp_on=True):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from longvila.parallel import ParallelDims
    from longvila.parallel.parallelize import apply_sequence_parallel
    from longvila.train.engine import TorchEngine, lm_loss

    torch.set_num_threads(1)
    dims = ParallelDims(ulysses=ulysses, ring=ring, world_size=world)
    if world > 1:
        dims.build()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**MODEL))
    if sp_on:
        apply_sequence_parallel(model, dims, backend="torch_cpu")
    else:
        model.set_attn_implementation("sdpa")
    engine = TorchEngine(model, dims, torch.optim.AdamW(model.parameters(), lr=1e-4))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    row = torch.randint(0, MODEL["vocab_size"], (seq_len,))
    times, peak = [], 0
    for i in range(4):
        with sp_memory.PeakRss() as rss:
            t0 = time.perf_counter()
            loss, _ = lm_loss(model, row, dims)
            engine.backward(loss)
            engine.step()
            times.append(time.perf_counter() - t0)
        peak = max(peak, rss.peak) if i else peak
    return {"time": statistics.median(times[1:]), "peak": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seq-len", type=int, default=4096, help="global tokens for strong scaling (multiple of 16)")
    args = p.parse_args()
    s = args.seq_len
    print(f"Qwen2 {MODEL['num_hidden_layers']} layers, hidden {MODEL['hidden_size']}, fp32, AdamW, torch_cpu "
          "kernel; rank 0; median of 3 steps")
    print(f"{'mode':>8} {'P':>2} {'U x R':>6} {'tokens':>7} {'step s':>8} {'tok/s':>8} {'peak MiB':>9}")
    base = run_distributed(_step, 1, 1, 1, s, False)[0]
    print(f"{'SP off':>8} {1:>2} {'-':>6} {s:>7} {base['time']:>8.2f} {s / base['time']:>8.0f} "
          f"{base['peak'] / 2**20:>9.1f}", flush=True)
    for mode, lengths in (("strong", {1: s, 2: s, 4: s}), ("weak", {1: s // 2, 2: s, 4: 2 * s})):
        for pdeg, (u, r) in ((1, (1, 1)), (2, (2, 1)), (4, (2, 2))):
            n = lengths[pdeg]
            res = run_distributed(_step, pdeg, u, r, n, True, timeout=1800)[0]
            print(f"{mode:>8} {pdeg:>2} {f'{u}x{r}':>6} {n:>7} {res['time']:>8.2f} {n / res['time']:>8.0f} "
                  f"{res['peak'] / 2**20:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
