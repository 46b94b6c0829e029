"""Benchmarks through lmms-eval: frame conventions, task expansion, metrics collection from recorded lmms-eval
results, the local task (questions, folder, scoring), the model plugin, and one end-to-end lmms-eval run; the
model is the tiny randomly initialised checkpoint `tiny_ckpt` of tests/conftest.py (rule init_model)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import tomllib
from pathlib import Path

import pytest

from longvila.data.shot2story.synth import COLOURS, MOTIONS, SHAPES, Shot
from longvila.eval import bench
from longvila.eval.bench import collect_metrics, default_frames, expand_tasks
from longvila.eval.bench_cli import add_bench_parser
from longvila.eval.localmc import LETTERS, TASK_NAME, make_docs, parse_caption, write_task
from longvila.eval.tasks.localmc_utils import extract_letter, process_results
from tests.conftest import REPO

HAS_LMMS_EVAL = importlib.util.find_spec("lmms_eval") is not None
needs_lmms_eval = pytest.mark.skipif(not HAS_LMMS_EVAL, reason="lmms-eval is not installed (pip install --no-deps "
                                     "-r requirements-eval.txt)")

# Recorded from lmms-eval 0.7.3 (trimmed to the keys collect_metrics reads): our local task, and a group of
# two tasks (as mvbench is) run with lmms-eval's dummy model.
RECORDED_TASK = {"results": {"longvila_localmc": {
    "alias": "longvila_localmc", "accuracy,none": 0.25, "accuracy_stderr,none": 0.25,
    "accuracy_stderr_clt,none": 0.25, "accuracy_stderr_clustered,none": "N/A"}},
    "group_subtasks": {"longvila_localmc": []}, "n-samples": {"longvila_localmc": {"original": 4, "effective": 4}},
    "lmms_eval_version": "main@149819c"}
RECORDED_GROUP = {
    "results": {"grp": {"accuracy,none": 0.5, "accuracy_stderr,none": 0.3535533905932738, "alias": "grp"},
                "grp_ga": {"alias": " - grp_ga", "accuracy,none": 0.5, "accuracy_stderr,none": 0.5,
                           "accuracy_stderr_clt,none": 0.5, "accuracy_stderr_clustered,none": "N/A"},
                "grp_gb": {"alias": " - grp_gb", "accuracy,none": 0.5, "accuracy_stderr,none": 0.5,
                           "accuracy_stderr_clt,none": 0.5, "accuracy_stderr_clustered,none": "N/A"}},
    "groups": {"grp": {"accuracy,none": 0.5, "accuracy_stderr,none": 0.3535533905932738, "alias": "grp"}},
    "group_subtasks": {"grp": ["grp_ga", "grp_gb"]},
    "n-samples": {"grp_ga": {"original": 2, "effective": 2}, "grp_gb": {"original": 2, "effective": 2}}}


def test_frame_counts_follow_vila_eval():
    assert [default_frames(n) for n in ("videomme", "videomme_w_subtitle", "vnbench", "mvbench", TASK_NAME)] == \
        [256, 256, 128, 32, 32]
    paper = expand_tasks(list(bench.PAPER_TASKS))
    assert [t.num_frames for t in paper] == [256, 256, 128] + [32] * (len(bench.PAPER_TASKS) - 3)
    assert [t.name for t in paper] == list(bench.PAPER_TASKS)


def test_task_expansion_takes_vila_eval_names():
    got = expand_tasks("lmms-videomme-256/vnbench_val,lmms-mvbench, egoschema_test/egoschema_val")
    assert [(t.name, t.num_frames, t.label) for t in got] == [
        ("videomme", 256, "videomme"), ("vnbench", 128, "vnbench"), ("mvbench", 32, "mvbench"),
        ("egoschema", 32, "egoschema"), ("egoschema_subset", 32, "egoschema_subset")]
    # a global frame count overrides the convention, a -N suffix pins a task; one name at two counts: two labels
    got = expand_tasks(["videomme-64", "videomme-128", "mvbench", "mvbench"], num_frames=16)
    assert [(t.name, t.num_frames, t.label) for t in got] == [
        ("videomme", 64, "videomme-64"), ("videomme", 128, "videomme-128"), ("mvbench", 16, "mvbench")]
    with pytest.raises(ValueError, match="no task"):
        expand_tasks(" , /")


def test_metrics_are_collected_from_recorded_results():
    values, docs = collect_metrics(RECORDED_TASK, "longvila_localmc")
    assert values == {"accuracy,none": 0.25, "accuracy_stderr,none": 0.25} and docs == 4
    values, docs = collect_metrics(RECORDED_GROUP, "grp")
    assert docs == 4 and values["accuracy,none"] == 0.5 and values["grp_gb/accuracy,none"] == 0.5
    assert not any("clt" in k or "clustered" in k or "alias" in k for k in values)
    with pytest.raises(ValueError, match="no entry 'videomme'"):
        collect_metrics(RECORDED_TASK, "videomme")


def test_missing_lmms_eval_names_the_install_command(monkeypatch):
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="requirements-eval.txt"):
        bench.check_tasks(expand_tasks(TASK_NAME))


@needs_lmms_eval
def test_unknown_tasks_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="did you mean .*videomme"):
        bench.check_tasks(expand_tasks("videome"))
    with pytest.raises(ValueError, match="not an lmms-eval .* task"):
        bench.check_tasks(expand_tasks("vnbench_val"))
    with pytest.raises(ValueError, match="make_bench_task"):
        bench.check_tasks(expand_tasks(TASK_NAME))
    write_task(tmp_path, _docs(tmp_path))
    bench.check_tasks(expand_tasks(f"{TASK_NAME},videomme,mvbench"), include_path=tmp_path)


def test_captions_parse_back_to_the_drawn_shot():
    rng = random.Random(0)
    for _ in range(200):
        bg, colour = rng.sample(sorted(COLOURS), 2)
        shot = Shot(bg, colour, rng.choice(SHAPES), rng.randint(1, 3), rng.choice(sorted(MOTIONS)), 4)
        assert parse_caption(shot.caption()) == {"count": shot.count, "colour": colour, "shape": shot.shape,
                                                 "motion": shot.motion, "background": bg}
    assert parse_caption("A man walks into a bar.") is None


def _docs(tmp_path, per_video=6):
    """Docs about two fake records whose shot files exist (empty files: make_docs only checks they exist)."""
    shots = [Shot("blue", "red", "circle", 2, "from left to right", 4), Shot("white", "black", "square", 1,
                                                                                 "from top to bottom", 4)]
    records = [{"nvid": f"v{i}.mp4", "video_names": [f"v{i}_{j}.mp4" for j in range(2)],
                "captions": [s.caption() for s in shots]} for i in range(2)]
    for rec in records:
        for name in rec["video_names"]:
            (tmp_path / name).touch()
    return make_docs(records, lambda r: tmp_path / r["nvid"], lambda n: tmp_path / n, per_video, seed=3)


def test_questions_have_one_right_option_from_the_caption(tmp_path):
    docs = _docs(tmp_path)
    assert len(docs) == 12 and [d["question_type"] for d in docs[:6]] == [
        "colour", "shape", "count", "background", "direction", "scenes"]
    facts = {"v0_0.mp4": {"red", "circle", "two", "blue", "from left to right"},
             "v0_1.mp4": {"black", "square", "one", "white", "from top to bottom"}}
    for d in docs:
        assert len(d["options"]) == 4 and len(set(d["options"])) == 4 and d["answer"] in LETTERS
        right = d["options"][LETTERS.index(d["answer"])][3:]
        if d["question_type"] == "scenes":
            assert right == "2" and d["video"].endswith(".mp4") and "_" not in Path(d["video"]).name
        else:
            assert right in facts[Path(d["video"]).name.replace("v1", "v0")]
    assert docs == _docs(tmp_path)                                      # deterministic in the seed
    assert len({d["answer"] for d in docs}) > 1                         # the right letter varies
    assert [d["question_type"] for d in _docs(tmp_path, per_video=2)] == ["colour", "shape"] * 2


def test_task_folder_and_scoring(tmp_path):
    import yaml

    (tmp_path / "media").mkdir()
    docs = _docs(tmp_path / "media")
    final = tmp_path / "final"
    path = write_task(tmp_path / "tmp", docs, final_dir=final)

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_constructor("!function", lambda loader, node: f"function:{node.value}")
    spec = yaml.load(path.read_text(), Loader=_Loader)
    assert spec["task"] == TASK_NAME and spec["output_type"] == "generate_until"
    assert spec["dataset_kwargs"]["data_files"]["test"] == str(final.resolve() / f"{TASK_NAME}.jsonl")
    assert spec["process_results"] == "function:utils.process_results"
    assert spec["metric_list"] == [{"metric": "accuracy", "aggregation": "mean", "higher_is_better": True}]
    utils = (tmp_path / "tmp" / "utils.py").read_text()
    assert utils == (REPO / "longvila/eval/tasks/localmc_utils.py").read_text()
    lines = (tmp_path / "tmp" / f"{TASK_NAME}.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == docs
    with pytest.raises(ValueError, match="no questions"):
        write_task(tmp_path / "empty", [])
    doc = docs[0]
    right, wrong = doc["answer"], next(x for x in LETTERS if x != doc["answer"])
    for text, score in ((right, 1.0), (f"{right}.", 1.0), (f"({right}) x", 1.0), (f"The answer is {right}", 1.0),
                        (wrong, 0.0), ("", 0.0), ("no idea", 0.0)):
        assert process_results(doc, [text]) == {"accuracy": score}, text
    assert extract_letter("E", 4) is None and extract_letter("b") == "B" and extract_letter("a red circle") is None
    assert extract_letter("Blue") is None and extract_letter("I pick C") == "C"


def test_bench_cli_flags():
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "-m", "ckpt", "-nf", "8", "-t", "a/b,c", "--limit", "2", "--online"])
    assert (args.model, args.num_frames, args.tasks, args.limit, args.online, args.output_dir) == (
        "ckpt", 8, "a/b,c", 2, True, None)


def test_pyproject_registers_the_lmms_eval_model():
    eps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("entry-points", {})
    assert eps.get("lmms_eval.models", {}).get("longvila") == "longvila.eval.lmms_entry:manifest", \
        'add [project.entry-points."lmms_eval.models"] longvila = "longvila.eval.lmms_entry:manifest"'
    if HAS_LMMS_EVAL:
        from longvila.eval.lmms_entry import manifest

        assert {m.simple_class_path for m in manifest()} == {"longvila.eval.lmms_model.LongVILALmms"}


@pytest.fixture(scope="module")
def resolved_config(tmp_path_factory) -> Path:
    from pipeline import resolve_config

    cfg = tmp_path_factory.mktemp("bench_cfg") / "config.yaml"
    assert resolve_config.main(["--from-yaml", str(REPO / "config.yaml"), "--out", str(cfg)]) == 0
    return cfg


def test_make_bench_task_asks_about_the_val_videos_only(resolved_config, tmp_path):
    from longvila.config.video import SynthConfig
    from longvila.data.shot2story.synth import build_synthetic
    from pipeline import make_bench_task

    root, data, out = tmp_path / "s2s", tmp_path / "assemble", tmp_path / "task"
    build_synthetic(SynthConfig(videos=2, min_shots=2, max_shots=2, min_shot_seconds=0.5, max_shot_seconds=0.5,
                                width=16, height=16), root)
    data.mkdir()
    argv = ["--config", str(resolved_config), "--root", str(root), "--data", str(data), "--out", str(out),
            "--set", "eval.bench.questions_per_video=3"]
    assert make_bench_task.main(argv) == 2 and not out.exists()          # no vila_val.json: names the fix
    (data / "vila_val.json").write_text(json.dumps([{"id": "q0", "video": "videos/synth0001.mp4",
                                                     "conversations": []}]))
    assert make_bench_task.main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["docs"], manifest["videos"]) == (3, 1)
    docs = [json.loads(x) for x in (out / f"{TASK_NAME}.jsonl").read_text().splitlines()]
    assert {d["source"] for d in docs} == {"synth0001.mp4"} and all(Path(d["video"]).is_file() for d in docs)
    assert f"test: \"{out.resolve() / TASK_NAME}.jsonl\"" in (out / f"{TASK_NAME}.yaml").read_text()


def test_eval_bench_rule_fails_early_on_a_task_lmms_eval_lacks(resolved_config, tmp_path):
    from pipeline import eval_bench

    (tmp_path / "model").mkdir()
    argv = ["--config", str(resolved_config), "--model", str(tmp_path / "model"), "--task-dir", str(tmp_path),
            "--out", str(tmp_path / "out"), "--set", "eval.bench.tasks=[vnbench_val]"]
    assert eval_bench.main(argv) == 2 and not (tmp_path / "out").exists()


@needs_lmms_eval
def test_plugin_loglikelihood_matches_greedy_decoding(tiny_ckpt):
    from lmms_eval.api.instance import Instance
    from PIL import Image

    from longvila.eval.lmms_model import LongVILALmms

    lm = LongVILALmms(pretrained=str(tiny_ckpt), num_frames=2)
    doc = {"image": Image.new("RGB", (40, 30), (200, 30, 30))}
    lm.task_dict = {"t": {"test": [doc]}}
    visual = lambda d: [d["image"]]                                    # noqa: E731

    def request(kind, second, context="Colour?"):
        return Instance(kind, (context, second, visual, 0, "t", "test"), 0,
                        metadata={"task": "t", "doc_id": 0, "repeats": 1})

    (text,) = lm.generate_until([request("generate_until", {"max_new_tokens": 3, "until": ["zzz"]})])
    assert lm.calls["generate_until"] == 1
    # the greedy answer (unstripped: " x" and "x" tokenize differently) is a greedy continuation, another is not
    kind, media = lm._media(visual(doc))
    ids = lm.model.generate_with_media(lm._prompt_ids("Colour?", kind), media, lm.media_ids, max_new_tokens=3,
                                       eos_token_id=lm.eos_id)
    assert lm.tokenizer.decode(ids, skip_special_tokens=True).strip() == text
    (logp, greedy), (logp2, greedy2) = lm.loglikelihood([request("loglikelihood", lm.tokenizer.decode(ids)),
                                                         request("loglikelihood", "zebra crossing")])
    assert greedy and logp < 0 and not greedy2 and logp2 < 0
    with pytest.raises(NotImplementedError, match="single-turn"):
        lm.generate_until_multi_round([request("generate_until", {})])
