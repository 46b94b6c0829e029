"""The Snakemake layer: lint, dry runs of both shipped configs, and a real tiny run of the DAG."""

from __future__ import annotations

import base64
import json
import re
import subprocess

import pyarrow.parquet as pq
import pytest
import zstandard

from longvila.data.manifest import check_conservation
from tests.conftest import REPO
from tests.helpers.snake import TEST_CONFIG, in_dir, snakemake

pytestmark = pytest.mark.workflow


def jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """The 'Job stats' table of a run or dry run: rule -> count."""
    text = proc.stdout + proc.stderr
    table = text[text.index("Job stats:"):].splitlines()[3:]
    counts = {}
    for line in table:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def test_lint_is_clean():
    proc = snakemake("--lint")
    assert "Congratulations" in proc.stdout + proc.stderr


def test_dry_run_default_config(tmp_path):
    counts = jobs(in_dir(tmp_path, "-n", "all", configs=(REPO / "config.yaml",)))
    assert counts == {"resolve_config": 1, "make_corpus": 1, "pack_batch": 12, "pack_shards": 4,
                      "export_original": 4, "init_model": 1, "warm_start": 1, "eval_passkey_warm": 1,
                      "make_shot2story": 1, "s2s_index": 1, "s2s_clip": 1,
                      "s2s_caption": 1, "s2s_qa": 1, "s2s_assemble": 1, "train_stage4": 2, "eval_passkey": 2,
                      "train_stage5": 1, "train_report": 1, "make_haystack": 1, "make_needles": 1, "eval_needle": 1,
                      "make_bench_task": 1, "eval_bench": 1, "run_report": 1, "all": 1}


def test_dry_run_paper_config(tmp_path):
    chunk = zstandard.ZstdCompressor().compress(b'{"text": "x", "meta": {"redpajama_set_name": "RedPajamaC4"}}\n')
    for c in range(1, 4):  # a stand-in SlimPajama tree: 3 chunks x 7 files, non-contiguous indices
        for i in range(7):
            path = tmp_path / "resources/SlimPajama-627B/train" / f"chunk{c}" / f"example_train_{c * 100 + i * 3}.jsonl.zst"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(chunk)
    (tmp_path / "resources/Shot2Story/annotations").mkdir(parents=True)
    (tmp_path / "resources/LongVILA-stage3").mkdir(parents=True)
    (tmp_path / "resources/LongVILA-stage3/config.json").write_text("{}")     # a stand-in stage-3 checkpoint
    proc = in_dir(tmp_path, "-n", "-p", "all", configs=(REPO / "workflow/configs/paper.yaml",))
    # 21 files / 8 per batch = 3 batches, x 4 contexts; nothing exported; real Shot2Story; the made corpus
    # only for its held-out passkey documents; 4 stage-4 steps, each evaluated; 4 stage-5 runs, each with a
    # needle grid and the benchmarks; the run report
    assert jobs(proc) == {"resolve_config": 1, "make_corpus": 1, "pack_batch": 12, "pack_shards": 4, "s2s_index": 1,
                          "s2s_clip": 1, "s2s_caption": 1, "s2s_qa": 1, "s2s_assemble": 1, "train_stage4": 4,
                          "eval_passkey": 4, "train_stage5": 4, "train_report": 1, "make_haystack": 1,
                          "make_needles": 1, "eval_needle": 4, "make_bench_task": 1, "eval_bench": 4, "run_report": 1,
                          "all": 1}
    assert "results/pack_shards/1M" in proc.stdout
    # stage 5 starts where the release starts it: 256f from 64k, 512f and 1024f from 256k, 2048f from 512k
    starts = dict(re.findall(r"pipeline\.train_stage5 .*?--run (\d+) --init results/train_stage4/(\S+)", proc.stdout))
    assert starts == {"0": "64k", "1": "256k", "2": "256k", "3": "512k"}


def test_dry_run_with_a_missing_corpus_names_the_fix(tmp_path):
    proc = in_dir(tmp_path, "-n", "all", configs=(REPO / "workflow/configs/paper.yaml",), check=False)
    assert proc.returncode != 0
    assert "slimpajama.root 'resources/SlimPajama-627B' is not a folder" in proc.stdout + proc.stderr
    (tmp_path / "resources/SlimPajama-627B/train/chunk1").mkdir(parents=True)
    (tmp_path / "resources/SlimPajama-627B/train/chunk1/example_train_0.jsonl.zst").write_bytes(b"")
    proc = in_dir(tmp_path, "-n", "all", configs=(REPO / "workflow/configs/paper.yaml",), check=False)
    assert proc.returncode != 0 and "shot2story.root 'resources/Shot2Story' is not a folder" in proc.stdout



