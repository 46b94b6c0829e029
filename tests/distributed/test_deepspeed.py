"""The DeepSpeed engine (ZeRO-2/3, fp32, gloo) under 2D sequence parallelism trains like one process.

One P=4 spawn (ulysses 2 x ring 2) runs every case; a second P=4 spawn resumes a preempted run in fresh
processes. The P=1 reference is the plain TorchEngine in the test process, on the same data and seed. As in
stage 4, DeepSpeed gets a parent module and the loss calls its `.llm` directly (not DeepSpeed's forward).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from tests.helpers.spawn import run_distributed

pytestmark = pytest.mark.distributed

LR, STEPS, TOL = 1e-2, 3, 2e-5


def _lr_lambda(step):
    return min(1.0, (step + 1) / 2)                      # 2 warm-up steps: the schedule is checked too


def _rows(steps, grad_accum):
    """`grad_accum` random rows, the same ones every step (so the loss must go down)."""
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 2000, (64,), generator=g) for _ in range(grad_accum)] * steps


def _setup(dims, kind, zero_stage=3, grad_accum=1, shard_all=True):
    """(parent module with a LoRA tiny LLM as `.llm`, engine) from seed 0. `shard_all`: ZeRO-3 shards every
    parameter (persistence threshold 0), so its gathering is really exercised; otherwise make_engine's
    DeepSpeed defaults."""
    from transformers import Qwen2ForCausalLM

    from longvila.model import build_config
    from longvila.parallel.parallelize import apply_sequence_parallel
    from longvila.train.ds_engine import DeepSpeedEngine
    from longvila.train.engine import make_engine
    from longvila.train.lora import apply_lora

    torch.manual_seed(0)
    cfg = build_config("tiny").llm_config()
    cfg.vocab_size = 2048                                  # tiny shapes, small vocabulary: fast on 2 cores
    parent = torch.nn.Module()
    parent.llm = Qwen2ForCausalLM(cfg)
    apply_lora(parent.llm, r=4, alpha=8)                   # stage 4 trains LoRA + norms + embeddings
    apply_sequence_parallel(parent, dims, backend="torch_cpu")
    args = dict(lr=LR, lr_lambda=_lr_lambda, grad_accum=grad_accum, zero_stage=zero_stage, grad_clip=1.0,
                weight_decay=0.01)
    if kind == "deepspeed" and shard_all:
        return parent, DeepSpeedEngine(parent, dims, persistence_threshold=0, **args)
    return parent, make_engine(kind, parent, dims, **args)


def _steps(parent, engine, dims, grad_accum, steps=STEPS):
    from longvila.train.engine import global_value, lm_loss

    rows, losses, lrs, norms = _rows(steps, grad_accum), [], [], []
    for s in range(steps):
        total = 0.0
        for row in rows[s * grad_accum:(s + 1) * grad_accum]:
            loss, _ = lm_loss(parent.llm, row, dims)
            engine.backward(loss / grad_accum)
            total += loss.item() / grad_accum
        stats = engine.step()
        lrs.append(stats["lr"])
        norms.append(stats["grad_norm"])
        losses.append(global_value(total, dims))
    return losses, lrs, norms


def _merged(parent, engine, rank):
    """Rank 0's LLM weights with LoRA merged in (gathered under ZeRO-3), as numpy arrays: torch tensors would
    cross the result queue as shared-memory handles, which die with the worker."""
    from longvila.train.lora import merge_lora

    with engine.gathered():
        if rank == 0:
            merge_lora(parent.llm)
            return {n: p.detach().numpy().copy() for n, p in parent.llm.named_parameters()}
    return None


def _train_with_loop(dims, run_dir, stop_after=None):
    from longvila.train.engine import lm_loss
    from longvila.train.loop import train

    parent, engine = _setup(dims, "deepspeed", zero_stage=3, grad_accum=2, shard_all=False)
    data = _rows(1, 4)                                    # 4 rows, in the sampler's (seeded, resumed) order
    return train(engine, data, lambda row, total: lm_loss(parent.llm, row, dims), dims, run_dir, steps=4, grad_accum=2,
                 save_every=2, seed=5, stop_after=stop_after, rank=dims.rank)["losses"]


def _parity_and_loop(rank, world, run_dir):
    from longvila.parallel import ParallelDims

    os.environ["LOCAL_RANK"] = str(rank)                  # what torchrun sets (one node); DeepSpeed reads it
    torch.set_num_threads(1)                              # 4 ranks on 2 cores: no oversubscription
    dims = ParallelDims(ulysses=2, ring=2, world_size=world).build()
    out = {}
    parent, engine = _setup(dims, "deepspeed", zero_stage=3, grad_accum=2)
    out["zero3"] = _steps(parent, engine, dims, grad_accum=2)
    out["zero3_merged"] = _merged(parent, engine, rank)
    parent, engine = _setup(dims, "deepspeed", zero_stage=2, grad_accum=2)
    out["zero2"] = _steps(parent, engine, dims, grad_accum=2)
    out["straight"] = _train_with_loop(dims, f"{run_dir}/straight")
    out["preempted"] = _train_with_loop(dims, f"{run_dir}/resumed", stop_after=3)
    return out


def _resume(rank, world, run_dir):
    from longvila.parallel import ParallelDims

    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    dims = ParallelDims(ulysses=2, ring=2, world_size=world).build()
    return _train_with_loop(dims, f"{run_dir}/resumed")


@pytest.mark.slow
def test_zero_stages_under_2d_sp_match_one_process_and_resume(tmp_path):
    from longvila.parallel import ParallelDims

    with ThreadPoolExecutor(1) as pool:                   # the reference runs while the ranks start
        spawned = pool.submit(run_distributed, _parity_and_loop, 4, str(tmp_path))
        dims = ParallelDims(world_size=1)
        parent, engine = _setup(dims, "torch", grad_accum=2)
        ref_losses, ref_lrs, ref_norms = _steps(parent, engine, dims, grad_accum=2)
        ref_merged = _merged(parent, engine, 0)
        results = spawned.result()
    assert ref_losses[-1] < ref_losses[0] and ref_lrs == [LR / 2, LR, LR]        # it learns; warm-up
    for rank, out in enumerate(results):
        for case in ("zero3", "zero2"):
            losses, lrs, norms = out[case]
            assert max(abs(a - b) for a, b in zip(losses, ref_losses)) < TOL, (case, rank, losses, ref_losses)
            assert lrs == ref_lrs, (case, lrs)
            assert max(abs(a / b - 1) for a, b in zip(norms, ref_norms)) < 1e-5, (case, norms, ref_norms)
    merged = results[0]["zero3_merged"]
    assert merged.keys() == ref_merged.keys()
    for name, w in ref_merged.items():
        assert abs(merged[name] - w).max() < 1e-5, (name, abs(merged[name] - w).max())

    straight = results[0]["straight"]
    assert len(straight) == 4 and straight[-1] < straight[0]
    assert max(abs(a - b) for a, b in zip(results[0]["preempted"], straight[:3])) < 1e-6
    resumed = run_distributed(_resume, 4, str(tmp_path))           # fresh processes: from step 2's checkpoint
    for losses in resumed:
        assert max(abs(a - b) for a, b in zip(losses, straight)) < 1e-6 and len(losses) == 4, (losses, straight)
