"""Parquet shards of packed rows: the row schema, a streaming writer, readers, and the remainder file.

Row schema (one row = one training sequence):
    input_ids  list<int32>   exactly seq_len token ids
    sources    list<struct<source: string, doc_id: string, start: int32, end: int32, doc_offset: int64>>
               the documents the row is made of: tokens [start, end) of the row are tokens
               [doc_offset, doc_offset + end - start) of document `doc_id`; the EOS after a document
               belongs to no span.

Files are `part-00000.parquet`, ... (zstd, row groups of about `row_group_mb`), readable by pyarrow and by
`datasets.load_dataset("parquet", data_files="<folder>/part-*.parquet")` (name the parts: the folder also
holds `manifest.json` and `remainder.arrow`). The tail that does not fill a row is kept in `remainder.arrow`
(Arrow IPC, one row of the same schema, shorter than seq_len).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from longvila.data.packing import Span

SPAN_TYPE = pa.struct([("source", pa.string()), ("doc_id", pa.string()), ("start", pa.int32()),
                       ("end", pa.int32()), ("doc_offset", pa.int64())])
ROW_SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("sources", pa.list_(SPAN_TYPE))])
REMAINDER_FILE = "remainder.arrow"
MAX_GROUP_ROWS = 4096


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def rows_to_table(rows: list[tuple[np.ndarray, list[Span]]]) -> pa.Table:
    """Arrow table of (input_ids, spans) rows."""
    lengths = np.fromiter((len(ids) for ids, _ in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    assert offsets[-1] < 2**31, "a row group must hold < 2**31 tokens (row_group_mb < 8192)"
    values = np.concatenate([ids for ids, _ in rows]) if rows else np.zeros(0, np.int32)
    ids_arr = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values, pa.int32()))
    spans = [[dict(zip(("source", "doc_id", "start", "end", "doc_offset"), s)) for s in row_spans]
             for _, row_spans in rows]
    return pa.Table.from_arrays([ids_arr, pa.array(spans, type=pa.list_(SPAN_TYPE))], schema=ROW_SCHEMA)


class ShardWriter:
    """Writes rows into `part-NNNNN.parquet` files in `out_dir`, a row group at a time.

    Args:
        out_dir: an existing folder (the caller makes it atomic as a whole).
        seq_len: tokens per row; sets how many rows make a row group / a part.
        row_group_mb, part_mb: target sizes (uncompressed token bytes).
        first_part: index of the first part file written.
    """

    def __init__(self, out_dir: Path, seq_len: int, row_group_mb: int, part_mb: int, first_part: int = 0):
        self.out_dir = Path(out_dir)
        # Capped in rows too: short rows would otherwise buffer many Python span objects per group.
        self.rows_per_group = max(1, min(MAX_GROUP_ROWS, (row_group_mb << 20) // (4 * seq_len)))
        part_rows = (part_mb << 20) // (4 * seq_len)
        self.groups_per_part = max(1, -(-part_rows // self.rows_per_group))
        self.part_index = first_part
        self.parts: list[dict] = []
        self._rows: list = []
        self._writer: pq.ParquetWriter | None = None
        self._groups = 0
        self._part_rows = 0

    def add(self, rows: list[tuple[np.ndarray, list[Span]]]) -> None:
        self._rows.extend(rows)
        while len(self._rows) >= self.rows_per_group:
            self._flush(self._rows[: self.rows_per_group])
            self._rows = self._rows[self.rows_per_group:]

    def _flush(self, rows) -> None:
        if self._writer is None:
            path = self.out_dir / part_name(self.part_index)
            self._writer = pq.ParquetWriter(path, ROW_SCHEMA, compression="zstd", write_statistics=False)
        self._writer.write_table(rows_to_table(rows), row_group_size=len(rows))
        self._groups += 1
        self._part_rows += len(rows)
        if self._groups >= self.groups_per_part:
            self._close_part()

    def _close_part(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self.parts.append({"file": part_name(self.part_index), "rows": self._part_rows})
            self.part_index += 1
        self._writer, self._groups, self._part_rows = None, 0, 0

    def close(self) -> list[dict]:
        """Flush what is buffered, close the open part; returns [{file, rows}] of the parts written."""
        if self._rows:
            self._flush(self._rows)
            self._rows = []
        self._close_part()
        return self.parts


def write_remainder(out_dir: Path, ids: np.ndarray, spans: list[Span]) -> None:
    table = rows_to_table([(ids, spans)])
    with pa.OSFile(str(Path(out_dir) / REMAINDER_FILE), "wb") as sink, pa.ipc.new_file(sink, ROW_SCHEMA) as w:
        w.write_table(table)


def read_remainder(folder: Path) -> tuple[np.ndarray, list[Span]]:
    with pa.memory_map(str(Path(folder) / REMAINDER_FILE)) as src:
        table = pa.ipc.open_file(src).read_all()
    ids = np.asarray(table.column("input_ids")[0].values.to_numpy(zero_copy_only=False), dtype=np.int32)
    spans = [(s["source"], s["doc_id"], s["start"], s["end"], s["doc_offset"])
             for s in table.column("sources")[0].as_py()]
    return ids, spans

