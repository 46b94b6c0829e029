"""`longvila infer / eval needle / eval bench / serve / plan` refuse bad arguments before any model loads.

Every refusal: exit code 2, a message that names the flag, the user's path (as given) and the fix, the model
loader never called (it raises `Loaded` here), and nothing written under the output's name.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from longvila.cli import main


class Loaded(Exception):
    """Raised by the patched model loader (and task runner): the checks let the command through."""


@pytest.fixture(autouse=True)
def no_loading(monkeypatch):
    import longvila.eval.bench
    import longvila.infer.single

    def loader(*args, **kwargs):
        raise Loaded("the model loader was called")

    monkeypatch.setattr(longvila.infer.single, "load_for_inference", loader)
    monkeypatch.setattr(longvila.eval.bench, "run_bench", loader)
    monkeypatch.setattr("longvila.cli.run_infer_sp", loader)


@pytest.fixture
def ckpt(tmp_path) -> Path:
    """A checkpoint's files as the checks see them (config.json with 4 query / 2 KV heads, llm/ tokenizer)."""
    root = tmp_path / "ckpt"
    (root / "llm").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"llm_cfg": {"num_attention_heads": 4, "num_key_value_heads": 2}}))
    (root / "llm" / "tokenizer_config.json").write_text("{}")
    return root


@pytest.fixture
def video(tmp_path) -> Path:
    """A real 3 s H.264 video at 4 frames/s (12 frames)."""
    from longvila.data.shot2story.synth import write_video

    frames = np.random.default_rng(0).integers(0, 256, (12, 32, 48, 3), dtype=np.uint8)
    write_video(tmp_path / "clip.mp4", frames, fps=4, width=48, height=32)
    return tmp_path / "clip.mp4"


@pytest.fixture
def files(tmp_path) -> dict:
    """A text file, a PNG and an empty folder."""
    from PIL import Image

    (tmp_path / "notes.yaml").write_text("a: 1\n")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "red.png")
    (tmp_path / "empty").mkdir()
    return {"notes": tmp_path / "notes.yaml", "png": tmp_path / "red.png", "empty": tmp_path / "empty"}


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def refused(argv, capsys, tmp_path) -> str:
    """Run the command; assert exit 2, nothing on stdout and nothing written under tmp_path; return stderr."""
    before = tree(tmp_path)
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:            # argparse's own errors
        rc = e.code
    assert rc == 2
    assert tree(tmp_path) == before, "a refused command wrote files"
    out, err = capsys.readouterr()
    assert out == ""
    return err


def infer(ckpt, *extra):
    return ["infer", "--model", ckpt, "--prompt", "What happens?", *extra]


# ---------------------------------------------------------------- infer
def test_infer_media_checks_name_the_flag_the_path_and_the_fix(ckpt, video, files, tmp_path, capsys):
    missing = tmp_path / "missing.mp4"
    err = refused(infer(ckpt, "--video", missing), capsys, tmp_path)
    assert f"--video {missing}: no such file" in err and "check the path" in err
    (files["empty"] / "inside.mp4").write_bytes(b"")
    err = refused(infer(ckpt, "--video", files["empty"]), capsys, tmp_path)
    assert f"--video {files['empty']}: is a folder; give a file inside it, e.g. --video " \
           f"{files['empty'] / 'inside.mp4'}" in err
    err = refused(infer(ckpt, "--video", files["notes"]), capsys, tmp_path)
    assert f"--video {files['notes']}: not a video (Invalid data found" in err and "give a video file" in err
    assert "video_reader.cc" not in err                   # decord's raw log line never shows
    err = refused(infer(ckpt, "--video", files["png"]), capsys, tmp_path)
    assert f"--video {files['png']}: is an image (PNG), not a video; pass it as --image {files['png']}" in err
    err = refused(infer(ckpt, "--image", files["notes"]), capsys, tmp_path)
    assert f"--image {files['notes']}: not an image PIL can open; give an image file" in err
    err = refused(infer(ckpt, "--image", video), capsys, tmp_path)
    assert f"--image {video}: is a video, not an image; pass it as --video {video}" in err
    err = refused(infer(ckpt, "--image", tmp_path / "nope.png"), capsys, tmp_path)
    assert f"--image {tmp_path / 'nope.png'}: no such file" in err


def test_infer_model_checks(ckpt, video, tmp_path, capsys):
    err = refused(infer(tmp_path / "nowhere", "--video", video), capsys, tmp_path)
    assert f"--model {tmp_path / 'nowhere'}: no such folder" in err
    err = refused(infer(tmp_path, "--video", video), capsys, tmp_path)  # the parent of the checkpoint
    assert f"--model {tmp_path}: not a LongVILA checkpoint (no config.json in it)" in err
    assert f"did you mean --model {ckpt}?" in err
    (ckpt / "llm" / "tokenizer_config.json").unlink()
    err = refused(infer(ckpt, "--video", video), capsys, tmp_path)
    assert f"--model {ckpt}: no tokenizer in {ckpt / 'llm'}" in err
    (ckpt / "config.json").write_text("{not json")
    err = refused(infer(ckpt, "--video", video), capsys, tmp_path)
    assert f"--model {ckpt}: {ckpt / 'config.json'} is not readable JSON" in err and "re-download" in err


