"""Training under sequence parallelism = training in one process: the same losses, step after step."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.spawn import run_distributed

pytestmark = pytest.mark.distributed


def _train(rank, world, ulysses, ring, dtype_name, steps=3, checkpointing=False, with_saved=False, separator=None,
           mask=True):
    from transformers import Qwen2ForCausalLM

    from longvila.model import build_config
    from longvila.parallel import ParallelDims
    from longvila.parallel.parallelize import apply_sequence_parallel
    from longvila.train.engine import TorchEngine, enable_gradient_checkpointing, global_value, lm_loss
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
    if checkpointing:
        enable_gradient_checkpointing(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    engine = TorchEngine(model, dims, opt, grad_clip=1.0)
    rows = torch.randint(0, 2000, (1, 64), generator=torch.Generator().manual_seed(1)).repeat(steps, 1)
    if separator is not None:
        rows[:, [13, 40]] = separator                      # three documents, their edges inside shards
    losses, saved = [], []
    for row in rows:
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            loss, _ = lm_loss(model, row, dims, separator=separator if mask else None)
        engine.backward(loss)
        engine.step()
        losses.append(global_value(loss.item(), dims))
    return (losses, sum(saved) // steps) if with_saved else losses


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-9), ("float32", 2e-5)])
def test_stage4_steps_under_2d_sp_match_one_process(dtype, tol):
    ref = _train(0, 1, 1, 1, dtype)
    for losses in run_distributed(_train, 4, 2, 2, dtype):
        assert max(abs(a - b) for a, b in zip(losses, ref)) < tol, (losses, ref)
    assert ref[-1] < ref[0]                                # it learns (one row, repeated, lr 1e-2)


def test_document_mask_under_2d_sp_matches_one_process():
    # stage 4's document_mask: the boundaries reach every rank's attention (zigzag shards, Ulysses, ring)
    ref = _train(0, 1, 1, 1, "float64", 3, False, False, 2047)
    unmasked = _train(0, 1, 1, 1, "float64", 3, False, False, 2047, False)
    for losses in run_distributed(_train, 4, 2, 2, "float64", 3, False, False, 2047):
        assert max(abs(a - b) for a, b in zip(losses, ref)) < 1e-9, (losses, ref)
        assert abs(losses[0] - unmasked[0]) > 1e-4                      # the mask changed the loss


def test_gradient_checkpointing_under_2d_sp_is_exact():
    # each layer recomputed in the backward, its Ulysses all-to-alls and ring steps included: the same losses,
    # and the forward keeps far fewer activations for the backward
    ref = _train(0, 1, 1, 1, "float64")
    plain = run_distributed(_train, 4, 2, 2, "float64", 3, False, True)
    for (losses, saved), (_, saved_plain) in zip(run_distributed(_train, 4, 2, 2, "float64", 3, True, True), plain):
        assert max(abs(a - b) for a, b in zip(losses, ref)) < 1e-9, (losses, ref)
        assert saved < 0.75 * saved_plain, (saved, saved_plain)      # (the logits are most of what is left)


def _bucketed(rank, world):
    from longvila.plan.memory import TORCH_BUCKET_ELEMENTS
    from longvila.train.engine import GRAD_BUCKET_ELEMENTS, _all_reduce_in_buckets

    assert GRAD_BUCKET_ELEMENTS == TORCH_BUCKET_ELEMENTS                  # the planner models this bucket
    shapes = [(3,), (4, 2), (11,), (2, 2), (1,), (0,), (5, 3)]           # with a bucket of 8: groups, one alone
    tensors = [torch.arange(int(torch.tensor(s).prod()), dtype=torch.float64).reshape(s) * (rank + 1)
               for s in shapes]
    tensors[-1] = tensors[-1].t()                                        # a non-contiguous one
    ids = [t.data_ptr() for t in tensors]
    _all_reduce_in_buckets(tensors, bucket=8)
    want = sum(range(1, world + 1))
    ok = all(torch.equal(t, torch.arange(t.numel(), dtype=torch.float64).reshape(s).mul(want) if i < 6
                         else torch.arange(15, dtype=torch.float64).reshape(5, 3).t() * want)
             for i, (t, s) in enumerate(zip(tensors, shapes)))
    return ok and ids == [t.data_ptr() for t in tensors]                # in place


def test_gradients_are_summed_once_and_in_place_in_buckets():
    assert run_distributed(_bucketed, 3) == [True, True, True]
