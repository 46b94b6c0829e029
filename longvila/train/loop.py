"""The training loop shared by stages 4 and 5: steps, metrics, checkpoints, resume.

    result = train(engine, data, loss_fn, dims, run_dir, steps=80, grad_accum=16, save_every=20)

`data` is indexable (a sample per index) and read through an `SPSampler`, so every SP rank gets the same
sample and DP replicas different ones. Each optimizer step accumulates `grad_accum` micro-steps. On start,
the newest complete checkpoint in `run_dir` is loaded (the engine's parameters, optimizer and scheduler,
the sampler, every rank's RNG, the losses so far) and training continues from there, so a preempted run ends with the same losses and weights
as an uninterrupted one. Rank 0 appends one line per step to `metrics.jsonl` (step, loss, lr, grad-norm,
tokens/s, peak RSS) and logs a one-line progress report with an ETA.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import torch

from longvila.parallel.comm import world_sum
from longvila.train import checkpoint
from longvila.train.engine import global_value
from longvila.train.sampler import SPSampler
from longvila.utils.io import write_text_atomic
from longvila.utils.logging import get_logger


def train(engine, data, loss_fn, dims, run_dir: str | Path, *, steps: int, grad_accum: int = 1,
          save_every: int = 0, seed: int = 0, stop_after: int | None = None, rank: int = 0,
          batch_size: int | None = None) -> dict:
    """Run until `steps` optimizer steps are done (or `stop_after` steps in this call, to simulate
    preemption in tests). Returns {"losses", "step"}.

    `loss_fn(item, total) -> (loss share, tokens processed by the world)`, where item is one sample, or a list
    of `batch_size` samples when batch_size is given. When `data` has `num_targets(index)` (supervised tokens
    of a sample, known without loading it), `total` is the global count over the whole accumulation window
    (every micro-step, every DP replica), so the summed micro-step losses are the exact token mean of the
    global batch; otherwise `total` is None, each micro-step is its own global mean and the loop averages
    them (exact when every sample has the same count, as packed stage-4 rows do).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    is_rank0 = rank == 0
    sampler = SPSampler(len(data), dims.dp_degree, dims.axis_rank("dp"), seed=seed)
    losses, step = [], 0
    state = checkpoint.load_latest(run_dir, engine, rank)
    if state is not None:
        sampler.load_state_dict(state["sampler"])
        losses, step = list(state["losses"]), state["step"]
        if is_rank0:
            get_logger().info(f"resumed from {run_dir}/checkpoints/step-{step:06d}")
    if is_rank0:
        _truncate_metrics(run_dir / "metrics.jsonl", step)          # steps after the checkpoint are redone
    it = iter(sampler)
    per_item = 1 if batch_size is None else batch_size
    exact = hasattr(data, "num_targets")
    t_start, done_here = time.perf_counter(), 0
    metrics = run_dir / "metrics.jsonl"
    while step < steps and (stop_after is None or done_here < stop_after):
        t0, total, tokens = time.perf_counter(), 0.0, 0
        window = [[next(it) for _ in range(per_item)] for _ in range(grad_accum)]
        count = None
        if exact:                              # SP ranks hold the same samples: count each group once
            count = int(round(world_sum(sum(data.num_targets(i) for w in window for i in w)) / dims.sp_degree))
        for indices in window:
            item = data[indices[0]] if batch_size is None else [data[i] for i in indices]
            loss, n = loss_fn(item, count)
            share = loss if exact else loss / grad_accum
            engine.backward(share)
            total += share.item()
            tokens += n
        stats = engine.step()
        step, done_here = step + 1, done_here + 1
        loss_value = global_value(total, dims)
        losses.append(loss_value)
        if is_rank0:
            dt = time.perf_counter() - t0
            eta = (time.perf_counter() - t_start) / done_here * (steps - step)
            row = {"step": step, "loss": loss_value, "lr": stats["lr"], "grad_norm": stats["grad_norm"],
                   "tokens_per_s": tokens / dt, "tokens_per_s_per_rank": tokens / dt / dims.world_size,
                   "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
            if torch.cuda.is_available():
                row["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
            with open(metrics, "a") as f:
                f.write(json.dumps(row) + "\n")
            get_logger().info(f"step {step}/{steps} loss {loss_value:.4f} lr {stats['lr']:.2e} "
                              f"grad-norm {stats['grad_norm']:.3f} {row['tokens_per_s']:.0f} tok/s ETA {eta:.0f}s")
        if save_every and (step % save_every == 0 or step == steps):
            checkpoint.save(run_dir, step, engine, {"sampler": sampler.state_dict(), "losses": losses}, rank)
    return {"losses": losses, "step": step}


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the rows of steps <= `step` (those of the checkpoint resumed from; none for a fresh start); a
    torn or malformed line (a run killed mid-write) is dropped."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    write_text_atomic(path, "".join(line + "\n" for line in keep))
