"""The run report (longvila/eval/report.py, pipeline/run_report.py) on small fixture files in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longvila.eval.report import ReportInputs, write_report
from pipeline import run_report

PNG = b"\x89PNG\r\n\x1a\n fixture"
CONFIG = """run_name: fixture
model: {size: tiny}
pack: {contexts: [{name: '512', seq_len: 512}]}
train:
  engine: torch
  launcher: local
  stage4: [{context: '512', rope_theta: 1000000.0}]
  stage5: [{frames: 8}]
"""


def _json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _run(tmp: Path) -> ReportInputs:
    """A whole run's outputs, each with numbers the tests look for."""
    tmp.mkdir(parents=True)
    (tmp / "config.yaml").write_text(CONFIG)
    _json(tmp / "corpus/manifest.json", {"train_records": 4868, "heldout_records": 313, "passkeys_train": 24,
                                         "passkeys_heldout": 40, "files": {"a": {}, "b": {}}})
    _json(tmp / "shards/512/manifest.json", {
        "seq_len": 512, "rows": 954, "tokens": 488448, "remainder_tokens": 496, "documents": 607,
        "tokenizer": {"vocab_size": 151669}, "records": {"lines": 4868, "accepted": 607},
        "dropped": {"short_document": 4261}, "skipped": {},
        "sources": {"RedPajamaBook": {"documents": 8, "tokens": 160533}}})
    s2s = tmp / "s2s"
    _json(s2s / "manifest.json", {"in": 40, "out": 37, "rejected": {"no_answer": 3}, "splits": {"train": 33, "val": 4}})
    (s2s / "report.md").write_text("# Stage-5 data report\n")
    (s2s / "thumbs").mkdir()
    (s2s / "thumbs/sample0.png").write_bytes(PNG)
    runs = {}
    for name, losses in (("stage4/512", [9.5, 7.25]), ("stage5/8f", [3.5, 2.125])):
        path = tmp / "runs" / name / "metrics.jsonl"
        path.parent.mkdir(parents=True)
        path.write_text("".join(json.dumps({"step": i + 1, "loss": loss, "lr": 1e-5, "tokens_per_s": 1234.0,
                                            "peak_rss_mib": 2048.0}) + "\n" for i, loss in enumerate(losses)))
        runs[name] = path
    pk = tmp / "passkey/512"
    _json(pk / "passkey.json", {"accuracy": 0.625, "grid": {"128": {"0.0": 1.0, "1.0": 0.5}, "512": {"0.0": 0.25}},
                                "results": [{}] * 8, "rope_theta": 1e6, "max_position_embeddings": 1024})
    (pk / "heatmap.png").write_bytes(PNG)
    nd = tmp / "needle/8f"
    _json(nd / "summary.json", {"frames": [8, 16], "depths": [0.0, 1.0], "chance": 0.125, "avg_accuracy": 0.4375,
                                "accuracy_by_frames": {"8": 0.75, "16": 0.125}, "trained_frames": 8,
                                "accuracy_at_trained": 0.75, "rope": {"rope_theta": 1e6, "rope_scaling": None},
                                "sp": {"ulysses": 2, "ring": 2}, "needles": 1, "cells": 4})
    _json(nd / "all_accuracies.json", [{"Num. Frame": n, "Frame Depth": d, "Score": s} for n, d, s in
                                       ((8, 0.0, 1.0), (8, 100.0, 0.5), (16, 0.0, 0.25), (16, 100.0, 0.0))])
    (nd / "heatmap.png").write_bytes(PNG)
    _json(tmp / "bench/8f/metrics.json", {"model": "m", "num_frames": {"longvila_localmc": 8},
                                          "tasks": {"longvila_localmc": {"accuracy": 0.3125}},
                                          "lmms_eval_version": "0.5.0", "chance": {"longvila_localmc": 0.25}})
    return ReportInputs(config=tmp / "config.yaml", corpus=tmp / "corpus/manifest.json",
                        shards={"512": tmp / "shards/512"}, s2s=s2s, runs=runs, passkey={"512": pk},
                        needle={"8f": nd}, bench={"8f": tmp / "bench/8f"})


