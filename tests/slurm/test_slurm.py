"""The whole workflow on a real SLURM cluster through `--profile slurm` (the repository's slurm/profile.yaml).

Needs a running cluster: `sudo tests/slurm/cluster.sh start` (one node on this machine, installs the Debian
packages when missing; `.ci/run` starts and stops it); skipped with that reason when `cluster.sh status`
finds none. The run uses tests/workflow/config.yaml plus tests/slurm/config.yaml (train.launcher: submitit).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.helpers.snake import BIN, TEST_CONFIG, snake_env
from tests.unit.test_slurm_profile import plugin_sbatch

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
SLURM_CONFIG = REPO / "tests" / "slurm" / "config.yaml"
LAUNCHER_RULES = ("train_stage4", "train_stage5", "eval_needle")     # submit through submitit themselves
# outputs that must equal the local run byte for byte (manifests and summaries hold paths and timings)
COMPARED = ("make_corpus", "pack_shards", "export_original", "init_model", "warm_start", "make_shot2story", "make_needles",
            "make_haystack", "s2s_clip", "s2s_caption", "s2s_qa", "s2s_assemble", "train_stage4", "train_stage5",
            "eval_passkey", "eval_needle")
VOLATILE = ("manifest.json", "summary.json")


def _cluster_up() -> bool:
    return subprocess.run(["bash", str(CLUSTER), "status"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def cluster(request):
    """Skip without a cluster (a laptop); fail instead under --require-slurm (CI, which starts one)."""
    if not _cluster_up():
        why = "no SLURM cluster answers (start one: sudo tests/slurm/cluster.sh start)"
        if request.config.getoption("--require-slurm"):
            pytest.fail(f"--require-slurm: {why}")
        pytest.skip(why)


def _digest(p: Path) -> str:
    """A file's bytes; a video's decoded pixels (the synthetic videos are lossless, but x264 does not promise
    the same bytes for the same frames: see longvila/data/shot2story/synth.py write_video)."""
    if p.suffix == ".mp4":
        from longvila.data.video import probe_video, read_frames
        frames = read_frames(p, list(range(probe_video(p)["frames"])), backend="pyav")
        return hashlib.sha256(frames.tobytes()).hexdigest()
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _digests(results: Path) -> dict[str, str]:
    return {str(p.relative_to(results)): _digest(p)
            for name in COMPARED for p in sorted((results / name).rglob("*"))
            if p.is_file() and p.name not in VOLATILE}


def _squeue(*args) -> str:
    return subprocess.run(["squeue", "-h", *args], capture_output=True, text=True, check=True).stdout


def _running_after_checkpoint(run_dir: Path, name: str, proc: subprocess.Popen, log: Path) -> str:
    """The id of the running SLURM job `name` once its run has a complete checkpoint after step 1."""
    deadline = time.monotonic() + 600
    while True:
        assert proc.poll() is None, f"snakemake ended before {name} checkpointed:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"{name}: no running job with a checkpoint within 600 s"
        ids = _squeue("-t", "RUNNING", "-n", name, "-o", "%i").split()
        if ids and (run_dir / "checkpoints/step-000001/COMPLETE").is_file():
            return ids[0]
        time.sleep(0.2)


def _release_when_requeued(job_id: str, proc: subprocess.Popen, log: Path) -> None:
    """SLURM holds a requeued job for about two minutes (its begin time); start it at once, as an admin may."""
    deadline = time.monotonic() + 300
    while _squeue("-j", job_id, "-o", "%T").strip() != "PENDING":
        assert proc.poll() is None, f"snakemake ended before job {job_id} was requeued:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"job {job_id} was not requeued within 300 s"
        time.sleep(0.2)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)


def _job(job_id: str) -> dict[str, str]:
    text = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
    return dict(kv.split("=", 1) for kv in text.split() if "=" in kv)


def test_whole_dag_through_sbatch_survives_preemption_and_a_cancel_and_equals_a_local_run(cluster, tiny_dag,
                                                                                       tmp_path):
    """`snakemake --profile slurm all`: every CPU rule one sbatch job of the executor plugin, every launcher rule
    one submitit job. Stage 4 is preempted after its first checkpoint (scancel --signal=USR2, what SLURM sends
    before a time limit; submitit checkpoints and requeues the job) and stage 5 is cancelled outright (scancel:
    the launcher sees it in squeue, the rule fails, the profile's retry submits it again); both resume from
    their checkpoints. Every output
    equals the local run's byte for byte: data, trained models, evaluations."""
    root, log = tmp_path / "slurm", tmp_path / "snakemake.log"
    cmd = [str(BIN / "snakemake"), "all", "--profile", "slurm", "--seconds-between-status-checks", "2", "--verbose",
           "--snakefile", str(REPO / "Snakefile"), "--directory", str(root),
           "--configfile", str(TEST_CONFIG), str(SLURM_CONFIG)]
    runs = root / "results" / "runs"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=snake_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        s4 = _running_after_checkpoint(runs / "stage4/256", "stage4-256", proc, log)
        subprocess.run(["scancel", "--signal=USR2", s4], check=True)
        _release_when_requeued(s4, proc, log)
        s5 = _running_after_checkpoint(runs / "stage5/4f", "stage5-4f", proc, log)
        subprocess.run(["scancel", s5], check=True)    # submitit's tasks ignore SIGTERM: killed a few s later
        proc.wait(timeout=1500)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert proc.returncode == 0, text[-6000:]

    # every job went through sbatch: the plugin's (one per non-launcher rule) and submitit's
    plugin = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", text)
    total = int(re.findall(r"(\d+) of \1 steps \(100%\) done", text)[-1])
    assert len(plugin) == total - 1 - len(LAUNCHER_RULES)                  # all: a local rule; no retries here
    states = dict(line.split() for line in _squeue("-t", "all", "-o", "%i %T").splitlines())
    # the plugin's real sbatch calls (--verbose) are what the golden tests build from the profile
    calls = re.findall(r"sbatch call: (sbatch .*?) --wrap=", text)
    assert len(calls) == len(plugin)
    for call in calls:
        comment = re.search(r"--comment (\S+)", call).group(1)
        rule = comment.removeprefix("rule_").split("_wildcards_")[0]
        threads = int(re.search(r"--cpus-per-task=(\d+)", call).group(1))
        uuid = re.search(r"--job-name (\S+)", call).group(1)
        assert " ".join(call.split()) == plugin_sbatch(rule, threads, run_uuid=uuid, workdir=str(root),
                                                       comment=comment), call
    assert all(states.get(i) == "COMPLETED" for i in plugin), {i: states.get(i) for i in plugin}

    # stage 4: one job, preempted once, requeued by submitit and finished; it resumed from checkpoint 1
    assert _job(s4)["JobState"] == "COMPLETED" and int(_job(s4)["Restarts"]) >= 1
    assert len(list((runs / "stage4/256/submitit").iterdir())) == 1
    # stage 5: the cancelled job, then the retry's new job (a fresh submitit folder) that finished
    folders = sorted((runs / "stage5/4f/submitit").iterdir())
    retry = [p.name.split("_")[0] for p in folders[-1].glob("*_submitted.pkl")]
    assert len(folders) == 2 and not list(folders[0].glob("*_result.pkl"))      # the first job left no result
    assert _job(s5)["JobState"] == "CANCELLED" and _job(retry[0])["JobState"] == "COMPLETED"
    history = (runs / "stage5/4f/logs/launcher.log").read_text()          # kept across the rule's retry
    assert f"job {s5} ended in state CANCELLED" in history and f"job {retry[0]} finished" in history
    for run, n in (("stage4/256", 4), ("stage5/4f", 8)):
        assert "resumed from" in (runs / run / "logs/rank-00000.log").read_text(), run
        steps = [json.loads(line)["step"] for line in (runs / run / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(1, n + 1)), (run, steps)               # no step logged twice
    needle_job = re.search(r"submitted job (\d+)", (root / "logs/eval_needle/4f.log").read_text()).group(1)
    assert states.get(needle_job) == "COMPLETED"

    local = _digests(tiny_dag / "results")
    assert len(local) > 100 and _digests(root / "results") == local
    for run in ("stage4/256", "stage5/4f"):
        losses = [[json.loads(line)["loss"] for line in (r / "results/runs" / run / "metrics.jsonl").read_text()
                   .splitlines()] for r in (root, tiny_dag)]
        assert losses[0] == losses[1], run
