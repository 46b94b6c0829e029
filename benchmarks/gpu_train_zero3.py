"""GPU: a few DeepSpeed ZeRO-3 (or --zero 2 3) training steps of the 1.5B-shaped LLM, the longest sequence that
fits, tokens/s, MFU, and the capacity planner's predicted peak beside the measured one.

One GPU, one rank (NCCL), our `DeepSpeedEngine` (ZeRO-3, bf16 with fp32 master weights, torch AdamW) — the
engine the training rules use — full fine-tune of the LLM, gradient checkpointing with --checkpointing,
attention through `apply_sequence_parallel` with the `flash_attn` block kernel, one packed row of S tokens
per step, our `lm_loss`. Sequence lengths are tried from short to long; an OOM ends the search and the
longest length that fitted is the answer. MFU = model FLOPs / time / peak (989 TFLOP/s dense bf16 on an
H100/H200 SXM): 6 N per token for the matmuls plus 6 x L x S x d_model per token for causal attention.

    python benchmarks/gpu_train_zero3.py [--seq-lens 4096 8192 16384 32768] [--steps 3] [--checkpointing]
    python benchmarks/gpu_train_zero3.py --size tiny --seq-lens 256 --steps 2      # CPU smoke run (gloo, fp32)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PEAK = {"H100": 989e12, "H200": 989e12}


def run(size: str, seq_len: int, steps: int, zero: int = 3, checkpointing: bool = False) -> dict:
    from transformers import Qwen2ForCausalLM

    from longvila.model import build_config
    from longvila.parallel import ParallelDims
    from longvila.parallel.parallelize import apply_sequence_parallel
    from longvila.train.ds_engine import DeepSpeedEngine
    from longvila.train.engine import enable_gradient_checkpointing, lm_loss

    cuda = torch.cuda.is_available()
    torch.manual_seed(0)
    cfg = build_config(size).llm_config()
    model = Qwen2ForCausalLM(cfg).to("cuda" if cuda else "cpu").train()
    dims = ParallelDims(world_size=1)
    apply_sequence_parallel(model, dims, backend="flash_attn" if cuda else "torch_cpu")
    if checkpointing:
        enable_gradient_checkpointing(model)
    engine = DeepSpeedEngine(model, dims, lr=1e-5, lr_lambda=lambda s: 1.0, grad_accum=1, zero_stage=zero, bf16=cuda)
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
    states = torch.cuda.memory_allocated() / 2**30 if cuda else float("nan")   # held between steps: model states
    n = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in model.parameters())
    flops = seq_len * (6 * n + 6 * cfg.num_hidden_layers * seq_len * cfg.hidden_size)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    reserved = torch.cuda.max_memory_reserved() / 2**30 if cuda else float("nan")   # + the allocator's slack
    # outside the allocator: CUDA context, NCCL, cuBLAS workspaces (the planner's runtime allowance)
    outside = ((torch.cuda.mem_get_info()[1] - torch.cuda.mem_get_info()[0] - torch.cuda.memory_reserved()) / 2**30
               if cuda else float("nan"))
    del engine, model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return {"seq_len": seq_len, "time": dt, "tok_s": seq_len / dt, "flops": flops, "peak_gib": peak, "states_gib": states,
            "loss": loss.item(), "params": n, "outside_gib": outside, "reserved_gib": reserved}


def _child(size: str, seq_len: int, steps: int, zero: int, checkpointing: bool) -> None:
    """One case in this process (one rank, NCCL or gloo); prints one JSON line, then exits."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", rank=0, world_size=1)
    try:
        result = run(size, seq_len, steps, zero, checkpointing)
    except torch.OutOfMemoryError:
        result = {"oom": True}
    print("RESULT " + json.dumps(result), flush=True)
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)


def _case(args, zero: int, seq_len: int) -> dict:
    """Run one case in a fresh process: DeepSpeed keeps GPU memory between engines in one process, which
    would inflate the next case's numbers (and made a ZeRO-3 case after a ZeRO-2 OOM fail in NCCL)."""
    cmd = [sys.executable, __file__, "--child", "--size", args.size, "--seq-lens", str(seq_len),
           "--steps", str(args.steps), "--zero", str(zero)] + (["--checkpointing"] if args.checkpointing else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"case ZeRO-{zero} S={seq_len} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _planned(size: str, seq_len: int, zero: int, checkpointing: bool, cuda: bool) -> float:
    """The capacity planner's tensors at the peak for this case, GiB (what max_memory_allocated sees)."""
    from longvila.plan.memory import GIB, Recipe, rank_memory
    from longvila.shapes import llm_shape

    recipe = Recipe(zero=zero, precision="bf16" if cuda else "fp32", checkpointing=checkpointing,
                    device="gpu" if cuda else "cpu")
    m = rank_memory(llm_shape(size), seq_len=seq_len, ulysses=1, ring=1, world=1, recipe=recipe)
    return m.tensors / GIB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="qwen2-1.5b-384", help="model size (longvila.model.sizes)")
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[4096, 8192, 16384, 32768, 65536])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--zero", type=int, nargs="+", default=[3], choices=(2, 3), help="ZeRO stages to compare")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing (each layer recomputed)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.size, args.seq_lens[0], args.steps, args.zero[0], args.checkpointing)
    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = next((v for k, v in PEAK.items() if k in name), None)
    print(f"device {name}; {args.size}, DeepSpeed, {'bf16' if cuda else 'fp32'}, "
          f"{'gradient checkpointing' if args.checkpointing else 'no gradient checkpointing'}, one process per case; "
          "states = allocated between steps (parameters, gradients, optimizer), peak = max allocated, planner = "
          "longvila.plan's tensors at the peak, reserved = the allocator's peak reservation, outside = GPU memory "
          "used outside the allocator")
    print(f"{'ZeRO':>4} {'S':>7} {'step s':>8} {'tok/s':>9} {'states GiB':>10} {'peak GiB':>9} {'planner':>8} "
          f"{'peak/plan':>9} {'reserved':>8} {'outside':>8} {'MFU':>6} {'loss':>8}")
    fitted = None
    for zero in args.zero:
        for seq_len in args.seq_lens:
            r = _case(args, zero, seq_len)
            if r.get("oom"):
                print(f"{zero:>4} {seq_len:>7} OOM", flush=True)
                break
            mfu = f"{r['flops'] / r['time'] / peak:.3f}" if peak else "-"
            plan = _planned(args.size, seq_len, zero, args.checkpointing, cuda)
            print(f"{zero:>4} {seq_len:>7} {r['time']:>8.3f} {r['tok_s']:>9.0f} {r['states_gib']:>10.1f} "
                  f"{r['peak_gib']:>9.1f} {plan:>8.1f} {r['peak_gib'] / plan:>9.3f} {r['reserved_gib']:>8.1f} "
                  f"{r['outside_gib']:>8.2f} "
                  f"{mfu:>6} {r['loss']:>8.4f}", flush=True)
            fitted = seq_len
        print(f"ZeRO-{zero}: longest sequence that fits: {fitted} tokens", flush=True)
    return 0 if fitted else 1


if __name__ == "__main__":
    raise SystemExit(main())
