"""Training building blocks: LoRA (exact merge) and the SP-aware sampler (shared order, resumable)."""

from __future__ import annotations

import itertools

import pytest
import torch

from longvila.model import build_config
from longvila.train.lora import LoRALinear, apply_lora, merge_lora
from longvila.train.sampler import SPSampler


def test_lora_starts_as_identity_trains_only_adapters_and_merges_exactly():
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    llm = Qwen2ForCausalLM(build_config("tiny").llm_config()).double()
    ids = torch.randint(0, 1000, (1, 12))
    before = llm(input_ids=ids).logits
    base = {n: p.detach().clone() for n, p in llm.named_parameters()}
    assert apply_lora(llm, r=4, alpha=8) == 4 * llm.config.num_hidden_layers
    assert torch.equal(llm(input_ids=ids).logits, before)                  # B = 0: unchanged
    trainable = {n for n, p in llm.named_parameters() if p.requires_grad}
    assert all("lora_" in n or "norm" in n or "embed_tokens" in n for n in trainable)
    assert not any(n.endswith("base.weight") for n in trainable)
    for m in llm.modules():                                               # pretend training moved B
        if isinstance(m, LoRALinear):
            torch.nn.init.normal_(m.lora_b, std=0.02)
    lora_out = llm(input_ids=ids).logits
    deltas = {n.replace(".base", ""): m.delta().detach().clone() for n, m in llm.named_modules()
              if isinstance(m, LoRALinear)}
    assert merge_lora(llm) == len(deltas)
    torch.testing.assert_close(llm(input_ids=ids).logits, lora_out, rtol=0, atol=1e-10)
    for name, delta in deltas.items():                                    # merged = base + (alpha/r) B A
        assert torch.equal(llm.get_submodule(name).weight.detach(), base[f"{name}.weight"] + delta)
    with pytest.raises(ValueError, match="no nn.Linear named"):
        apply_lora(llm, targets=("nope",))


def test_sampler_is_shared_within_sp_disjoint_across_dp_and_reshuffles():
    a = [list(itertools.islice(SPSampler(10, dp_degree=2, dp_rank=r, seed=3), 10)) for r in range(2)]
    first_epoch = a[0][:5] + a[1][:5]
    assert sorted(first_epoch) == list(range(10))                         # DP replicas split the epoch
    assert a[0][:5] != a[0][5:]                                           # a new order every epoch
    again = list(itertools.islice(SPSampler(10, dp_degree=2, dp_rank=0, seed=3), 10))
    assert again == a[0]                                                  # every SP rank computes the same


def test_sampler_resumes_mid_epoch_exactly():
    full = list(itertools.islice(SPSampler(7, seed=1), 20))
    s = SPSampler(7, seed=1)
    it = iter(s)
    head = [next(it) for _ in range(9)]
    state = s.state_dict()
    resumed = SPSampler(7, seed=1)
    resumed.load_state_dict(state)
    assert head + list(itertools.islice(iter(resumed), 11)) == full
    with pytest.raises(ValueError, match="resume with the same data and topology"):
        SPSampler(8, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="cannot feed 4 data-parallel replicas"):
        SPSampler(3, dp_degree=4)


def test_rope_base_is_raised_and_saved(tmp_path):
    import json

    from longvila.model import LongVILAForCausalLM
    from longvila.train.rope import inv_freq, set_rope_base

    model = LongVILAForCausalLM(build_config("tiny"))
    set_rope_base(model, 207_112_184, 262_144)
    d = model.llm.config.hidden_size // model.llm.config.num_attention_heads
    want = 1.0 / (207_112_184 ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    torch.testing.assert_close(inv_freq(model).double(), want, rtol=1e-6, atol=0)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "llm/config.json").read_text())
    assert saved["rope_theta"] == 207_112_184 and saved["max_position_embeddings"] == 262_144
    with pytest.raises(ValueError, match="must be positive"):
        set_rope_base(model, 0, 10)
