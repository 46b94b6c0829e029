"""Stage 4 end to end on the tiny model: 4 gloo processes (2D SP 2x2), LoRA, resume, merge, released layout."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline import train_stage4

pytestmark = pytest.mark.distributed


def test_stage4_step_trains_resumes_and_writes_a_merged_checkpoint(tiny_ckpt, tmp_path):
    from transformers import AutoModel

    from longvila.model import LongVILAForCausalLM
    from longvila.train.rope import inv_freq

    import pyarrow as pa
    import pyarrow.parquet as pq

    shards = tmp_path / "shards"
    shards.mkdir()
    rows = torch.randint(0, 5000, (6, 256), generator=torch.Generator().manual_seed(0)).tolist()
    pq.write_table(pa.table({"input_ids": pa.array(rows, type=pa.list_(pa.int32()))}), shards / "part-00000.parquet")
    cfg = tiny_ckpt.parent / "config.yaml"
    sets = ["--set", "train.stage4=[{context: '512', rope_theta: 2000000.0, max_positions: 1024, steps: 3, "
                     "grad_accum: 1, ulysses: 2, ring: 2, save_every: 1}]"]
    common = ["--config", str(cfg), *sets, "--step", "0", "--init", str(tiny_ckpt), "--shards", str(shards),
              "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out")]
    assert train_stage4.main([*common, "--stop-after", "2"]) == 0               # "preempted" after 2 steps
    assert not (tmp_path / "out").exists()
    assert train_stage4.main(common) == 0                                      # resumes at step 2
    metrics = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    model = LongVILAForCausalLM.from_pretrained(tmp_path / "out")
    saved = json.loads((tmp_path / "out/llm/config.json").read_text())
    assert saved["rope_theta"] == 2_000_000.0 and saved["max_position_embeddings"] == 1024
    assert inv_freq(model)[1] == pytest.approx(2_000_000.0 ** (-2 / 16), rel=1e-6)
    base = LongVILAForCausalLM.from_pretrained(tiny_ckpt)
    q_new = model.llm.model.layers[0].self_attn.q_proj.weight
    q_old = base.llm.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(q_new, q_old)                                       # LoRA merged into the weights
    # merged = base + (alpha / r) B @ A, with the LoRA factors of the final training checkpoint; norms and
    # embeddings are the trained ones
    trained = torch.load(tmp_path / "run/checkpoints/step-000003/engine.pt", weights_only=False)["params"]
    merged = dict(model.named_parameters())
    lora = [n[:-len(".lora_a")] for n in trained if n.endswith(".lora_a")]
    assert len(lora) == 4 * len(model.llm.model.layers)                        # q, k, v, o in every layer
    for name in lora:
        delta = trained[f"{name}.lora_b"] @ trained[f"{name}.lora_a"] * (16 / 8)    # config: alpha 16, r 8
        base_w = dict(base.named_parameters())[f"{name}.weight"]
        torch.testing.assert_close(merged[f"{name}.weight"], base_w + delta, rtol=0, atol=1e-6)
    extra = [n for n in trained if "lora_" not in n]
    assert extra and all("norm" in n or "embed_tokens" in n for n in extra)
    for name in extra:
        assert torch.equal(merged[name], trained[name]), name
    auto = AutoModel.from_pretrained(tmp_path / "out")                          # the Auto classes load it too
    assert type(auto) is LongVILAForCausalLM and torch.equal(auto.llm.model.layers[0].self_attn.q_proj.weight, q_new)
    for part in ("vision_tower", "mm_projector"):                              # carried over unchanged
        new, old = getattr(model, part).state_dict(), getattr(base, part).state_dict()
        assert new.keys() == old.keys() and all(torch.equal(new[k], old[k]) for k in new), part
    assert (tmp_path / "out/llm/tokenizer_config.json").is_file()
