"""Small utilities: atomic writes, optional imports."""

from __future__ import annotations

import pytest

from longvila.utils.io import atomic_dir, atomic_path
from longvila.utils.optional import import_optional


def test_atomic_dir_replaces_only_on_success(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("1")
    assert (out / "a").read_text() == "1"
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a").write_text("2")
        raise RuntimeError("killed")
    assert (out / "a").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (tmp_path / ".out.tmp-999").mkdir()  # what a SIGKILLed run leaves
    with atomic_dir(out) as tmp:
        (tmp / "b").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["b"] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_path(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise ValueError
    assert not target.exists() and not list(target.parent.iterdir())
    with atomic_path(target) as tmp:
        tmp.write_text("done")
    assert target.read_text() == "done"


def test_optional_import_names_the_extra():
    assert import_optional("json").dumps([1]) == "[1]"
    with pytest.raises(ImportError, match=r"pip install -e '\.\[gpu\]'"):
        import_optional("flash_attn.nonexistent_module_for_test")


def test_output_checks_name_the_flag_and_the_users_path_before_any_work(tmp_path, monkeypatch):
    from pathlib import Path

    from longvila.utils.io import check_output_dir, check_writable

    assert check_writable(tmp_path / "new" / "deeper", "--out") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()                      # checking creates nothing
    with pytest.raises(ValueError, match=r"--out /proc/x/y: cannot create files in /proc \("):
        check_writable("/proc/x/y")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"--cache-dir .*/file/out: .*/file is a file, not a folder"):
        check_writable(tmp_path / "file" / "out", "--cache-dir")
    monkeypatch.setattr(Path, "is_mount", lambda self: self == tmp_path / "mnt")
    with pytest.raises(ValueError, match=r"--out .*/mnt is a mount point; .* e\.g\. --out .*/mnt/out"):
        check_writable(tmp_path / "mnt")
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jsonl").write_text("{}")
    with pytest.raises(ValueError, match="contains the input"):
        check_output_dir(data, [data / "a.jsonl"])
    with pytest.raises(ValueError, match=r"--shards-out .*/data/sub is inside the input .*/data;"):
        check_output_dir(data / "sub", [data], flag="--shards-out")
    check_output_dir(tmp_path / "elsewhere", [data / "a.jsonl", data])
    assert not any(p.name.startswith(".longvila-probe") for p in tmp_path.rglob("*"))
