"""Stage 4 end to end through its CLI and the local launcher (2 gloo processes, Ulysses 2, LoRA, merge, the
released layout), and preemption on real processes: a run SIGKILLed, resumed, SIGTERMed, resumed again ends
with the loss sequence and the merged checkpoint of an uninterrupted run."""

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
            "train.stage4=[{context: 1k, rope_theta: 2000000.0, max_positions: 1024, steps: 4, grad_accum: 1, "
            "ulysses: 2, ring: 1, save_every: 1}]", "--set", "train.cluster.cpu_processes=2",
            "--set", "train.stage5=[{frames: 8, ulysses: 2}]", "--step", "0", "--init", str(init), "--shards", str(shards),
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
    proc.wait(timeout=180)                    # a safety limit, not a timing check (2 loaded cores)
    assert proc.returncode != 0                                                # it was stopped, not finished


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_stage4_cli_and_sigkill_sigterm_resume_equal_an_uninterrupted_run(tiny_ckpt, tmp_path):
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
    steps = [json.loads(line)["step"] for line in (tmp_path / "b/metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]                                               # no step logged twice
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "a_out/llm/model.safetensors"), load_file(tmp_path / "b_out/llm/model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    _check_merged_checkpoint(tiny_ckpt, tmp_path / "a", tmp_path / "a_out")


def _check_merged_checkpoint(base_dir: Path, run_dir: Path, out: Path) -> None:
    """rope_theta / max positions updated; merged = base + (alpha / r) B @ A with the final LoRA factors; norms
    and embeddings the trained ones; vision tower and projector unchanged; AutoModel loads it."""
    from transformers import AutoModel

    from longvila.model import LongVILAForCausalLM
    from longvila.train.rope import inv_freq

    model = LongVILAForCausalLM.from_pretrained(out)
    saved = json.loads((out / "llm/config.json").read_text())
    assert saved["rope_theta"] == 2_000_000.0 and saved["max_position_embeddings"] == 1024
    assert inv_freq(model)[1] == pytest.approx(2_000_000.0 ** (-2 / 16), rel=1e-6)
    base = LongVILAForCausalLM.from_pretrained(base_dir)
    trained = torch.load(run_dir / "checkpoints/step-000004/engine.pt", weights_only=False)["params"]
    merged, base_params = dict(model.named_parameters()), dict(base.named_parameters())
    lora = [n[:-len(".lora_a")] for n in trained if n.endswith(".lora_a")]
    assert len(lora) == 4 * len(model.llm.model.layers)                        # q, k, v, o in every layer
    for name in lora:
        delta = trained[f"{name}.lora_b"] @ trained[f"{name}.lora_a"] * (16 / 8)    # config: alpha 16, r 8
        torch.testing.assert_close(merged[f"{name}.weight"], base_params[f"{name}.weight"] + delta, rtol=0, atol=1e-6)
    extra = [n for n in trained if "lora_" not in n]
    assert extra and all("norm" in n or "embed_tokens" in n for n in extra)
    assert all(torch.equal(merged[n], trained[n]) for n in extra)
    for part in ("vision_tower", "mm_projector"):                              # carried over unchanged
        new, old = getattr(model, part).state_dict(), getattr(base, part).state_dict()
        assert new.keys() == old.keys() and all(torch.equal(new[k], old[k]) for k in new), part
    assert (out / "llm/tokenizer_config.json").is_file()
    auto = AutoModel.from_pretrained(out)                                      # the Auto classes load it too
    assert type(auto) is LongVILAForCausalLM and torch.equal(auto.llm.model.layers[0].self_attn.q_proj.weight,
                                                              merged["llm.model.layers.0.self_attn.q_proj.weight"])
    assert (run_dir / "loss_curve.png").is_file() and (run_dir / "config.yaml").is_file()
    assert (run_dir / "plan.json").is_file() and (run_dir / "run.json").is_file()
