"""Atomic writes (a killed stage never leaves a partial output under its final name) and file identities.

Every output is written under a temporary sibling name (`.NAME.tmp-PID`) and renamed into place when it is
complete. Stale temporaries of killed runs are removed by the next run. Renames within one folder are
atomic on POSIX file systems.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: Path) -> None:
    """Delete `.NAME.tmp-PID` left next to `path` by killed runs (not those of a run still alive)."""
    parent = path.parent
    if not parent.is_dir():
        return
    for stale in parent.glob(f".{path.name}.tmp-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue  # another run writing the same output right now
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def check_writable(out: str | Path, flag: str = "--out") -> Path:
    """Refuse, before any work, an output that cannot be created where it is asked for: a mount point (the
    output is swapped in by renaming, which a mount point refuses), a file where a folder is needed on the way,
    or a place this process cannot write to. Messages name `flag` and the user's path, never a temporary one."""
    out = Path(out).absolute()
    if out.is_mount():
        raise ValueError(f"{flag} {out} is a mount point; outputs are swapped in by renaming, which a mount point "
                         f"refuses. Give a folder inside it, e.g. {flag} {out / 'out'}")
    ancestor = next(p for p in out.parents if p.exists()) if not out.parent.exists() else out.parent
    if not ancestor.is_dir():
        raise ValueError(f"{flag} {out}: {ancestor} is a file, not a folder; choose another place")
    try:
        fd, probe = tempfile.mkstemp(dir=ancestor, prefix=".longvila-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{flag} {out}: cannot create files in {ancestor} ({e.strerror}); choose a folder you "
                         "can write to") from None
    return out


def check_output_dir(out: str | Path, inputs: list[str | Path], marker: str = "manifest.json",
                     flag: str = "--out") -> None:
    """Refuse an output folder that cannot be written (check_writable) or whose replacement would destroy data:
    one that holds (or is) an input's folder, one inside an input folder, or an existing non-empty folder that is
    not a previous output (no `marker` file in it)."""
    out = check_writable(out, flag).resolve()
    for p in inputs:
        p = Path(p).resolve()
        if p.is_dir() and (out == p or p in out.parents):
            raise ValueError(f"{flag} {out} is inside the input {p}; choose an output folder outside it")
        if out == p.parent or out in p.parents:
            raise ValueError(f"{flag} {out} contains the input {p}; writing there would replace the inputs. "
                             "Choose an output folder outside the corpus")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / marker).is_file())):
        raise ValueError(f"{flag} {out} exists and is not a previous output (no {marker}); choose a new folder "
                         "or remove it first")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path for a file; rename it to `path` when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder; swap it in for `path` (replacing an old one) when the block succeeds.

    The old folder is renamed aside before the new one is renamed in, so at no moment does `path` hold a
    partial result.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _tmp_name(path)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.tmp-old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, data: object) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_stamps(*paths: str | Path) -> dict:
    """(size, mtime) of every file under `paths`: the identity of a run's inputs (a rebuilt input changes it)
    without reading gigabytes of weights."""
    stamps = {}
    for root in map(Path, paths):
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            st = f.stat()
            stamps[str(f)] = [st.st_size, st.st_mtime_ns]
    return stamps
