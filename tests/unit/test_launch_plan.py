"""Launcher plans without a cluster: the paper topology's sbatch script (golden), the plan schema, the
`--print-plan` CLI, config errors that name the field, and the SLURM wait path against fake sbatch/sacct."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from longvila.config import load_config_file
from pipeline import launch as L
from pipeline import train_stage4
from tests.conftest import REPO

PAPER = REPO / "workflow" / "configs" / "paper.yaml"
# the paper's largest runs: stage 4 at 256k with the whole world as one SP group, stage 5 at 2048 frames,
# both on 32 nodes x 8 GPUs (LONGVILA.md 4.5, 5.1; Qwen2-7B allows Ulysses 4)
PAPER_32 = {
    "train.cluster": "{nodes: 32, gpus_per_node: 8, partition: h100, account: longvila, time_minutes: 240, "
                     "cpus_per_task: 16, mem_gb: 0, signal_delay_s: 120, setup: ['source .venv/bin/activate'], "
                     "sbatch_extra: {qos: high, exclusive: ''}}",
    "train.stage4": "[{context: 256k, rope_theta: 207112184, max_positions: 262144, steps: 80, grad_accum: 16, "
                    "nodes: 32, ulysses: 4, ring: 64, zero_stage: 2, save_every: 20}]",
    "train.stage5": "[{frames: 2048, nodes: 32, ulysses: 4, ring: 16, per_device_batch: 1, grad_accum: 32, "
                    "lr: 5.0e-5, epochs: 6, max_length: 524288, gradient_checkpointing: true}]",   # else: 92.5 GiB
}


def _cfg(path=PAPER, **overrides):
    return load_config_file(path, [f"{k}={v}" for k, v in {**overrides}.items()])


def _paper(**overrides):
    return _cfg(PAPER, **{**PAPER_32, **overrides})


def _job(name="stage4-256k", nodes=32, run_dir="/runs/x"):
    return L.Job(name=name, target="tests.distributed.test_launch:report", kwargs={"a": 1},
                 run_dir=Path(run_dir), nodes=nodes)


def _sbatch_lines(plan):
    return [line for line in plan["submitit"]["sbatch"].splitlines() if line.startswith("#SBATCH")]


@pytest.mark.parametrize("name, expect", [
    ("stage4-256k", {"sp": "4x64", "dp": 1, "global_batch": 16}),
    ("stage5-2048f", {"sp": "4x16", "dp": 4, "global_batch": 128}),
])
def test_paper_topology_sbatch_script_is_golden(name, expect, tmp_path):
    folder = tmp_path / "sub"
    plan = L.describe(_job(name), _paper(), folder=folder)
    assert {k: plan["training"][k] for k in expect} == expect
    assert (plan["nodes"], plan["tasks_per_node"], plan["gpus_per_node"], plan["world_size"]) == (32, 8, 8, 256)
    assert plan["backend"] == "nccl" and plan["training"]["world"] == 256
    assert _sbatch_lines(plan) == [
        "#SBATCH --account=longvila",
        "#SBATCH --cpus-per-task=16",
        f"#SBATCH --error={folder}/%j_0_log.err",
        "#SBATCH --exclusive",
        "#SBATCH --gpus-per-node=8",
        f"#SBATCH --job-name={name}",
        "#SBATCH --mem=0",
        "#SBATCH --nodes=32",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --open-mode=append",
        f"#SBATCH --output={folder}/%j_0_log.out",
        "#SBATCH --partition=h100",
        "#SBATCH --qos=high",
        "#SBATCH --requeue",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --time=240",
        "#SBATCH --wckey=submitit",
    ]
    script = plan["submitit"]["sbatch"]
    assert "# setup\nsource .venv/bin/activate\n" in script
    assert f"srun --unbuffered --output {folder}/%j_%t_log.out --error {folder}/%j_%t_log.err " \
           f"--kill-on-bad-exit=1 " in script and script.rstrip().endswith(f"-m submitit.core._submit {folder}")


def test_memory_in_gb_and_partition_default():
    plan = L.describe(_job(), _paper(**{"train.cluster.mem_gb": 1600, "train.cluster.partition": "null",
                                        "train.cluster.account": "null"}))
    lines = _sbatch_lines(plan)
    assert "#SBATCH --mem=1600GB" in lines
    assert not any(x in line for line in lines for x in ("--partition", "--account"))
    lines = _sbatch_lines(L.describe(_job(), _paper(**{"train.cluster.mem_gb": "null"})))
    assert not any("--mem" in line for line in lines)


def test_plan_schema_is_stable(tmp_path):
    plan = L.describe(_job("stage4-384", nodes=1), _cfg(REPO / "config.yaml"))
    assert tuple(plan) == L.PLAN_KEYS
    assert plan["launcher"] == "local" and plan["backend"] == "gloo" and plan["submitit"] is None
    assert (plan["nodes"], plan["tasks_per_node"], plan["gpus_per_node"], plan["world_size"]) == (1, 4, 0, 4)
    assert set(plan["training"]) == {"run", "world", "sp", "dp", "tokens_per_sample", "global_batch", "steps",
                                     "memory_gib", "limit_gib", "memory_breakdown_gib"}   # the planner's, issue 9
    assert 0 < plan["training"]["memory_gib"] < plan["training"]["limit_gib"]
    assert "predicted peak per rank (GiB; longvila plan --config CFG --stage stage4/384)" in L.format_plan(plan)
    sub = L.describe(_job(), _paper(), folder=tmp_path)["submitit"]
    assert set(sub) == {"folder", "parameters", "sbatch"}
    assert sub["parameters"]["tasks_per_node"] == 8 and sub["parameters"]["slurm_mem"] == "0"
    assert json.loads(json.dumps(plan)) == plan


def test_our_sbatch_script_is_what_submitits_slurm_executor_writes(tmp_path, monkeypatch):
    import submitit

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "srun"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for overrides in ({}, {"train.cluster.mem_gb": 1600, "train.cluster.sbatch_extra": "{}"}):
        job, cfg = _job(), _paper(**overrides)
        ex = submitit.AutoExecutor(folder=tmp_path / "sub", cluster="slurm")
        ex.update_parameters(**L.submitit_parameters(job, cfg))
        real = ex._executor._make_submission_file_text(ex._executor._submitit_command_str, "uid")
        assert L.describe(job, cfg, folder=tmp_path / "sub")["submitit"]["sbatch"] == real


def test_print_plan_cli_prints_and_runs_nothing(tmp_path, capsys):
    common = ["--config", str(PAPER), *sum([["--set", f"{k}={v}"] for k, v in PAPER_32.items()], []),
              "--step", "0", "--run-dir", str(tmp_path / "run")]
    assert train_stage4.main([*common, "--print-plan"]) == 0
    text = capsys.readouterr().out
    assert "stage4-256k" in text and "4x64" in text and "#SBATCH --nodes=32" in text
    assert train_stage4.main([*common, "--print-plan", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["name"] == "stage4-256k" and plan["kwargs"]["run_dir"] == str(tmp_path / "run")
    assert plan["target"] == train_stage4.TARGET and not (tmp_path / "run").exists()
    assert train_stage4.main([*common]) == 2                                     # --init/--shards/--out missing


@pytest.mark.parametrize("overrides, message", [
    ({"train.cluster.cpus_per_task": 0}, r"'train.cluster.cpus_per_task': must be >= 1"),
    ({"train.cluster.mem_gb": -1}, r"'train.cluster.mem_gb': must be >= 0 or null"),
    ({"train.cluster.signal_delay_s": 900, "train.cluster.time_minutes": 10}, r"'train.cluster.signal_delay_s'"),
    ({"train.cluster.sbatch_extra": "{time: '10'}"}, r"'train.cluster.sbatch_extra.time': --time is set by the "
                                                     r"launcher \(from time_minutes\)"),
    ({"train.cluster.sbatch_extra": "{mail_type: END}"}, r"'train.cluster.sbatch_extra.mail_type': write the long"),
    ({"train.cluster.sbatch_extra": "{mem-per-gpu: 80G}"}, r"set cluster.mem_gb to null"),
    ({"train.stage4": "[{context: 256k, max_positions: 262144, nodes: 64, ulysses: 4, ring: 128}]"},
     r"'train.stage4\[0\].nodes': 64 must be between 1 and cluster.nodes \(32\)"),
    ({"train.cluster.gpus_per_node": -1}, r"'train.cluster.gpus_per_node': must be >= 0"),
])
def test_bad_cluster_configs_name_the_field(overrides, message):
    from longvila.plan.check import check_training

    with pytest.raises(ValueError, match=message):
        check_training(_paper(**overrides))


def test_impossible_job_shapes_name_the_fix():
    from pipeline.launch.rank import resolve

    with pytest.raises(ValueError, match="train.launcher 'local' runs on this machine only"):
        L.describe(_job(nodes=2), _paper(**{"train.launcher": "local"}))
    with pytest.raises(ValueError, match=r"2 nodes need GPUs \(train.cluster.gpus_per_node > 0\)"):
        L.describe(_job(nodes=2), _cfg(REPO / "config.yaml"))
    with pytest.raises(ValueError, match="must look like 'module:function'"):
        resolve("pipeline.launch")


def test_submitit_without_slurm_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))                                   # no srun
    with pytest.raises(ValueError, match="needs SLURM here"):
        L.launch(_job(run_dir=tmp_path / "run"), _paper())


def test_a_failed_slurm_job_raises_with_its_log_paths(tmp_path, monkeypatch):
    """Fake sbatch/sacct: the launcher submits, waits, and reports the failed job's state and logs."""
    import submitit

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in {"srun": "exit 0", "sbatch": "echo 'Submitted batch job 4242'", "scancel": "exit 0",
                       "sacct": "printf 'JobID|State|NodeList\\n4242|FAILED|n1\\n'"}.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(submitit.core.core.Job, "_results_timeout_s", 0)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match=r"submitit job 4242 failed in task 0 \(state FAILED\); logs .*4242_0_log.err"):
        L.launch(_job(run_dir=run, nodes=2), _paper())
    plan = json.loads((run / "plan.json").read_text())
    (folder,) = (run / "submitit").iterdir()
    assert plan["submitit"]["folder"] == str(folder)
    assert (folder / "4242_submission.sh").read_text() == plan["submitit"]["sbatch"]
    assert (folder / "4242_submitted.pkl").is_file()


def test_the_submitted_callable_requeues_itself():
    from pipeline.launch.submitit import SubmititRank

    rank = SubmititRank("m:f", {"a": 1}, "gloo", "/runs/x")
    import submitit

    assert isinstance(rank, submitit.helpers.Checkpointable)
    again = rank.checkpoint()
    assert again.function is rank and again.args == () and again.kwargs == {}
