"""The capacity planner (longvila.plan): parameter count, the memory breakdown by hand, the check against
DeepSpeed on an H100, split validity with reasons, the JSON form and the CLI."""

from __future__ import annotations

import json

import pytest

from longvila.cli import main
from longvila.plan.cost import Hardware, all_splits, evaluate
from longvila.plan.memory import GIB, RUNTIME_BYTES, Recipe, param_count, rank_memory
from longvila.shapes import llm_shape, vision_shape


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
    m = rank_memory(shape, seq_len=1024, ulysses=2, ring=2, world=8, recipe=Recipe(zero=2))   # s = 256 per rank
    assert m.parameters == 2 * n and m.gradients == 2 * n // 8 and m.optimizer == 12 * n // 8
    assert m.activations == 256 * 2 * 2 * (7 * 64 + 2 * 32 + 4 * 128 + 64)       # + h: Ulysses' all-to-all output
    assert m.logits == 256 * 151_648 * 10
    assert m.attention_buffers == 2 * 2 * 256 * 32 * 2 + 256 * (64 + 4) * 4
    assert m.comm_buffers == 2 * (2 * 64 + 2 * 32) * 256 * 2 and m.grad_buckets == 2 * n   # one ZeRO bucket (< 5e8)
    assert m.runtime == 1_400 << 20 and m.vision == 0
    held = sum(v for k, v in vars(m).items() if k not in ("grads_at_activation_peak", "allocator_slack", "runtime"))
    assert m.tensors == held and m.allocator_slack == int(0.17 * held)           # DeepSpeed: every kind is held
    assert m.total == m.tensors + m.allocator_slack + m.runtime
    z3 = rank_memory(shape, seq_len=1024, ulysses=2, ring=2, world=8, recipe=Recipe(zero=3))
    assert z3.parameters == 4 * n // 8 and z3.total < m.total


def test_the_torch_engine_frees_gradients_before_the_next_forward():
    # fp32 on CPU, 2 ranks of DP, s = 512: gradients and the all-reduce bucket do not meet the activations
    shape, n = llm_shape("tiny"), param_count(llm_shape("tiny"))
    cpu = Recipe(zero=0, precision="fp32", device="cpu")
    m = rank_memory(shape, seq_len=512, ulysses=1, ring=1, world=2, recipe=cpu)
    assert (m.parameters, m.gradients, m.optimizer, m.grad_buckets) == (4 * n, 4 * n, 8 * n, 4 * (1 << 23))
    assert m.activations == 512 * 2 * 4 * (8 * 64 + 2 * 32 + 4 * 128 + 4) and m.logits == 512 * 151_648 * 12
    forward = m.activations + m.logits
    assert m.total == 12 * n + forward + (448 << 20) and m.allocator_slack == 0     # forward > gradients + bucket
    accum = rank_memory(shape, seq_len=512, ulysses=1, ring=1, world=2,
                        recipe=Recipe(zero=0, precision="fp32", device="cpu", grad_accum=4))
    assert accum.total == m.total + 4 * n + 4 * (1 << 23)                          # accumulated: held throughout


def test_checkpointing_keeps_one_input_per_layer_and_stage5_adds_the_vision_side():
    seven, vision = llm_shape("qwen2-7b-384"), vision_shape("qwen2-7b-384")
    h, s = 3584, (1 << 18) // 32
    plain = rank_memory(seven, seq_len=1 << 18, ulysses=4, ring=8, world=32, recipe=Recipe(zero=3))
    ck = rank_memory(seven, seq_len=1 << 18, ulysses=4, ring=8, world=32, recipe=Recipe(zero=3, checkpointing=True))
    per_layer = plain.activations // (28 * s)
    assert ck.activations == s * (28 * h * 2 + per_layer) and ck.activations < plain.activations / 4
    assert vision.tokens_per_frame == 196 and vision.patches == 729
    video = Recipe(zero=3, checkpointing=True, vision=vision, frames=512)
    v = rank_memory(seven, seq_len=1 << 18, ulysses=4, ring=8, world=32, recipe=video)
    tower = 16 * 729 * (27 * 1152 * 2 + (8 * 1152 + 2 * 4304) * 2)               # 512 / 32 frames per rank
    assert v.vision == tower + 512 * 196 * h * 2 + 2 * (1 << 18) * h * 2         # + gathered frames, spliced row
    assert v.optimizer == 12 * (param_count(seven) + vision.params) // 32         # the tower is trained too


