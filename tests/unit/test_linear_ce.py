"""The fused LM head + cross-entropy equals the two steps (value and both gradients), chunked or not."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from longvila.parallel.loss import IGNORE_INDEX, linear_cross_entropy


@pytest.mark.parametrize("chunk_elements", [1 << 24, 37 * 5, 1], ids=["one-chunk", "uneven-chunks", "row-by-row"])
@pytest.mark.parametrize("train_head", [True, False], ids=["head-trained", "head-frozen"])
def test_matches_logits_then_cross_entropy(chunk_elements, train_head):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(23, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = torch.randn(37, 8, dtype=torch.float64, generator=gen, requires_grad=train_head)
    targets = torch.randint(0, 37, (23,), generator=gen)
    targets[[0, 5, 6, 22]] = IGNORE_INDEX
    targets[7:12] = IGNORE_INDEX                       # a whole chunk may be ignored
    ref = F.cross_entropy(hidden @ weight.T, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    ref_grads = torch.autograd.grad(2.5 * ref, [hidden, weight] if train_head else [hidden])
    out = linear_cross_entropy(hidden, weight, targets, chunk_elements=chunk_elements)
    grads = torch.autograd.grad(2.5 * out, [hidden, weight] if train_head else [hidden])
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-11, atol=1e-12)


def test_fp32_hidden_and_nothing_supervised():
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(6, 4, generator=gen, requires_grad=True)
    weight = torch.randn(9, 4, generator=gen, requires_grad=True)
    targets = torch.randint(0, 9, (6,), generator=gen)
    ref = F.cross_entropy(hidden @ weight.T, targets, reduction="sum")
    assert torch.allclose(linear_cross_entropy(hidden, weight, targets), ref, rtol=1e-6)
    none = linear_cross_entropy(hidden, weight, torch.full((6,), IGNORE_INDEX))
    none.backward()
    assert float(none.detach()) == 0.0 and not hidden.grad.any() and not weight.grad.any()


def test_the_planner_models_the_same_chunk():
    """plan/memory.py (torch-free) keeps its own copy of the chunk size: they must agree."""
    from longvila.parallel.loss import HEAD_CHUNK_ELEMENTS
    from longvila.plan.memory import HEAD_CHUNK_ELEMENTS as PLANNED

    assert PLANNED == HEAD_CHUNK_ELEMENTS
