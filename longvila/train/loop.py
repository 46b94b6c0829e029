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

from longvila.train import checkpoint
from longvila.train.engine import global_value
from longvila.train.sampler import SPSampler
from longvila.utils.logging import get_logger


def train(engine, data, loss_fn, dims, run_dir: str | Path, *, steps: int, grad_accum: int = 1,
          save_every: int = 0, seed: int = 0, stop_after: int | None = None, rank: int = 0,
          batch_size: int | None = None) -> dict:
    """Run until `steps` optimizer steps are done (or `stop_after` steps in this call, to simulate
    preemption in tests). `loss_fn(sample) -> (loss share, tokens)`, or `loss_fn([sample, ...])` with
    `batch_size` samples per micro-step when batch_size is given. Returns {"losses", "step"}."""
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
            _truncate_metrics(run_dir / "metrics.jsonl", step)      # steps after the checkpoint are redone
    it = iter(sampler)
    t_start, done_here = time.perf_counter(), 0
    metrics = run_dir / "metrics.jsonl"
    while step < steps and (stop_after is None or done_here < stop_after):
        t0, total, tokens = time.perf_counter(), 0.0, 0
        for _ in range(grad_accum):
            item = data[next(it)] if batch_size is None else [data[next(it)] for _ in range(batch_size)]
            loss, n = loss_fn(item)
            engine.backward(loss / grad_accum)
            total += loss.item() / grad_accum
            tokens += n
        stats = engine.step()
        step, done_here = step + 1, done_here + 1
        loss_value = global_value(total, dims)
        losses.append(loss_value)
        if is_rank0:
            dt = time.perf_counter() - t0
            eta = (time.perf_counter() - t_start) / done_here * (steps - step)
            row = {"step": step, "loss": loss_value, "lr": stats["lr"], "grad_norm": stats["grad_norm"],
                   "tokens_per_s": tokens / dt, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
            with open(metrics, "a") as f:
                f.write(json.dumps(row) + "\n")
            get_logger().info(f"step {step}/{steps} loss {loss_value:.4f} lr {stats['lr']:.2e} "
                              f"grad-norm {stats['grad_norm']:.3f} {row['tokens_per_s']:.0f} tok/s ETA {eta:.0f}s")
        if save_every and (step % save_every == 0 or step == steps):
            checkpoint.save(run_dir, step, engine, {"sampler": sampler.state_dict(), "losses": losses}, rank)
    return {"losses": losses, "step": step}


def _truncate_metrics(path: Path, step: int) -> None:
    if path.is_file():
        keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in keep))