def test_a_config_mistake_stops_the_dag_in_a_few_lines_and_2e_5_is_a_number(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_nmae: x\ntrain:\n  lr: 2e-5\n  stage4:\n    - {contxt: '512'}\n")
    proc = in_dir(tmp_path, "-n", "all", configs=(TEST_CONFIG, bad), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config 'run_nmae': unknown key; did you mean 'run_name'?" in out
    assert "config 'train.stage4[0].contxt': unknown key; did you mean 'context'?" in out
    assert "python -m longvila.config.check FILE" in out and "train.lr" not in out
    assert len(out.splitlines()) < 30, out      # was ~2,400 lines: the JSON schema and the config dumped
    # without the typos the same file passes, and resolve_config is handed lr as a number
    bad.write_text("train:\n  lr: 2e-5\n  lora_alpha: 1.6E+1\n")
    proc = in_dir(tmp_path, "-n", "-p", "resolve_config", configs=(TEST_CONFIG, bad))
    b64 = re.search(r"pipeline\.resolve_config --from-b64 (\S+)", proc.stdout).group(1)
    train = json.loads(base64.b64decode(b64))["train"]
    assert train["lr"] == 2e-5 and train["lora_alpha"] == 16.0


def test_a_yaml_syntax_error_in_the_workflows_config_yaml_names_the_line(tmp_path):
    (tmp_path / "config.yaml").write_text("run_name: x\ntrain:\n\tlr: 1e-5\n")
    proc = snakemake("-n", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and len(out.splitlines()) < 10, out
    assert "config.yaml, line 3, column 1: found character '\\t' that cannot start any token (a tab cannot indent " \
           "YAML; use spaces)" in out


def check_training_outputs(root):
    """Stage 4 (one step), its passkey eval, stage 5 (one run) and the report: each output is what it claims."""
    from transformers import AutoModel

    results = root / "results"
    s4 = AutoModel.from_pretrained(results / "train_stage4/256")
    assert s4.llm.config.rope_parameters["rope_theta"] == 1_000_000.0 and s4.llm.config.max_position_embeddings == 512
    warm = AutoModel.from_pretrained(results / "warm_start/tiny")             # stage 4 starts from it
    assert warm.llm.config.rope_parameters["rope_theta"] == 10_000.0
    assert json.loads((results / "warm_start/tiny/summary.json").read_text())["steps"] == 5
    warm_passkey = json.loads((results / "eval_passkey/warm_start/passkey.json").read_text())
    assert set(warm_passkey["grid"]) == {"128", "256"} and warm_passkey["own_length"] == 128
    assert warm_passkey["rope_theta"] == 1e4 and warm_passkey["next_context"] == "256"
    s5 = AutoModel.from_pretrained(results / "train_stage5/4f")
    assert type(s5) is type(s4) and (results / "train_stage5/4f/llm/tokenizer_config.json").is_file()
    passkey = json.loads((results / "eval_passkey/256/passkey.json").read_text())
    assert set(passkey["grid"]) == {"128", "256"} and len(passkey["results"]) == 5 and passkey["rope_theta"] == 1e6
    assert (results / "eval_passkey/256/heatmap.png").stat().st_size > 1000
    for run, steps in (("warm_start/tiny", 5), ("stage4/256", 4), ("stage5/4f", 8)):
        rows = [json.loads(line) for line in (results / "runs" / run / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == list(range(1, steps + 1)), run
        assert all(r["tokens_per_s"] > 0 and r["peak_rss_mib"] > 0 for r in rows)
        assert run.startswith("warm") or (results / "runs" / run / "logs/rank-00001.log").is_file()
    assert (results / "runs/stage5/4f/loss_curve.png").is_file() and (results / "runs/stage4/256/loss_curve.png").is_file()
    summary = json.loads((results / "train_report/summary.json").read_text())
    assert [r["run"] for r in summary["runs"]] == ["warm_start/tiny", "stage4/256", "stage5/4f"]
    assert [p["context"] for p in summary["passkey"]] == ["warm start", "256"]
    assert (results / "train_report/loss_curves.png").is_file() and "| stage5/4f | 8 |" in (
        results / "train_report/summary.md").read_text()
    check_eval_outputs(results)


def check_eval_outputs(results):
    """Needle grid in the original's schema, benchmark metrics through lmms-eval, the run report."""
    acc = json.loads((results / "eval_needle/4f/all_accuracies.json").read_text())
    assert [(r["Num. Frame"], r["Frame Depth"]) for r in acc] == [(4, 0.0), (4, 100.0), (8, 0.0), (8, 100.0)]
    assert all(0.0 <= r["Score"] <= 1.0 and sorted(r) == ["Frame Depth", "Num. Frame", "Score"] for r in acc)
    needle = json.loads((results / "eval_needle/4f/summary.json").read_text())
    assert needle["chance"] == 0.2 and needle["sp"]["ulysses"] == 2 and needle["rope"]["rope_theta"] == 1e6
    assert (results / "eval_needle/4f/avg_accuracy.txt").read_text().startswith("Average Accuracy: ")
    assert (results / "eval_needle/4f/heatmap.png").stat().st_size > 1000 and len(list(
        (results / "eval_needle/4f/cells").glob("*.json"))) == 4
    needle_train = json.loads((results / "make_needles/train/4f/vila_train.json").read_text())
    assert len(needle_train) == 4 and (results / "make_haystack/haystack.mp4").is_file()
    metrics = json.loads((results / "eval_bench/4f/metrics.json").read_text())
    acc = metrics["tasks"]["longvila_localmc"]
    assert 0.0 <= next(iter(acc.values())) <= 1.0 and metrics["num_frames"]["longvila_localmc"] == 32
    assert metrics["num_docs"] == {"longvila_localmc": 2} and metrics["errors"] == {}     # bench.limit 2
    samples = (results / "eval_bench/4f/longvila_localmc/samples.jsonl").read_text().splitlines()
    log = (results / "eval_bench/4f/longvila_localmc/lmms_eval.log").read_text()
    assert len(samples) == 2 and "longvila generate" in log        # through lmms-eval's entry point, our plugin
    html = (results / "report/index.html").read_text()
    for section in ("Data", "Training", "Passkey", "Needle", "Benchmarks", "Config"):
        assert section in html, section
    assert (results / "report/report.md").is_file()


def test_tiny_run_end_to_end_and_rerun_one_rule(tiny_dag):
    tmp_path = tiny_dag                                     # the whole DAG, run once per session (conftest)
    results = tmp_path / "results"
    for ctx, seq_len in [("128", 128), ("256", 256)]:
        folder = results / "pack_shards" / ctx
        manifest = json.loads((folder / "manifest.json").read_text())
        check_conservation(manifest)
        assert manifest["seq_len"] == seq_len and manifest["run_name"] == "test"
        assert {pq.read_metadata(p).num_rows for p in folder.glob("part-*.parquet")} and manifest["rows"] == sum(
            pq.read_metadata(p).num_rows for p in folder.glob("part-*.parquet"))
        assert len((results / "export_original" / f"{ctx}.jsonl").read_text().splitlines()) == manifest["rows"]
        assert len(manifest["inputs"]) == 4 and len(manifest["sources"]) == 7
    assert (tmp_path / "logs/pack_batch/256/b0001.log").read_text().count("tok/s") >= 1
    assert (tmp_path / "benchmarks/pack_batch/256/b0001.tsv").is_file()
    before = {p: p.read_bytes() for p in (results / "pack_shards").rglob("*.parquet")}
    s2s = json.loads((results / "s2s_assemble/manifest.json").read_text())
    assert s2s["out"] > 0 and set(s2s["splits"]) == {"train", "val"} and (results / "s2s_assemble/report.md").is_file()
    vila = json.loads((results / "s2s_assemble/vila_train.json").read_text())
    assert vila[0]["conversations"][0]["value"].startswith("<video>\n")
    check_training_outputs(tmp_path)

    assert "Nothing to be done" in (lambda p: p.stdout + p.stderr)(in_dir(tmp_path, "--cores", "2", "all"))
    rerun = in_dir(tmp_path, "--cores", "2", "-R", "pack_shards", "--until", "export_original")
    assert jobs(rerun) == {"pack_shards": 2, "export_original": 2}
    after = {p: p.read_bytes() for p in (results / "pack_shards").rglob("*.parquet")}
    assert before == after, "a rerun must give byte-identical shards"
