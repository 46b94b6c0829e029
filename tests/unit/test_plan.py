"""The capacity planner (longvila.plan): parameter count, the memory breakdown by hand, the check against
DeepSpeed on an H100, split validity with reasons, the JSON form and the CLI."""

from __future__ import annotations

import json

import pytest

from longvila.cli import main
from longvila.plan.cost import Hardware, all_splits, evaluate
from longvila.plan.memory import GIB, param_count, rank_memory
from longvila.shapes import llm_shape


@pytest.mark.parametrize("size", ["tiny", "qwen2-1.5b-384", "qwen2-7b-384"])
def test_param_count_is_the_models(size):
    import torch
    from transformers import Qwen2ForCausalLM

    from longvila.model.sizes import build_config

    with torch.device("meta"):
        model = Qwen2ForCausalLM(build_config(size).llm_config())
    assert param_count(llm_shape(size)) == sum(p.numel() for p in model.parameters())


def test_breakdown_by_hand_for_the_tiny_model():
    # tiny: h 64, I 128, 2 layers, 4 heads / 2 KV heads (head dim 16, d_kv 32), vocab 151648, untied
    shape, n = llm_shape("tiny"), param_count(llm_shape("tiny"))
    m = rank_memory(shape, seq_len=1024, ulysses=2, ring=2, world=8, zero=2)        # s = 256 tokens per rank
    assert m.parameters == 2 * n and m.gradients == 2 * n // 8 and m.optimizer == 12 * n // 8
    assert m.activations == 256 * 2 * 2 * (7 * 64 + 2 * 32 + 4 * 128)
    assert m.logits == 256 * 151_648 * 10
    assert m.attention_buffers == 2 * 2 * 256 * 32 * 2 + 256 * (64 + 4) * 4
    assert m.comm_buffers == 2 * (2 * 64 + 2 * 32) * 256 * 2 + 2 * n                  # a2a + one ZeRO bucket (< 5e8)
    z3 = rank_memory(shape, seq_len=1024, ulysses=2, ring=2, world=8, zero=3)
    assert z3.parameters == 4 * n // 8 and z3.total < m.total


# DeepSpeed on one H100, Qwen2-1.5B shapes, one rank, bf16 + fp32 Adam, no checkpointing, one packed row:
# torch.cuda.memory_allocated between steps and max_memory_allocated (GiB), benchmarks/gpu_train_zero3.py,
# docs/LOG.md 2026-11-26 (session 6)
MEASURED_H100 = [(2, 2048, 20.2, 31.7), (2, 4096, 20.2, 38.2), (3, 2048, 24.0, 33.0), (3, 4096, 24.0, 42.0)]


@pytest.mark.parametrize("zero, seq_len, states, peak", MEASURED_H100)
def test_memory_matches_deepspeed_on_an_h100_within_15_percent(zero, seq_len, states, peak):
    m = rank_memory(llm_shape("qwen2-1.5b-384"), seq_len=seq_len, ulysses=1, ring=1, world=1, zero=zero)
    assert m.states / GIB == pytest.approx(states, rel=0.15)
    assert m.total / GIB == pytest.approx(peak, rel=0.15)


def test_invalid_splits_say_why():
    seven = llm_shape("qwen2-7b-384")
    hw = Hardware(gpus=112, gpus_per_node=14)
    assert evaluate(seven, "Qwen2-7B", 1 << 20, 14, 1, hw, 3).reason == (
        "U=14 invalid: Qwen2-7B has 28 heads / 4 KV heads; valid U in {1, 2, 4, 28}")
    assert "exceeds 8 GPUs per node" in evaluate(seven, "Qwen2-7B", 1 << 20, 28, 1, Hardware(gpus=224, gpus_per_node=8),
                                                 3).reason
    assert "not a multiple of 16" in evaluate(seven, "Qwen2-7B", 1000, 2, 4, Hardware(gpus=8, gpus_per_node=8), 3).reason
    assert "does not divide 8 GPUs" in evaluate(seven, "Qwen2-7B", 1 << 16, 3, 1, Hardware(gpus=8, gpus_per_node=8),
                                                3).reason
    too_big = evaluate(seven, "Qwen2-7B", 1 << 21, 4, 2, Hardware(gpus=8, gpus_per_node=8), 3)
    assert too_big.reason.startswith("needs ") and too_big.reason.endswith("GiB per GPU > 80 GiB")