@pytest.mark.parametrize("extra, message", [
    (["--sp", "3x"], "argument --sp: '3x': write UxR"),
    (["--num-frames", "0"], "argument --num-frames: 0 is below 1; sample at least one frame"),
    (["--num-frames", "eight"], "argument --num-frames: 'eight' is not a whole number"),
    (["--max-new-tokens", "0"], "argument --max-new-tokens: 0 is below 1"),
    (["--prompt", "  "], "argument --prompt: '  ' is empty; ask a question"),
])
def test_infer_flags_are_refused_by_argparse(ckpt, video, tmp_path, capsys, extra, message):
    assert message in refused(infer(ckpt, "--video", video, *extra), capsys, tmp_path)


def test_infer_sp_degree_must_split_the_heads(ckpt, video, tmp_path, capsys):
    err = refused(infer(ckpt, "--video", video, "--sp", "3x1"), capsys, tmp_path)
    assert "--sp 3x1: Ulysses degree 3 cannot split the model's 4 query / 2 KV heads" in err
    assert "valid Ulysses degrees: [1, 2, 4]; or use a ring only: --sp 3" in err


def test_good_infer_arguments_reach_the_loader(ckpt, video, files):
    with pytest.raises(Loaded):
        main(infer(str(ckpt), "--video", str(video)))
    with pytest.raises(Loaded):
        main(infer(str(ckpt), "--image", str(files["png"])))
    with pytest.raises(Loaded):
        main(infer(str(ckpt), "--video", str(video), "--sp", "2x1"))


# ---------------------------------------------------------------- eval needle
def needle(ckpt, haystack, out, *extra):
    return ["eval", "needle", "--model", ckpt, "--haystack", haystack, "--out", out, "--max-frames", "2",
            "--interval", "1", "--quiet", *extra]


def test_needle_haystack_checks(ckpt, video, files, tmp_path, capsys):
    out = tmp_path / "niah"
    err = refused(needle(ckpt, tmp_path / "movie.mp4", out), capsys, tmp_path)
    assert f"--haystack {tmp_path / 'movie.mp4'}: no such file" in err
    err = refused(needle(ckpt, files["notes"], out), capsys, tmp_path)
    assert f"--haystack {files['notes']}: not a video" in err
    err = refused(needle(ckpt, video, out, "--max-frames", "10", "--interval", "5"), capsys, tmp_path)
    assert f"--haystack {video}: 3 frames at 1 frame/s (a 3 s video) but --max-frames 10 needs 10" in err
    assert "lower --max-frames to at most 3" in err


def test_needle_grid_flags_use_the_flag_names(ckpt, video, tmp_path, capsys):
    out = tmp_path / "niah"
    err = refused(needle(ckpt, video, out, "--max-frames", "4", "--interval", "8"), capsys, tmp_path)
    assert "--interval 8 is above --max-frames 4" in err and "lower --interval or raise --max-frames" in err
    assert "interval <= max_frames" not in err
    assert "argument --depths: 1.5 is outside [0, 1]" in refused(needle(ckpt, video, out, "--depths", "0", "1.5"),
                                                                 capsys, tmp_path)
    assert "argument --interval: 0 is below 1" in refused(needle(ckpt, video, out, "--interval", "0"),
                                                          capsys, tmp_path)
    assert "argument --sp: '2y2'" in refused(needle(ckpt, video, out, "--sp", "2y2"), capsys, tmp_path)
    assert "--sp 3x1: Ulysses degree 3 cannot split" in refused(needle(ckpt, video, out, "--sp", "3x1"), capsys,
                                                                tmp_path)


