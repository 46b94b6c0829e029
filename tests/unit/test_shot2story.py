"""Stage-5 data: schema, index faults, clip arithmetic, caption cache, QA templates and parsing, split, dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from longvila.config.video import QA_TYPES, ClipConfig, QAConfig, SynthConfig
from longvila.data.shot2story.assemble import sft_rows, split_videos
from longvila.data.shot2story.caption import CaptionCache, cache_key, caption_clips, clip_frame_indices
from longvila.data.shot2story.clips import best_shot, clips_for_video, fixed_windows
from longvila.data.shot2story.common import Rejects
from longvila.data.shot2story.index import build_index, load_annotations, validate_record
from longvila.data.shot2story.qa import generate_qa, parse_qa, template_qa
from longvila.data.shot2story.synth import build_synthetic

SMALL = SynthConfig(videos=3, min_shots=2, max_shots=3, min_shot_seconds=2.0, max_shot_seconds=4.0, fps=2, seed=3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("s2s")
    build_synthetic(SMALL, root)
    return root


def _records(root: Path) -> list[dict]:
    return json.loads((root / "annotations" / SMALL.annotation_file).read_text())


def test_synthetic_records_have_the_real_schema_and_true_captions(dataset):
    recs = _records(dataset)
    assert len(recs) == 3 and all(validate_record(r) is None for r in recs)
    assert set(recs[0]) == {"video", "image_id", "nvid", "id", "whole_caption", "whole_ASR", "video_names",
                            "captions", "audio_captions", "ASR"}
    from longvila.data.video import probe_video, read_frames
    from longvila.data.shot2story.synth import COLOURS

    first = recs[0]
    info = probe_video(dataset / "videos" / first["nvid"])
    assert info["fps"] == 2.0 and info["width"] == 64
    corner = read_frames(dataset / "shots" / first["video_names"][0], [0])[0, 1, 1].astype(int)
    background = first["captions"][0].split(" over ")[1].split()[1]          # "... over a blue background."
    assert abs(corner - COLOURS[background]).max() < 40                    # the caption says what is shown


@pytest.mark.parametrize("change, problem", [
    (lambda r: r.pop("nvid"), "missing field 'nvid'"),
    (lambda r: r.update(id="7"), "field 'id' must be int"),
    (lambda r: r.update(id=True), "field 'id' must be int"),
    (lambda r: r.update(captions=r["captions"][:-1]), "'captions' must hold one string per shot"),
    (lambda r: r.update(video_names=[]), "video_names must be a non-empty list"),
    (lambda r: r.update(ASR=[1] * len(r["video_names"])), "'ASR' must hold strings only"),
])
def test_schema_validation_names_the_problem(dataset, change, problem):
    rec = _records(dataset)[0]
    change(rec)
    assert problem in validate_record(rec)


def test_index_counts_every_fault_and_keeps_the_rest(dataset, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(dataset, root)
    recs = _records(root)
    (root / "videos" / recs[1]["nvid"]).write_bytes(b"not a video")               # corrupt
    missing = dict(recs[0], id=100, nvid="gone.mp4")                              # missing video
    duplicate = dict(recs[0])                                                     # duplicate id
    longer = dict(recs[2], id=101, video_names=recs[2]["video_names"] * 3,         # shots longer than the video
                  **{k: recs[2][k] * 3 for k in ("captions", "audio_captions", "ASR")})
    unknown = dict(recs[2], id=102, video_names=["nope.mp4"] * len(recs[2]["video_names"]))  # spans unknown
    bad = dict(recs[0], id="x")
    raw = json.dumps(recs + [missing, duplicate, longer, unknown, bad]).encode()
    raw = raw[:-1] + b', {"video": "v", "nvid": "\xff.mp4", "id": 103, "whole_caption": "", "video_names": ["a"], ' \
                     b'"captions": ["c"]}]'
    (root / "annotations" / "mixed.json").write_bytes(raw)
    rejects = Rejects("s2s_index")
    loaded = load_annotations(root / "annotations" / "mixed.json", rejects)
    rows, notes = build_index(loaded, root, "videos", "shots", rejects, workers=2)
    assert dict(rejects.counts) == {"invalid_record": 1, "invalid_utf8": 1, "duplicate_id": 1, "missing_video": 1,
                                    "corrupt_video": 1, "shots_exceed_video": 1}
    assert len(rows) + rejects.total == 9 and {r["id"] for r in rows} == {recs[0]["id"], recs[2]["id"], 102}
    assert notes == {"shot_spans_unknown": 1}
    good = next(r for r in rows if r["id"] == recs[0]["id"])
    assert good["shot_starts"][0] == 0 and good["shot_ends"][-1] == good["frames"]
    with pytest.raises(ValueError, match="duplicate_id"):
        build_index(loaded, root, "videos", "shots", Rejects("s2s_index", strict=True))


def test_fixed_windows_cover_every_frame_exactly():
    for frames in (1, 19, 20, 21, 23, 100):
        spans = fixed_windows(frames, 2.0, 5.0, 2.0)
        assert spans[0][0] == 0 and spans[-1][1] == frames
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert fixed_windows(23, 2.0, 5.0, 2.0) == [(0, 10), (10, 23)]                # 3-frame tail (1.5 s) merged
    assert fixed_windows(25, 2.0, 5.0, 2.0) == [(0, 10), (10, 20), (20, 25)]       # 2.5 s tail kept
    assert best_shot(8, 14, [0, 10, 13], [10, 13, 20]) == 1 and best_shot(0, 4, None, None) == -1
    assert [c + 0 for c in clip_frame_indices(10, 20, 4)] == [10, 13, 16, 19]


def test_clips_follow_shots_or_fall_back_to_windows():
    video = {"video_id": "f:1", "path": "videos/a.mp4", "fps": 2.0, "frames": 30, "shot_starts": [0, 12, 20],
             "shot_ends": [12, 20, 30]}
    shots = clips_for_video(video, "shots", 10.0, 2.0)
    assert [(c["start_frame"], c["end_frame"], c["shot_index"]) for c in shots] == [(0, 12, 0), (12, 20, 1), (20, 30, 2)]
    assert shots[1]["start_time"] == 6.0 and shots[1]["clip_id"] == "f:1#1"
    fixed = clips_for_video(video, "fixed", 5.0, 2.0)
    assert [(c["start_frame"], c["end_frame"], c["shot_index"]) for c in fixed] == [(0, 10, 0), (10, 20, 1), (20, 30, 2)]
    unknown = clips_for_video({**video, "shot_starts": None, "shot_ends": None}, "shots", 5.0, 2.0)
    assert {c["mode"] for c in unknown} == {"fixed"} and {c["shot_index"] for c in unknown} == {-1}


def test_caption_cache_resumes_and_ignores_a_torn_line(tmp_path):
    cache = CaptionCache(tmp_path / "c.jsonl")
    cache.put("k1", "a#0", "a red circle")
    cache.close()
    with open(tmp_path / "c.jsonl", "a") as f:
        f.write('{"key": "k2", "clip_id": "a#1", "capt')                        # a killed writer
    again = CaptionCache(tmp_path / "c.jsonl")
    assert again.get("k1") == "a red circle" and again.get("k2") is None and again.torn == 1
    again.put("k3", "a#2", "two squares")                                   # not glued onto the torn line
    again.close()
    third = CaptionCache(tmp_path / "c.jsonl")
    assert third.get("k3") == "two squares" and third.torn == 1
    third.close()
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    clip = {"clip_id": "a#0", "start_frame": 0, "end_frame": 4}
    clip["path"] = "v.mp4"
    keys = {cache_key(clip, video, "openai", m, p, 4, 32) for m in ("m1", "m2") for p in ("p1", "p2")}
    assert len(keys) == 4                                                        # model and prompt change the key


def test_annotation_captions_align_to_shots(dataset):
    rejects = Rejects("s2s_caption")
    rows, _ = build_index(load_annotations(dataset / "annotations" / SMALL.annotation_file, rejects), dataset,
                          "videos", "shots", rejects)
    videos = {v["video_id"]: v for v in rows}
    clips = [c for v in rows for c in clips_for_video(v, "shots", 10.0, 2.0)]
    clips.append({**clips[0], "clip_id": "orphan", "shot_index": -1})
    caps = caption_clips(clips, videos, dataset, type("C", (), {"backend": "annotation"})(), Path("unused"), rejects)
    assert len(caps) == len(clips) - 1 and dict(rejects.counts) == {"no_shot_alignment": 1}
    first = caps[0]
    assert first["caption"] == videos[first["video_id"]]["captions"][0]


def _captioned(video_id="f:1", n=4):
    caps = ["A red circle moves.", "A red circle moves.", "Two blue squares move.", "One green triangle moves."]
    return [{"video_id": video_id, "clip_index": i, "start_time": 5.0 * i, "end_time": 5.0 * (i + 1),
             "caption": caps[i % 4]} for i in range(n)]


def test_template_qa_is_deterministic_and_grounded():
    video = {"video_id": "f:1", "whole_caption": "Three scenes."}
    pairs = template_qa(video, _captioned(), list(QA_TYPES), seed=0)
    assert pairs == template_qa(video, _captioned(), list(QA_TYPES), seed=0)
    kinds = {p["type"]: p for p in pairs}
    assert set(kinds) == set(QA_TYPES)
    assert kinds["summary"]["answer"] == "Three scenes."
    assert kinds["counting"]["answer"] == "3 scenes."                           # repeated captions merge
    assert "From about" in kinds["event_localisation"]["answer"]
    rows, raw = generate_qa([video, {"video_id": "f:2"}], {"f:1": _captioned()}, QAConfig(), Rejects("qa"))
    assert len(rows) == 5 and raw == [] and {r["backend"] for r in rows} == {"template"}


@pytest.mark.parametrize("text, n, reasons", [
    ('```json\n[{"type": "summary", "question": "Q?", "answer": "A."},]\n```', 1, []),
    ('Sure! Here you go: {"type": "Temporal order", "question": "Q?", "answer": "A."} Hope it helps', 1, []),
    ('no json here', 0, ["no_json"]),
    ('[{"type": "summary", "question": "Q?"}]', 0, ["missing_fields"]),
    ('[{"type": "trivia", "question": "Q?", "answer": "A."}]', 0, ["unknown_type"]),
    ('[]', 0, ["empty"]),
    ('"just a string"', 0, ["no_json"]),
    ('[{"type": "summary", "question": "Q?", "answer": "A."}, {"type": "bogus", "question": "x", "answer": "y"},'
     ' {"question": "x"}]', 1, ["unknown_type", "missing_fields"]),              # partial: every item counted
])
def test_llm_output_is_repaired_or_rejected_with_a_reason(text, n, reasons):
    pairs, why = parse_qa(text, list(QA_TYPES))
    assert len(pairs) == n and why == reasons


def test_template_backend_counts_videos_without_any_pair():
    one_scene = [{"video_id": "f:1", "clip_index": 0, "start_time": 0.0, "end_time": 5.0, "caption": "A."}]
    rejects = Rejects("qa")
    rows, _ = generate_qa([{"video_id": "f:1"}], {"f:1": one_scene}, QAConfig(types=["temporal_order"]), rejects)
    assert rows == [] and dict(rejects.counts) == {"no_pairs": 1}


def test_zero_length_and_overlong_shots_keep_the_caption_alignment():
    video = {"video_id": "f:1", "path": "v.mp4", "fps": 1.0, "frames": 100, "shot_starts": [0, 0, 50, 100],
             "shot_ends": [0, 50, 101, 110]}
    clips = clips_for_video(video, "shots", 10.0, 2.0)
    assert [(c["start_frame"], c["end_frame"], c["shot_index"]) for c in clips] == [(0, 50, 1), (50, 100, 2)]


def test_records_sharing_a_video_file_never_straddle_the_split():
    videos = {f"a:{i}": {"path": f"videos/v{i % 3}.mp4", "duration": 9.0} for i in range(9)}   # 3 files, 9 ids
    qa = [{"qa_id": f"{v}/summary/0", "video_id": v, "question_type": "summary", "question": "Q", "answer": "A",
           "backend": "template"} for v in videos]
    for seed in range(6):
        rows = sft_rows(qa, videos, "annotation", 16, 0.4, seed)
        by_file = {}
        for r in rows:
            by_file.setdefault(r["video"], set()).add(r["split"])
        assert all(len(s) == 1 for s in by_file.values()) and len(by_file) == 3
    assert set(split_videos(["only"], 0.9, 0).values()) == {"train"}


def test_split_is_by_video_without_leakage():
    qa = [{"qa_id": f"v{v}/summary/{k}", "video_id": f"v{v}", "question_type": "summary", "question": "Q",
           "answer": "A", "backend": "template"} for v in range(10) for k in range(3)]
    videos = {f"v{v}": {"path": f"videos/v{v}.mp4", "duration": 9.0} for v in range(10)}
    rows = sft_rows(qa, videos, "annotation", 16, 0.2, seed=1)
    by_video = {}
    for r in rows:
        by_video.setdefault(r["video"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_video.values())                        # no video in both splits
    assert sum(s == {"val"} for s in by_video.values()) == 2
    assert split_videos(["a", "b"], 0.01, 0) in ({"a": "val", "b": "train"}, {"a": "train", "b": "val"})
    assert rows[0]["conversations"][0]["value"].startswith("<video>\n")


def test_clip_config_refuses_bad_values():
    with pytest.raises(ValueError, match="clip.mode"):
        ClipConfig(mode="scenes")
    with pytest.raises(ValueError, match="qa.types"):
        QAConfig(types=["trivia"])


LOADED = SynthConfig(videos=3, min_shots=2, max_shots=3, min_shot_seconds=3.0, max_shot_seconds=6.0, fps=2, seed=1)


def _pixels(root: Path) -> dict:
    import hashlib

    from longvila.data.video import probe_video, read_frames
    return {str(p.relative_to(root)): hashlib.sha256(read_frames(p, list(range(probe_video(p)["frames"])),
                                                                 backend="pyav").tobytes()).hexdigest()
            for p in sorted(root.rglob("*.mp4"))}


def test_synthetic_videos_decode_to_the_same_pixels_on_any_number_of_cpus_and_under_load(tmp_path):
    """A SLURM job (one CPU) must see the very pixels a local run sees. Six builds at once, every other one pinned
    to one CPU, all decode alike (lossy encodes made about one build in four differ under such load)."""
    import os
    import subprocess
    import sys

    code = ("import sys; from longvila.config.video import SynthConfig; "
            "from longvila.data.shot2story.synth import build_synthetic; "
            f"build_synthetic(SynthConfig(**{LOADED.__dict__!r}), sys.argv[1])")
    one_cpu = (lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})) if hasattr(os, "sched_setaffinity") \
        else None
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"run{i}")],
                              preexec_fn=one_cpu if i % 2 else None) for i in range(6)]
    assert [p.wait(timeout=300) for p in procs] == [0] * 6
    want = _pixels(tmp_path / "run0")
    assert len(want) >= 6
    for i in range(1, 6):
        assert _pixels(tmp_path / f"run{i}") == want, f"run {i} ({'one CPU' if i % 2 else 'all CPUs'}) differs"


def test_synthetic_videos_are_lossless(tmp_path):
    """What is decoded is exactly the drawn frame after its trip through yuv420p (no compression loss)."""
    import av
    import numpy as np

    from longvila.data.shot2story.synth import COLOURS, SHAPES, Shot, draw_frame, write_video
    from longvila.data.video import read_frames

    shot = Shot(sorted(COLOURS)[0], sorted(COLOURS)[1], SHAPES[0], 2, "from left to right", 5)
    frames = [draw_frame(shot, k / 4, 64, 48) for k in range(5)]
    write_video(tmp_path / "v.mp4", frames, fps=2, width=64, height=48)
    via_yuv = [av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p").to_ndarray(format="rgb24")
               for f in frames]
    for backend in ("pyav", "decord"):
        assert np.array_equal(read_frames(tmp_path / "v.mp4", list(range(5)), backend=backend), np.stack(via_yuv))
