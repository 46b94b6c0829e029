"""The global token-mean loss over SP x DP ranks equals the mean over the whole batch in one process."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.spawn import run_distributed

pytestmark = pytest.mark.distributed


def _batch():
    torch.manual_seed(3)
    seq, vocab = 16, 11
    weight = torch.randn(vocab, 5, dtype=torch.float64)
    feats = torch.randn(2, seq, 5, dtype=torch.float64)                # 2 samples: one per DP replica
    targets = torch.randint(0, vocab, (2, seq))
    targets[0, :7] = -100                                              # uneven supervision across samples
    targets[1, 3:5] = -100
    return weight, feats, targets


def _loss_case(rank, world, ulysses, ring):
    import torch.distributed as dist

    from longvila.parallel import ParallelDims, shard_sequence
    from longvila.parallel.loss import token_mean_loss

    dims = ParallelDims(ulysses=ulysses, ring=ring, world_size=world).build()
    weight, feats, targets = _batch()
    weight.requires_grad_()
    dp = dims.axis_rank("dp")
    logits = shard_sequence(feats[dp], dims, dim=0) @ weight.T
    loss, count = token_mean_loss(logits, shard_sequence(targets[dp], dims, dim=0), dims)
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total)
    dist.all_reduce(weight.grad)
    return total.item(), weight.grad, count


@pytest.mark.parametrize("ulysses, ring", [(2, 1), (1, 2)], ids=["sp2-ulysses-dp2", "sp2-ring-dp2"])
def test_global_token_mean_over_sp_and_dp(ulysses, ring):
    weight, feats, targets = _batch()
    weight.requires_grad_()
    logits = feats @ weight.T
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                            ignore_index=-100)
    ref.backward()
    for total, grad, count in run_distributed(_loss_case, 4, ulysses, ring):
        assert count == int((targets != -100).sum())
        assert abs(total - ref.item()) < 1e-12 and (grad - weight.grad).abs().max().item() < 1e-12