def test_needle_output_checks(ckpt, video, files, tmp_path, capsys):
    err = refused(needle(ckpt, video, ckpt / "niah"), capsys, tmp_path)
    assert f"--out {ckpt / 'niah'}: is inside the checkpoint --model {ckpt}" in err
    err = refused(needle(ckpt, video, video), capsys, tmp_path)
    assert f"--out {video}: is the --haystack input" in err
    err = refused(needle(ckpt, video, files["notes"] / "out"), capsys, tmp_path)
    assert f"--out {files['notes'] / 'out'}" in err and "is a file, not a folder" in err
    err = refused(needle(ckpt, video, files["notes"]), capsys, tmp_path)
    assert f"--out {files['notes']}: is a file; give a folder" in err
    err = refused(needle(ckpt, video, tmp_path / "niah", "--cache-dir", ckpt / "cache"), capsys, tmp_path)
    assert f"--cache-dir {ckpt / 'cache'}: is inside the checkpoint" in err
    err = refused(needle(ckpt, video, tmp_path / "niah", "--needles", files["empty"]), capsys, tmp_path)
    assert f"--needles {files['empty']}: no needles.json in it" in err


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc (a folder nobody can write to)")
def test_needle_out_that_cannot_be_written(ckpt, video, tmp_path, capsys):
    err = refused(needle(ckpt, video, "/proc/longvila-out"), capsys, tmp_path)
    assert "--out /proc/longvila-out: cannot create files in /proc" in err and "choose a folder you can write" in err
    err = refused(needle(ckpt, video, tmp_path / "niah", "--cache-dir", "/proc/longvila-cache"), capsys, tmp_path)
    assert "--cache-dir /proc/longvila-cache: cannot create files in /proc" in err


def test_good_needle_arguments_reach_the_loader(ckpt, video, tmp_path):
    with pytest.raises(Loaded):
        main([str(a) for a in needle(ckpt, video, tmp_path / "niah", "--max-frames", "3", "--interval", "1")])


# ---------------------------------------------------------------- serve
def test_serve_checks_the_port_and_host_before_loading(ckpt, tmp_path, capsys):
    serve = ["serve", "--model", str(ckpt)]
    assert "argument --port: 70000 is outside 0..65535" in refused([*serve, "--port", "70000"], capsys, tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        err = refused([*serve, "--port", port], capsys, tmp_path)
    assert f"--port {port}: already in use on 127.0.0.1; choose another --port, or --port 0" in err
    err = refused([*serve, "--host", "192.0.2.1", "--port", "0"], capsys, tmp_path)   # TEST-NET-1: nobody's
    assert "--host 192.0.2.1: cannot listen there" in err and "--host 127.0.0.1" in err
    err = refused(["serve", "--model", tmp_path / "nowhere"], capsys, tmp_path)
    assert f"--model {tmp_path / 'nowhere'}: no such folder" in err
    with pytest.raises(Loaded):
        main([*serve, "--port", "0"])


# ---------------------------------------------------------------- eval bench
def test_bench_checks_model_and_output_dir(ckpt, tmp_path, capsys):
    bench = ["eval", "bench", "-m", ckpt, "-t", "mvbench"]
    err = refused([*bench, "--output-dir", ckpt / "eval"], capsys, tmp_path)
    assert f"--output-dir {ckpt / 'eval'}: is inside the checkpoint" in err
    err = refused([*bench, "--include-path", tmp_path / "tasks"], capsys, tmp_path)
    assert f"--include-path {tmp_path / 'tasks'}: no such folder" in err
    assert "argument -nf/--num-frames: 0 is below 1" in refused([*bench, "-nf", "0"], capsys, tmp_path)
    assert "argument --limit: 0 is below 1" in refused([*bench, "--limit", "0"], capsys, tmp_path)
    err = refused(["eval", "bench", "-m", tmp_path, "-t", "mvbench"], capsys, tmp_path)
    assert f"--model {tmp_path}: not a LongVILA checkpoint" in err
    with pytest.raises(Loaded):
        main([str(a) for a in [*bench, "--output-dir", tmp_path / "eval"]])


# ---------------------------------------------------------------- plan
@pytest.mark.parametrize("flag, value, message", [
    ("--seq-len", "0", "0 is below 1"), ("--gpus", "0", "0 is below 1"), ("--gpus-per-node", "-8", "-8 is below 1"),
    ("--gpu-mem", "0", "0 must be above 0"), ("--gpu-mem", "nan", "nan must be above 0"),
    ("--ulysses", "0", "0 is below 1"), ("--ring", "0", "0 is below 1"), ("--batch", "0", "0 is below 1"),
    ("--frames", "0", "0 is below 1; leave --frames out"), ("--tflops", "-1", "-1 must be above 0"),
    ("--mfu", "1.5", "1.5 is outside (0, 1]"), ("--mfu", "0", "0 is outside (0, 1]"),
    ("--intra-bw", "0", "0 must be above 0"), ("--inter-bw", "x", "'x' is not a number"),
])
def test_plan_numbers_are_range_checked(flag, value, message, tmp_path, capsys):
    argv = ["plan", "--model", "qwen2-7b", "--seq-len", "65536", "--gpus", "8", flag, value]
    assert f"argument {flag}: {message}" in refused(argv, capsys, tmp_path)


def test_plan_gpus_must_fill_nodes(tmp_path, capsys):
    argv = ["plan", "--model", "qwen2-7b", "--seq-len", "65536", "--gpus", "12", "--gpus-per-node", "8"]
    assert "--gpus 12 must be a multiple of --gpus-per-node 8" in refused(argv, capsys, tmp_path)
