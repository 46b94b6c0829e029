"""The SlimPajama reader: every bad-input kind is counted by reason with file:line, or raised when strict."""

from __future__ import annotations

import json
import logging

import pytest
import zstandard

from longvila.data.slimpajama import InputFile, SkipLog, read_documents
from longvila.utils.io import sha256_file


def rec(text, source="RedPajamaC4"):
    return json.dumps({"text": text, "meta": {"redpajama_set_name": source}}).encode() + b"\n"


BAD = {
    "blank_line": b"\n",
    "invalid_utf8": b'{"text": "caf\xe9", "meta": {"redpajama_set_name": "RedPajamaC4"}}\n',
    "malformed_json": b'{"text": "unterminated\n',
    "missing_text": b'{"meta": {"redpajama_set_name": "RedPajamaC4"}}\n',
    "non_string_text": b'{"text": 42, "meta": {"redpajama_set_name": "RedPajamaC4"}}\n',
    "empty_text": rec("   "),
    "unknown_source": rec("hello", source="RedPajamaNews"),
}


@pytest.fixture
def logged():
    """Messages of the 'longvila' logger during the test (whatever handlers earlier tests installed)."""
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("longvila")
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


def write(path, payload: bytes, frames: int = 1):
    cctx = zstandard.ZstdCompressor()
    step = max(1, len(payload) // frames)
    path.write_bytes(b"".join(cctx.compress(payload[i:i + step]) for i in range(0, len(payload), step)))
    return path


def read_all(path, strict=False):
    skips, info = SkipLog(strict=strict), InputFile(name=path.name)
    docs = list(read_documents(path, path.name, skips, info))
    return docs, skips, info


@pytest.mark.parametrize("reason", sorted(BAD))
def test_each_bad_kind_is_counted_with_its_line(tmp_path, reason, logged):
    path = write(tmp_path / "a.jsonl.zst", rec("good one") + BAD[reason] + rec("good two"))
    docs, skips, info = read_all(path)
    assert [d.text for d in docs] == ["good one", "good two"]
    assert [d.doc_id for d in docs] == ["a.jsonl.zst:1", "a.jsonl.zst:3"]
    assert dict(skips.counts) == {reason: 1}
    assert [m for m in logged if m.startswith("skip")] == [m for m in logged if f"skip {reason} at a.jsonl.zst:2:" in m]
    assert len(logged) == 1
    assert info.records == 3 and info.bytes == path.stat().st_size and info.sha256 == sha256_file(path)
    with pytest.raises(ValueError, match=rf"a.jsonl.zst:2: bad input \({reason}\).*without --strict"):
        read_all(path, strict=True)


def test_lone_surrogate_is_invalid_utf8(tmp_path):
    path = write(tmp_path / "s.jsonl.zst", b'{"text": "x\\ud800y", "meta": {"redpajama_set_name": "RedPajamaC4"}}\n')
    docs, skips, _ = read_all(path)
    assert not docs and dict(skips.counts) == {"invalid_utf8": 1}


def test_multi_frame_file_and_missing_final_newline(tmp_path):
    payload = b"".join(rec(f"doc {i}") for i in range(50))[:-1]  # no trailing newline
    docs, skips, info = read_all(write(tmp_path / "m.jsonl.zst", payload, frames=7))
    assert [d.text for d in docs] == [f"doc {i}" for i in range(50)] and not skips.counts and info.records == 50


def test_truncated_file_keeps_what_came_before_and_counts_the_cut(tmp_path):
    payload = b"".join(rec(f"doc {i} " + "x" * 200) for i in range(400))
    full = write(tmp_path / "full.jsonl.zst", payload, frames=4)
    cut = tmp_path / "cut.jsonl.zst"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) - 100])
    docs, skips, info = read_all(cut)
    assert skips.counts["truncated_file"] == 1
    assert 0 < len(docs) < 400 and all(d.text.startswith(f"doc {i} ") for i, d in enumerate(docs))
    assert info.bytes == cut.stat().st_size and info.sha256 == sha256_file(cut)
    with pytest.raises(ValueError, match="truncated_file"):
        read_all(cut, strict=True)


def test_corrupt_data_inside_a_valid_zst_is_a_counted_file_level_skip(tmp_path):
    payload = b"".join(rec(f"doc {i} " + "y" * 300) for i in range(300))
    data = bytearray(write(tmp_path / "ok.jsonl.zst", payload, frames=3).read_bytes())
    second = data.index(b"\x28\xb5\x2f\xfd", 4)          # the second frame's header
    data[second + 20:second + 60] = b"\xff" * 40            # garble its compressed block
    path = tmp_path / "bad.jsonl.zst"
    path.write_bytes(bytes(data))
    docs, skips, info = read_all(path)
    assert dict(skips.counts) == {"corrupt_file": 1} and 0 < len(docs) < 300
    assert info.skipped["reason"] == "corrupt_file" and info.skipped["line"] == info.records + 1
    assert info.as_dict()["skipped"] == info.skipped and info.format == "zstd"
    assert info.bytes == path.stat().st_size and info.sha256 == sha256_file(path)


def test_text_that_is_not_json_lines_is_an_error_not_a_skip(tmp_path):
    path = tmp_path / "notes.jsonl.zst"
    path.write_bytes(b"this is not zstd at all" * 10)
    with pytest.raises(ValueError, match=r"notes.jsonl.zst: text that is not JSON lines.*only JSON lines"):
        read_all(path)


def test_skip_log_caps_individual_messages(tmp_path, logged):
    path = write(tmp_path / "e.jsonl.zst", rec("") * 60 + rec("ok"))
    docs, skips, _ = read_all(path)
    assert skips.counts["empty_text"] == 60 and len(docs) == 1
    assert len(logged) == 51 and "e.jsonl.zst:50:" in logged[49] and "further ones are only counted" in logged[50]


def test_empty_file_counts_as_truncated(tmp_path):
    path = tmp_path / "empty.jsonl.zst"
    path.write_bytes(b"")
    docs, skips, info = read_all(path)
    assert not docs and dict(skips.counts) == {"truncated_file": 1} and info.bytes == 0


@pytest.mark.parametrize("line", [b"[" * 200_000 + b"\n", b'{"text": "x", "n": ' + b"9" * 5000 + b"}\n"],
                         ids=["deep-nesting", "huge-int"])
def test_pathological_json_is_malformed_not_a_crash(tmp_path, line):
    path = write(tmp_path / "p.jsonl.zst", line + rec("fine"))
    docs, skips, _ = read_all(path)
    assert [d.text for d in docs] == ["fine"] and dict(skips.counts) == {"malformed_json": 1}
    with pytest.raises(ValueError, match=r"p.jsonl.zst:1: bad input \(malformed_json\)"):
        read_all(path, strict=True)
