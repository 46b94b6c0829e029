"""Running Snakemake from the tests: this venv's snakemake, its bin first on PATH (SLURM jobs and the
launchers start `snakemake`/`python` by name), the tiny test configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TEST_CONFIG = REPO / "tests" / "workflow" / "config.yaml"


def snakemake(*args, cwd=REPO, check=True, timeout=900) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "snakemake"), *args], cwd=cwd, env=snake_env(), capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return proc


def snake_env() -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def in_dir(root: Path, *args, configs=(TEST_CONFIG,), **kw) -> subprocess.CompletedProcess:
    """`snakemake TARGETS... --directory root --configfile CONFIGS` with the repository's Snakefile (targets
    first: --configfile takes several values)."""
    return snakemake(*args, "--snakefile", str(REPO / "Snakefile"), "--directory", str(root),
                     "--configfile", *map(str, configs), **kw)
