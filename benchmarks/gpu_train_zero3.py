"""GPU: a few DeepSpeed ZeRO-3 training steps of the 1.5B-shaped LLM, the longest sequence that fits, tokens/s, MFU.

One GPU, one rank (NCCL), our `DeepSpeedEngine` (ZeRO-3, bf16 with fp32 master weights, torch AdamW) — the
engine the training rules use — full fine-tune of the LLM, no gradient checkpointing, attention through
`apply_sequence_parallel` with the `flash_attn` block kernel, one packed row of S tokens per step, our
`lm_loss`. Sequence lengths are tried from short to long; an OOM ends the search and the longest length
that fitted is the answer. MFU = model FLOPs / time / peak (989 TFLOP/s dense bf16 on an H100/H200 SXM):
6 N per token for the matmuls plus 6 x L x S x d_model per token for causal attention.

    python benchmarks/gpu_train_zero3.py [--seq-lens 4096 8192 16384 32768] [--steps 3]
    python benchmarks/gpu_train_zero3.py --size tiny --seq-lens 256 --steps 2      # CPU smoke run (gloo, fp32)
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PEAK = {"H100": 989e12, "H200": 989e12}


def run(size: str, seq_len: int, steps: int) -> dict:
    from transformers import Qwen2ForCausalLM

    from longvila.model import build_config
    from longvila.parallel import ParallelDims
    from longvila.parallel.parallelize import apply_sequence_parallel
    from longvila.train.ds_engine import DeepSpeedEngine
    from longvila.train.engine import lm_loss

    cuda = torch.cuda.is_available()
    torch.manual_seed(0)
    cfg = build_config(size).llm_config()
    model = Qwen2ForCausalLM(cfg).to("cuda" if cuda else "cpu").train()
    dims = ParallelDims(world_size=1)
    apply_sequence_parallel(model, dims, backend="flash_attn" if cuda else "torch_cpu")
    engine = DeepSpeedEngine(model, dims, lr=1e-5, lr_lambda=lambda s: 1.0, grad_accum=1, zero_stage=3, bf16=cuda)
    row = torch.randint(0, cfg.vocab_size, (seq_len,), device="cuda" if cuda else "cpu")
    times = []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(steps + 1):                                  # the first step warms up and is not timed
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss, _ = lm_loss(model, row, dims)
        engine.backward(loss)
        engine.step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    dt = sorted(times[1:])[len(times[1:]) // 2]
    n = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in model.parameters())
    flops = seq_len * (6 * n + 6 * cfg.num_hidden_layers * seq_len * cfg.hidden_size)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    del engine, model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return {"seq_len": seq_len, "time": dt, "tok_s": seq_len / dt, "flops": flops, "peak_gib": peak,
            "loss": loss.item(), "params": n}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="qwen2-1.5b-384", help="model size (longvila.model.sizes)")
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[4096, 8192, 16384, 32768, 65536])
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = next((v for k, v in PEAK.items() if k in name), None)
    print(f"device {name}; {args.size}, DeepSpeed ZeRO-3, {'bf16' if cuda else 'fp32'}, no gradient checkpointing")
    print(f"{'S':>7} {'step s':>8} {'tok/s':>9} {'peak GiB':>9} {'MFU':>6} {'loss':>8}")
    fitted = None
    for seq_len in args.seq_lens:
        try:
            r = run(args.size, seq_len, args.steps)
        except torch.OutOfMemoryError:
            print(f"{seq_len:>7} OOM")
            break
        mfu = f"{r['flops'] / r['time'] / peak:.3f}" if peak else "-"
        print(f"{seq_len:>7} {r['time']:>8.3f} {r['tok_s']:>9.0f} {r['peak_gib']:>9.1f} {mfu:>6} {r['loss']:>8.4f}")
        fitted = seq_len
    print(f"longest sequence that fits: {fitted} tokens")
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0 if fitted else 1)


if __name__ == "__main__":
    main()
