"""`longvila pack` / `longvila export`, and kill-and-rerun of a pack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from longvila.cli import build_parser, main
from longvila.config import CorpusConfig, PasskeyConfig
from longvila.data.corpus import build_corpus
from tests.conftest import REPO

REQUIRED_KEYS = {"seq_len", "rows", "tokens", "tokenizer", "sources", "skipped", "remainder_tokens", "inputs"}


def pack_args(corpus, out, *extra):
    return ["pack", "--input", f"{corpus}/train/chunk*/*.jsonl.zst", "--tokenizer", "builtin:qwen2",
            "--seq-len", "128", "--out", str(out), "--quiet", *extra]


def test_pack_writes_shards_and_manifest(tmp_path, small_corpus):
    out = tmp_path / "out"
    assert main(pack_args(small_corpus, out, "--workers", "1", "--seed", "5")) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert REQUIRED_KEYS <= manifest.keys()
    assert manifest["seq_len"] == 128 and manifest["rows"] == manifest["tokens"] // 128 > 0
    assert manifest["tokenizer"]["name"].startswith("Qwen2") and len(manifest["tokenizer"]["sha256"]) == 64
    assert [i["name"] for i in manifest["inputs"]] == [
        "chunk1/example_train_0.jsonl.zst", "chunk1/example_train_1.jsonl.zst",
        "chunk2/example_train_2.jsonl.zst", "chunk2/example_train_3.jsonl.zst"]
    assert all(len(i["sha256"]) == 64 and i["bytes"] > 0 for i in manifest["inputs"])
    assert manifest["config"]["pack"]["seed"] == 5 and manifest["code_version"]["package"]
    assert sorted(p.name for p in out.iterdir())[-2:] == ["part-00000.parquet", "remainder.arrow"]
    assert main(["export", "--shards", str(out), "--out", str(tmp_path / "o.jsonl")]) == 0
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == manifest["rows"]


def test_help_lists_the_documented_flags():
    text = build_parser()._subparsers._group_actions[0].choices["pack"].format_help()
    for flag in ["--input", "--tokenizer", "--seq-len", "--out", "--upsample", "--workers", "--seed", "--strict"]:
        assert flag in text
    assert "none,per_source,global" in text.replace(" ", "")


@pytest.mark.parametrize("argv_fn, message", [
    (lambda c, o: pack_args(c / "nowhere", o), "matches no file"),
    (lambda c, o: [a if a != "builtin:qwen2" else str(c) for a in pack_args(c, o)], "has no tokenizer.json"),
    (lambda c, o: pack_args(c, o, "--max-rows", "3"), "--max-rows needs --upsample per_source or global"),
    (lambda c, o: pack_args(c, o, "--eos-token", "<nope>"), "not in the vocabulary"),
])
def test_user_errors_exit_2_with_the_fix(tmp_path, small_corpus, capsys, argv_fn, message):
    assert main(argv_fn(small_corpus, tmp_path / "out")) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_killed_pack_leaves_nothing_and_rerun_is_identical(tmp_path):
    corpus = tmp_path / "corpus"
    build_corpus(CorpusConfig(num_tokens=1_500_000, length_scale=0.1, passkey=PasskeyConfig(train_docs=0)), corpus, 0)
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert main(pack_args(corpus, ref, "--workers", "1")) == 0
    cmd = [sys.executable, "-m", "longvila.cli", *pack_args(corpus, out, "--workers", "1")]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".out.tmp-*")):
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".out.tmp-*")), "the kill should land while the pack is running"
    assert not out.exists(), "a killed pack must not leave output under its final name"
    assert main(pack_args(corpus, out, "--workers", "1")) == 0
    assert not list(tmp_path.glob(".out.tmp-*")), "the rerun removes the killed run's temporary folder"
    names = sorted(p.name for p in ref.iterdir() if p.name != "manifest.json")
    assert names == sorted(p.name for p in out.iterdir() if p.name != "manifest.json")
    for name in names:
        assert (ref / name).read_bytes() == (out / name).read_bytes(), name
    strip = lambda m: {k: v for k, v in json.loads(m.read_text()).items() if k not in ("code_version",)}
    assert strip(ref / "manifest.json") == strip(out / "manifest.json")


def test_out_that_would_destroy_inputs_is_refused(tmp_path, small_corpus):
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(small_corpus / "train", corpus)
    before = sorted(p.name for p in corpus.rglob("*"))
    for out in (corpus, corpus / "chunk1", tmp_path):
        args = ["pack", "--input", f"{corpus}/chunk*/*.jsonl.zst", "--tokenizer", "builtin:qwen2",
                "--seq-len", "64", "--out", str(out), "--quiet"]
        assert main(args) == 2
    assert sorted(p.name for p in corpus.rglob("*")) == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    args = ["pack", "--input", f"{corpus}/chunk*/*.jsonl.zst", "--tokenizer", "builtin:qwen2", "--seq-len", "64",
            "--out", str(other), "--quiet"]
    assert main(args) == 2 and (other / "keep.txt").read_text() == "mine"
    out = tmp_path / "packed"
    args[args.index(str(other))] = str(out)
    assert main(args) == 0 and main(args) == 0  # a previous output (with manifest.json) is replaced


@pytest.mark.parametrize("argv", [
    ["infer", "--model", "Efficient-Large-Model/qwen2-7b-longvila-256f", "--video", "v.mp4", "--prompt", "hi"],
    ["infer", "--model", "Efficient-Large-Model/qwen2-7b-longvila-256f", "--prompt", "hi", "--sp", "2x1"],
    ["eval", "needle", "--model", "Efficient-Large-Model/qwen2-7b-longvila-1M", "--haystack", "movie.mp4"],
])
def test_a_hub_id_without_a_local_copy_gets_the_download_command(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    name = argv[argv.index("--model") + 1]
    assert f"huggingface-cli download {name} --local-dir checkpoints/{name.split('/')[1]}" in err
    assert "never downloads at run time" in err
