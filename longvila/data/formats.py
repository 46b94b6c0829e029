"""What a corpus file holds, read from its first bytes rather than its name.

Accepted: SlimPajama-format JSON lines, plain or compressed as a whole with zstd or gzip
(`.jsonl`, `.jsonl.zst`, `.jsonl.gz`). Anything else (Parquet, other archives, binary data, a JSON array,
text that is not JSON lines) is refused by `check_inputs` before any work starts, naming each file and what
it looks like, so a wrong glob never turns into a run that "succeeds" with every file skipped.

    detect_format(open(path, "rb").read(SNIFF_BYTES))   # ('zstd' | 'gzip' | 'jsonl' | 'empty' | None, what)
    check_inputs(paths, flag="--input")                   # raises ValueError listing the files it refuses
"""

from __future__ import annotations

import codecs
from pathlib import Path

from longvila.utils.logging import get_logger

SNIFF_BYTES = 4096
BOM = b"\xef\xbb\xbf"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
READABLE = ("zstd", "gzip", "jsonl", "empty")  # 'empty': 0 bytes, counted by the reader as a truncated_file
ACCEPTED = ('SlimPajama-format JSON lines (one {"text": ..., "meta": {"redpajama_set_name": ...}} object per '
            "line), plain or compressed with zstd or gzip (.jsonl, .jsonl.zst, .jsonl.gz); the format is read "
            "from the bytes, whatever the name")
_PARQUET_HINT = ('; convert it to JSON lines first, e.g. datasets.load_dataset("parquet", data_files=F)["train"]'
                 '.to_json("F.jsonl")')
_OTHER = ((b"PAR1", "a Parquet file", _PARQUET_HINT), (b"ARROW1", "an Arrow IPC file", ""),
          (b"PK\x03\x04", "a zip archive", "; unpack it"), (b"BZh", "a bzip2 stream", "; recompress it with zstd"),
          (b"\xfd7zXZ\x00", "an xz stream", "; recompress it with zstd"),
          (b"\x04\x22\x4d\x18", "an lz4 frame", "; recompress it with zstd"),
          (b"SQLite format 3\x00", "an SQLite database", ""))
_CLAIMS = {".zst": "zstd", ".zstd": "zstd", ".gz": "gzip", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
_MAX_LISTED = 10


def detect_format(head: bytes) -> tuple[str | None, str]:
    """(format, what the bytes look like) from a file's first bytes; format None means not readable."""
    if not head:
        return "empty", "an empty file (0 bytes)"
    if head.startswith(ZSTD_MAGIC) or (len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == b"\x2a\x4d\x18"):
        return "zstd", "zstd-compressed data"  # a data frame, or a skippable frame (zstd readers skip it)
    if head.startswith(GZIP_MAGIC):
        return "gzip", "gzip-compressed data"
    for magic, what, hint in _OTHER:
        if head.startswith(magic):
            return None, f"{what} (starts with {magic[:4]!r}){hint}"
    if head[257:262] == b"ustar":
        return None, "a tar archive; unpack it"
    text = head.removeprefix(BOM)
    first_line = text.split(b"\n", 1)[0]
    try:  # a multi-byte character cut off at the end of `head` is not an error
        codecs.getincrementaldecoder("utf-8")().decode(first_line, final=len(first_line) < len(text))
    except UnicodeDecodeError:
        return None, f"binary data, not UTF-8 text (first bytes: {head[:8].hex(' ')})"
    stripped = text.lstrip(b" \t\r\n")
    if not stripped or stripped.startswith(b"{"):
        return "jsonl", "plain JSON lines"
    line = stripped.split(b"\n", 1)[0][:60].decode("utf-8", "replace")
    if stripped.startswith(b"["):
        return None, f"a JSON array, not JSON lines (one object per line); it starts {line!r}"
    return None, f"text that is not JSON lines (its first line does not start with '{{': {line!r})"


def claimed_format(name: str) -> str | None:
    """The format a file name claims by its last suffix (None when it claims none)."""
    return _CLAIMS.get(Path(name).suffix.lower())


def sniff(path: str | Path) -> tuple[str | None, str]:
    """`detect_format` of the file's first bytes (OSError when it cannot be opened)."""
    with open(path, "rb") as f:
        return detect_format(f.read(SNIFF_BYTES))


def check_inputs(paths: list[str | Path], flag: str) -> list[str]:
    """The format of each input, in order, from one pass that reads only the first bytes of each file.

    Raises ValueError naming every file that is missing, unreadable or not JSON lines (and what it looks like),
    before any work starts. A file whose name claims another format than its bytes hold is read as what it is,
    with a warning: the bytes are unambiguous, and refusing would only make people rename files in a corpus copy
    they may not own (the manifest records each file's `format`).
    """
    formats, problems, mismatched, not_jsonl = [], [], [], False
    for path in map(Path, paths):
        try:
            fmt, what = sniff(path)
            not_jsonl |= fmt is None
        except FileNotFoundError:
            fmt, what = None, "no such file; check the path"
        except IsADirectoryError:
            fmt, what = None, "a folder, not a file"
        except OSError as e:
            fmt, what = None, f"cannot be read ({e.strerror})"
        if fmt is None:
            problems.append(f"{path}: {what}")
        elif fmt != "empty" and claimed_format(path.name) not in (None, fmt):
            mismatched.append(f"{path}: named .{path.name.rsplit('.', 1)[-1]} but holds {what}; read as {fmt}")
        formats.append(fmt)
    log = get_logger()
    for line in mismatched[:_MAX_LISTED]:
        log.warning(f"{flag} {line}")
    if len(mismatched) > _MAX_LISTED:
        log.warning(f"{flag}: {len(mismatched) - _MAX_LISTED} more files whose name does not match their bytes")
    if problems:
        listed = "\n  ".join(problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        head = f"{flag} {listed}" if len(problems) == 1 else \
            f"{flag}: {len(problems)} of {len(formats)} files cannot be packed:\n  {listed}{more}"
        accepted = f"\nAccepted: {ACCEPTED}." if not_jsonl else ""
        raise ValueError(f"{head}{accepted}\nFix or leave out the files named; nothing was packed.")
    return formats
