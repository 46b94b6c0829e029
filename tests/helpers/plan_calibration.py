"""The planner-calibration workload (used by benchmarks/plan_calibration.py and
tests/distributed/test_plan_calibration.py; importable by the spawned ranks): one stage-4-like training step
per rank, its measured peak resident memory, and the planner's prediction for it. See the benchmark's
docstring for the method."""

from __future__ import annotations

import gc
import os

from tests.helpers.spawn import run_distributed

SMALL = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
             num_key_value_heads=4, vocab_size=4096, max_position_embeddings=65536)
SEQ_LEN = {"tiny": 512, "small": 4096}          # global tokens: the P = 1 rank of each fits in ~1.3 GB
SPLITS = [(1, 1), (2, 1), (2, 2)]               # (ulysses, ring): P = 1, 2, 4


def llm_config(model: str):
    from transformers import Qwen2Config

    from longvila.model.sizes import build_config

    return build_config("tiny").llm_config() if model == "tiny" else Qwen2Config(**SMALL)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakRss:
    """The process's peak resident memory from construction on: the kernel's exact high-water mark (VmHWM,
    reset through /proc/self/clear_refs), which a loaded machine cannot make miss a short peak."""

    def __init__(self) -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    @staticmethod
    def peak() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def _release_freed_memory() -> None:
    """Make resident memory follow the live tensors: glibc's malloc otherwise raises its mmap threshold as
    large blocks are freed and serves later ones from a heap it rarely returns, so a process's resident memory
    creeps up step after step (measured: 346 -> 706 MiB after three identical steps of the small model, with
    60 MiB alive). A fixed threshold (mallopt M_MMAP_THRESHOLD) keeps every block over 256 KiB an mmap that a
    free returns at once; one arena keeps communication threads from each growing a heap of their own when
    they contend (a suspected cause of one loaded CI run measuring +38 MiB on a 2x2 rank). Measurement
    hygiene of this benchmark only; training does not need it."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return                                                   # not glibc: measure as is
    libc.mallopt(-3, 256 * 1024)                                 # M_MMAP_THRESHOLD
    libc.mallopt(-1, 1 << 20)                                    # M_TRIM_THRESHOLD
    libc.mallopt(-8, 1)                                          # M_ARENA_MAX: gloo's threads share one heap


def _train(model, dims, row, steps: int, peak_from: int | None = None):
    """`steps` stage-4 steps; returns the resident-memory peak from step `peak_from` on (None: no measure)."""
    import torch

    from longvila.parallel.parallelize import apply_sequence_parallel
    from longvila.train.engine import TorchEngine, lm_loss

    apply_sequence_parallel(model, dims, backend="torch_cpu")
    engine = TorchEngine(model, dims, torch.optim.AdamW(model.parameters(), lr=1e-4))
    peak = None
    for i in range(steps):
        if i == peak_from:
            peak = _PeakRss()
        loss, _ = lm_loss(model, row, dims)
        engine.backward(loss)
        engine.step()
    return peak


def measure(rank, world, model_name, ulysses, ring, seq_len, steps=3):
    """One rank: its runtime (resident memory once everything is imported and warmed up) and the peak above it
    over steps 2..steps (AdamW's state exists from step 1 on)."""
    _release_freed_memory()
    import torch
    from transformers import Qwen2ForCausalLM

    from longvila.parallel import ParallelDims

    torch.set_num_threads(1)
    dims = ParallelDims(ulysses=ulysses, ring=ring, world_size=world)
    if world > 1:
        dims.build()
    torch.manual_seed(0)
    cfg = llm_config(model_name)
    # warm-up on a 1-layer, 64-token-vocabulary copy: the lazy imports and first-use buffers are the runtime's
    # (the planner's runtime allowance), not the model's; they differed by 16 MiB between two identical venvs
    fields = {k: v for k, v in cfg.to_dict().items() if k != "layer_types"}
    warm = cfg.__class__(**{**fields, "num_hidden_layers": 1, "vocab_size": 64})
    _train(Qwen2ForCausalLM(warm), dims, torch.randint(0, 64, (16 * world,)), steps=1)
    gc.collect()
    base = _rss()
    row = torch.randint(0, cfg.vocab_size, (seq_len,), generator=torch.Generator().manual_seed(1))
    peak = _train(Qwen2ForCausalLM(cfg), dims, row, steps, peak_from=1)
    return {"runtime": base, "peak": peak.peak() - base}


def predicted(model_name: str, ulysses: int, ring: int, seq_len: int) -> int:
    from longvila.plan.memory import Recipe, rank_memory
    from longvila.shapes import LLMShape

    shape = LLMShape.from_qwen2(llm_config(model_name).to_dict())
    return rank_memory(shape, seq_len=seq_len, ulysses=ulysses, ring=ring, world=ulysses * ring,
                       recipe=Recipe(zero=0, precision="fp32", device="cpu", fused_head=True)).tensors


def calibrate(model_name: str, seq_len: int, splits=SPLITS) -> list[dict]:
    """One row per (U, R): predicted tensors, measured peak above the runtime (the highest rank), their ratio,
    and the runtime itself (the highest rank's resident memory before the model)."""
    rows = []
    for ulysses, ring in splits:
        ranks = run_distributed(measure, ulysses * ring, model_name, ulysses, ring, seq_len, timeout=900)
        pred = predicted(model_name, ulysses, ring, seq_len)
        meas = max(r["peak"] for r in ranks)
        rows.append({"model": model_name, "P": ulysses * ring, "split": f"{ulysses}x{ring}", "seq_len": seq_len,
                     "predicted": pred, "measured": meas, "ratio": meas / pred,
                     "runtime": max(r["runtime"] for r in ranks)})
    return rows
