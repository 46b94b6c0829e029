"""An isolated virtual environment with the release's Transformers (4.46.0), cached between runs of the suite.

The released LongVILA code pins transformers==4.46.0; tests/compat loads what our `save_pretrained` writes with
that version's own classes, and the reverse. The environment holds only Transformers and what it needs
(`requirements-release.txt`, pinned); torch is not installed again: the client script appends the project
environment's site-packages to `sys.path` after its own, so torch comes from the project's wheel while every
package the venv holds (transformers, tokenizers, huggingface-hub, ...) shadows the project's newer one.

Cold: ~30 s (pip, PyPI); warm: a stamp check. Cache: $LONGVILA_CACHE/release-env or ~/.cache/longvila/release-env.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements-release.txt"
# pip output that means no package index could be reached (then the round trip skips, naming the reason)
OFFLINE = ("Failed to establish a new connection", "Temporary failure in name resolution", "NewConnectionError",
           "Could not fetch URL", "No matching distribution found", "Network is unreachable", "ReadTimeoutError")


class IndexUnreachable(RuntimeError):
    """pip could not reach a package index: the caller skips with this message."""


def cache_root() -> Path:
    base = os.environ.get("LONGVILA_CACHE") or Path.home() / ".cache" / "longvila"
    return Path(base) / "release-env"


def release_python() -> Path:
    """The interpreter of the cached environment, built first if missing or stale (IndexUnreachable if pip
    cannot reach an index; RuntimeError with pip's output for any other failure)."""
    spec = REQUIREMENTS.read_bytes()
    tag = hashlib.sha256(spec + sys.version.encode()).hexdigest()[:12]
    env = cache_root() / f"py{sys.version_info.major}{sys.version_info.minor}-{tag}"
    python = env / "bin" / "python"
    if (env / ".ready").is_file():
        return python
    env.parent.mkdir(parents=True, exist_ok=True)
    with open(env.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)                      # one builder at a time; the others then reuse it
        if (env / ".ready").is_file():
            return python
        tmp = env.with_name(env.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(tmp)
        proc = subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-input",
                               "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            out = (proc.stdout + proc.stderr)[-3000:]
            if any(s in out for s in OFFLINE):
                raise IndexUnreachable(f"no package index reachable to build the transformers==4.46.0 env:\n{out}")
            raise RuntimeError(f"pip install -r {REQUIREMENTS} failed (rc {proc.returncode}):\n{out}")
        shutil.rmtree(env, ignore_errors=True)
        os.replace(tmp, env)       # a venv's pyvenv.cfg names the base interpreter only: `python -m` works moved
        (env / ".ready").write_text(spec.decode())
    return python


def project_site() -> str:
    """The project environment's site-packages (where torch is), for the client's sys.path."""
    import sysconfig

    return sysconfig.get_paths()["purelib"]
