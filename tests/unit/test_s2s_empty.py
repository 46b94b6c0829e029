"""No stage-5 data step reports success with an empty result: each exits 2 with the top reject reasons and what to
change, and writes nothing under --out (the rule CLIs run as the DAG runs them, on a small synthetic set)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from longvila.config.video import SynthConfig
from longvila.data.shot2story.caption import CAPTIONS_SCHEMA
from longvila.data.shot2story.common import read_rows, write_parquet
from longvila.data.shot2story.index import VIDEOS_SCHEMA
from longvila.data.shot2story.qa import QA_SCHEMA
from longvila.data.shot2story.synth import build_synthetic
from pipeline import s2s_assemble, s2s_caption, s2s_clip, s2s_index, s2s_qa

SYNTH = SynthConfig(videos=3, min_shots=2, max_shots=3, min_shot_seconds=2.0, max_shot_seconds=3.0, fps=2, seed=4)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A synthetic Shot2Story set, its config, and the index of it (which must succeed)."""
    work = tmp_path_factory.mktemp("s2s_empty")
    build_synthetic(SYNTH, work / "data")
    (work / "config.yaml").write_text(f"run_name: t\nshot2story:\n  synth: {json.dumps(SYNTH.__dict__)}\n")
    assert s2s_index.main(["--config", str(work / "config.yaml"), "--root", str(work / "data"),
                           "--out", str(work / "index")]) == 0
    return work


def run(module, work, *argv):
    return module.main(["--config", str(work / "config.yaml"), *map(str, argv)])


def folder(path: Path, name: str, rows: list, schema, manifest: dict | None = None) -> Path:
    path.mkdir(parents=True)
    write_parquet(path / name, rows, schema)
    (path / "manifest.json").write_text(json.dumps(manifest or {}))
    return path


def refused(capsys, out: Path, *says: str) -> None:
    err = capsys.readouterr().err
    for text in says:
        assert text in err, (text, err[-600:])
    assert f"Nothing was written to {out}" in err
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.tmp-*"))


def test_index_with_no_usable_video(work, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(work / "data", root)
    shutil.rmtree(root / "videos")
    out = tmp_path / "index"
    assert run(s2s_index, work, "--root", root, "--out", out) == 2
    refused(capsys, out, "s2s_index: 0 usable videos from 3 annotation records: every one was rejected "
                         "(missing_video 3)", f"Videos are looked up as {root / 'videos'}/<nvid>: set "
                         "shot2story.root (or --root) and shot2story.video_dir")


def test_clip_with_no_video_or_no_span(work, tmp_path, capsys):
    empty = folder(tmp_path / "index0", "videos.parquet", [], VIDEOS_SCHEMA)
    out = tmp_path / "clips"
    assert run(s2s_clip, work, "--index", empty, "--out", out) == 2
    refused(capsys, out, "s2s_clip: 0 clips from 0 indexed videos. The index", "rerun s2s_index")
    videos = [dict(v, shot_starts=[v["frames"]], shot_ends=[v["frames"] + 4])
              for v in read_rows(work / "index" / "videos.parquet")]   # every shot past the video's end
    beyond = folder(tmp_path / "index1", "videos.parquet", videos, VIDEOS_SCHEMA)
    assert run(s2s_clip, work, "--index", beyond, "--out", out) == 2
    refused(capsys, out, "0 clips from 3 indexed videos: every one was rejected (no_clips 3)",
            "set shot2story.clip.mode: fixed")


def test_caption_with_no_clip_aligned_to_a_shot(work, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(work / "data", root)
    shutil.rmtree(root / "shots")                          # spans unknown: fixed windows, aligned to no shot
    index, clips, out = tmp_path / "index", tmp_path / "clips", tmp_path / "captions"
    assert run(s2s_index, work, "--root", root, "--out", index) == 0
    assert run(s2s_clip, work, "--index", index, "--out", clips) == 0
    n_clips = len(read_rows(clips / "clips.parquet"))
    capsys.readouterr()
    assert run(s2s_caption, work, "--index", index, "--clips", clips, "--cache", tmp_path / "cache", "--out", out) == 2
    refused(capsys, out, f"s2s_caption: 0 captions from {n_clips} clips: every one was rejected (no_shot_alignment "
                         f"{n_clips})", "shot2story.caption.backend: longvila or openai")


def test_qa_with_no_captions_or_no_fitting_question(work, tmp_path, capsys):
    out = tmp_path / "qa"
    empty = folder(tmp_path / "captions0", "captions.parquet", [], CAPTIONS_SCHEMA)
    assert run(s2s_qa, work, "--index", work / "index", "--captions", empty, "--out", out) == 2
    refused(capsys, out, "s2s_qa: 0 QA pairs from 3 indexed videos: every one was rejected (no_captions 3)",
            f"(are the captions from another index?): rerun s2s_caption on {work / 'index'}")
    one_scene = [{"clip_id": f"{v['video_id']}#0", "video_id": v["video_id"], "clip_index": 0, "start_time": 0.0,
                  "end_time": 2.0, "caption": "A red circle moves.", "backend": "annotation", "model": ""}
                 for v in read_rows(work / "index" / "videos.parquet")]
    captions = folder(tmp_path / "captions1", "captions.parquet", one_scene, CAPTIONS_SCHEMA)
    assert run(s2s_qa, work, "--index", work / "index", "--captions", captions, "--out", out,
               "--set", "shot2story.qa.types=[temporal_order]") == 2
    refused(capsys, out, "every one was rejected (no_pairs 3)", "shot2story.qa.types (temporal_order)",
            "add types such as summary")


def test_assemble_with_no_qa(work, tmp_path, capsys):
    qa = folder(tmp_path / "qa", "qa.parquet", [], QA_SCHEMA)
    out = tmp_path / "sft"
    assert run(s2s_assemble, work, "--index", work / "index", "--clips", tmp_path / "none", "--captions",
               tmp_path / "none", "--qa", qa, "--out", out) == 2
    refused(capsys, out, "s2s_assemble: 0 SFT samples from 0 QA pairs.", "holds no QA pair: rerun s2s_qa")
