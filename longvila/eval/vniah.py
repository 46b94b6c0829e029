"""One V-NIAH evaluation of one checkpoint, on every rank of a process group (or in one process).

    summary = evaluate_needle(model_dir, haystack, needles_dir, out_dir, frames=frame_grid(32, 8),
                              depths=NEEDLE_DEPTHS, dims=dims, cache_dir="results/cache/needle")

Loads the checkpoint (released layout; its `rope_theta` and `rope_scaling` are used as saved, and both are
reported), routes the LLM's attention through MM-SP when dims.sp_degree > 1, encodes the haystack at
1 frame/s once (each SP rank 1/P of the frames; cached per model, video and sampling), encodes the needles,
evaluates the missing cells (longvila/eval/needle.py) and writes the outputs on rank 0.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from longvila.eval.haystack import cached_haystack, load_needles
from longvila.eval.needle import run_grid, write_outputs
from longvila.utils.logging import get_logger


def rope_settings(llm_config) -> dict:
    """rope_theta and rope_scaling of a Transformers LLM config (v5 keeps them under rope_parameters)."""
    rope = dict(getattr(llm_config, "rope_parameters", None) or {})
    theta = rope.get("rope_theta", getattr(llm_config, "rope_theta", None))
    kind = rope.get("rope_type", "default")
    scaling = None if kind == "default" else {k: v for k, v in rope.items() if k != "rope_theta"}
    return {"rope_theta": theta, "rope_scaling": scaling}


def chance_of(needles: list[dict]) -> float:
    """Chance accuracy of a model that answers with one of the needles' answers at random."""
    return 1.0 / len({n["answer"].strip().lower() for n in needles})


@torch.no_grad()
def evaluate_needle(model_dir: str | Path, haystack: str | Path, needles_dir: str | Path, out_dir: str | Path,
                    frames: list[int], depths: list[float], dims=None, cache_dir: str | Path | None = None,
                    trained_frames: int | None = None, progress: bool = True) -> dict | None:
    """Run the grid; rank 0 returns the summary (other ranks None). See the module docstring."""
    import torch.distributed as dist

    from longvila.data.video import preprocess_frames
    from longvila.infer.single import load_for_inference
    from longvila.parallel.comm import collective_device

    rank = dist.get_rank() if dist.is_initialized() else 0
    device = collective_device() if dist.is_initialized() else torch.device("cpu")
    model, tokenizer = load_for_inference(model_dir)
    model.to(device)
    if dims is not None and dims.sp_degree > 1:
        from longvila.parallel.parallelize import apply_sequence_parallel

        apply_sequence_parallel(model, dims)
    t0 = time.perf_counter()
    cache = Path(cache_dir) if cache_dir else Path(out_dir) / "cache"
    hay = cached_haystack(model, model_dir, haystack, max(frames), cache, dims, progress=progress and rank == 0)
    needles = load_needles(needles_dir)
    size = model.vision_tower.config.image_size
    for nd in needles:
        nd["embeds"] = model.encode_frames(preprocess_frames(nd["image"][None], size).to(device))[0]
    t1 = time.perf_counter()
    done = run_grid(model, tokenizer, hay, needles, frames, depths, out_dir, dims, progress)
    t2 = time.perf_counter()
    if rank:
        return None
    p = 1 if dims is None else dims.sp_degree
    summary = {"model": str(model_dir), "haystack": str(haystack), "needles": len(needles),
               "chance": chance_of(needles), "trained_frames": trained_frames,
               "rope": rope_settings(model.llm.config),
               "sp": {"ulysses": 1 if dims is None else dims.ulysses, "ring": 1 if dims is None else dims.ring,
                      "layout": "zigzag" if dims is None else dims.layout,
                      "world": 1 if dims is None else dims.world_size},
               "seconds": {"encode": round(t1 - t0, 2), "grid": round(t2 - t1, 2)}, "cells_run": done}
    summary = write_outputs(out_dir, frames, depths, summary)
    get_logger().info(f"needle: {summary['cells']} cells ({done} run here, SP {p}), mean {summary['avg_accuracy']:.3f}"
                      f" vs chance {summary['chance']:.3f}; by frames {summary['accuracy_by_frames']} -> {out_dir}")
    return summary


def needle_rank(rank: int, world: int, kwargs: dict) -> dict | None:
    """`launch_local` target: one rank of `evaluate_needle` with ulysses x ring from kwargs."""
    from longvila.parallel import ParallelDims
    kwargs = dict(kwargs)
    dims = ParallelDims(ulysses=kwargs.pop("ulysses"), ring=kwargs.pop("ring"), world_size=world,
                        layout=kwargs.pop("layout", None)).build()
    return evaluate_needle(dims=dims, **kwargs)
