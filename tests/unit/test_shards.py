"""pack_files / merge_batches on a real (small) corpus with the real Qwen2 tokenizer."""

from __future__ import annotations

import json
import threading
import time

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest

from longvila.config import PackConfig
from longvila.data.export import export_jsonl
from longvila.data.manifest import check_conservation
from longvila.data.parquet import REMAINDER_FILE, ROW_SCHEMA, read_remainder
from longvila.data.shards import merge_batches, pack_files
from longvila.data.slimpajama import InputFile, SkipLog, read_documents
from tests.conftest import corpus_inputs

SEQ = 256


def pack(tmp_path, name, inputs, tokenizer, max_rows=None, **cfg_kw):
    out = tmp_path / name
    out.mkdir()
    cfg = PackConfig(**{"upsample": "none", "shuffle_buffer": 64, "encode_batch": 32, **cfg_kw})
    return out, pack_files(inputs, tokenizer, seq_len=SEQ, cfg=cfg, out_dir=out, max_rows=max_rows, progress=False)


def all_rows(folder):
    return [row for p in sorted(folder.glob("part-*.parquet")) for row in pq.read_table(p).to_pylist()]


@pytest.fixture(scope="module")
def packed(tmp_path_factory, small_corpus, tokenizer):
    tmp = tmp_path_factory.mktemp("packed")
    return pack(tmp, "a", corpus_inputs(small_corpus), tokenizer)


def test_rows_are_exact_and_documents_round_trip(packed, small_corpus, tokenizer):
    out, summary = packed
    rows = all_rows(out)
    assert len(rows) == summary["rows"] > 10
    assert all(len(r["input_ids"]) == SEQ for r in rows)
    assert pq.read_schema(out / "part-00000.parquet").equals(ROW_SCHEMA, check_metadata=False)
    rem_ids, rem_spans = read_remainder(out)
    assert len(rem_ids) == summary["remainder_tokens"] < SEQ
    # every document comes back, token for token, from its spans (mode none: each exactly once)
    pieces: dict[str, list] = {}
    for ids, spans in [(r["input_ids"], [tuple(s.values()) for s in r["sources"]]) for r in rows] + [(rem_ids.tolist(), rem_spans)]:
        for src, did, s, e, off in spans:
            pieces.setdefault(did, []).append((off, ids[s:e]))
    docs = [d for p, n in corpus_inputs(small_corpus) for d in read_documents(p, n, SkipLog(), InputFile(n))]
    assert len(pieces) == len(docs) == summary["documents"]
    for doc, ids in zip(docs, tokenizer.encode_batch([d.text for d in docs])):
        got = [t for _, part in sorted(pieces[doc.doc_id], key=lambda x: x[0]) for t in part]
        assert got == ids.tolist(), doc.doc_id
    eos_positions = sum(np.count_nonzero(np.asarray(r["input_ids"]) == tokenizer.eos_id) for r in rows)
    assert eos_positions + int(np.count_nonzero(rem_ids == tokenizer.eos_id)) == len(docs)


def test_token_conservation(packed):
    _, summary = packed
    check_conservation(summary)
    doc_tokens = sum(v["tokens"] for v in summary["sources"].values())
    assert summary["rows"] * SEQ + summary["remainder_tokens"] == doc_tokens + summary["documents"]
    assert summary["records"]["dropped"] == 0 and summary["records"]["skipped"] == 0


def test_two_runs_give_identical_bytes(tmp_path, packed, small_corpus, tokenizer):
    first, _ = packed
    second, _ = pack(tmp_path, "b", corpus_inputs(small_corpus), tokenizer)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir()) and REMAINDER_FILE in names
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_seed_changes_the_order_not_the_content(tmp_path, packed, small_corpus, tokenizer):
    _, a = packed
    out, b = pack(tmp_path, "c", corpus_inputs(small_corpus), tokenizer, seed=99)
    assert a["sources"] == b["sources"] and a["rows"] == b["rows"]
    assert (out / "part-00000.parquet").read_bytes() != (packed[0] / "part-00000.parquet").read_bytes()


