"""The warm start (model.warm_start): its rows, its restricted-softmax loss, its training, its rule CLI."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
import yaml
from transformers import AutoTokenizer

from longvila.config import WarmStartConfig, WarmStartPhase
from longvila.data.corpus import load_text_pools
from longvila.data.tokenizer import resolve_tokenizer_dir
from longvila.train.warm_start import RetrievalRows, train_warm_start, warm_loss
from tests.conftest import REPO


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_tokenizer_dir("builtin:qwen2")[0])


@pytest.fixture(scope="module")
def rows(tokenizer):
    pool = load_text_pools()["plays"][:40_000]
    return RetrievalRows(tokenizer, pool, WarmStartConfig(copy_gap=16, passkey_lengths=[64, 96]))


@pytest.fixture(scope="module")
def llm():
    from transformers import Qwen2ForCausalLM

    from longvila.model import build_config

    torch.manual_seed(0)
    return Qwen2ForCausalLM(build_config("tiny").llm_config())


def lut_of(rows, llm):
    lut = torch.full((llm.config.vocab_size,), -100, dtype=torch.long)
    lut[rows.vocab] = torch.arange(len(rows.vocab))
    return lut


def test_copy_rows_repeat_their_digits_after_a_gap(rows, tokenizer):
    gaps = set()
    for _ in range(40):
        ids, first = rows.copy_row()
        n = len(ids) - 1 - (first - 1)                       # the second half: " " + digits, before the EOS
        assert ids[-1] == rows.eos and ids[first - 1] == rows.space
        assert ids[first - 1:-1] == ids[:n], tokenizer.decode(ids)
        assert re.fullmatch(r" \d{5,12}", tokenizer.decode(ids[:n]))
        gaps.add(first - 1 - n)
    assert min(gaps) >= 0 and max(gaps) <= 16 and len(gaps) > 5       # the gap varies: no fixed offset to learn


def test_passkey_rows_answer_with_their_key(rows, tokenizer):
    for _ in range(20):
        ids, first = rows.passkey_row()
        answer = tokenizer.decode(ids[first:-1])
        key = re.fullmatch(r" (\d{5})\.", answer).group(1)
        text = tokenizer.decode(ids[:first])
        assert text.endswith("What is the pass key? The pass key is") and f"The pass key is {key}." in text
        assert ids[-1] == rows.eos


def test_batch_masks_and_the_vocabulary_cover_every_row(rows):
    ids, target, answer = rows.batch(12, 0.5)
    assert ids.shape[1] - 1 == target.shape[1] == answer.shape[1]
    assert not (answer & ~target).any() and answer.sum(1).min() >= 2        # answers are supervised targets
    assert set(ids.flatten().tolist()) <= set(rows.vocab.tolist())
    for _ in range(30):
        assert set(rows.copy_row()[0] + rows.passkey_row()[0]) <= set(rows.vocab.tolist())
    # a padded position is never a target
    lengths = target.sum(1) + 1
    assert all((ids[i, lengths[i]:] == rows.eos).all() for i in range(len(ids)))


def test_loss_is_the_softmax_over_the_rows_vocabulary(rows, llm):
    ids, target, answer = rows.batch(4, 0.5)
    lut = lut_of(rows, llm)
    with torch.no_grad():
        logits = llm(input_ids=ids).logits[:, :-1][..., rows.vocab]       # the full head, restricted by hand
        classes = lut[ids[:, 1:]]
        per = F.cross_entropy(logits.flatten(0, 1), classes.flatten(), reduction="none").view_as(classes)
        got_answer = warm_loss(llm, rows, ids, target, answer, "answer", lut)
        got_both = warm_loss(llm, rows, ids, target, answer, "all_and_answer", lut)
    assert torch.allclose(got_answer, per[answer].mean(), atol=1e-5)
    assert torch.allclose(got_both, per[target].mean() + per[answer].mean(), atol=1e-5)
    assert got_both > got_answer > 0


def test_training_lowers_the_answer_loss_and_keeps_every_step(rows, llm):
    held = RetrievalRows(rows.tokenizer, rows.pool, rows.cfg, seed=99).batch(8, 0.5)
    lut = lut_of(rows, llm)
    model = type(llm)(llm.config)
    model.load_state_dict(llm.state_dict())
    with torch.no_grad():
        before = warm_loss(model, rows, *held, "answer", lut).item()
    cfg = replace(rows.cfg, phases=[WarmStartPhase(steps=12, rows=8), WarmStartPhase(steps=3, rows=2, lr=1e-3,
                                                                                   loss="all_and_answer")])
    seen = []
    history = train_warm_start(model, rows, cfg, progress=False, log=seen.append)
    with torch.no_grad():
        after = warm_loss(model, rows, *held, "answer", lut).item()
    assert after < before - 1.0, (before, after)       # ln(20,625) = 9.9 at random; the answer digits come first
    assert [h["step"] for h in history] == list(range(1, 16)) and seen == history
    assert [h["phase"] for h in history] == [0] * 12 + [1] * 3 and history[0]["lr"] == 3e-3 / 10
    assert not model.training


@pytest.mark.parametrize("make, key", [
    (lambda: WarmStartPhase(loss="all"), "model.warm_start.phases[].loss"),
    (lambda: WarmStartPhase(copy_share=1.5), "copy_share"),
    (lambda: WarmStartConfig(copy_digits=[5]), "model.warm_start.copy_digits"),
    (lambda: WarmStartConfig(passkey_lengths=[16]), "model.warm_start.passkey_lengths"),
    (lambda: WarmStartConfig(phases=[]), "model.warm_start.phases"),
])
def test_bad_settings_name_the_key(make, key):
    with pytest.raises(ValueError, match=re.escape(key)):
        make()


def test_rule_cli_writes_a_model_that_starts_stage_4(tmp_path):
    from transformers import AutoModel

    from pipeline import init_model, resolve_config, warm_start

    raw = yaml.safe_load((REPO / "tests" / "workflow" / "config.yaml").read_text())
    cfg_path = tmp_path / "config.yaml"
    b64 = base64.b64encode(json.dumps(raw).encode()).decode()
    assert resolve_config.main(["--from-b64", b64, "--out", str(cfg_path)]) == 0
    init, out, runs = tmp_path / "init", tmp_path / "warm", tmp_path / "runs"
    assert init_model.main(["--config", str(cfg_path), "--out", str(init)]) == 0
    assert warm_start.main(["--config", str(cfg_path), "--init", str(init), "--run-dir", str(runs),
                            "--out", str(out)]) == 0
    model = AutoModel.from_pretrained(out)
    assert model.llm.config.rope_parameters["rope_theta"] == 1e4 and model.llm.config.max_position_embeddings == 4096
    assert (out / "llm" / "tokenizer_config.json").is_file() and (out / "vision_tower").is_dir()
    summary = json.loads((out / "summary.json").read_text())
    metrics = [json.loads(line) for line in (runs / "metrics.jsonl").read_text().splitlines()]
    assert summary["steps"] == len(metrics) == 5 and summary["vocab"] > 10_000
    before = AutoModel.from_pretrained(init)
    assert not torch.equal(before.llm.lm_head.weight, model.llm.lm_head.weight)           # the LLM trained
    assert torch.equal(before.mm_projector.layers[1].weight, model.mm_projector.layers[1].weight)  # the rest did not
    # without model.warm_start the rule says what to do (exit 2), and writes nothing
    assert warm_start.main(["--config", str(cfg_path), "--set", "model.warm_start=null", "--init", str(init),
                            "--run-dir", str(runs), "--out", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "none").exists()
