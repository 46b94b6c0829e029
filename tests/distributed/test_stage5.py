"""Stage 5 on the tiny model: real videos in the VILA format, MM-SP two-stage sharding on 4 gloo processes (2D
U=2 x R=2) gives the losses of one process, and the checkpoint it writes loads and answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.spawn import run_distributed

pytestmark = pytest.mark.distributed

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (235, 215, 40)}


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory) -> Path:
    """Four 8-frame videos of one plain colour each and a VILA JSON asking for the colour."""
    from longvila.data.shot2story.synth import write_video

    root = tmp_path_factory.mktemp("sft")
    records = []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        frames = np.broadcast_to(np.array(rgb, np.uint8), (8, 24, 32, 3)).copy()
        frames[:, :, : 4 + 4 * i] = 255 - frames[:, :, : 4 + 4 * i]            # a band whose width moves
        write_video(root / f"v{i}.mp4", list(frames), fps=4, width=32, height=24)
        records.append({"id": f"r{i}", "video": f"v{i}.mp4", "conversations": [
            {"from": "human", "value": "<video>\nWhat colour is the background?"},
            {"from": "gpt", "value": f"The background is {name}."}]})
    (root / "vila_train.json").write_text(json.dumps(records))
    return root


def _overrides(ulysses: int, ring: int, batch: int = 1, extra: str = "", engine: str = "torch",
               accum: int = 1, epochs: int = 1) -> list[str]:
    return ["train.stage5=[{frames: 4, ulysses: %d, ring: %d, per_device_batch: %d, grad_accum: %d, lr: 1.0e-3, "
            "epochs: %d, max_length: 4096, save_every: 2, zero_stage: 3%s}]" % (ulysses, ring, batch, accum, epochs,
                                                                                  extra),
            "train.warmup_ratio=0.25", f"train.engine={engine}"]


def _run(rank, world, config, overrides, data, run_dir, out_dir, stop_after=None):
    import os

    from longvila.config import load_config_file

    os.environ["LOCAL_RANK"] = str(rank)                 # as torchrun / the launcher set it (DeepSpeed reads it)
    from longvila.parallel import ParallelDims
    from longvila.train.stage5 import run_stage5

    cfg = load_config_file(config, overrides)
    run = cfg.train.stage5[0]
    dims = ParallelDims(ulysses=run.ulysses, ring=run.ring, world_size=world)
    if world > 1:
        dims.build()
    result = run_stage5(cfg, 0, Path(config).parent / "tiny", data / "vila_train.json", data, run_dir, out_dir,
                        dims, stop_after=stop_after)
    return result["losses"], result["step"]


def test_stage5_2d_sp_zero3_matches_one_process_and_writes_a_loadable_checkpoint(tiny_ckpt, sft_data, tmp_path):
    """P=4 (U=2 x R=2) with DeepSpeed ZeRO-3, preempted and resumed = one process with the torch engine."""
    from longvila.infer.single import answer, load_for_inference

    config = str(tiny_ckpt.parent / "config.yaml")
    ref, steps = _run(0, 1, config, _overrides(1, 1), sft_data, tmp_path / "ref", tmp_path / "ref_out")
    assert steps == 4 and len(ref) == 4                                 # 4 samples, global batch 1
    # 2D SP 2x2, "preempted" after 3 steps, then resumed from the step-2 checkpoint in fresh processes
    run_distributed(_run, 4, config, _overrides(2, 2, engine="deepspeed"), sft_data, tmp_path / "sp",
                    tmp_path / "sp_out", 3)
    assert [p.name for p in (tmp_path / "sp/checkpoints").iterdir()] == ["step-000002"]
    assert not (tmp_path / "sp_out").exists()
    for losses, step in run_distributed(_run, 4, config, _overrides(2, 2, engine="deepspeed"), sft_data,
                                        tmp_path / "sp", tmp_path / "sp_out"):
        assert step == 4 and max(abs(a - b) for a, b in zip(losses, ref)) < 2e-5, (losses, ref)
    assert ref[-1] < ref[0]
    rows = [json.loads(line) for line in (tmp_path / "sp/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[0]["lr"] == 0.0         # warm-up starts at 0
    assert [r["lr"] for r in rows[1:]] == pytest.approx([1e-3, 7.5e-4, 2.5e-4])       # then the cosine

    model, tokenizer = load_for_inference(tmp_path / "sp_out")
    reference, _ = load_for_inference(tmp_path / "ref_out")
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert torch.allclose(p, q, atol=1e-4), name                    # SP and one process trained alike
    text = answer(model, tokenizer, "What colour is the background?", video=sft_data / "v0.mp4", num_frames=4,
                  max_new_tokens=4)
    assert isinstance(text, str)


def test_data_parallel_replicas_with_accumulation_give_the_exact_global_token_mean(tiny_ckpt, sft_data, tmp_path):
    """DP 2 x SP 2, one sample per device, 2 micro-steps = one process with 2 samples x 2 micro-steps: every
    optimizer step divides by the supervised tokens of all 4 samples, however they are grouped."""
    config = str(tiny_ckpt.parent / "config.yaml")
    ref, steps = _run(0, 1, config, _overrides(1, 1, batch=2, accum=2, epochs=2), sft_data, tmp_path / "ref",
                      tmp_path / "ref_out")
    assert steps == 2
    for losses, step in run_distributed(_run, 4, config, _overrides(2, 1, accum=2, epochs=2), sft_data,
                                        tmp_path / "dp", tmp_path / "dp_out"):
        assert step == 2 and max(abs(a - b) for a, b in zip(losses, ref)) < 2e-5, (losses, ref)


def test_samples_longer_than_max_length_are_skipped_and_counted(tiny_ckpt, sft_data, tmp_path):
    from longvila.config import load_config_file
    from longvila.parallel import ParallelDims
    from longvila.train.stage5 import lr_with_warmup, optimizer_steps, run_stage5

    cfg = load_config_file(tiny_ckpt.parent / "config.yaml", _overrides(1, 1, extra=", max_length: 16"))
    with pytest.raises(ValueError, match="no stage-5 sample fits max_length 16"):
        run_stage5(cfg, 0, tiny_ckpt, sft_data / "vila_train.json", sft_data, tmp_path / "r", tmp_path / "o",
                   ParallelDims(world_size=1))
    with pytest.raises(ValueError, match="do not fill one global batch"):
        optimizer_steps(3, dp=2, per_device_batch=1, grad_accum=2, epochs=1)
    assert optimizer_steps(10, dp=2, per_device_batch=1, grad_accum=2, epochs=3) == 7     # 15 // 2
    f = lr_with_warmup(100, 0.03)                                    # 3 warm-up steps
    assert [f(0), f(1), f(3)] == [0.0, pytest.approx(1 / 3), 1.0] and f(100) == pytest.approx(0.0)
    assert f(3 + 97 // 2) == pytest.approx(0.5 * (1 + np.cos(np.pi * (97 // 2) / 97)))
    c = lr_with_warmup(100, 0.03, "constant")
    assert [c(0), c(1), c(3), c(99)] == [0.0, pytest.approx(1 / 3), 1.0, 1.0]
    with pytest.raises(ValueError, match="use one of cosine, constant"):
        lr_with_warmup(100, 0.03, "linear")


def test_sample_target_counts_known_before_decoding_equal_the_spliced_sequence(tiny_ckpt, sft_data):
    """The loop divides by counts taken from the labels alone; they must equal the targets after splicing."""
    from longvila.data.sft_dataset import VilaVideoDataset
    from longvila.infer.single import load_for_inference
    from longvila.model.conversation import MEDIA_TOKENS
    from longvila.parallel import ParallelDims
    from longvila.parallel.mmsp import prepare_sp_inputs
    from longvila.train.stage5 import VideoSFTSamples

    model, tokenizer = load_for_inference(tiny_ckpt)
    (newline,) = tokenizer("\n", add_special_tokens=False)["input_ids"]
    size = model.vision_tower.config.image_size
    per_frame = model.encode_frames(torch.zeros(1, 3, size, size)).shape[1]
    data = VideoSFTSamples(VilaVideoDataset(sft_data / "vila_train.json", sft_data, tokenizer, num_frames=4), size,
                           per_frame, 4096)
    for i in range(len(data)):
        s = data[i]
        inputs = prepare_sp_inputs(model, s["input_ids"], s["pixels"], s["labels"], ParallelDims(world_size=1),
                                   media_token_id=tokenizer.convert_tokens_to_ids(MEDIA_TOKENS["video"]),
                                   newline_id=newline)
        assert data.num_targets(i) == inputs.num_targets > 0
