"""Streaming reader of SlimPajama-format JSON lines (zstd, gzip or plain) with per-record accounting.

What: `read_documents(path, name, skips)` yields `Document`s one at a time (the file is never loaded whole)
and records the file's format, size, sha256 and record count. The format is read from the file's first
bytes, not its name (`longvila/data/formats.py`): zstd frames (SlimPajama's `.jsonl.zst`), a gzip stream
(`.jsonl.gz`) or plain UTF-8 JSON lines (`.jsonl`); a byte-order mark before the first record is ignored.
Why: the real corpus is 895 GB; and every input record must be accounted for — a bad record is either an
error (strict) or a counted, logged skip. A file that is none of these formats is an error, not a skip
(`formats.check_inputs` refuses it before any work).

Skip reasons (the manifest's `skipped` keys):
    blank_line       an empty line between records
    invalid_utf8     bytes that are not UTF-8 (or a JSON string with lone surrogates)
    malformed_json   a line that is not a JSON object
    missing_text     no "text" field
    non_string_text  "text" is not a string
    empty_text       "text" is empty or whitespace only
    unknown_source   meta.redpajama_set_name missing or not one of the 7 SlimPajama sources
    truncated_file   the file ends inside a zstd frame or gzip stream, or is empty (records in a lost tail
                     cannot be counted)
    corrupt_file     the zstd or gzip data is not decodable from some point on
The last two are file-level: they are also recorded on the file's `InputFile.skipped`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import orjson
import zstandard

from longvila.config.sources import SOURCES
from longvila.data.formats import BOM, SNIFF_BYTES, detect_format
from longvila.utils.logging import get_logger

SKIP_REASONS = ("blank_line", "invalid_utf8", "malformed_json", "missing_text", "non_string_text", "empty_text",
                "unknown_source", "truncated_file", "corrupt_file")
_SOURCE_SET = frozenset(SOURCES)
_READ_BYTES = 1 << 20


@dataclass
class Document:
    doc_id: str
    """`<file name>:<line>` (1-based line), stable across runs and machines."""
    source: str
    text: str


@dataclass
class InputFile:
    """What the manifest records about one input file."""

    name: str
    bytes: int = 0
    sha256: str = ""
    records: int = 0
    format: str = ""
    """What the bytes hold: 'zstd', 'gzip', 'jsonl' or 'empty' (whatever the name says)."""
    skipped: dict | None = None
    """A file-level skip: {"reason": truncated_file | corrupt_file, "line": where reading stopped, "detail"}."""

    def as_dict(self) -> dict:
        """The manifest's entry (`skipped` only when the file had a file-level problem)."""
        entry = {"name": self.name, "format": self.format, "bytes": self.bytes, "sha256": self.sha256,
                 "records": self.records}
        return entry if self.skipped is None else {**entry, "skipped": self.skipped}


@dataclass
class SkipLog:
    """Counts bad records by reason and logs each (up to `log_limit` per reason) with file:line.

    With `strict`, the first bad record raises a ValueError instead.
    """

    strict: bool = False
    log_limit: int = 50
    counts: Counter = field(default_factory=Counter)

    def skip(self, reason: str, where: str, detail: str) -> None:
        assert reason in SKIP_REASONS, reason
        if self.strict:
            raise ValueError(f"{where}: bad input ({reason}): {detail}. Fix or remove the record, or rerun "
                             "without --strict (pack.strict: false) to count and skip such records")
        self.counts[reason] += 1
        n = self.counts[reason]
        if n <= self.log_limit:
            get_logger().warning(f"skip {reason} at {where}: {detail}")
        elif n == self.log_limit + 1:
            get_logger().warning(f"skip {reason}: more than {self.log_limit}; further ones are only counted")


class _Raw:
    """The file's bytes as they are read: each byte passes through the sha256 and the size count exactly once."""

    def __init__(self, f, input_file: InputFile, hasher) -> None:
        self.f, self.input_file, self.hasher = f, input_file, hasher

    def read(self, size: int = _READ_BYTES) -> bytes:
        chunk = self.f.read(size)
        self.hasher.update(chunk)
        self.input_file.bytes += len(chunk)
        return chunk

    def drain(self) -> None:
        """Read the rest (after a decoding error), so that size and hash describe the file as it is."""
        while self.read():
            pass


def _zstd_blocks(raw: _Raw) -> Iterator[bytes]:
    """Decompressed bytes of every zstd frame; raises EOFError when the file ends mid-frame."""
    dctx = zstandard.ZstdDecompressor()
    obj = None
    while chunk := raw.read():
        while chunk:
            if obj is None:
                obj = dctx.decompressobj()
            out = obj.decompress(chunk)
            if out:
                yield out
            if obj.eof:
                chunk, obj = obj.unused_data, None
            else:
                chunk = b""
    if obj is not None:
        raise EOFError("file ends inside a zstd frame")


