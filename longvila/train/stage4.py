"""Stage 4, one context-extension step: RoPE base up, LoRA, sequence-parallel training on packed rows, merge.

    run_stage4_step(cfg, step_index, init_dir, shards_dir, run_dir, out_dir, dims)

Every rank: load the checkpoint (released layout), set rope_theta / max_position_embeddings, wrap q/k/v/o in
LoRA (norms and embeddings trainable), route attention through MM-SP (`apply_sequence_parallel`), and
train `steps` optimizer steps on the context's packed Parquet rows (`pack_shards/<ctx>`; every SP rank reads
the same row, DP replicas different ones), constant LR after `warmup_steps`, checkpoints in `run_dir`
(resumed after preemption). Rank 0 then merges LoRA into the weights and writes a full checkpoint in the
released layout (vision tower and projector carried over, tokenizer included) to `out_dir`, atomically.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import torch

from longvila.utils.io import atomic_dir
from longvila.utils.logging import get_logger


class PackedRows:
    """Rows of a packed data set folder (part-*.parquet, `input_ids`), read lazily by index."""

    def __init__(self, folder: str | Path) -> None:
        self.files = sorted(Path(folder).glob("part-*.parquet"))
        if not self.files:
            raise ValueError(f"{folder} has no part-*.parquet; run rule pack_shards for this context first")
        self.counts = [pq.read_metadata(f).num_rows for f in self.files]
        self._cache: tuple[int, list] | None = None

    def __len__(self) -> int:
        return sum(self.counts)

    def __getitem__(self, i: int) -> torch.Tensor:
        for f, (path, n) in enumerate(zip(self.files, self.counts)):
            if i < n:
                if self._cache is None or self._cache[0] != f:
                    self._cache = (f, pq.read_table(path, columns=["input_ids"]).column("input_ids").to_pylist())
                return torch.tensor(self._cache[1][i], dtype=torch.long)
            i -= n
        raise IndexError(i)


def run_stage4_step(cfg, step_index: int, init_dir: str | Path, shards_dir: str | Path, run_dir: str | Path,
                    out_dir: str | Path, dims, stop_after: int | None = None) -> dict:
    """Train one stage-4 step on this rank (see the module docstring); returns the loop's result."""
    import torch.distributed as dist
    from transformers import AutoTokenizer

    from longvila.model import LongVILAForCausalLM
    from longvila.parallel.parallelize import apply_sequence_parallel
    from longvila.train.engine import lm_loss, make_engine
    from longvila.train.lora import apply_lora, merge_lora
    from longvila.train.loop import train
    from longvila.train.rope import set_rope_base

    t, step = cfg.train, cfg.train.stage4[step_index]
    torch.manual_seed(t.seed)
    model = LongVILAForCausalLM.from_pretrained(init_dir)
    set_rope_base(model, step.rope_theta, step.max_positions)
    apply_lora(model.llm, r=t.lora_r, alpha=t.lora_alpha)
    for p in list(model.vision_tower.parameters()) + list(model.mm_projector.parameters()):
        p.requires_grad_(False)                                          # stage 4 is text only
    apply_sequence_parallel(model, dims, layout=t.layout)
    warm = max(1, t.warmup_steps)
    engine = make_engine(t.engine, model, dims, lr=t.lr, lr_lambda=lambda s: min(1.0, (s + 1) / warm),
                         grad_accum=step.grad_accum, zero_stage=step.zero_stage)
    rows = PackedRows(shards_dir)
    rank = dist.get_rank() if dist.is_initialized() else 0
    rank0 = rank == 0
    result = train(engine, rows, lambda row: lm_loss(model.llm, row, dims, t.layout), dims, run_dir,
                   steps=step.steps, grad_accum=step.grad_accum, save_every=step.save_every, seed=t.seed,
                   stop_after=stop_after, rank=rank)
    if result["step"] >= step.steps:
        with engine.gathered():                                        # collective (ZeRO-3 gathers the weights)
            if rank0:
                merge_lora(model.llm)
                model.llm.set_attn_implementation("sdpa")              # the saved model is single-process
                tokenizer = AutoTokenizer.from_pretrained(Path(init_dir) / "llm")
                with atomic_dir(out_dir) as tmp:
                    model.save_pretrained(tmp, tokenizer=tokenizer)
        if rank0:
            get_logger().info(f"stage 4 {step.context}: {result['step']} steps, loss {result['losses'][0]:.4f} -> "
                              f"{result['losses'][-1]:.4f}; merged checkpoint -> {out_dir}")
    return result
