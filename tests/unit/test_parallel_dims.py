"""ParallelDims and the sequence layouts, without process groups."""

from __future__ import annotations

import pytest
import torch

from longvila.parallel import (ParallelDims, global_positions, local_indices, shard_sequence, sp_attention,
                               valid_ulysses_degrees)


def test_degrees_and_groups():
    dims = ParallelDims(ulysses=2, ring=2, world_size=8)
    assert (dims.sp_degree, dims.dp_degree) == (4, 2)
    assert dims.group_ranks("sp") == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert dims.group_ranks("ulysses") == [[0, 1], [2, 3], [4, 5], [6, 7]]        # contiguous: intra-node
    assert dims.group_ranks("ring") == [[0, 2], [1, 3], [4, 6], [5, 7]]           # strided by U: inter-node
    assert dims.group_ranks("dp") == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert dims.coords(6) == {"dp": 1, "sp": 2, "ulysses": 0, "ring": 1}


def test_validation_names_the_fix():
    with pytest.raises(ValueError, match="not a multiple of ulysses x ring = 4"):
        ParallelDims(ulysses=2, ring=2, world_size=6)
    assert valid_ulysses_degrees(28, 4) == [1, 2, 4, 28]                          # Qwen2-7B
    with pytest.raises(ValueError, match=r"ulysses=14 cannot split 28 query / 4 KV heads; valid Ulysses degrees: \[1, 2, 4, 28\]"):
        ParallelDims(ulysses=14, world_size=14).validate_heads(28, 4)
    with pytest.raises(ValueError, match="build\\(\\) needs torch.distributed"):
        ParallelDims(ulysses=2, world_size=2).build()


@pytest.mark.parametrize("layout", ["zigzag", "contiguous"])
@pytest.mark.parametrize("p", [1, 2, 3, 4, 8])
def test_layouts_cover_every_token_once(layout, p):
    seq = 48
    pos = global_positions(seq, p, layout)
    assert sorted(pos.tolist()) == list(range(seq))
    if layout == "zigzag" and p > 1:
        c = seq // (2 * p)
        assert local_indices(seq, p, 0, layout).tolist() == list(range(c)) + list(range(seq - c, seq))
    x = torch.randn(2, seq, 3)
    shards = [x[:, local_indices(seq, p, r, layout)] for r in range(p)]
    assert torch.equal(torch.cat(shards, 1)[:, torch.argsort(pos)], x)          # exact round trip


def test_indivisible_length_is_refused():
    with pytest.raises(ValueError, match="not divisible by 8 \\(zigzag over 4 ranks\\); pad it"):
        local_indices(20, 4, 0, "zigzag")


def test_sp_attention_single_process_and_clear_refusals():
    from longvila.parallel import sp_attention
    from longvila.parallel.attention import attention_mask, math_attention

    dims = ParallelDims(world_size=1)
    q, k, v = (torch.randn(1, 6, 2, 4, dtype=torch.float64) for _ in range(3))
    pos = torch.arange(6)
    want, _ = math_attention(q, k, v, attention_mask(pos, pos, True, None))
    assert torch.equal(sp_attention(q, k, v, dims), want)
    with pytest.raises(ValueError, match="cu_seqlens ends at 5 but the sequence has 6 tokens"):
        sp_attention(q, k, v, dims, cu_seqlens=torch.tensor([0, 2, 5]))
    with pytest.raises(ValueError, match="must start at 0 and increase strictly"):
        sp_attention(q, k, v, dims, cu_seqlens=torch.tensor([0, 4, 4, 6]))
    with pytest.raises(ValueError, match="has no process groups; call dims.build\\(\\)"):
        sp_attention(q, k, v, ParallelDims(ring=2, world_size=2))
    with pytest.raises(ValueError, match="cannot split 2 query / 2 KV heads"):
        sp_attention(q, k, v, ParallelDims(ulysses=4, world_size=4))


