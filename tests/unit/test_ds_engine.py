"""The DeepSpeed config builder (no deepspeed import: the engine itself is tested in distributed/)."""

from __future__ import annotations

import pytest
import torch

from longvila.parallel import ParallelDims
from longvila.train.ds_engine import DeepSpeedEngine, ds_config


def test_zero2_fp32_config():
    cfg = ds_config(grad_accum=4, zero_stage=2, grad_clip=1.0)
    assert cfg["train_micro_batch_size_per_gpu"] == 1 and cfg["gradient_accumulation_steps"] == 4
    assert cfg["zero_optimization"] == {"stage": 2}
    assert cfg["gradient_clipping"] == 1.0 and cfg["bf16"] == {"enabled": False}
    assert "optimizer" not in cfg and "scheduler" not in cfg          # torch AdamW + LambdaLR are passed in
    assert "train_batch_size" not in cfg                               # DeepSpeed derives it from the world


def test_zero3_bf16_config_and_persistence():
    cfg = ds_config(grad_accum=1, zero_stage=3, grad_clip=None, bf16=True, persistence_threshold=0)
    assert cfg["zero_optimization"] == {"stage": 3, "stage3_param_persistence_threshold": 0}
    assert cfg["gradient_clipping"] == 0.0 and cfg["bf16"] == {"enabled": True}
    assert ds_config(grad_accum=1, zero_stage=3)["zero_optimization"] == {"stage": 3}    # DeepSpeed's default
    assert ds_config(grad_accum=1, zero_stage=2, persistence_threshold=0)["zero_optimization"] == {"stage": 2}


@pytest.mark.parametrize("kwargs, match", [
    (dict(grad_accum=1, zero_stage=1), "stage 2 or 3"),
    (dict(grad_accum=1, zero_stage=0), "train.engine=torch"),
    (dict(grad_accum=0), "at least 1"),
    (dict(grad_accum=1, grad_clip=-1.0), "no clipping"),
])
def test_bad_settings_name_the_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ds_config(**kwargs)


def test_engine_needs_a_process_group():
    with pytest.raises(ValueError, match="torch.distributed"):
        DeepSpeedEngine(torch.nn.Linear(2, 2), ParallelDims(world_size=1), lr=1e-3, lr_lambda=lambda s: 1.0,
                        grad_accum=1)