def test_vision_parameter_count_is_the_models():
    import torch

    from longvila.model.sizes import build_config
    from longvila.model.vlm import LongVILAForCausalLM

    with torch.device("meta"):
        model = LongVILAForCausalLM(build_config("qwen2-1.5b-384"))
    real = sum(p.numel() for p in [*model.vision_tower.parameters(), *model.mm_projector.parameters()])
    assert vision_shape("qwen2-1.5b-384").params == real


# DeepSpeed ZeRO on one H100 (79.2 GiB), Qwen2-1.5B shapes, one rank, bf16 + fp32 Adam, one packed row:
# torch.cuda.memory_allocated between steps and max_memory_allocated (GiB), benchmarks/gpu_train_zero3.py,
# docs/LOG.md 2026-11-26 (sessions 6 and 7)
MEASURED_H100 = [(2, 2048, False, 20.2, 31.7), (2, 4096, False, 20.2, 38.2), (3, 2048, False, 24.0, 33.0),
                 (3, 4096, False, 24.0, 42.0), (2, 8192, False, 20.2, 56.3), (2, 8192, True, 20.2, 34.8),
                 (2, 16384, True, 20.2, 49.5), (2, 24576, True, 20.2, 64.1)]


@pytest.mark.parametrize("zero, seq_len, checkpointing, states, peak", MEASURED_H100)
def test_memory_matches_deepspeed_on_an_h100_within_15_percent(zero, seq_len, checkpointing, states, peak):
    m = rank_memory(llm_shape("qwen2-1.5b-384"), seq_len=seq_len, ulysses=1, ring=1, world=1,
                    recipe=Recipe(zero=zero, checkpointing=checkpointing))
    assert m.states / GIB == pytest.approx(states, rel=0.15)
    assert m.tensors / GIB == pytest.approx(peak, rel=0.15)               # max_memory_allocated sees the tensors


def test_fit_verdicts_match_what_ran_and_what_ran_out_of_memory_on_the_h100():
    # ZeRO-2 with checkpointing: 24k tokens ran (74.2 GiB reserved), 28k and 32k ran out of memory; without
    # checkpointing 8k ran. The allocator's slack decides it: the tensors alone (68 GiB at 28k) would "fit".
    hw = Hardware(gpus=1, gpus_per_node=1)
    verdict = lambda s, ck: evaluate(llm_shape("qwen2-1.5b-384"), "1.5B", s, 1, 1, hw,
                                     Recipe(zero=2, checkpointing=ck)).reason is None
    assert [verdict(s, True) for s in (8192, 16384, 24576, 28672, 32768)] == [True, True, True, False, False]
    assert verdict(8192, False) and not verdict(16384, False)


def test_invalid_splits_say_why():
    seven = llm_shape("qwen2-7b-384")
    hw = Hardware(gpus=112, gpus_per_node=14)
    assert evaluate(seven, "Qwen2-7B", 1 << 20, 14, 1, hw).reason == (
        "U=14 invalid: Qwen2-7B has 28 heads / 4 KV heads; valid U in {1, 2, 4, 28}")
    node = Hardware(gpus=8, gpus_per_node=8)
    assert "exceeds 8 GPUs per node" in evaluate(seven, "Qwen2-7B", 1 << 20, 28, 1, Hardware(224, 8)).reason
    assert "not a multiple of 16" in evaluate(seven, "Qwen2-7B", 1000, 2, 4, node).reason
    assert "does not divide 8 GPUs" in evaluate(seven, "Qwen2-7B", 1 << 16, 3, 1, node).reason
    too_big = evaluate(seven, "Qwen2-7B", 1 << 21, 4, 2, Hardware(gpus=8, gpus_per_node=8))
    assert too_big.reason.startswith("needs ") and too_big.reason.endswith("GiB per GPU > 79.2 GiB")