def test_the_papers_headline_fits_and_the_ring_hides_behind_attention():
    # Qwen2-7B, 2M tokens, 256 x 80 GB, no gradient checkpointing (the paper's claim)
    plans = all_splits(llm_shape("qwen2-7b-384"), "Qwen2-7B", 1 << 21, Hardware(gpus=256, gpus_per_node=8), 3)
    best = plans[0]
    assert best.reason is None and (best.ulysses, best.ring, best.dp) == (4, 64, 1)
    assert best.memory.total < 80 * GIB and best.ring_bytes > 0
    # 2M / 64 = 32k tokens per ring block: far above the overlap threshold, so only latency is exposed
    no_latency = Hardware(gpus=256, gpus_per_node=8, intra_latency_us=0, inter_latency_us=0)
    p = evaluate(llm_shape("qwen2-7b-384"), "Qwen2-7B", 1 << 21, 4, 64, no_latency, 3)
    zero_s = p.zero_bytes / 25e9
    assert p.exposed_comm_s == pytest.approx(p.ulysses_bytes / 300e9 + zero_s)
    assert not any(q.reason is None for q in plans if q.ulysses * q.ring < 256)     # shorter SP runs out of memory
    # at 512k tokens DP replicas fit too, and they, not a longer ring, raise the throughput
    half = all_splits(llm_shape("qwen2-7b-384"), "Qwen2-7B", 1 << 19, Hardware(gpus=256, gpus_per_node=8), 3)
    assert half[0].dp > 1 and half[0].tokens_per_s > max(q.tokens_per_s for q in half if q.dp == 1)


def test_cli_json_is_stable_and_an_asked_invalid_split_exits_1(capsys):
    args = ["plan", "--model", "qwen2-7b", "--seq-len", "524288", "--gpus", "64", "--gpus-per-node", "8"]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out) == ["hardware", "model", "params", "recommended", "seq_len", "splits", "version", "zero"]
    assert out["version"] == 1 and out["recommended"]["fits"] is True
    assert sorted(out["recommended"]) == ["comm_bytes", "dp", "fits", "memory_gib", "reason", "ring", "step_s",
                                          "tokens_per_s", "ulysses"]
    assert sorted(out["recommended"]["memory_gib"]) == ["activations", "attention_buffers", "comm_buffers",
                                                        "gradients", "logits", "optimizer", "parameters", "total"]
    assert main([*args, "--ulysses", "8", "--ring", "8"]) == 1
    assert "U=8 invalid: qwen2-7b-384 has 28 heads / 4 KV heads" in capsys.readouterr().out
    assert main([*args, "--ulysses", "4", "--ring", "16"]) == 0


def test_config_mode_plans_every_run_and_names_a_missing_stage(capsys):
    paper = "workflow/configs/paper.yaml"
    from tests.conftest import REPO

    code = main(["plan", "--config", str(REPO / paper), "--json"])
    out = json.loads(capsys.readouterr().out)
    names = [s["stage"] for s in out["stages"]]
    assert names == ["stage4/64k", "stage4/256k", "stage4/512k", "stage4/1M", "stage5/256f", "stage5/512f",
                     "stage5/1024f", "stage5/2048f"]
    first = out["stages"][0]["splits"][0]                                # the configured split comes first
    assert (first["ulysses"], first["ring"]) == (4, 2) and first["memory_gib"]["gradients"] == 0.0    # LoRA
    assert code == (0 if all(s["splits"][0]["fits"] for s in out["stages"]) else 1)
    assert main(["plan", "--config", str(REPO / paper), "--stage", "stage5/512f"]) in (0, 1)
    assert "stage5/512f: 262,144 tokens on 32 GPUs" in capsys.readouterr().out
    for argv, message in [(["--config", str(REPO / paper), "--stage", "stage9"],
                           "--stage 'stage9' is not in this config; its stages: stage4/64k"),
                          (["--config", str(REPO / "config.yaml")], "trains on CPU processes"),
                          (["--model", "qwen2-7b"], "give --config CFG, or --seq-len, --gpus")]:
        assert main(["plan", *argv]) == 2                                 # a user error, named
        assert message in capsys.readouterr().err
