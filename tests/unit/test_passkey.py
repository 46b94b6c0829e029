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


def test_train_lengths_set_the_training_documents_apart_from_the_held_out_ones(tmp_path):
    """corpus.passkey.train_lengths: the training split's passkey documents at other lengths than the eval's."""
    import zstandard

    from longvila.config import CorpusConfig, PasskeyConfig
    from longvila.data.corpus import CHARS_PER_TOKEN, build_corpus

    cfg = CorpusConfig(num_tokens=20_000, num_chunks=1, files_per_chunk=1, heldout_tokens=0, length_scale=0.05,
                       passkey=PasskeyConfig(train_docs=10, heldout_docs=4, lengths=[128], train_lengths=[768]))
    build_corpus(cfg, tmp_path, seed=0)
    lines = zstandard.ZstdDecompressor().decompress(next(tmp_path.glob("train/*/*.zst")).read_bytes(),
                                                    max_output_size=1 << 26).decode().splitlines()
    train = [json.loads(x)["text"] for x in lines if "passkey" in json.loads(x)["meta"]]
    held = load_passkeys(tmp_path / "passkeys.jsonl")
    assert len(train) == 10 and {r["target_tokens"] for r in held} == {128}
    assert all(600 < len(t) / CHARS_PER_TOKEN < 900 for t in train)      # ~768 tokens each
    with pytest.raises(ValueError, match="corpus.passkey.train_lengths"):
        PasskeyConfig(train_lengths=[])
