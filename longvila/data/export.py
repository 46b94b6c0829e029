"""Export packed shards to the original LongVILA stage-4 trainer's input: JSON lines, `text` = token ids."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from longvila.utils.io import atomic_path


def export_jsonl(shards: str | Path, out: str | Path) -> int:
    """Write `{"text": [ids]}` per row of `shards/part-*.parquet` to `out` (atomically); return the row count.

    ValueError (and nothing written) when the folder holds no part file or only empty ones."""
    if not Path(shards).is_dir():
        raise ValueError(f"{shards}: no such folder; give a packed data set (longvila pack's --out, or "
                         "results/pack_shards/<ctx>)")
    parts = sorted(Path(shards).glob("part-*.parquet"))
    if not parts:
        raise ValueError(f"{shards} holds no part-*.parquet; run pack_shards (or longvila pack) first")
    rows = 0
    with atomic_path(out) as tmp, open(tmp, "w", encoding="ascii") as f:
        for path in parts:
            pf = pq.ParquetFile(path)
            for g in range(pf.num_row_groups):
                for ids in pf.read_row_group(g, columns=["input_ids"]).column(0).to_pylist():
                    f.write('{"text": [' + ", ".join(map(str, ids)) + "]}\n")
                    rows += 1
        if not rows:  # raised inside: the temporary file goes, `out` is not written
            raise ValueError(f"{shards}: its part-*.parquet files hold 0 rows; nothing to export. Repack it: "
                             "longvila pack and pack_shards say why a pack makes no row")
    return rows