def test_report_has_every_section_images_and_numbers(tmp_path):
    out = tmp_path / "report"
    status = write_report(out, _run(tmp_path / "run"))
    assert set(status["sections"].values()) == {"ok"}
    page = (out / "index.html").read_text()
    for title in ("Data", "Training", "Passkey retrieval", "Video needle in a haystack", "Benchmarks",
                  "Config used"):
        assert f">{title}" in page
    for number in ("4,868", "488,448", "short_document: 4,261", "160,533 (8)", "37", "7.2500", "2.1250", "1,234",
                   "62.5%", "43.8%", "12.5%", "75.0%", "0.3125", "0.25", "11.93", "rope_theta: 1000000.0"):
        assert number in page, number
    for img in ("img/loss_stage4.png", "img/loss_stage5.png", "img/passkey_512.png", "img/needle_8f.png"):
        assert (out / img).is_file() and f"src='{img}'" in page
    assert (out / "img/loss_stage4.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "s2s/thumbs/sample0.png").is_file() and "href='s2s/report.md'" in page
    assert "<script" not in page and "class='note'" not in page
    md = (out / "report.md").read_text()
    assert "![needle accuracy, model 8f](img/needle_8f.png)" in md and "| 8 (trained) | 75.0% |" in md


def test_missing_optional_sections_are_noted(tmp_path):
    inputs = _run(tmp_path / "run")
    inputs.needle, inputs.bench["8f"], inputs.corpus, inputs.runs = {}, tmp_path / "nowhere", None, {}
    status = write_report(tmp_path / "report", inputs)
    assert status["sections"]["needle"] == status["sections"]["bench"] == status["sections"]["training"] == "not run"
    page = (tmp_path / "report/index.html").read_text()
    assert "not run: this run&#x27;s config has no stage-5 model" in page
    assert f"stage-5 model 8f: not run (no {tmp_path / 'nowhere'}; rule eval_bench)" in page
    assert "not run: no made corpus" in page


@pytest.mark.parametrize("which", ["needle/8f/summary.json", "needle/8f/all_accuracies.json", "bench/8f/metrics.json",
                                   "runs/stage4/512/metrics.jsonl", "config.yaml", "passkey/512/passkey.json"])
def test_malformed_file_names_it(tmp_path, which):
    inputs = _run(tmp_path / "run")
    bad = tmp_path / "run" / which
    if which.startswith("passkey"):
        bad.unlink()                                         # a folder that exists but lacks its file
    else:
        bad.write_text('[{"Num. Frame": 8}]' if which.endswith("all_accuracies.json") else "{not json: [")
    with pytest.raises(ValueError, match=str(bad)):
        write_report(tmp_path / "report", inputs)


def test_pipeline_main(tmp_path):
    i = _run(tmp_path / "run")
    out = tmp_path / "results/report"
    common = ["--config", str(i.config), "--corpus", "--shards", str(i.shards["512"]), "--s2s", str(i.s2s),
              "--runs-root", str(tmp_path / "run/runs"), "--runs", "stage5/8f",
              "--passkey", str(i.passkey["512"]), "--needle", str(i.needle["8f"]), "--out", str(out)]
    assert run_report.main(common + ["--bench"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sections"]["bench"] == "not run" and manifest["sections"]["training"] == "ok"
    assert (out / "index.html").is_file() and (out / "img/needle_8f.png").is_file()
    (Path(i.needle["8f"]) / "summary.json").write_text("[1, 2]")
    assert run_report.main(common) == 2                      # malformed: exit 2, the old report stays
    assert (out / "index.html").is_file()


def test_passkey_section_sets_each_extension_beside_the_model_before_it(tmp_path):
    """Step 512 is also measured at 1024 (its --next-context); the 1k step's row shows that as 'before'."""
    from longvila.eval.report import passkey_section

    pk = {}
    for ctx, own, grid in (("512", 512, {"512": {"0.0": 1.0}, "1024": {"0.0": 0.0, "1.0": 0.5}}),
                           ("1k", 1024, {"512": {"0.0": 1.0}, "1024": {"0.0": 1.0, "1.0": 0.5}})):
        pk[ctx] = tmp_path / ctx
        _json(pk[ctx] / "passkey.json", {"accuracy": 0.5, "grid": grid, "results": [{}] * 4, "own_length": own,
                                         "rope_theta": 1e6, "max_position_embeddings": 2048})
    sec = passkey_section(pk, tmp_path / "out")
    assert sec.blocks[0] == ("table", ["step", "its length", "before it (previous model)", "after it"],
                             [["512", "512", "-", "100.0%"], ["1k", "1,024", "25.0%", "75.0%"]])
    assert any("at 1,024 tokens 25.0% before it, 75.0% after" in h for h in sec.headline)


def test_the_warm_start_is_the_before_of_the_first_extension(tmp_path):
    """model.warm_start: its eval (own length 128, and the first step's 512) opens the passkey table."""
    inputs = _run(tmp_path / "run")
    warm = tmp_path / "run/passkey/warm_start"
    _json(warm / "passkey.json", {"accuracy": 0.5, "grid": {"128": {"0.0": 1.0, "1.0": 1.0}, "512": {"0.0": 0.0}},
                                  "results": [{}] * 6, "own_length": 128, "rope_theta": 1e4,
                                  "max_position_embeddings": 4096})
    (warm / "heatmap.png").write_bytes(PNG)
    inputs.passkey = {"warm_start": warm, **inputs.passkey}
    write_report(tmp_path / "report", inputs)
    md = (tmp_path / "report/report.md").read_text()
    assert "Warm start: passkey retrieval at 128 tokens 100.0%." in md
    assert "Stage-4 step 512: passkey retrieval at 512 tokens 0.0% before it, 25.0% after" in md
    assert "| warm_start | 128 | - | 100.0% |" in md and (tmp_path / "report/img/passkey_warm_start.png").is_file()
