"""Input formats told apart by their bytes: zstd, gzip and plain JSON lines read alike; anything else is refused
by name before any work, and a misleading name is read as what it is, with one warning."""

from __future__ import annotations

import gzip
import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from longvila.data.formats import check_inputs, detect_format
from longvila.data.slimpajama import InputFile, SkipLog, read_documents

RECORDS = b"".join(json.dumps({"text": f"document {i} " + "word " * i, "meta": {"redpajama_set_name": src}}).encode()
                   + b"\n" for i, src in enumerate(["RedPajamaC4", "RedPajamaBook", "RedPajamaGithub"] * 20))


def zst(data: bytes, frames: int = 3) -> bytes:
    step = -(-len(data) // frames)
    return b"".join(zstandard.ZstdCompressor().compress(data[i:i + step]) for i in range(0, len(data), step))


def gz(data: bytes, members: int = 2) -> bytes:
    step = -(-len(data) // members)
    return b"".join(gzip.compress(data[i:i + step], mtime=0) for i in range(0, len(data), step))


SAME_RECORDS = {  # file name -> bytes: every one holds RECORDS
    "a.jsonl.zst": zst(RECORDS),
    "a.jsonl.gz": gz(RECORDS),
    "a.jsonl": RECORDS,
    "plain-named.jsonl.zst": RECORDS,
    "zst-named.jsonl": zst(RECORDS),
    "bom.jsonl": b"\xef\xbb\xbf" + RECORDS,
    "no-final-newline.jsonl": RECORDS[:-1],
}


@pytest.fixture
def warnings():
    messages: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("longvila")
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


def _write(path, data):
    path.write_bytes(data)
    return path


def read(path, name="x"):
    skips, info = SkipLog(), InputFile(name=name)
    docs = [(d.doc_id, d.source, d.text) for d in read_documents(path, name, skips, info)]
    return docs, skips, info


@pytest.mark.parametrize("name", sorted(SAME_RECORDS))
def test_every_readable_format_yields_the_same_documents(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(SAME_RECORDS[name])
    reference, _, _ = read(_write(tmp_path / "ref.jsonl.zst", zst(RECORDS, frames=1)))
    docs, skips, info = read(path)
    assert docs == reference and len(docs) == 60 and not skips.counts
    assert info.records == 60 and info.bytes == len(SAME_RECORDS[name]) and info.skipped is None
    assert info.format == {b"\x28": "zstd", b"\x1f": "gzip"}.get(SAME_RECORDS[name][:1], "jsonl")


@pytest.mark.parametrize("cut, reason", [(lambda b: b[:len(b) // 2], "truncated_file"),
                                         (lambda b: b[:-8] + b"\x00\x00\x00\x00" + b[-4:], "corrupt_file")],
                         ids=["truncated", "bad-crc"])
def test_a_damaged_gzip_is_a_counted_file_level_skip(tmp_path, cut, reason):
    path = _write(tmp_path / "d.jsonl.gz", cut(gzip.compress(RECORDS, mtime=0)))
    docs, skips, info = read(path, "d.jsonl.gz")
    assert dict(skips.counts) == {reason: 1} and info.skipped["reason"] == reason
    assert len(docs) <= 60 and info.bytes == path.stat().st_size


@pytest.mark.parametrize("head, looks_like", [
    (b"PAR1\x15\x04\x15", "a Parquet file"),
    (b"PK\x03\x04rest", "a zip archive"),
    (b"BZh91AY&SY", "a bzip2 stream"),
    (b'[{"text": "a"}, {"text": "b"}]', "a JSON array, not JSON lines"),
    (b"text,meta\nhello,C4\n", "text that is not JSON lines"),
    (b"\x00\x01\x02\xff\xfe binary", "binary data, not UTF-8 text"),
])
def test_other_formats_are_named(head, looks_like):
    fmt, what = detect_format(head)
    assert fmt is None and what.startswith(looks_like)


def test_format_detection_accepts_what_the_reader_reads():
    assert detect_format(b"")[0] == "empty"
    assert detect_format(b"\x50\x2a\x4d\x18\x04\x00\x00\x00abcd")[0] == "zstd"   # a skippable frame first
    assert detect_format(b'\n\n  {"text": "caf\xc3')[0] == "jsonl"                # a character cut by the sniff
    assert detect_format(b"\n\n\n")[0] == "jsonl"                                   # blank lines: counted skips


def test_check_inputs_refuses_every_bad_file_before_any_work(tmp_path, warnings):
    good = _write(tmp_path / "good.jsonl.zst", zst(RECORDS))
    pq.write_table(pa.table({"text": ["hello"]}), tmp_path / "data.parquet")
    array = _write(tmp_path / "array.jsonl", b'[{"text": "hello"}]\n')
    missing = tmp_path / "gone.jsonl.zst"
    with pytest.raises(ValueError) as err:
        check_inputs([good, tmp_path / "data.parquet", array, missing], "--input")
    message = str(err.value)
    assert message.startswith("--input: 3 of 4 files cannot be packed:")
    assert f"{tmp_path / 'data.parquet'}: a Parquet file" in message and 'to_json("F.jsonl")' in message
    assert f"{array}: a JSON array" in message and f"{missing}: no such file" in message
    assert "Accepted: SlimPajama-format JSON lines" in message and ".jsonl.gz" in message
    assert str(good) not in message and not warnings
    with pytest.raises(ValueError, match=r"^--inputs .*gone.jsonl.zst: no such file; check the path\nFix or leave"):
        check_inputs([missing], "--inputs")


def test_a_misleading_name_is_read_as_what_it_holds_with_one_warning(tmp_path, warnings):
    plain = _write(tmp_path / "p.jsonl.zst", RECORDS)
    packed = _write(tmp_path / "z.jsonl", zst(RECORDS))
    honest = _write(tmp_path / "h.jsonl.gz", gz(RECORDS))
    assert check_inputs([plain, packed, honest], "--input") == ["jsonl", "zstd", "gzip"]
    assert warnings == [f"--input {plain}: named .zst but holds plain JSON lines; read as jsonl",
                        f"--input {packed}: named .jsonl but holds zstd-compressed data; read as zstd"]
