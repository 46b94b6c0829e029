"""`longvila pack`, `pipeline.pack_batch` and `pipeline.pack_shards` on the inputs people really have (plain or
gzip JSON lines, misleading names, a Parquet file by mistake) and no pack that "succeeds" with 0 rows: each
refusal exits 2, names the flag or file and the fix, and leaves nothing under the output's name."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from longvila.cli import main
from longvila.config import PackConfig
from longvila.data.shards import pack_files
from pipeline import pack_batch, pack_shards
from tests.conftest import corpus_inputs

CONFIG = """run_name: t
slimpajama: {root: null, files_per_batch: 2}
pack:
  contexts: [{name: "128", seq_len: 128}, {name: "huge", seq_len: 100000000}]
  upsample: none
  workers: 1
"""


@pytest.fixture(scope="module")
def records(small_corpus) -> bytes:
    """Every record of the small corpus's train files, as plain JSON lines."""
    out = b""
    for path, _ in corpus_inputs(small_corpus):
        with open(path, "rb") as f:
            out += zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True).read()
    return out


@pytest.fixture
def no_tokenizer(monkeypatch):
    """Fail the test if the tokenizer is loaded: the refusals under test come before any work."""
    def refuse(*args, **kwargs):
        raise AssertionError("the tokenizer was loaded: the check did not come first")

    monkeypatch.setattr("longvila.data.tokenizer.load_tokenizer", refuse)


