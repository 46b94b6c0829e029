"""Shared pieces of the stage-5 steps: the ledger of rejected records, atomic Parquet/JSON-lines writes.

Every step accounts for each input: rows out + rows rejected (by reason) = rows in. Rejections are logged
(the first few per reason), listed in `rejects.jsonl` and counted in the step's manifest; with `strict`, the
first one raises instead.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from longvila.utils.io import atomic_path
from longvila.utils.logging import get_logger

LOG_FIRST = 20


class Rejects:
    """Counted, logged, listed rejections of one step."""

    def __init__(self, step: str, strict: bool = False) -> None:
        self.step, self.strict = step, strict
        self.counts: Counter = Counter()
        self.rows: list[dict] = []

    def add(self, reason: str, detail: str, **where) -> None:
        if self.strict:
            raise ValueError(f"{self.step}: {reason}: {detail} ({where}); run without --strict to skip and count")
        self.counts[reason] += 1
        self.rows.append({"reason": reason, "detail": detail, **where})
        if self.counts[reason] <= LOG_FIRST:
            get_logger().warning(f"{self.step}: skip ({reason}) {detail} {where}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def top(self, k: int = 3) -> str:
        """The largest reasons with their counts, e.g. 'missing_video 10, corrupt_video 2 and 1 more reason'."""
        items = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        more = len(items) - k
        tail = f" and {more} more reason{'s' if more > 1 else ''}" if more > 0 else ""
        return ", ".join(f"{reason} {n:,}" for reason, n in items[:k]) + tail

    def write(self, path: str | Path) -> None:
        write_jsonl(path, self.rows)


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_parquet(path: str | Path, rows: list[dict], schema: pa.Schema) -> None:
    """Rows (dicts) -> one Parquet file with an explicit schema, atomically."""
    table = pa.Table.from_pylist(rows, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_rows(path: str | Path) -> list[dict]:
    return pq.read_table(path).to_pylist()
