"""GPU: tokens/s and MFU of a training step of the 1.5B-shaped LLM, our SP attention vs Transformers' sdpa.

One GPU, bf16 weights, AdamW (foreach), no gradient checkpointing, one packed row of S tokens per step;
attention through `apply_sequence_parallel` at world size 1 with the `flash_attn` block kernel, and
through Transformers' `sdpa` (PyTorch's fused CUDA kernels) for comparison, side by side in one run.
MFU = model FLOPs per step / time / peak (989 TFLOP/s dense bf16 on an H100 SXM): 6 N per token for the
matmuls plus 6 x L x S x d_model per token for causal attention (forward + backward, half the S x S).
Sequence lengths that do not fit are reported as OOM. (DeepSpeed ZeRO-3 is not installed on the lent
machine; this measures the model and attention path alone.)

    python benchmarks/gpu_train_step.py [--seq-lens 4096 8192 16384] [--steps 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PEAK = {"H100": 989e12, "H200": 989e12}


def run(seq_len: int, attention: str, steps: int) -> dict:
    import torch.nn.functional as F
    from transformers import Qwen2ForCausalLM

    from longvila.model import build_config
    from longvila.parallel import ParallelDims
    from longvila.parallel.parallelize import apply_sequence_parallel

    torch.manual_seed(0)
    cfg = build_config("qwen2-1.5b-384").llm_config()
    model = Qwen2ForCausalLM(cfg).to("cuda", torch.bfloat16)
    if attention == "longvila_sp":
        apply_sequence_parallel(model, ParallelDims(world_size=1), backend="flash_attn")
    else:
        model.set_attn_implementation("sdpa")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, foreach=True)
    ids = torch.randint(0, cfg.vocab_size, (1, seq_len), device="cuda")
    times = []
    torch.cuda.reset_peak_memory_stats()
    for _ in range(steps + 1):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        logits = model(input_ids=ids, position_ids=torch.arange(seq_len, device="cuda")[None]).logits
        loss = F.cross_entropy(logits[0, :-1].float(), ids[0, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    dt = sorted(times[1:])[len(times[1:]) // 2]
    n = sum(p.numel() for p in model.parameters())
    flops = seq_len * (6 * n + 6 * cfg.num_hidden_layers * seq_len * cfg.hidden_size)
    return {"time": dt, "tok_s": seq_len / dt, "flops": flops, "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
            "loss": loss.item()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seq-lens", type=int, nargs="+", default=[4096, 8192, 16384])
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK.items() if k in name), 989e12)
    print(f"{name}, torch {torch.__version__}; Qwen2-1.5B shapes, bf16, AdamW, no checkpointing; median of "
          f"{args.steps} steps after 1 warm-up")
    print(f"{'S':>7} {'attention':>12} {'step s':>8} {'tok/s':>9} {'MFU':>6} {'peak GiB':>9} {'loss':>7}")
    for s in args.seq_lens:
        for attention in ("sdpa", "longvila_sp"):
            try:
                r = run(s, attention, args.steps)
                print(f"{s:>7} {attention:>12} {r['time']:>8.3f} {r['tok_s']:>9.0f} "
                      f"{r['flops'] / r['time'] / peak:>6.1%} {r['peak_gib']:>9.1f} {r['loss']:>7.3f}", flush=True)
            except torch.cuda.OutOfMemoryError:
                print(f"{s:>7} {attention:>12}      OOM", flush=True)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
