"""Sequence-parallel inference on one process: the exact LSE merge of partial attentions, the sharded cache's
bookkeeping (padding never cached, the owner rank), `--sp` parsing, and `longvila infer --sp 1` = `infer`."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from longvila.infer.sp_launch import run_infer_sp
from longvila.parallel import ParallelDims
from longvila.parallel.decode import SPKVCache, combine_partials, owner_rank, partial_attention
from longvila.parallel.math_kernel import math_attention
from longvila.utils.ranks import parse_sp


def test_partials_of_disjoint_key_sets_merge_to_exact_attention():
    """GQA (4 query heads on 2 KV heads), fp64; one part empty (out 0, LSE -inf), parts of 1 and many keys."""
    torch.manual_seed(0)
    q = torch.randn(2, 1, 4, 8, dtype=torch.float64)
    k, v = torch.randn(2, 20, 2, 8, dtype=torch.float64), torch.randn(2, 20, 2, 8, dtype=torch.float64)
    ref_out, ref_lse = math_attention(q, k, v, None, scale=0.3)
    whole_out, whole_lse = partial_attention(q, k, v, 0.3)
    assert torch.allclose(whole_out, ref_out, atol=1e-12) and torch.allclose(whole_lse, ref_lse, atol=1e-12)
    bounds = [0, 0, 7, 8, 20]                     # parts: empty, 7 keys, 1 key, 12 keys
    parts = [partial_attention(q, k[:, a:b], v[:, a:b], 0.3) for a, b in zip(bounds, bounds[1:])]
    assert torch.isinf(parts[0][1]).all() and (parts[0][0] == 0).all()
    before = [p[0].clone() for p in parts]
    for order in (parts, parts[::-1]):
        out, lse = combine_partials([p[0] for p in order], [p[1] for p in order])
        assert torch.allclose(out, ref_out, atol=1e-12) and torch.allclose(lse, ref_lse, atol=1e-12)
    assert all(torch.equal(b, p[0]) for b, p in zip(before, parts))      # the partials are left as they were


@pytest.mark.parametrize("ulysses, ring, layout, real_len", [(2, 2, "zigzag", 13), (1, 4, "zigzag", 30),
                                                             (1, 3, "contiguous", 10), (1, 4, "zigzag", 3)])
def test_cache_holds_every_real_token_once_and_no_padding(ulysses, ring, layout, real_len):
    p = ulysses * ring
    held, owners = [], []
    for rank in range(p):
        dims = ParallelDims(ulysses=ulysses, ring=ring, world_size=p, layout=layout, rank=rank)
        cache = SPKVCache(dims, real_len=real_len, max_new_tokens=3)
        divisor = dims.seq_len_divisor()
        assert cache.seq_len % divisor == 0 and cache.seq_len - real_len < divisor
        k = cache.positions.double().view(1, -1, 1, 1).expand(1, -1, 2, 4)      # each key carries its position
        cache.store(0, k, k)
        keys, _ = cache.keys(0)
        held += keys[0, :, 0, 0].long().tolist()
        owners.append(cache.is_owner)
        if cache.is_owner:
            assert cache.positions[cache.last_index()] == real_len - 1
            token = torch.zeros(1, 1, 2, 4, dtype=torch.float64)
            for _ in range(3):
                cache.append(0, token, token)
            assert len(cache) == len(keys[0]) + 3
            with pytest.raises(ValueError, match="max_new_tokens"):
                cache.append(0, token, token)
    assert sorted(held) == list(range(real_len))
    assert owners.count(True) == 1 and owners.index(True) == owner_rank(real_len, cache.seq_len, p, layout)


def test_parse_sp():
    assert parse_sp("2x2") == (2, 2) and parse_sp("4") == (1, 4) and parse_sp("4X1") == (4, 1)
    for bad in ("2x", "x2", "0x2", "2x0", "two", "2x2x2"):
        with pytest.raises(ValueError, match="--sp"):
            parse_sp(bad)


def _args(model, video, sp, **kw):
    base = dict(model=str(model), video=str(video), image=None, prompt="What happens?", num_frames=4,
                max_new_tokens=6, quiet=True, sp=sp, sp_layout="zigzag")
    return argparse.Namespace(**{**base, **kw})


def test_infer_sp_1_prints_what_infer_prints(tiny_ckpt, tmp_path, capsys):
    from longvila.data.shot2story.synth import write_video
    from longvila.infer.single import answer, load_for_inference

    frames = np.random.default_rng(1).integers(0, 256, (12, 48, 64, 3), dtype=np.uint8)
    video = tmp_path / "clip.mp4"
    write_video(video, frames, fps=8, width=64, height=48)
    assert run_infer_sp(_args(tiny_ckpt, video, "1")) == 0
    model, tokenizer = load_for_inference(tiny_ckpt)
    expected = answer(model, tokenizer, "What happens?", video=video, num_frames=4, max_new_tokens=6)
    assert capsys.readouterr().out == expected + "\n"
    with pytest.raises(ValueError, match=r"--sp 3x1: ulysses=3 .* valid Ulysses degrees: \[1, 2, 4\].*--sp 3"):
        run_infer_sp(_args(tiny_ckpt, video, "3x1"))