def _gzip_blocks(raw: _Raw) -> Iterator[bytes]:
    """Decompressed bytes of the gzip stream (all its members); EOFError when it ends early."""
    with gzip.GzipFile(fileobj=raw, mode="rb") as g:
        while block := g.read(_READ_BYTES):
            yield block


def _plain_blocks(raw: _Raw) -> Iterator[bytes]:
    while chunk := raw.read():
        yield chunk


def _empty(raw: _Raw) -> Iterator[bytes]:
    raise EOFError("empty file (0 bytes): an interrupted download?")
    yield b""  # a generator, like the others


_BLOCKS = {"zstd": _zstd_blocks, "gzip": _gzip_blocks, "jsonl": _plain_blocks, "empty": _empty}
_CORRUPT = (zstandard.ZstdError, gzip.BadGzipFile, zlib.error)


def _parse_slow(line: bytes, where: str, skips: SkipLog):
    """The record orjson refused: classify why (or accept what the stdlib parser reads, e.g. NaN fields)."""
    try:
        text_line = line.decode("utf-8")
    except UnicodeDecodeError as e:
        skips.skip("invalid_utf8", where, str(e))
        return None
    try:
        rec = json.loads(text_line)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, a >4300-digit int, nesting too deep
        skips.skip("malformed_json", where, f"{type(e).__name__}: {str(e)[:200]}")
        return None
    text = rec.get("text") if isinstance(rec, dict) else None
    if isinstance(text, str):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            skips.skip("invalid_utf8", where, f"lone surrogate in text: {e}")
            return None
    return rec


def _parse(line: bytes, where: str, skips: SkipLog) -> Document | None:
    if not line.strip():
        skips.skip("blank_line", where, "empty line")
        return None
    try:
        rec = orjson.loads(line)  # strict UTF-8, no lone surrogates; 3x the stdlib's speed
    except orjson.JSONDecodeError:
        rec = _parse_slow(line, where, skips)
        if rec is None:
            return None
    if not isinstance(rec, dict):
        skips.skip("malformed_json", where, f"a JSON {type(rec).__name__}, not an object")
        return None
    if "text" not in rec:
        skips.skip("missing_text", where, f"keys {sorted(rec)[:6]}")
        return None
    text = rec["text"]
    if not isinstance(text, str):
        skips.skip("non_string_text", where, f"text is a {type(text).__name__}")
        return None
    if not text.strip():
        skips.skip("empty_text", where, "text is empty or whitespace")
        return None
    meta = rec.get("meta")
    source = meta.get("redpajama_set_name") if isinstance(meta, dict) else None
    if source not in _SOURCE_SET:
        skips.skip("unknown_source", where, f"redpajama_set_name={source!r}")
        return None
    return Document(doc_id=where, source=source, text=text)


def read_documents(path: str | Path, name: str, skips: SkipLog, input_file: InputFile) -> Iterator[Document]:
    """Yield the valid documents of one file (zstd, gzip or plain JSON lines), counting everything else in `skips`.

    Args:
        path: the file.
        name: its name in doc ids and manifests (relative to the corpus root).
        skips: where bad records are counted (or raised, when strict).
        input_file: filled with the file's format, size, sha256, number of records (lines) and file-level skip
            as it is read.

    Raises ValueError (before yielding anything) when the file is none of the readable formats.
    """
    hasher = hashlib.sha256()
    pending = b""
    line_no = 0
    with open(path, "rb") as f:
        fmt, what = detect_format(f.read(SNIFF_BYTES))
        if fmt is None:
            raise ValueError(f"{path}: {what}; only JSON lines (plain, zstd or gzip) can be packed")
        f.seek(0)
        input_file.format = fmt
        raw = _Raw(f, input_file, hasher)
        try:
            for block in _BLOCKS[fmt](raw):
                lines = (pending + block).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    line_no += 1
                    doc = _parse(line.removeprefix(BOM) if line_no == 1 else line, f"{name}:{line_no}", skips)
                    if doc is not None:
                        yield doc
        except (EOFError, *_CORRUPT) as e:
            reason = "truncated_file" if isinstance(e, EOFError) else "corrupt_file"
            lost = f"; {len(pending)} bytes of a partial record after line {line_no} lost" if pending else ""
            pending = b""
            raw.drain()
            detail = f"{e}{lost}"
            input_file.skipped = {"reason": reason, "line": line_no + 1, "detail": detail}
            skips.skip(reason, f"{name}:{line_no + 1}", detail)
        if pending:  # a last record without a trailing newline
            line_no += 1
            doc = _parse(pending.removeprefix(BOM) if line_no == 1 else pending, f"{name}:{line_no}", skips)
            if doc is not None:
                yield doc
    input_file.records = line_no
    input_file.sha256 = hasher.hexdigest()
