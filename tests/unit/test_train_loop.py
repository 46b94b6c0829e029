"""The training loop: a run stopped mid-way and resumed from its checkpoint ends exactly like an uninterrupted one."""

from __future__ import annotations

import json

import torch

from longvila.model import build_config
from longvila.parallel import ParallelDims
from longvila.train import checkpoint
from longvila.train.engine import TorchEngine, lm_loss
from longvila.train.loop import train


def _setup():
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = build_config("tiny").llm_config()
    cfg.vocab_size = 2048                                       # the tiny shapes with a small vocabulary: fast
    model = Qwen2ForCausalLM(cfg).double()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 2))    # 2 warm-up steps
    dims = ParallelDims(world_size=1)
    data = [torch.randint(0, 2000, (32,), generator=torch.Generator().manual_seed(i)) for i in range(5)]
    return TorchEngine(model, dims, opt, sched, grad_clip=1.0), data, dims


def test_resume_after_preemption_gives_the_same_losses_and_weights(tmp_path):
    engine, data, dims = _setup()
    straight = train(engine, data, lambda row, total: lm_loss(engine.model, row, dims), dims, tmp_path / "a", steps=6,
                     grad_accum=2, save_every=2, seed=7)
    final = {n: p.detach().clone() for n, p in engine.model.named_parameters()}

    engine, data, dims = _setup()
    first = train(engine, data, lambda row, total: lm_loss(engine.model, row, dims), dims, tmp_path / "b", steps=6,
                  grad_accum=2, save_every=2, seed=7, stop_after=3)              # "preempted" after step 3
    assert first["step"] == 3 and [p.name for p in checkpoint.complete(tmp_path / "b")] == ["step-000002"]
    (tmp_path / "b/checkpoints/step-000004").mkdir()                            # a save killed midway
    engine, data, dims = _setup()                                               # a fresh process
    resumed = train(engine, data, lambda row, total: lm_loss(engine.model, row, dims), dims, tmp_path / "b", steps=6,
                    grad_accum=2, save_every=2, seed=7)
    assert resumed["losses"] == straight["losses"] and len(resumed["losses"]) == 6
    for n, p in engine.model.named_parameters():
        assert torch.equal(p, final[n]), n
    rows = [json.loads(line) for line in (tmp_path / "a/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7)) and rows[0]["lr"] == 5e-4 and rows[1]["lr"] == 1e-3
    resumed_rows = [json.loads(line)["step"] for line in (tmp_path / "b/metrics.jsonl").read_text().splitlines()]
    assert resumed_rows == list(range(1, 7))                                   # no step logged twice
    assert straight["losses"][-1] < straight["losses"][0]
