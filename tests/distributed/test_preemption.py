"""Preemption on real processes: a stage-4 run SIGKILLed, resumed, SIGTERMed, resumed again ends with the loss
sequence (and the merged checkpoint) of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parents[2]


def _command(cfg: Path, init: Path, shards: Path, run_dir: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.train_stage4", "--config", str(cfg), "--set",
            "train.stage4=[{context: '512', rope_theta: 2000000.0, max_positions: 1024, steps: 4, grad_accum: 1, "
            "ulysses: 2, ring: 2, save_every: 1}]", "--step", "0", "--init", str(init), "--shards", str(shards),
            "--run-dir", str(run_dir), "--out", str(out)]


def _complete_steps(run_dir: Path) -> list[int]:
    root = run_dir / "checkpoints"
    return sorted(int(p.name[5:]) for p in root.glob("step-*") if (p / "COMPLETE").is_file()) if root.is_dir() else []


def _run_until(cmd: list[str], run_dir: Path, step: int, sig: int, log: Path) -> None:
    """Start the launcher in its own process group; once checkpoint `step` is complete, send `sig` to the
    whole group (launcher and ranks, as SLURM does) and wait for it to end."""
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while not _complete_steps(run_dir) or _complete_steps(run_dir)[-1] < step:
        assert proc.poll() is None, f"the run ended before checkpoint {step}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.2)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0                                                # it was stopped, not finished


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_sigkill_and_sigterm_mid_training_then_resume_equal_an_uninterrupted_run(tiny_ckpt, tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    rows = torch.randint(0, 5000, (6, 256), generator=torch.Generator().manual_seed(0)).tolist()
    pq.write_table(pa.table({"input_ids": pa.array(rows, type=pa.list_(pa.int32()))}), shards / "part-00000.parquet")
    cfg = tiny_ckpt.parent / "config.yaml"
    straight = _command(cfg, tiny_ckpt, shards, tmp_path / "a", tmp_path / "a_out")
    subprocess.run(straight, cwd=REPO, check=True, capture_output=True)

    cmd = _command(cfg, tiny_ckpt, shards, tmp_path / "b", tmp_path / "b_out")
    log = tmp_path / "b.log"
    _run_until(cmd, tmp_path / "b", 1, signal.SIGKILL, log)
    _run_until(cmd, tmp_path / "b", 2, signal.SIGTERM, log)                  # resumed from step 1, then stopped
    assert not (tmp_path / "b_out").exists()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resumed from" in log.read_text() + proc.stdout + proc.stderr

    assert len(_losses(tmp_path / "a")) == 4
    assert _losses(tmp_path / "b") == pytest.approx(_losses(tmp_path / "a"), rel=0, abs=1e-6)
    for name in ("llm/model.safetensors",):
        from safetensors.torch import load_file

        a, b = load_file(tmp_path / "a_out" / name), load_file(tmp_path / "b_out" / name)
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), name
