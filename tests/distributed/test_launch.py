"""The launchers for real: local gloo ranks, and submitit's LocalExecutor (the stand-in for SLURM) with the
same Checkpointable callable a cluster job gets — success, a failing rank, and a requeue after preemption."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from longvila.config import load_config_file
from pipeline import launch as L
from tests.conftest import REPO

pytestmark = pytest.mark.distributed
HERE = "tests.distributed.test_launch"


# ---- targets (run in the launched processes; found by "module:function")

def report(out: str, fail_rank: int = -1, sleep_s: float = 0) -> dict:
    """All-reduce the ranks; write what this rank saw; rank `fail_rank` raises, the others sleep first."""
    import torch
    import torch.distributed as dist

    from longvila.utils.logging import get_logger

    rank, world = dist.get_rank(), dist.get_world_size()
    if rank == fail_rank:
        raise ValueError(f"boom on rank {rank}")
    time.sleep(sleep_s)
    total = torch.tensor([rank + 1.0])
    dist.all_reduce(total)
    seen = {"rank": rank, "world": world, "sum": total.item(), "backend": dist.get_backend(),
            "env": {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                                              "OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    Path(out, f"rank{rank}.json").write_text(json.dumps(seen))
    get_logger().info(f"hello from rank {rank}")
    return seen


def preemptible(out: str) -> int:
    """First attempt: write the pid and wait to be preempted (SIGUSR2); a requeued attempt returns."""
    attempts = Path(out, "attempts")
    n = int(attempts.read_text()) + 1 if attempts.exists() else 1
    attempts.write_text(str(n))
    if n == 1:
        Path(out, "pid").write_text(str(os.getpid()))
        time.sleep(120)
    return n


# ---- helpers

def _cfg(launcher: str, processes: int):
    return load_config_file(REPO / "config.yaml", [f"train.launcher={launcher}",
                                                   f"train.cluster.cpu_processes={processes}",
                                                   "train.cluster.poll_seconds=1"])


def _job(tmp_path, target="report", **kwargs) -> L.Job:
    return L.Job(name="t", target=f"{HERE}:{target}", kwargs={"out": str(tmp_path), **kwargs},
                 run_dir=tmp_path / "run")


def _seen(tmp_path, world):
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]


# ---- local

def test_local_launcher_runs_every_rank_with_the_torchrun_environment(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")                         # the job's budget (Snakemake: threads)
    monkeypatch.setenv("MKL_NUM_THREADS", "4")                         # torch reads this one over OMP's
    assert L.launch(_job(tmp_path), _cfg("local", 2)) == 0
    seen = _seen(tmp_path, 2)
    assert [s["rank"] for s in seen] == [0, 1] and {s["sum"] for s in seen} == {3.0}
    assert {s["backend"] for s in seen} == {"gloo"} and {s["env"]["MASTER_ADDR"] for s in seen} == {"127.0.0.1"}
    assert [s["env"]["LOCAL_RANK"] for s in seen] == ["0", "1"] and seen[0]["env"]["WORLD_SIZE"] == "2"
    assert {(s["env"]["OMP_NUM_THREADS"], s["env"]["MKL_NUM_THREADS"]) for s in seen} == {("2", "2")}   # split
    for r in range(2):                                                  # every rank has its own log
        assert f"hello from rank {r}" in (tmp_path / f"run/logs/rank-{r:05d}.log").read_text()
    console = capfd.readouterr().err                                   # rank 0 only
    assert "hello from rank 0" in console and "hello from rank 1" not in console
    assert json.loads((tmp_path / "run/plan.json").read_text())["world_size"] == 2
    assert not list((tmp_path / "run/logs").glob("launch-*.pkl"))      # the payload is cleaned up


def test_rank_threads_split_the_job_budget():
    assert L.rank_threads(4, {"OMP_NUM_THREADS": "2"}) == 1 and L.rank_threads(2, {"OMP_NUM_THREADS": "8"}) == 4
    assert L.rank_threads(3, {"OMP_NUM_THREADS": "junk"}) == max(1, (os.cpu_count() or 1) // 3)
    assert L.rank_threads(64, {}) == 1


def test_slurm_tasks_take_their_threads_from_their_cpus_not_the_launcher_rule():
    from pipeline.launch.submitit import task_thread_env

    env = {"SLURM_CPUS_PER_TASK": "8", "OMP_NUM_THREADS": "1"}           # 1: the launcher rule's, via sbatch
    assert task_thread_env(env, {}) == {var: "8" for var in L.THREAD_VARS}
    assert task_thread_env(env, {"OMP_NUM_THREADS": "3"})["MKL_NUM_THREADS"] == "8"
    assert "OMP_NUM_THREADS" not in task_thread_env(env, {"OMP_NUM_THREADS": "3"})  # the job's own wins
    assert task_thread_env({"OMP_NUM_THREADS": "1"}, {}) == {}             # not in a SLURM task: unchanged


def test_a_failing_local_rank_fails_the_launch_and_stops_the_others(tmp_path):
    start = time.time()
    with pytest.raises(RuntimeError, match=r"(?s)rank 1 failed.*ValueError: boom on rank 1"):
        L.launch(_job(tmp_path, fail_rank=1, sleep_s=120), _cfg("local", 2))
    assert time.time() - start < 60                                    # rank 0 (asleep for 120 s) was stopped
    assert "boom on rank 1" in (tmp_path / "run/logs/rank-00001.log").read_text()


# ---- submitit (LocalExecutor)

def test_submitit_local_executor_runs_a_distributed_job(tmp_path):
    assert L.launch(_job(tmp_path), _cfg("submitit", 2), cluster="local") == 0
    seen = _seen(tmp_path, 2)
    assert {s["sum"] for s in seen} == {3.0} and [s["env"]["RANK"] for s in seen] == ["0", "1"]
    assert "hello from rank 1" in (tmp_path / "run/logs/rank-00001.log").read_text()
    plan = json.loads((tmp_path / "run/plan.json").read_text())
    (folder,) = (tmp_path / "run/submitit").iterdir()
    assert plan["submitit"]["folder"] == str(folder) and "#SBATCH --ntasks-per-node=2" in plan["submitit"]["sbatch"]
    assert sorted(p.name for p in folder.glob("*_result.pkl")) and list(folder.glob("*_0_log.err"))


def test_a_failing_submitit_task_fails_the_launch_with_its_error_and_logs(tmp_path):
    (tmp_path / "run/submitit/old").mkdir(parents=True)
    with pytest.raises(RuntimeError, match=r"(?s)failed in task 1 .*_1_log.err.*ValueError: boom on rank 1"):
        L.launch(_job(tmp_path, fail_rank=1), _cfg("submitit", 2), cluster="local")    # task 0 loses its peer
    assert len(list((tmp_path / "run/submitit").iterdir())) == 2       # a fresh folder per submission


def test_a_failed_submitit_task_whose_peer_cannot_notice_cancels_the_job(tmp_path):
    # rank 0 fails; rank 1 sleeps 120 s before its first collective, as a peer stuck in a rendezvous would
    start = time.time()
    with pytest.raises(RuntimeError, match=r"(?s)failed in task 0 .*ValueError: boom on rank 0"):
        L.launch(_job(tmp_path, fail_rank=0, sleep_s=120), _cfg("submitit", 2), cluster="local")
    assert time.time() - start < 60
    assert "failed and the others did not end: job cancelled" in (tmp_path / "run/logs/launcher.log").read_text()


def test_a_preempted_submitit_job_requeues_itself_and_runs_again(tmp_path):
    def preempt():
        pid = tmp_path / "pid"
        for _ in range(600):
            if pid.exists() and pid.read_text():
                time.sleep(0.5)                  # the signal handler is installed before the target runs
                os.kill(int(pid.read_text()), signal.SIGUSR2)
                return
            time.sleep(0.1)

    thread = threading.Thread(target=preempt, daemon=True)
    thread.start()
    assert L.launch(_job(tmp_path, target="preemptible"), _cfg("submitit", 1), cluster="local") == 0
    thread.join(timeout=5)
    assert (tmp_path / "attempts").read_text() == "2"


def test_a_stage4_step_through_submitit(tiny_ckpt, tmp_path):
    """The training CLI's job on submitit's LocalExecutor: one tiny stage-4 step, 2 ranks (SP 2x1)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from pipeline import train_stage4

    shards = tmp_path / "shards"
    shards.mkdir()
    rows = torch.randint(0, 5000, (2, 256), generator=torch.Generator().manual_seed(0)).tolist()
    pq.write_table(pa.table({"input_ids": pa.array(rows, type=pa.list_(pa.int32()))}), shards / "part-00000.parquet")
    sets = ["train.launcher=submitit", "train.cluster.cpu_processes=2", "train.cluster.poll_seconds=1",
            "train.stage4=[{context: 1k, rope_theta: 2000000.0, max_positions: 1024, steps: 1, grad_accum: 1, "
            "ulysses: 2, ring: 1, save_every: 0}]", "train.stage5=[{frames: 8, ulysses: 2, ring: 1}]"]
    cfg = load_config_file(tiny_ckpt.parent / "config.yaml", sets)
    job = L.Job(name="stage4-1k", target=train_stage4.TARGET, run_dir=tmp_path / "run",
                kwargs={"config": str(tiny_ckpt.parent / "config.yaml"), "overrides": sets, "step": 0,
                        "init": str(tiny_ckpt), "shards": str(shards), "run_dir": str(tmp_path / "run"),
                        "out": str(tmp_path / "out")})
    assert L.launch(job, cfg, cluster="local") == 0
    assert (tmp_path / "out/llm/config.json").is_file()
    assert [json.loads(x)["step"] for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()] == [1]
