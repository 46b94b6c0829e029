"""Training configuration is checked before anything runs: every violation names the field and the fix."""

from __future__ import annotations

import pytest

from longvila.config import load_config_file
from longvila.plan.check import check_training
from tests.conftest import REPO


def _cfg(path="config.yaml", **overrides):
    return load_config_file(REPO / path, [f"{k}={v}" for k, v in overrides.items()])


def test_shipped_configs_validate_with_the_papers_batch_arithmetic():
    plan = {row["run"]: row for row in check_training(_cfg("workflow/configs/paper.yaml"))}
    assert plan["stage4/1M"]["sp"] == "4x16" and plan["stage4/1M"]["tokens_per_sample"] == 1_048_576
    assert all(plan[f"stage5/{f}f"]["global_batch"] == 128 for f in (256, 512, 1024, 2048))
    assert [row["run"] for row in check_training(_cfg())] == ["stage4/384", "stage4/768", "stage5/8f"]


@pytest.mark.parametrize("path, overrides, message", [
    # the release's SP 14 for Qwen2-7B (28 query / 4 KV heads)
    ("workflow/configs/paper.yaml", {"train.stage5": "[{frames: 256, nodes: 1, ulysses: 14, ring: 1}]",
                                     "train.cluster.gpus_per_node": 14,
                                     "train.stage4": "[{context: 64k, ulysses: 2, max_positions: 131072}]"},
     r"ulysses=14 cannot split 28 query / 4 KV heads; valid Ulysses degrees: \[1, 2, 4, 28\]"),
    ("workflow/configs/paper.yaml", {"train.stage5": "[{frames: 256, nodes: 4, ulysses: 4, ring: 7}]"},
     "world_size=32 is not a multiple of ulysses x ring = 28"),
    ("config.yaml", {"train.stage4": "[{context: 4k}]"}, r"'4k' is not in pack.contexts"),
    ("config.yaml", {"train.cluster.cpu_processes": 12, "train.stage4": "[{context: 1k, ulysses: 2, ring: 6}]"},
     r"seq_len 1024 is not a multiple of 24 \(zigzag over SP 12\)"),
    ("config.yaml", {"train.stage4": "[{context: 1k, max_positions: 256}]"}, "must be >= the context's seq_len 1024"),
    ("config.yaml", {"train.stage5": "[{frames: 2, ulysses: 2, ring: 2}]"}, "2 frames cannot give each of the 4 SP"),
    ("workflow/configs/paper.yaml", {"train.stage4": "[{context: 64k, ulysses: 28, ring: 1, nodes: 4, max_positions: 131072}]"},
     "28 exceeds gpus_per_node 8"),
    ("config.yaml", {"train.stage5": "[{frames: 8, init_from: 64k}]"},
     r"train.stage5\[0\].init_from': '64k' is not a stage-4 context; use one of \['384', '768'\]"),
    ("config.yaml", {"train.engine": "megatron"}, r"train.engine': use one of \('torch', 'deepspeed'\)"),
])
def test_bad_training_configs_name_the_field_and_the_fix(path, overrides, message):
    with pytest.raises(ValueError, match=message):
        check_training(_cfg(path, **overrides))


def test_a_run_the_planner_says_does_not_fit_is_refused_before_anything_is_submitted(caplog):
    # the paper's 256k stage-4 step without gradient checkpointing: 127 GiB per GPU predicted (28.5 with it)
    step = "[{context: 256k, nodes: 2, ulysses: 4, ring: 4, max_positions: 262144, gradient_checkpointing: %s}]"
    paper = "workflow/configs/paper.yaml"
    s5 = "[{frames: 256, nodes: 4, ulysses: 4, ring: 2, gradient_checkpointing: true}]"   # from this one step
    with pytest.raises(ValueError, match=r"config 'train.stage4\[0\]': predicted peak 1\d\d\.\d GiB per rank > "
                                         r"cluster.gpu_mem_gib 79.2 \(largest: activations .*set gradient_checkpointing: "
                                         r"true.*longvila plan --config CFG --stage stage4/256k.*memory_check: warn"):
        check_training(_cfg(paper, **{"train.stage4": step % "false", "train.stage5": s5}))
    (row,) = check_training(_cfg(paper, **{"train.stage4": step % "true", "train.stage5": s5}))[:1]
    assert row["memory_gib"] < row["limit_gib"] == 79.2 and row["memory_breakdown_gib"]["activations"] > 0
    with caplog.at_level("WARNING"):
        rows = check_training(_cfg(paper, **{"train.stage4": step % "false", "train.stage5": s5,
                                             "train.cluster.memory_check": "warn"}))
    assert rows[0]["memory_gib"] > 79.2 and "predicted peak" in caplog.text
    with pytest.raises(ValueError, match="predicted peak .* GiB per rank > cluster.gpu_mem_gib 24"):
        check_training(_cfg(paper, **{"train.stage4": step % "true", "train.stage5": s5, "train.cluster.gpu_mem_gib": 24}))


def test_the_checks_at_dag_build_import_neither_torch_nor_transformers():
    """check_training runs in every Snakemake process (each SLURM job too): it reads head counts from
    longvila.shapes and does ParallelDims arithmetic without torch (several seconds per process otherwise)."""
    import subprocess
    import sys

    code = ("import sys; from longvila.config import load_config_file; from longvila.plan.check import "
            "check_training; check_training(load_config_file('workflow/configs/paper.yaml')); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("size", ["tiny", "qwen2-1.5b-384", "qwen2-7b-384", "qwen2-7b-448"])
def test_plain_shapes_match_the_transformers_configs(size):
    from longvila.model.sizes import build_config
    from longvila.shapes import llm_shape

    llm, shape = build_config(size).llm_config(), llm_shape(size)
    assert (shape.layers, shape.hidden, shape.heads, shape.kv_heads, shape.intermediate, shape.vocab, shape.tied) == (
        llm.num_hidden_layers, llm.hidden_size, llm.num_attention_heads, llm.num_key_value_heads,
        llm.intermediate_size, llm.vocab_size, llm.tie_word_embeddings)
    assert shape.head_dim == llm.hidden_size // llm.num_attention_heads