def test_token_mean_loss_single_process():
    from longvila.parallel.loss import token_mean_loss

    logits = torch.randn(6, 5, dtype=torch.float64)
    targets = torch.tensor([1, -100, 2, 3, -100, 0])
    loss, count = token_mean_loss(logits, targets, ParallelDims(world_size=1))
    assert count == 4
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100))
    doubled, _ = token_mean_loss(logits, targets, ParallelDims(world_size=2), dp_averaged=True)  # DP 2 averages
    torch.testing.assert_close(doubled, 2 * loss)
    with pytest.raises(ValueError, match="no supervised token"):
        token_mean_loss(logits, torch.full((6,), -100), ParallelDims(world_size=1))


def test_the_layout_belongs_to_the_topology():
    """Sharding in one layout and attending in another was silently wrong by O(1); now there is one place."""
    assert ParallelDims(ulysses=2, ring=2, world_size=4).layout == "zigzag"
    dims = ParallelDims(ulysses=2, ring=2, world_size=4, layout="contiguous", rank=1)
    assert dims.seq_len_divisor() == 4 and ParallelDims(ring=4, world_size=4).seq_len_divisor() == 8
    x = torch.arange(10).view(1, 10)
    assert shard_sequence(x, dims).tolist() == [[3, 4, 5]]                   # contiguous, uneven: ranks 3, 3, 2, 2
    assert shard_sequence(x, dims, layout="contiguous").tolist() == [[3, 4, 5]]
    with pytest.raises(ValueError, match="layout='zigzag' but ParallelDims\\(ulysses=2, ring=2\\) has layout="
                                         "'contiguous': the layout belongs to the topology"):
        shard_sequence(x, dims, layout="zigzag")
    q = torch.zeros(1, 3, 4, 2)
    with pytest.raises(ValueError, match="the layout belongs to the topology"):
        sp_attention(q, q, q, dims, layout="zigzag")
    with pytest.raises(ValueError, match="unknown layout 'diagonal'; use one of \\('zigzag', 'contiguous'\\) "
                                         "or 'auto'"):
        ParallelDims(world_size=1, layout="diagonal")


def test_the_default_layout_follows_the_ring():
    """Zigzag balances a ring's causal work; without a ring (Ulysses alone) it balances nothing and costs time."""
    from longvila.config.train import TrainConfig

    for ulysses, ring, want in [(1, 1, "contiguous"), (4, 1, "contiguous"), (1, 4, "zigzag"), (2, 2, "zigzag")]:
        assert ParallelDims(ulysses=ulysses, ring=ring).layout == want
        assert ParallelDims(ulysses=ulysses, ring=ring, layout="auto").layout == want
    assert ParallelDims(ulysses=4, layout="zigzag").layout == "zigzag"          # an explicit layout wins
    assert ParallelDims(ring=4, layout="contiguous").layout == "contiguous"
    assert ParallelDims(ulysses=4).seq_len_divisor() == 4 and ParallelDims(ulysses=2, ring=2).seq_len_divisor() == 8
    assert TrainConfig().layout == "auto"
    with pytest.raises(ValueError, match="train.layout"):
        TrainConfig(layout="diagonal")


def test_public_names_load_lazily_as_documented():
    import longvila.parallel as parallel
    from longvila.parallel.parallelize import apply_sequence_parallel

    assert parallel.apply_sequence_parallel is apply_sequence_parallel and "apply_sequence_parallel" in dir(parallel)


def test_memo_lives_on_the_dims_object_and_is_bounded():
    dims, calls = ParallelDims(world_size=1), []
    make = lambda k: (lambda: calls.append(k) or k * 10)
    assert [dims.memo(k, make(k), limit=2) for k in (1, 1, 2, 3, 1)] == [10, 10, 20, 30, 10]
    assert calls == [1, 2, 3, 1]                       # 1 was dropped when 3 came in (oldest first)
    assert ParallelDims(world_size=1).memo(1, make(9)) == 90            # another object, its own memo