def test_the_papers_headline_fits_and_the_ring_hides_behind_attention():
    # Qwen2-7B, 2M tokens, 256 x 80 GB, no gradient checkpointing (the paper's claim)
    plans = all_splits(llm_shape("qwen2-7b-384"), "Qwen2-7B", 1 << 21, Hardware(gpus=256, gpus_per_node=8))
    best = plans[0]
    assert best.reason is None and (best.ulysses, best.ring, best.dp) == (4, 64, 1)
    assert best.memory.total < 79.2 * GIB and best.ring_bytes > 0
    # 2M / 64 = 32k tokens per ring block: far above the overlap threshold, so only latency is exposed
    no_latency = Hardware(gpus=256, gpus_per_node=8, intra_latency_us=0, inter_latency_us=0)
    p = evaluate(llm_shape("qwen2-7b-384"), "Qwen2-7B", 1 << 21, 4, 64, no_latency)
    zero_s = p.zero_bytes / 25e9
    assert p.exposed_comm_s == pytest.approx(p.ulysses_bytes / 300e9 + zero_s)
    assert not any(q.reason is None for q in plans if q.ulysses * q.ring < 256)     # shorter SP runs out of memory
    # links: the Ulysses all-to-alls stay on NVLink; the ring (64 x 4 GPUs = 32 nodes) and ZeRO cross nodes
    assert (best.intra_bytes, best.inter_bytes) == (best.ulysses_bytes, best.ring_bytes + best.zero_bytes)
    in_node = evaluate(llm_shape("qwen2-7b-384"), "Qwen2-7B", 1 << 16, 4, 2, Hardware(gpus=8, gpus_per_node=8))
    assert in_node.inter_bytes == 0
    assert in_node.intra_bytes == in_node.ulysses_bytes + in_node.ring_bytes + in_node.zero_bytes
    # at 512k tokens DP replicas fit too, and they, not a longer ring, raise the throughput
    half = all_splits(llm_shape("qwen2-7b-384"), "Qwen2-7B", 1 << 19, Hardware(gpus=256, gpus_per_node=8))
    assert half[0].dp > 1 and half[0].tokens_per_s > max(q.tokens_per_s for q in half if q.dp == 1)


def test_cli_json_is_stable_and_an_asked_invalid_split_exits_1(capsys):
    args = ["plan", "--model", "qwen2-7b", "--seq-len", "524288", "--gpus", "64", "--gpus-per-node", "8"]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out) == ["hardware", "model", "params", "recipe", "recommended", "ring_vs_2d", "seq_len", "splits",
                           "version"]
    assert out["version"] == 3 and out["recommended"]["fits"] is True
    assert sorted(out["recommended"]["step_s"]) == ["compute", "exposed_comm", "ring_overhead", "terms", "total"]
    assert sorted(out["ring_vs_2d"]) == ["ratio", "ring", "two_d"] and out["ring_vs_2d"]["ring"]["ulysses"] == 1
    assert sorted(out["recipe"]) == ["batch", "checkpointing", "device", "frames", "fused_head", "grad_accum", "logit_tokens",
                                     "lora", "precision", "zero"]
    assert sorted(out["recommended"]) == ["comm_bytes", "dp", "fits", "memory_gib", "reason", "ring", "step_s",
                                          "tokens_per_s", "ulysses"]
    assert sorted(out["recommended"]["memory_gib"]) == ["activations", "allocator_slack", "attention_buffers",
                                                        "comm_buffers", "grad_buckets", "gradients", "logits",
                                                        "optimizer", "parameters", "runtime", "total", "vision"]
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
    last = out["stages"][-1]                                             # stage5/2048f: configured 4x16 fits ...
    best = max((p for p in last["splits"] if p["fits"]), key=lambda p: p["tokens_per_s"])
    assert last["recommended"] == best and (best["ulysses"], best["ring"]) != (4, 16)   # ... a better split exists
    first = out["stages"][0]["splits"][0]                                # the configured split comes first
    assert (first["ulysses"], first["ring"]) == (4, 2) and first["memory_gib"]["gradients"] == 0.0    # LoRA
    assert code == 0 and all(s["splits"][0]["fits"] for s in out["stages"])      # with checkpointing, as released
    assert main(["plan", "--config", str(REPO / paper), "--stage", "stage5/512f"]) == 0
    assert "stage5/512f: 262,144 tokens on 32 GPUs (79.2 GiB each), ZeRO-3, bf16, 512 frames" in capsys.readouterr().out
    assert main(["plan", "--config", str(REPO / paper), "--stage", "stage4/1M", "--gpus", "128", "--all",
                 "--json"]) == 0
    (what_if,) = json.loads(capsys.readouterr().out)["stages"]                  # the 1M step on twice the GPUs
    assert what_if["hardware"]["gpus"] == 128 and what_if["splits"][0]["dp"] == 2 and len(what_if["splits"]) > 10
    assert main(["plan", "--config", str(REPO / "config.yaml"), "--stage", "stage4/384"]) == 0   # CPU processes
    assert "stage4/384: 384 tokens on 4 CPU processes" in capsys.readouterr().out
    for argv, message in [(["--config", str(REPO / paper), "--stage", "stage9"],
                           "--stage 'stage9' is not in this config; its stages: stage4/64k"),
                          (["--model", "qwen2-7b"], "give --config CFG, or --seq-len, --gpus"),
                          (["--config", str(REPO / paper), "--zero", "2"],
                           "--zero: the config sets these for each run"),
                          (["--stage", "stage4/1M"], "--stage needs --config")]:
        assert main(["plan", *argv]) == 2                                 # a user error, named
        assert message in capsys.readouterr().err
