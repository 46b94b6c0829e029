"""The workflow on a real SLURM cluster through `--profile slurm` (the repository's slurm/profile.yaml).

Needs a running cluster: `sudo tests/slurm/cluster.sh start` (one node on this machine, installs the Debian
packages when missing); skipped with that reason when `cluster.sh status` finds none.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.workflow.test_workflow import TEST_CONFIG, snakemake

pytestmark = pytest.mark.slurm
CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"


def _cluster_up() -> bool:
    return subprocess.run(["bash", str(CLUSTER), "status"], capture_output=True).returncode == 0


needs_cluster = pytest.mark.skipif(not _cluster_up(), reason="no SLURM cluster answers (start one: sudo "
                                   "tests/slurm/cluster.sh start)")


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@needs_cluster
def test_cpu_rules_run_through_sbatch_and_equal_a_local_run(tmp_path):
    """The first rules of the tiny DAG, each one sbatch job (squeue status, no account): the plugin reports a
    SLURM job id per job, the jobs are in squeue's history, and the outputs equal a local run's byte for byte."""
    slurm, local = tmp_path / "slurm", tmp_path / "local"
    args = ("--snakefile", str(REPO / "Snakefile"), "--configfile", str(TEST_CONFIG), "--until", "make_corpus")
    proc = snakemake("--profile", "slurm", "--directory", str(slurm), *args)
    text = proc.stdout + proc.stderr
    ids = re.findall(r"has been submitted with SLURM jobid (\d+)", text)
    assert len(ids) == 2, text[-3000:]                                  # resolve_config, make_corpus
    history = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T"], capture_output=True, text=True).stdout
    states = dict(line.split() for line in history.splitlines())
    assert all(states.get(i) == "COMPLETED" for i in ids), (ids, history)
    snakemake("--cores", "1", "--directory", str(local), *args)
    assert _digests(slurm / "results/make_corpus") == _digests(local / "results/make_corpus")
