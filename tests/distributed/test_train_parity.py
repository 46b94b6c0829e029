"""Training under sequence parallelism = training in one process: the same losses, step after step."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.spawn import run_distributed

pytestmark = pytest.mark.distributed


def _train(rank, world, ulysses, ring, dtype_name, steps=3):
    from transformers import Qwen2ForCausalLM

    from longvila.model import build_config
    from longvila.parallel import ParallelDims
    from longvila.parallel.parallelize import apply_sequence_parallel
    from longvila.train.engine import TorchEngine, global_value, lm_loss
    from longvila.train.lora import apply_lora

    dtype = getattr(torch, dtype_name)
    dims = ParallelDims(ulysses=ulysses, ring=ring, world_size=world)
    if world > 1:
        dims.build()
    torch.manual_seed(0)
    cfg = build_config("tiny").llm_config()
    cfg.vocab_size = 2048                                  # tiny shapes, small vocabulary: fast on 2 cores
    model = Qwen2ForCausalLM(cfg).to(dtype)
    apply_lora(model, r=4, alpha=8)                       # stage 4 trains LoRA + norms + embeddings
    apply_sequence_parallel(model, dims, backend="math" if dtype == torch.float64 else "torch_cpu")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    engine = TorchEngine(model, dims, opt, grad_clip=1.0)
    rows = torch.randint(0, 2000, (1, 64), generator=torch.Generator().manual_seed(1)).repeat(steps, 1)
    losses = []
    for row in rows:
        loss, _ = lm_loss(model, row, dims)
        engine.backward(loss)
        engine.step()
        losses.append(global_value(loss.item(), dims))
    return losses


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-9), ("float32", 2e-5)])
def test_stage4_steps_under_2d_sp_match_one_process(dtype, tol):
    ref = _train(0, 1, 1, 1, dtype)
    for losses in run_distributed(_train, 4, 2, 2, dtype):
        assert max(abs(a - b) for a, b in zip(losses, ref)) < tol, (losses, ref)
    assert ref[-1] < ref[0]                                # it learns (one row, repeated, lr 1e-2)
