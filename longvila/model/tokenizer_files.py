"""The tokenizer files of a released `llm/` folder, written as the release's Transformers (4.46) writes them.

A released LongVILA `llm/` holds `vocab.json`, `merges.txt` (the BPE model), `tokenizer_config.json` (with
`added_tokens_decoder`, `additional_special_tokens` and the chat template inline), `special_tokens_map.json`
and `added_tokens.json` (the tokens past the BPE vocabulary, media tokens included), and may hold
`tokenizer.json`. Transformers 5 writes only `tokenizer.json`, a `tokenizer_config.json` in its own keys
(`extra_special_tokens`, `backend`, ...) and `chat_template.jinja`, which 4.46 does not read.
`save_release_tokenizer` writes the release's set (keeping `tokenizer.json`, which loads fastest);
both Transformers versions load the result to the same ids (tests/compat).
"""

from __future__ import annotations

import json
from pathlib import Path

from longvila.utils.io import write_text_atomic

# what Transformers 5 adds to tokenizer_config.json that 4.46 neither writes nor needs
_TF5_ONLY_KEYS = ("backend", "is_local", "local_files_only", "extra_special_tokens")
_TOKEN_FLAGS = ("lstrip", "normalized", "rstrip", "single_word")


def _dump(data) -> str:
    """JSON as Transformers 4.46 writes tokenizer files: indent 2, sorted keys, UTF-8 kept, final newline."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _token_dict(added: dict, special: bool | None = None) -> dict:
    out = {"content": added["content"], **{k: bool(added.get(k, False)) for k in _TOKEN_FLAGS}}
    if special is not None:
        out["special"] = special
    return out


def save_release_tokenizer(tokenizer, folder: str | Path) -> None:
    """Save a (Transformers 5, fast) tokenizer into `folder` with the file set of a released `llm/`."""
    folder = Path(folder)
    tokenizer.save_pretrained(folder)
    backend = tokenizer.backend_tokenizer
    backend.model.save(str(folder))                                # vocab.json + merges.txt, as 4.46 writes them
    spec = json.loads(backend.to_str())
    base = backend.get_vocab_size(with_added_tokens=False)
    added = {int(a["id"]): a for a in spec.get("added_tokens", [])}
    by_content = {a["content"]: a for a in added.values()}
    extra = getattr(tokenizer, "extra_special_tokens", None) or []
    extra = [str(t) for t in (extra.values() if isinstance(extra, dict) else extra)]   # a dict names its tokens

    write_text_atomic(folder / "added_tokens.json", _dump({a["content"]: i for i, a in added.items() if i >= base}))

    special_map = {}
    for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
        token = getattr(tokenizer, name, None)
        if token is not None:
            special_map[name] = _token_dict(by_content.get(str(token), {"content": str(token)}))
    if extra:
        special_map["additional_special_tokens"] = [_token_dict(by_content.get(t, {"content": t})) for t in extra]
    write_text_atomic(folder / "special_tokens_map.json", _dump(special_map))

    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    for key in _TF5_ONLY_KEYS:
        config.pop(key, None)
    config["additional_special_tokens"] = extra
    config["added_tokens_decoder"] = {str(i): _token_dict(a, bool(a.get("special", False)))
                                      for i, a in sorted(added.items())}
    template = folder / "chat_template.jinja"
    if getattr(tokenizer, "chat_template", None):
        config["chat_template"] = tokenizer.chat_template          # 4.46 reads the template from here only
    write_text_atomic(config_path, _dump(config))
    template.unlink(missing_ok=True)
