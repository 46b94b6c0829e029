"""The tokenizer files of a released llm/ folder: the set, the keys Transformers 4.46 reads, a stable round trip.
(That 4.46 itself loads them to the same ids is tests/compat's job.)"""

from __future__ import annotations

import json

from transformers import AutoTokenizer

from longvila.data.tokenizer import resolve_tokenizer_dir
from longvila.model.conversation import ADDED_TOKENS, add_media_tokens
from longvila.model.tokenizer_files import save_release_tokenizer

RELEASED = ["added_tokens.json", "merges.txt", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
            "vocab.json"]


def test_release_file_set_and_a_byte_identical_round_trip(tmp_path):
    tok = AutoTokenizer.from_pretrained(resolve_tokenizer_dir("builtin:qwen2")[0])
    ids = add_media_tokens(tok)
    save_release_tokenizer(tok, tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == RELEASED      # no chat_template.jinja
    cfg = json.loads((tmp_path / "a/tokenizer_config.json").read_text())
    assert not {"extra_special_tokens", "backend", "is_local"} & set(cfg)
    assert set(ADDED_TOKENS) <= set(cfg["additional_special_tokens"]) and cfg["chat_template"].strip()
    assert cfg["added_tokens_decoder"][str(ids["<vila/video>"])] == {
        "content": "<vila/video>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
        "special": True}
    added = json.loads((tmp_path / "a/added_tokens.json").read_text())
    assert {t: added[t] for t in ADDED_TOKENS} == ids and min(added.values()) == tok.vocab_size
    assert (tmp_path / "a/merges.txt").read_text().startswith("#version: 0.2\n")

    again = AutoTokenizer.from_pretrained(tmp_path / "a")
    n = len(again)
    assert add_media_tokens(again) == ids and len(again) == n == len(tok)
    save_release_tokenizer(again, tmp_path / "b")
    for name in RELEASED:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
