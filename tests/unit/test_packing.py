"""Packing math: exact rows, spans, conservation, the shuffle buffer and the upsampling sampler."""

from __future__ import annotations

import numpy as np
import pytest

from longvila.config import PackConfig
from longvila.data.packing import Packer, Sampler, ShuffleBuffer, uniform_hash

EOS = 99


def _docs(rng, n):
    return [(f"S{i % 3}", f"f:{i + 1}", rng.integers(0, 50, size=int(rng.integers(1, 40)), dtype=np.int32))
            for i in range(n)]


@pytest.mark.parametrize("seq_len", [1, 7, 16, 64])
def test_rows_are_exact_and_spans_rebuild_every_document(seq_len):
    rng = np.random.default_rng(seq_len)
    docs = _docs(rng, 50)
    packer = Packer(seq_len, EOS)
    rows = [r for src, did, ids in docs for r in packer.add_document(src, did, ids)]
    rem_ids, rem_spans = packer.remainder()
    assert all(len(ids) == seq_len and ids.dtype == np.int32 for ids, _ in rows)
    assert len(rem_ids) < seq_len
    stream = np.concatenate([ids for ids, _ in rows] + [rem_ids])
    assert len(stream) == sum(len(d[2]) + 1 for d in docs)  # conservation: tokens + one EOS each
    # reassemble each document from its spans across rows
    rebuilt: dict[str, list] = {}
    for ids, spans in rows + [(rem_ids, rem_spans)]:
        for src, did, s, e, off in spans:
            assert 0 <= s < e <= len(ids)
            rebuilt.setdefault(did, []).append((off, ids[s:e]))
    for src, did, ids in docs:
        pieces = sorted(rebuilt[did], key=lambda p: p[0])
        assert np.array_equal(np.concatenate([p for _, p in pieces]), ids)
        assert [p[0] for p in pieces] == list(np.cumsum([0] + [len(p) for _, p in pieces[:-1]]))


def test_eos_follows_each_document():
    packer = Packer(4, EOS)
    rows = packer.add_document("S", "a", np.array([1, 2], np.int32)) + packer.add_document("S", "b", np.array([3], np.int32))
    assert [r[0].tolist() for r in rows] == [[1, 2, EOS, 3]]
    assert rows[0][1] == [("S", "a", 0, 2, 0), ("S", "b", 3, 4, 0)]
    assert packer.remainder()[0].tolist() == [EOS]


def test_repacking_remainders_keeps_spans():
    a, b = Packer(5, EOS), Packer(5, EOS)
    a.add_document("S", "x", np.arange(3, dtype=np.int32))          # remainder: 0 1 2 EOS
    b.add_document("T", "y", np.arange(10, 13, dtype=np.int32))     # remainder: 10 11 12 EOS
    merged = Packer(5, EOS)
    rows = merged.add_piece(*a.remainder()) + merged.add_piece(*b.remainder())
    assert rows[0][0].tolist() == [0, 1, 2, EOS, 10]
    assert rows[0][1] == [("S", "x", 0, 3, 0), ("T", "y", 4, 5, 0)]
    ids, spans = merged.remainder()
    assert ids.tolist() == [11, 12, EOS] and spans == [("T", "y", 0, 2, 1)]


def test_shuffle_buffer_is_a_seeded_permutation():
    def run(seed):
        buf = ShuffleBuffer(8, np.random.default_rng(seed))
        out = [x for i in range(100) if (x := buf.push(i)) is not None]
        return out + list(buf.drain())
    a, b, c = run(1), run(1), run(2)
    assert sorted(a) == list(range(100)) and a == b and a != c and a != list(range(100))


def test_uniform_hash_is_stable_and_uniform():
    assert uniform_hash(1, "keep", "a:1") == uniform_hash(1, "keep", "a:1") != uniform_hash(2, "keep", "a:1")
    u = np.array([uniform_hash(0, "keep", f"f:{i}") for i in range(4000)])
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.02


def test_sampler_modes():
    s = Sampler(PackConfig(upsample="none"), None)
    assert not any(s.drops_short(f"f:{i}", 10) for i in range(100))

    s = Sampler(PackConfig(upsample="global", keep_ratio=0.25, short_threshold=100, chars_per_token=1.0), None)
    kept = sum(not s.drops_short(f"f:{i}", 50) for i in range(4000))
    assert 0.2 < kept / 4000 < 0.3                                   # short docs kept with p = keep_ratio
    assert not any(s.drops_short(f"f:{i}", 100) for i in range(100))   # long docs always kept
    assert not s.over_budget("RedPajamaC4") and s.charge("RedPajamaC4", 10**9)  # no budget: never spent


def test_per_source_budget_follows_the_mix():
    cfg = PackConfig(upsample="per_source", keep_ratio=1.0, mix={"RedPajamaC4": 3.0, "RedPajamaBook": 1.0})
    s = Sampler(cfg, budget_tokens=400)
    assert s.budgets["RedPajamaC4"] == 300 and s.budgets["RedPajamaBook"] == 100 and s.budgets["RedPajamaGithub"] == 0
    assert s.over_budget("RedPajamaGithub")
    assert s.charge("RedPajamaBook", 60) and s.charge("RedPajamaBook", 60)
    assert not s.charge("RedPajamaBook", 1) and s.over_budget("RedPajamaBook")   # 120 >= 100: spent
    assert s.charge("RedPajamaC4", 10) and not s.over_budget("RedPajamaC4")

    g = Sampler(PackConfig(upsample="global"), budget_tokens=100)
    assert g.charge("RedPajamaC4", 100) and g.over_budget("RedPajamaBook")     # one shared budget
