"""The rule CLIs (`python -m pipeline.<rule>`), called as `main([...])` on tmp_path, chained as the DAG does."""

from __future__ import annotations

import base64
import json

import pyarrow.parquet as pq
import pytest
import yaml
from transformers import AutoTokenizer

from longvila.data.corpus import train_file_names
from longvila.config import load_config_file
from longvila.data.tokenizer import resolve_tokenizer_dir
from longvila.train.stage4 import PackedRows
from pipeline import export_original, make_corpus, pack_batch, pack_shards, resolve_config
from tests.conftest import REPO

TEST_CONFIG = REPO / "tests" / "workflow" / "config.yaml"


def test_rules_chain(tmp_path, capsys):
    cfg_path = tmp_path / "config.yaml"
    raw = yaml.safe_load(TEST_CONFIG.read_text())
    b64 = base64.b64encode(json.dumps(raw).encode()).decode()
    assert resolve_config.main(["--from-b64", b64, "--out", str(cfg_path)]) == 0
    resolved = yaml.safe_load(cfg_path.read_text())
    assert resolved["pack"]["keep_ratio"] == 0.1  # defaults spelled out
    cfg = load_config_file(cfg_path)

    corpus = tmp_path / "corpus"
    assert make_corpus.main(["--config", str(cfg_path), "--out", str(corpus)]) == 0
    names = train_file_names(cfg.corpus)
    assert all((corpus / n).is_file() for n in names) and (corpus / "passkeys.jsonl").is_file()
    pk = [json.loads(x) for x in (corpus / "passkeys.jsonl").read_text().splitlines()]
    assert len(pk) == 5 and all(p["prompt"].endswith("What is the pass key? The pass key is") for p in pk)
    assert all(f"The pass key is {p['key']}." in p["prompt"] for p in pk)

    batches = []
    for i in range(2):
        out = tmp_path / f"b{i}"
        inputs = [str(corpus / n) for n in names[2 * i:2 * i + 2]]
        assert pack_batch.main(["--config", str(cfg_path), "--context", "256", "--root", str(corpus),
                                "--inputs", *inputs, "--out", str(out), "--set", "pack.workers=1"]) == 0
        batches.append(str(out))
    final = tmp_path / "256"
    assert pack_shards.main(["--config", str(cfg_path), "--batches", *batches, "--out", str(final)]) == 0
    manifest = json.loads((final / "manifest.json").read_text())
    assert manifest["seq_len"] == 256 and manifest["upsample"] == "per_source"
    assert sum(pq.read_metadata(p).num_rows for p in final.glob("part-*.parquet")) == manifest["rows"]
    assert manifest["budget_tokens"] and len(manifest["inputs"]) == 4
    # stage 4's document_mask splits rows at the separator the pack wrote: Qwen2's own <|endoftext|>
    eos = AutoTokenizer.from_pretrained(resolve_tokenizer_dir("builtin:qwen2")[0]).convert_tokens_to_ids("<|endoftext|>")
    rows = PackedRows(final)
    assert rows.separator() == eos and any((rows[i] == eos).any() for i in range(len(rows)))
    bare = tmp_path / "parts-only"
    bare.mkdir()
    for part in final.glob("part-*.parquet"):
        (bare / part.name).symlink_to(part)
    with pytest.raises(ValueError, match="rerun it, or set document_mask: false"):
        PackedRows(bare).separator()                                        # rows without the pack's manifest

    assert export_original.main(["--shards", str(final), "--out", str(tmp_path / "256.jsonl")]) == 0
    assert pack_shards.main(["--config", str(cfg_path), "--batches", str(tmp_path / "nope"), "--out",
                             str(tmp_path / "x")]) == 2
    assert "not a finished pack_batch output" in capsys.readouterr().err
    assert pack_batch.main(["--config", str(cfg_path), "--context", "64k", "--root", str(corpus), "--inputs",
                            str(corpus / names[0]), "--out", str(tmp_path / "y")]) == 2
    assert "no context named '64k'" in capsys.readouterr().err