def test_readable_by_datasets_and_exporter_matches(tmp_path, packed):
    out, summary = packed
    ds = datasets.load_dataset("parquet", data_files=str(out / "part-*.parquet"), split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == summary["rows"] and {len(x) for x in ds["input_ids"]} == {SEQ}
    jsonl = tmp_path / "orig.jsonl"
    assert export_jsonl(out, jsonl) == summary["rows"]
    lines = jsonl.read_text().splitlines()
    assert [json.loads(line)["text"] for line in lines] == ds["input_ids"]
    # what the original trainer does: load_dataset("json") and read the token-id list from "text"
    orig = datasets.load_dataset("json", data_files=str(jsonl), split="train", cache_dir=str(tmp_path / "hf2"))
    assert orig.column_names == ["text"] and orig[0]["text"] == ds[0]["input_ids"]


def test_merge_of_batches_conserves_tokens_and_is_ordered(tmp_path, small_corpus, tokenizer, packed):
    inputs = corpus_inputs(small_corpus)
    batches = [pack(tmp_path, f"b{i}", inputs[2 * i:2 * i + 2], tokenizer) for i in range(2)]
    out = tmp_path / "merged"
    out.mkdir()
    merged = merge_batches(batches, out, cfg=PackConfig(), eos_id=tokenizer.eos_id)
    check_conservation(merged)
    assert merged["documents"] == packed[1]["documents"] and merged["sources"] == packed[1]["sources"]
    assert len(merged["inputs"]) == 4 and merged["remainder_tokens"] < SEQ
    rows = all_rows(out)
    assert len(rows) == merged["rows"] and all(len(r["input_ids"]) == SEQ for r in rows)
    first_batch_rows = all_rows(batches[0][0])
    assert rows[: len(first_batch_rows)] == first_batch_rows
    with pytest.raises(ValueError, match="at least one batch"):
        merge_batches([], out, cfg=PackConfig(), eos_id=0)


def test_per_source_budget_and_upsampling(tmp_path, small_corpus, tokenizer):
    inputs = corpus_inputs(small_corpus)
    _, full = pack(tmp_path, "full", inputs, tokenizer)
    _, up = pack(tmp_path, "up", inputs, tokenizer, upsample="per_source", short_threshold=200, keep_ratio=0.1,
                 max_rows=60)
    check_conservation(up)
    assert up["dropped"]["short_document"] > 0
    assert up["records"]["lines"] == up["records"]["accepted"] + up["records"]["dropped"]
    # long documents make up a larger share of what is packed than of the corpus
    long_share = lambda s: s["sources"].get("RedPajamaBook", {}).get("tokens", 0) / sum(v["tokens"] for v in s["sources"].values())
    assert long_share(up) > long_share(full)
    budget = up["budget_tokens"]
    assert sum(budget.values()) == pytest.approx(60 * SEQ, abs=7)


def test_bad_records_are_counted_in_the_summary(tmp_path, small_corpus, tokenizer):
    import zstandard

    bad = tmp_path / "bad.jsonl.zst"
    bad.write_bytes(zstandard.ZstdCompressor().compress(
        b'{"text": 1, "meta": {"redpajama_set_name": "RedPajamaC4"}}\nnot json\n'
        b'{"text": "fine text here", "meta": {"redpajama_set_name": "RedPajamaC4"}}\n'))
    inputs = corpus_inputs(small_corpus)[:1] + [(bad, "bad.jsonl.zst")]
    _, summary = pack(tmp_path, "withbad", inputs, tokenizer)
    assert summary["skipped"] == {"malformed_json": 1, "non_string_text": 1}
    assert summary["records"]["skipped"] == 2
    check_conservation(summary)
    with pytest.raises(ValueError, match=r"bad.jsonl.zst:1: bad input \(non_string_text\)"):
        pack(tmp_path, "strict", inputs, tokenizer, strict=True)


@pytest.mark.timeout(60)
def test_a_failing_writer_stops_the_pack(tmp_path, small_corpus, tokenizer, monkeypatch):
    from longvila.data import parquet

    calls = {"n": 0}
    original = parquet.ShardWriter.add

    def failing_add(self, rows):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return original(self, rows)

    monkeypatch.setattr(parquet.ShardWriter, "add", failing_add)
    with pytest.raises(OSError, match="No space left"):
        pack(tmp_path, "full-disk", corpus_inputs(small_corpus), tokenizer, encode_batch=8)
    assert not [t for t in threading.enumerate() if t.name.startswith("pack-")]


@pytest.mark.timeout(60)
def test_a_failing_tokenizer_stops_the_reader_promptly(tmp_path, small_corpus, tokenizer):
    class Broken:
        eos_id = tokenizer.eos_id
        calls = 0

        def encode_batch(self, texts):
            Broken.calls += 1
            if Broken.calls == 2:
                raise RuntimeError("tokenizer crashed")
            return tokenizer.encode_batch(texts)

    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="tokenizer crashed"):
        pack(tmp_path, "broken", corpus_inputs(small_corpus) * 20, Broken(), encode_batch=4)
    assert time.perf_counter() - t0 < 10
    assert not [t for t in threading.enumerate() if t.name.startswith("pack-")]


def test_budget_report_names_under_and_overshoot(tmp_path, small_corpus, tokenizer):
    from longvila.data.manifest import budget_report

    _, up = pack(tmp_path, "budget", corpus_inputs(small_corpus), tokenizer, upsample="per_source",
                 short_threshold=200, keep_ratio=0.1, max_rows=60)
    report, warnings = budget_report(up)
    assert report["budget"] == pytest.approx(60 * SEQ, abs=7)
    assert report["used"] == sum(v["tokens"] + v["documents"] for v in up["sources"].values())
    assert set(report["per_key"]) == set(up["budget_tokens"])
    off = [k for k, v in report["per_key"].items() if v["budget"] and not 0.9 <= v["used"] / v["budget"] <= 1.1]
    assert len(warnings) == len(off) > 0 and all("of the budget" in w or "budget:" in w for w in warnings)
    assert budget_report(pack(tmp_path, "nobudget", corpus_inputs(small_corpus)[:1], tokenizer)[1]) == (None, [])
