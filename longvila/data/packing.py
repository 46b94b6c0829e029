"""Packing math: documents -> exact `seq_len` rows, the length-upsampling sampler, a seeded shuffle buffer.

No I/O here (see `shards.py`). Everything is deterministic given the seed and the input order.

Packing joins documents with one EOS token after each and cuts the stream into rows of exactly `seq_len`
tokens; a document that crosses a row boundary is split, and each row records its spans
(source, doc_id, start, end, doc_offset) in row coordinates. Token conservation holds by construction:
tokens in rows + tokens left in the remainder = document tokens + one EOS per document.

Length upsampling (Fu et al. 2024, "Data Engineering for Scaling Language Models to 128K Context"):
documents estimated shorter than `short_threshold` tokens are dropped with probability 1 - keep_ratio, so
long documents make up more of each source's share of the token budget.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np

from longvila.config import PackConfig
from longvila.config.sources import SOURCES

Span = tuple[str, str, int, int, int]  # (source, doc_id, start, end, doc_offset); start/end in piece/row coords


def uniform_hash(seed: int, kind: str, key: str) -> float:
    """A uniform number in [0, 1) that depends only on (seed, kind, key): order- and batch-independent."""
    digest = hashlib.blake2b(f"{seed}\x00{kind}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class Packer:
    """Concatenates pieces of tokens and cuts exact `seq_len` rows, keeping document spans."""

    def __init__(self, seq_len: int, eos_id: int) -> None:
        self.seq_len = seq_len
        self.eos_id = eos_id
        self._pieces: list[np.ndarray] = []
        self._spans: list[Span] = []
        self._fill = 0

    def add_document(self, source: str, doc_id: str, ids: np.ndarray) -> list[tuple[np.ndarray, list[Span]]]:
        """Append one document followed by EOS; return the rows completed by it."""
        tokens = np.empty(len(ids) + 1, dtype=np.int32)
        tokens[:-1] = ids
        tokens[-1] = self.eos_id
        return self.add_piece(tokens, [(source, doc_id, 0, len(ids), 0)])

    def add_piece(self, tokens: np.ndarray, spans: list[Span]) -> list[tuple[np.ndarray, list[Span]]]:
        """Append already-joined tokens whose spans are given in piece coordinates (e.g. a remainder)."""
        rows = []
        pos = 0
        while pos < len(tokens):
            take = min(self.seq_len - self._fill, len(tokens) - pos)
            self._pieces.append(tokens[pos:pos + take])
            for source, doc_id, s, e, off in spans:
                lo, hi = max(s, pos), min(e, pos + take)
                if lo < hi:
                    self._spans.append((source, doc_id, self._fill + lo - pos, self._fill + hi - pos, off + lo - s))
            self._fill += take
            pos += take
            if self._fill == self.seq_len:
                rows.append((np.concatenate(self._pieces), self._spans))
                self._pieces, self._spans, self._fill = [], [], 0
        return rows

    def remainder(self) -> tuple[np.ndarray, list[Span]]:
        """The tokens that did not fill a row (fewer than seq_len), with their spans."""
        ids = np.concatenate(self._pieces) if self._pieces else np.zeros(0, np.int32)
        return ids, list(self._spans)


class Sampler:
    """Decides which documents are packed: length upsampling and the per-source / global token budget.

    Args:
        cfg: packing config (mode, keep_ratio, short_threshold, chars_per_token, mix, seed).
        budget_tokens: tokens this packer may use in all (None = no budget).
    """

    def __init__(self, cfg: PackConfig, budget_tokens: float | None) -> None:
        self.cfg = cfg
        self.budgets: dict[str | None, float] = {}
        if budget_tokens is not None and cfg.upsample == "per_source":
            total = sum(cfg.mix.values())
            self.budgets = {s: budget_tokens * cfg.mix.get(s, 0.0) / total for s in SOURCES}
        elif budget_tokens is not None:
            self.budgets = {None: budget_tokens}
        self.used: Counter = Counter()

    def _key(self, source: str) -> str | None:
        return source if self.cfg.upsample == "per_source" else None

    def over_budget(self, source: str) -> bool:
        """Whether `source`'s share of the budget (or the global budget) is already spent."""
        key = self._key(source)
        return bool(self.budgets) and self.used[key] >= self.budgets[key]

    def drops_short(self, doc_id: str, num_chars: int) -> bool:
        """Length upsampling, decided from the text length alone (before tokenizing) and the doc id's hash."""
        cfg = self.cfg
        return (cfg.upsample != "none" and num_chars / cfg.chars_per_token < cfg.short_threshold
                and uniform_hash(cfg.seed, "keep", doc_id) >= cfg.keep_ratio)

    def charge(self, source: str, num_tokens: int) -> bool:
        """Charge an accepted document's tokens to its budget; False (and no charge) if it is already spent."""
        if self.over_budget(source):
            return False
        self.used[self._key(source)] += num_tokens
        return True


class ShuffleBuffer:
    """A seeded shuffle over a stream with bounded memory: holds `size` items, emits a random one per push."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size = size
        self.rng = rng
        self.items: list = []

    def push(self, item):
        """Add `item`; once full, return a uniformly chosen held item (else None)."""
        if len(self.items) < self.size:
            self.items.append(item)
            return None
        i = int(self.rng.integers(self.size))
        out, self.items[i] = self.items[i], item
        return out

    def drain(self):
        """The held items in random order; the buffer is empty afterwards."""
        items, self.items = self.items, []
        for i in self.rng.permutation(len(items)):
            yield items[i]
