"""init_model -> a checkpoint with its tokenizer -> `longvila infer` on a real (generated) video."""

from __future__ import annotations

import json

import av
import numpy as np

from longvila.cli import main as cli_main


def make_video(path, frames=20, size=(64, 48)):
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            img = np.full((size[1], size[0], 3), (i * 12) % 256, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_init_model_writes_the_released_layout_with_tokenizer(tiny_ckpt):
    assert sorted(p.name for p in tiny_ckpt.iterdir()) == ["config.json", "llm", "mm_projector", "vision_tower"]
    assert (tiny_ckpt / "llm/tokenizer_config.json").is_file()
    cfg = json.loads((tiny_ckpt / "config.json").read_text())
    tokenizer = json.loads((tiny_ckpt / "llm/tokenizer.json").read_text())
    assert cfg["llm_cfg"]["vocab_size"] >= max(t["id"] for t in tokenizer["added_tokens"]) + 1
    assert any(t["content"] == "<vila/video>" for t in tokenizer["added_tokens"])


def test_infer_answers_about_a_video_and_an_image(tiny_ckpt, tmp_path, capsys):
    video = make_video(tmp_path / "clip.mp4")
    args = ["infer", "--model", str(tiny_ckpt), "--video", str(video), "--prompt", "What happens?",
            "--num-frames", "4", "--max-new-tokens", "5", "--quiet"]
    assert cli_main(args) == 0
    first = capsys.readouterr().out
    assert cli_main(args) == 0 and capsys.readouterr().out == first  # greedy: deterministic
    from PIL import Image

    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "x.png")
    assert cli_main(["infer", "--model", str(tiny_ckpt), "--image", str(tmp_path / "x.png"), "--prompt", "Colour?",
                     "--max-new-tokens", "3", "--quiet"]) == 0


def test_infer_errors_name_the_file(tiny_ckpt, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    assert cli_main(["infer", "--model", str(tiny_ckpt), "--video", str(bad), "--prompt", "?", "--quiet"]) == 2
    assert "bad.mp4" in capsys.readouterr().err
    assert cli_main(["infer", "--model", str(tmp_path), "--prompt", "?", "--quiet"]) == 2
    assert f"--model {tmp_path}: not a LongVILA checkpoint (no config.json in it)" in capsys.readouterr().err
