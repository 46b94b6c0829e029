"""Passkey retrieval eval: record loading, scoring by (length, depth), and a model that truly finds keys."""

from __future__ import annotations

import json

import pytest
import torch

from longvila.eval.passkey import evaluate_passkeys, load_passkeys


class _Copier(torch.nn.Module):
    """A 'model' whose LLM answers with the digits that follow 'pass key is ' in its prompt (a perfect
    retriever), or with 00000 when `blind`: the scoring must tell them apart."""

    def __init__(self, tokenizer, blind=False):
        super().__init__()
        self.tok, self.blind, self.device = tokenizer, blind, torch.device("cpu")

    def generate(self, ids, **kw):
        import re

        text = self.tok.decode(ids[0])
        key = "00000" if self.blind else re.findall(r"pass key is (\d+)", text)[0]
        new = self.tok(" " + key, return_tensors="pt", add_special_tokens=False)["input_ids"]
        return torch.cat([ids, new], dim=1)


def test_passkey_scoring_on_the_held_out_documents(small_corpus, tmp_path):
    from transformers import AutoTokenizer

    from longvila.data.tokenizer import resolve_tokenizer_dir

    tokenizer = AutoTokenizer.from_pretrained(resolve_tokenizer_dir("builtin:qwen2")[0])
    records = load_passkeys(small_corpus / "passkeys.jsonl")
    assert records and {r["target_tokens"] for r in records} <= {128, 256}
    good = evaluate_passkeys(_Copier(tokenizer), tokenizer, records)
    bad = evaluate_passkeys(_Copier(tokenizer, blind=True), tokenizer, records)
    assert good["accuracy"] == 1.0 and bad["accuracy"] == 0.0
    assert set(good["grid"]) == {str(r["target_tokens"]) for r in records}
    (tmp_path / "bad.jsonl").write_text(json.dumps({"depth": 0.5}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: not a passkey record"):
        load_passkeys(tmp_path / "bad.jsonl")


def test_passkey_runs_a_real_tiny_model(tiny_ckpt, small_corpus):
    from longvila.infer.single import load_for_inference

    model, tokenizer = load_for_inference(tiny_ckpt)
    result = evaluate_passkeys(model, tokenizer, load_passkeys(small_corpus / "passkeys.jsonl", lengths=[128]))
    assert len(result["results"]) >= 1 and 0.0 <= result["accuracy"] <= 1.0
    assert all(isinstance(r["output"], str) for r in result["results"])


def test_extension_rows_set_each_step_beside_the_model_before_it():
    """Step k's own length, measured on step k-1's model (its --next-context length) and on step k's."""
    from longvila.eval.passkey import extension_rows, length_accuracy

    first = {"own_length": 512, "grid": {"128": {"0.0": 1.0}, "512": {"0.0": 1.0, "1.0": 0.5},
                                         "1024": {"0.0": 0.0, "1.0": 0.5}}}
    second = {"own_length": 1024, "grid": {"512": {"0.0": 1.0}, "1024": {"0.0": 1.0, "1.0": 0.75}}}
    assert length_accuracy(first, 2048) is None
    rows = extension_rows([("512", first), ("1k", second)])
    assert rows == [{"context": "512", "length": 512, "before": None, "after": 0.75},
                    {"context": "1k", "length": 1024, "before": 0.25, "after": 0.875}]
