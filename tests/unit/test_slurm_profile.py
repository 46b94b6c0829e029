"""What `snakemake --profile slurm` submits, without a cluster: the executor plugin's own sbatch line
(`snakemake_executor_plugin_slurm.submit_string.get_submit_command`) for our rules' resources from
slurm/profile.yaml, golden; the SLURM workflow test checks these against the calls of a real run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml
from snakemake_executor_plugin_slurm.submit_string import get_submit_command

from tests.conftest import REPO

PROFILE = yaml.safe_load((REPO / "slurm" / "profile.yaml").read_text())


class Resources(dict):
    """Snakemake's job.resources as the plugin reads it: .get(name) and attribute access."""

    def __getattr__(self, name):
        return self[name]


def rule_resources(rule: str) -> Resources:
    """default-resources, then set-resources of `rule` (as Snakemake merges a profile's two sections)."""
    return Resources({**PROFILE["default-resources"], **PROFILE.get("set-resources", {}).get(rule, {})})


def plugin_sbatch(rule: str, threads: int, *, run_uuid="RUN", workdir="/scratch/longvila", comment=None) -> str:
    """The plugin's sbatch call for one job of `rule` (partition given, no account: the profile's choices)."""
    res = rule_resources(rule)
    job = SimpleNamespace(resources=res, threads=threads, name=rule)
    comment = comment or f"rule_{rule}"
    wildcards = comment.partition("_wildcards_")[2]          # the plugin logs a job with wildcards one folder down
    logs = f"{workdir}/.snakemake/slurm_logs/rule_{rule}" + (f"/{wildcards}" if wildcards else "")
    settings = SimpleNamespace(requeue=PROFILE["slurm-requeue"], no_requeue=False, qos=None, reservation=None)
    params = {"run_uuid": run_uuid, "comment_str": comment, "account": "", "slurm_logfile": f"{logs}/%j.log",
              "partition": f"-p {res['slurm_partition']}", "workdir": workdir}
    return " ".join(get_submit_command(job, params, settings=settings).split())


def test_profile_keys_that_matter_on_a_cluster_without_accounting():
    assert PROFILE["executor"] == "slurm" and PROFILE["slurm-status-command"] == "squeue"
    assert PROFILE["slurm-no-account"] is True and PROFILE["slurm-requeue"] is True and PROFILE["retries"] >= 1
    assert PROFILE["slurm-init-seconds-before-status-checks"] < 40        # the plugin's default makes tiny jobs wait


@pytest.mark.parametrize("rule, threads, wildcards, expect", [
    # a CPU rule of the paper config: pack.workers 0 -> one CPU per job under a cluster executor
    ("pack_batch", 1, "1M_b0002", "-t 60 --mem 4000 --requeue --ntasks=1 --cpus-per-task=1"),
    # the default config's stage 4 with train.launcher: local: one job holding its 4 gloo ranks
    ("train_stage4", 4, "1k", "-t 240 --mem 16000 --requeue --ntasks=1 --cpus-per-task=4"),
    ("resolve_config", 1, "", "-t 60 --mem 4000 --requeue --ntasks=1 --cpus-per-task=1"),
])
def test_plugin_sbatch_lines_are_golden(rule, threads, wildcards, expect):
    comment = f"rule_{rule}" + (f"_wildcards_{wildcards}" if wildcards else "")
    logs = f"rule_{rule}/{wildcards}" if wildcards else f"rule_{rule}"
    assert plugin_sbatch(rule, threads, comment=comment) == (
        f"sbatch --parsable --job-name RUN --output /scratch/longvila/.snakemake/slurm_logs/{logs}/%j.log "
        f"--export=ALL --comment {comment} -p debug {expect} -D /scratch/longvila")