def put(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def pack(*argv):
    return main(["pack", "--tokenizer", "builtin:qwen2", "--quiet", "--workers", "1", *map(str, argv)])


def nothing_at(out) -> bool:
    return not out.exists() and not list(out.parent.glob(f".{out.name}.tmp-*"))


def test_the_same_records_make_the_same_rows_in_every_format(tmp_path, records, tokenizer):
    cfg = PackConfig(upsample="none", shuffle_buffer=64, encode_batch=32)
    made = {}
    for fmt, data in {"zstd": zstandard.ZstdCompressor().compress(records), "gzip": gzip.compress(records, mtime=0),
                      "jsonl": records}.items():
        out = tmp_path / fmt
        out.mkdir()
        # the same name in doc ids (it seeds the shuffle), whatever the file is called on disk
        summary = pack_files([(put(tmp_path / "in" / f"{fmt}.bin", data), "part.jsonl")], tokenizer, seq_len=128,
                             cfg=cfg, out_dir=out, progress=False)
        assert summary["rows"] > 10 and summary["inputs"][0]["format"] == fmt
        made[fmt] = {p.name: p.read_bytes() for p in out.iterdir()}
    assert made["gzip"] == made["zstd"] == made["jsonl"]


def test_plain_gzip_and_misnamed_inputs_pack_like_the_zst(tmp_path, records, capsys):
    inputs = {"zst/part.jsonl.zst": zstandard.ZstdCompressor().compress(records),
              "gz/part.jsonl.gz": gzip.compress(records), "plain/part.jsonl": records,
              "misnamed/part.jsonl.zst": records}
    manifests = {}
    for name, data in inputs.items():
        put(tmp_path / name, data)
        folder = name.split("/")[0]
        assert pack("--input", tmp_path / folder / "*", "--seq-len", 128, "--out", tmp_path / f"out-{folder}") == 0
        manifests[folder] = json.loads((tmp_path / f"out-{folder}" / "manifest.json").read_text())
    keys = ("rows", "tokens", "remainder_tokens", "documents", "sources", "records", "skipped")
    ref = {k: manifests["zst"][k] for k in keys}
    assert ref["rows"] > 10 and not ref["skipped"]
    for folder in ("gz", "plain", "misnamed"):
        assert {k: manifests[folder][k] for k in keys} == ref, folder
    assert [manifests[f]["inputs"][0]["format"] for f in ("zst", "gz", "plain", "misnamed")] == \
        ["zstd", "gzip", "jsonl", "jsonl"]
    err = capsys.readouterr().err
    assert err.count("named .zst but holds plain JSON lines; read as jsonl") == 1


def test_a_parquet_input_is_refused_by_name_before_any_work(tmp_path, small_corpus, capsys, no_tokenizer):
    corpus = tmp_path / "corpus"
    put(corpus / "a.jsonl.zst", corpus_inputs(small_corpus)[0][0].read_bytes())
    pq.write_table(pa.table({"text": ["hello"]}), corpus / "b.parquet")
    out = tmp_path / "out"
    assert pack("--input", corpus / "*", "--seq-len", 128, "--out", out) == 2
    err = capsys.readouterr().err
    assert f"--input {corpus / 'b.parquet'}: a Parquet file" in err and "convert it to JSON lines" in err
    assert "Accepted: SlimPajama-format JSON lines" in err and "a.jsonl.zst" not in err
    assert nothing_at(out)


def test_a_seq_len_longer_than_the_corpus_fails_with_the_token_count(tmp_path, small_corpus, capsys):
    glob = f"{small_corpus}/train/chunk*/*.jsonl.zst"
    ref = tmp_path / "ref"
    assert pack("--input", glob, "--seq-len", 128, "--out", ref) == 0
    m = json.loads((ref / "manifest.json").read_text())
    tokens = m["rows"] * 128 + m["remainder_tokens"]
    before = (ref / "manifest.json").read_bytes()
    capsys.readouterr()
    for out in (tmp_path / "new", ref):  # a new folder is not made; an earlier output is left as it was
        assert pack("--input", glob, "--seq-len", 10**8, "--out", out) == 2
        err = capsys.readouterr().err
        assert f"0 rows: the corpus holds {tokens:,} tokens" in err
        assert f"fewer than one --seq-len row of 100,000,000; lower --seq-len to at most {tokens:,} or add data" in err
    assert nothing_at(tmp_path / "new") and (ref / "manifest.json").read_bytes() == before
    assert not list(tmp_path.glob(".ref.tmp-*"))


@pytest.mark.parametrize("content, says", [
    (b'{"text": "a", "meta": {}}\nnot json\n{"oops": 1}\nnot json either\n{"text": "b", "meta": {}}\n',
     "every record was skipped (5 lines in 1 file): malformed_json 2, unknown_source 2, missing_text 1. Fix the "
     "input (each line must be one JSON object"),
    (b"\x28\xb5\x2f\xfd" + b"\xff" * 64, "no file could be read (1 file): corrupt_file 1 (bad.jsonl.zst). Fix the "
                                          "input (re-download or recompress the files named)"),
], ids=["bad-records", "corrupt-file"])
def test_a_pack_where_every_record_was_skipped_fails_with_the_counts(tmp_path, capsys, content, says):
    put(tmp_path / "in" / "bad.jsonl.zst", zstandard.ZstdCompressor().compress(content)
        if content.startswith(b"{") else content)
    out = tmp_path / "out"
    assert pack("--input", tmp_path / "in" / "*", "--seq-len", 128, "--out", out) == 2
    assert f"0 rows: {says}" in capsys.readouterr().err
    assert nothing_at(out)


def test_a_pack_of_no_record_or_only_dropped_documents_fails_with_the_knob_to_turn(tmp_path, small_corpus, capsys):
    put(tmp_path / "in" / "empty.jsonl.zst", zstandard.ZstdCompressor().compress(b""))   # a valid frame, no line
    out = tmp_path / "out"
    assert pack("--input", tmp_path / "in" / "*", "--seq-len", 128, "--out", out) == 2
    assert "0 rows: the inputs hold no records (1 file, 0 lines); check --input" in capsys.readouterr().err
    assert pack("--input", f"{small_corpus}/train/chunk*/*.jsonl.zst", "--seq-len", 128, "--out", out,
                "--upsample", "global", "--keep-ratio", 0, "--short-threshold", 10**9) == 2
    err = capsys.readouterr().err
    assert "0 rows: sampling dropped every document (short_document " in err
    assert "raise --keep-ratio, lower --short-threshold, or use upsample 'none'" in err
    assert nothing_at(out)


@pytest.mark.parametrize("flag, value, says", [
    ("--seq-len", "0", "--seq-len 0: must be >= 8 tokens per row"),
    ("--max-rows", "0", "--max-rows 0: must be >= 1 row; leave it out for no budget"),
    ("--max-rows", "3", "--max-rows needs --upsample per_source or global"),
    ("--keep-ratio", "1.5", "--keep-ratio 1.5: must be a probability in [0, 1]"),
    ("--short-threshold", "-1", "--short-threshold -1: must be >= 0"),
    ("--shuffle-buffer", "0", "--shuffle-buffer 0: must be >= 1 document"),
    ("--workers", "-2", "--workers -2: use 0 (all cores) or a thread count"),
])
def test_pack_flags_are_checked_by_their_own_name_first(tmp_path, small_corpus, capsys, no_tokenizer, flag, value,
                                                        says):
    argv = {"--seq-len": "128", flag: value}
    out = tmp_path / "out"
    assert pack("--input", f"{small_corpus}/train/chunk*/*.jsonl.zst", "--out", out,
                *[x for kv in argv.items() for x in kv]) == 2
    err = capsys.readouterr().err
    assert says in err and "config '" not in err and "pack.contexts" not in err
    assert nothing_at(out)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    return str(path)


def batch(config, root, context, out, *inputs):
    return pack_batch.main(["--config", config, "--context", context, "--root", str(root), "--out", str(out),
                            "--inputs", *map(str, inputs)])


def test_a_batch_with_nothing_usable_fails_and_one_of_too_few_tokens_carries_on(tmp_path, config, small_corpus,
                                                                               capsys):
    bad = put(tmp_path / "corpus" / "bad.jsonl", b'{"text": 1}\n{"text": 2}\n\n')
    out = tmp_path / "b0"
    assert batch(config, tmp_path / "corpus", "128", out, bad) == 2
    err = capsys.readouterr().err
    assert "pack_batch 128: every record was skipped (3 lines in 1 file): non_string_text 2, blank_line 1" in err
    assert nothing_at(out)
    # fewer tokens than one row is no error for a batch (they carry on as its remainder), but it is for the data set
    first = corpus_inputs(small_corpus)[0][0]
    assert batch(config, small_corpus, "huge", tmp_path / "b1", first) == 0
    assert "0 rows (" in capsys.readouterr().err and (tmp_path / "b1" / "remainder.arrow").is_file()
    final = tmp_path / "huge"
    assert pack_shards.main(["--config", config, "--batches", str(tmp_path / "b1"), "--out", str(final)]) == 2
    err = capsys.readouterr().err
    assert "pack_shards: 0 rows: the corpus holds" in err
    assert "lower pack.contexts[huge].seq_len to at most" in err and nothing_at(final)


def test_a_batch_whose_documents_sampling_dropped_is_no_error_but_an_empty_data_set_is(tmp_path, config,
                                                                                       small_corpus, capsys):
    drop_all = ["--set", "pack.upsample=global", "--set", "pack.keep_ratio=0",
                "--set", "pack.short_threshold=1000000000"]
    first = corpus_inputs(small_corpus)[0][0]
    assert pack_batch.main(["--config", config, "--context", "128", "--root", str(small_corpus), "--out",
                            str(tmp_path / "b0"), "--inputs", str(first), *drop_all]) == 0
    final = tmp_path / "128"
    assert pack_shards.main(["--config", config, "--batches", str(tmp_path / "b0"), "--out", str(final),
                             *drop_all]) == 2
    err = capsys.readouterr().err
    assert "pack_shards: 0 rows: sampling dropped every document (short_document " in err
    assert "raise pack.keep_ratio, lower pack.short_threshold" in err and nothing_at(final)


def test_a_missing_batch_input_is_named_without_a_traceback(tmp_path, config, small_corpus, capsys, no_tokenizer):
    out = tmp_path / "b0"
    missing = small_corpus / "train" / "chunk1" / "gone.jsonl.zst"
    assert batch(config, small_corpus, "128", out, corpus_inputs(small_corpus)[0][0], missing) == 2
    err = capsys.readouterr().err
    assert f"--inputs {missing}: no such file; check the path" in err and "Traceback" not in err
    assert nothing_at(out)
    assert batch(config, tmp_path, "128", out, corpus_inputs(small_corpus)[0][0]) == 2
    assert f"is not under --root {tmp_path}" in capsys.readouterr().err


def test_export_of_shards_without_a_row_writes_nothing(tmp_path, capsys):
    from longvila.data.parquet import ROW_SCHEMA

    shards = tmp_path / "shards"
    shards.mkdir()
    pq.write_table(ROW_SCHEMA.empty_table(), shards / "part-00000.parquet")
    out = tmp_path / "rows.jsonl"
    assert main(["export", "--shards", str(shards), "--out", str(out)]) == 2
    assert "part-*.parquet files hold 0 rows; nothing to export" in capsys.readouterr().err
    assert nothing_at(out)
    assert main(["export", "--shards", str(tmp_path / "never-packed"), "--out", str(out)]) == 2
    assert "never-packed: no such folder; give a packed data set" in capsys.readouterr().err and nothing_at(out)
