"""Stage 4, one context-extension step: RoPE base up, LoRA, sequence-parallel training on packed rows, merge.

    run_stage4_step(cfg, step_index, init_dir, shards_dir, run_dir, out_dir, dims)

Every rank: load the checkpoint (released layout), set rope_theta / max_position_embeddings, wrap q/k/v/o in
LoRA (norms and embeddings trainable; with `lora: false` every LLM weight trains instead), route attention
through MM-SP (`apply_sequence_parallel`), and train `steps` optimizer steps on the context's packed Parquet
rows (`pack_shards/<ctx>`; every SP rank reads the same row, DP replicas different ones; with `document_mask`
each packed document attends only to itself), constant LR after `warmup_steps`, checkpoints in `run_dir`
(resumed after preemption). Rank 0 then merges LoRA into the weights and writes a full checkpoint in the
released layout (vision tower and projector carried over, tokenizer included) to `out_dir`, atomically.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pyarrow.parquet as pq
import torch

from longvila.utils.io import atomic_dir, file_stamps
from longvila.utils.logging import get_logger


class PackedRows:
    """Rows of a packed data set folder (part-*.parquet, `input_ids`), read lazily by index: only the row
    group that holds the row is read (and kept until another one is needed), never a whole part file."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        files = sorted(self.folder.glob("part-*.parquet"))
        if not files:
            raise ValueError(f"{folder} has no part-*.parquet; run rule pack_shards for this context first")
        self.groups = []                               # (file, row group, rows), in row order
        for f in files:
            meta = pq.read_metadata(f)
            self.groups += [(f, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
        self._cache: tuple[int, object] | None = None

    def __len__(self) -> int:
        return sum(n for _, _, n in self.groups)

    def separator(self) -> int:
        """The token id the packer ended every document with (its manifest's tokenizer.eos_id)."""
        path = self.folder / "manifest.json"
        try:
            return int(json.loads(path.read_text())["tokenizer"]["eos_id"])
        except (OSError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: no tokenizer.eos_id ({type(e).__name__}: {e}); document_mask reads the "
                             "separator from rule pack_shards' manifest: rerun it, or set document_mask: false") from e

    def __getitem__(self, i: int) -> torch.Tensor:
        for k, (path, group, n) in enumerate(self.groups):
            if i < n:
                if self._cache is None or self._cache[0] != k:
                    column = pq.ParquetFile(path).read_row_group(group, columns=["input_ids"]).column("input_ids")
                    self._cache = (k, column.combine_chunks())
                values = self._cache[1][i].values.to_numpy(zero_copy_only=False)
                return torch.from_numpy(values.astype("int64"))
            i -= n
        raise IndexError(i)


def run_stage4_step(cfg, step_index: int, init_dir: str | Path, shards_dir: str | Path, run_dir: str | Path,
                    out_dir: str | Path, dims, stop_after: int | None = None) -> dict:
    """Train one stage-4 step on this rank (see the module docstring); returns the loop's result."""
    import torch.distributed as dist
    from transformers import AutoTokenizer

    from longvila.parallel.parallelize import apply_sequence_parallel
    from longvila.train.checkpoint import claim_run_dir, train_fingerprint
    from longvila.train.engine import (autocast, enable_gradient_checkpointing, lm_loss, load_for_training,
                                       make_engine, training_device, use_bf16)
    from longvila.train.lora import apply_lora, merge_lora
    from longvila.train.loop import train
    from longvila.train.rope import set_rope_base

    t, step = cfg.train, cfg.train.stage4[step_index]
    rank = dist.get_rank() if dist.is_initialized() else 0
    device, bf16 = training_device(), use_bf16(t.precision)
    claim_run_dir(run_dir, {"stage4": asdict(step), "train": train_fingerprint(t), "world": dims.world_size,
                            "inputs": file_stamps(init_dir, shards_dir)}, rank)
    torch.manual_seed(t.seed)
    model, saved_dtype = load_for_training(init_dir, device)           # fp32 master weights (bf16 = autocast)
    set_rope_base(model, step.rope_theta, step.max_positions)
    if step.lora:
        apply_lora(model.llm, r=t.lora_r, alpha=t.lora_alpha)
    for p in list(model.vision_tower.parameters()) + list(model.mm_projector.parameters()):
        p.requires_grad_(False)                                          # stage 4 is text only
    apply_sequence_parallel(model, dims)
    if step.gradient_checkpointing:
        enable_gradient_checkpointing(model.llm)
    warm = max(1, t.warmup_steps)
    engine = make_engine(t.engine, model, dims, lr=step.lr or t.lr, lr_lambda=lambda s: min(1.0, (s + 1) / warm),
                         grad_accum=step.grad_accum, zero_stage=step.zero_stage, bf16=bf16)
    rows = PackedRows(shards_dir)
    rank0 = rank == 0
    separator = rows.separator() if step.document_mask else None

    def loss_fn(row, total):
        with autocast(device, bf16 and t.engine == "torch"):
            return lm_loss(model.llm, row.to(device), dims, separator=separator)

    result = train(engine, rows, loss_fn, dims, run_dir, steps=step.steps, grad_accum=step.grad_accum,
                   save_every=step.save_every, seed=t.seed, stop_after=stop_after, rank=rank)
    if result["step"] >= step.steps:
        with engine.gathered():                                        # collective (ZeRO-3 gathers the weights)
            if rank0:
                if step.lora:
                    merge_lora(model.llm)
                model.llm.set_attn_implementation("sdpa")              # the saved model is single-process
                model.to(saved_dtype)
                tokenizer = AutoTokenizer.from_pretrained(Path(init_dir) / "llm")
                with atomic_dir(out_dir) as tmp:
                    model.save_pretrained(tmp, tokenizer=tokenizer)
        if rank0:
            get_logger().info(f"stage 4 {step.context}: {result['step']} steps, loss {result['losses'][0]:.4f} -> "
                              f"{result['losses'][-1]:.4f}; merged checkpoint -> {out_dir}")
    return result

