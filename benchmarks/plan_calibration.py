"""The capacity planner against the CPU training step: predicted vs measured peak memory per rank at P = 1, 2, 4.

Each case trains like stage 4 on real gloo processes: `lm_loss` (packed row, zigzag shards) -> backward ->
`TorchEngine.step` (gradients summed over the world in buckets, AdamW), fp32, the `torch_cpu` SP kernel,
gradients freed between steps (as the trainer does). Measured on every rank: the peak resident memory over
steps 2-3 (the kernel's high-water mark, VmHWM, reset after step 1, when AdamW's state exists) minus the
rank's runtime (its resident memory after the imports and a warm-up step of a 1-layer copy), with glibc's mmap
threshold fixed so that freed blocks leave the resident set (tests/helpers/plan_calibration.py). Predicted:
the tensors of `longvila.plan.memory.rank_memory` for the torch engine's recipe (`Recipe(zero=0,
precision="fp32", device="cpu")`); its runtime allowance is printed beside the measured runtime. Models:
`tiny` (the default config's LLM: 2 layers x 64, Qwen2's 151,648-token vocabulary, so logits and the
embeddings dominate) and `small` (4 layers x 256, vocab 4,096: activations dominate). Target: |measured /
predicted - 1| <= 15% (tests/distributed/test_plan_calibration.py).

    python benchmarks/plan_calibration.py [--model tiny small] [--seq-len 0 (per model default)]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers.plan_calibration import SEQ_LEN, calibrate  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", nargs="+", choices=("tiny", "small"), default=["tiny", "small"])
    p.add_argument("--seq-len", type=int, default=0, help="global tokens (default: tiny 512, small 4096)")
    args = p.parse_args()
    from longvila.plan.memory import RUNTIME_BYTES

    print(f"{'model':>6} {'P':>2} {'U x R':>6} {'tokens':>7} {'predicted MiB':>14} {'measured MiB':>13} "
          f"{'measured/predicted':>19} {'runtime MiB':>12}")
    worst, runtime = 0.0, 0
    for model in args.model:
        for r in calibrate(model, args.seq_len or SEQ_LEN[model]):
            worst, runtime = max(worst, abs(r["ratio"] - 1)), max(runtime, r["runtime"])
            print(f"{model:>6} {r['P']:>2} {r['split']:>6} {r['seq_len']:>7} {r['predicted'] / 2**20:>14.1f} "
                  f"{r['measured'] / 2**20:>13.1f} {r['ratio']:>19.3f} {r['runtime'] / 2**20:>12.0f}", flush=True)
    print(f"largest deviation {worst:.1%} (target <= 15%); runtime up to {runtime / 2**20:.0f} MiB resident per rank "
          f"(the planner's CPU allowance: {RUNTIME_BYTES['cpu'] / 2**20:.0f} MiB, shared library pages included)")


if __name__ == "__main__":
    main()
