"""Stage 5, one long-video SFT run: full fine-tune (vision tower, projector, LLM) with MM-SP two-stage sharding.

    run_stage5(cfg, run_index, init_dir, train_json, media_dir, run_dir, out_dir, dims)

Every rank: load the checkpoint (released layout; stage 5 starts from the last stage-4 merge), add the media
tokens, route the LLM's attention through MM-SP (`apply_sequence_parallel`) and train on the VILA-format
conversations (`VilaVideoDataset`, `frames` per video): each SP rank encodes 1/P of the frames, the frame
embeddings are gathered, spliced and re-sharded (`prepare_sp_inputs`), and the loss is the exact token mean
over the global batch (per-device batch x DP x grad-accum: the loop divides by the supervised tokens of the
whole accumulation window, counted from the labels before any video is decoded). Samples longer than
`max_length` (text + frame tokens) are skipped, counted and logged before training. LR: a linear warm-up
over `warmup_ratio` of the steps, then cosine (the release's HF Trainer schedule) or constant
(`lr_schedule`). Rank 0 writes the full checkpoint in the released layout (tokenizer with the media tokens
included) to `out_dir`, atomically.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist

from longvila.config.train import LR_SCHEDULES
from longvila.parallel.loss import IGNORE_INDEX, token_mean_loss
from longvila.utils.io import atomic_dir, file_stamps
from longvila.utils.logging import get_logger


def lr_with_warmup(total_steps: int, warmup_ratio: float, schedule: str = "cosine"):
    """LR multiplier per optimizer step s (0-based): s / W during W = ceil(ratio x total) warm-up steps, then
    half a cosine from 1 to 0 over the remaining steps (transformers' get_cosine_schedule_with_warmup), or
    1 to the end with schedule='constant' (get_constant_schedule_with_warmup)."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr schedule {schedule!r}: use one of {', '.join(LR_SCHEDULES)}")
    warm = math.ceil(total_steps * warmup_ratio)

    def factor(s: int) -> float:
        if s < warm:
            return s / max(1, warm)
        if schedule == "constant":
            return 1.0
        progress = (s - warm) / max(1, total_steps - warm)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return factor


class VideoSFTSamples:
    """A VilaVideoDataset whose items are model inputs (ids, labels, preprocessed frames), without the records
    longer than `max_length` once their frames are spliced in (skipped, counted in `skipped`)."""

    def __init__(self, dataset, frame_size: int, tokens_per_frame: int, max_length: int) -> None:
        self.dataset, self.frame_size = dataset, frame_size
        media = dataset.num_frames * (tokens_per_frame + 1)                 # every frame + its "\n" token
        from longvila.model.conversation import tokenize_conversation

        self.keep, self.skipped, self.targets = [], [], []
        for i, rec in enumerate(dataset.records):
            tok = tokenize_conversation(dataset.tokenizer, rec, "video")
            if len(tok.input_ids) - 1 + media <= max_length:
                self.keep.append(i)
                self.targets.append(sum(label != IGNORE_INDEX for label in tok.labels))
            else:
                self.skipped.append(i)
        if self.skipped:
            get_logger().warning(f"stage 5: {len(self.skipped)} of {len(dataset)} samples exceed max_length "
                                 f"{max_length} with {dataset.num_frames} frames and are skipped "
                                 f"(raise train.stage5[].max_length to keep them)")
        if not self.keep:
            raise ValueError(f"no stage-5 sample fits max_length {max_length} with {dataset.num_frames} frames "
                             f"({media} frame tokens); raise max_length or lower frames")

    def __len__(self) -> int:
        return len(self.keep)

    def num_targets(self, i: int) -> int:
        """Supervised tokens of sample i (its answers), known without decoding the video: lets the loop
        divide by the exact token count of a whole accumulation window."""
        return self.targets[i]

    def __getitem__(self, i: int) -> dict:
        from longvila.data.video import preprocess_frames

        item = self.dataset[self.keep[i]]
        return {"input_ids": torch.tensor(item["input_ids"]), "labels": torch.tensor(item["labels"]),
                "pixels": preprocess_frames(item["frames"], self.frame_size), "id": item["id"]}


def sft_loss(model, batch: list[dict], dims, *, media_token_id: int, newline_id: int,
             total: int | None = None, device: torch.device | None = None):
    """This rank's share of the global token-mean loss of its micro-batch (one SP group's samples; `total` =
    the global supervised-token count to divide by, see `token_mean_loss`), and the sequence tokens (text +
    frames) the whole world processed in this micro-step."""
    from longvila.parallel.comm import world_sum
    from longvila.parallel.mmsp import prepare_sp_inputs

    device = device or torch.device("cpu")
    dtype = next(model.parameters()).dtype
    logits, targets, seq_tokens = [], [], 0
    for sample in batch:
        inputs = prepare_sp_inputs(model, sample["input_ids"].to(device), sample["pixels"].to(device, dtype),
                                   sample["labels"].to(device), dims, media_token_id=media_token_id,
                                   newline_id=newline_id)
        # the LM head only where a target is (answers): a video SFT sequence is mostly unsupervised frame
        # tokens, and [S, 151k] logits would dominate the step; ignored positions add nothing to the loss
        keep = (inputs.targets != IGNORE_INDEX).nonzero().flatten()
        logits.append(model(inputs_embeds=inputs.embeds[None], position_ids=inputs.positions[None],
                            logits_to_keep=keep).logits[0])
        targets.append(inputs.targets[keep])
        seq_tokens += len(inputs.embeds)
    loss, _ = token_mean_loss(torch.cat(logits), torch.cat(targets), dims, total=total)
    return loss, int(world_sum(seq_tokens))


def optimizer_steps(num_samples: int, dp: int, per_device_batch: int, grad_accum: int, epochs: int) -> int:
    """Optimizer steps of `epochs` passes over the data: every replica reads num_samples // dp samples per
    epoch (the sampler's epoch), per_device_batch x grad_accum of them per step; a partial last step is
    dropped."""
    steps = epochs * (num_samples // dp) // (per_device_batch * grad_accum)
    if steps == 0:
        raise ValueError(f"{num_samples} samples x {epochs} epochs do not fill one global batch ({per_device_batch} "
                         f"per device x DP {dp} x grad_accum {grad_accum}); lower per_device_batch/grad_accum or "
                         "add data")
    return steps


def run_stage5(cfg, run_index: int, init_dir: str | Path, train_json, media_dir,
               run_dir: str | Path, out_dir: str | Path, dims, stop_after: int | None = None) -> dict:
    """Train one stage-5 run on this rank (see the module docstring); returns the loop's result.
    `train_json` / `media_dir`: one VILA JSON and its media folder, or lists of them (a data mixture)."""
    from transformers import AutoTokenizer

    from longvila.data.sft_dataset import VilaVideoDataset
    from longvila.model.conversation import MEDIA_TOKENS, add_media_tokens
    from longvila.parallel.parallelize import apply_sequence_parallel
    from longvila.train.checkpoint import claim_run_dir, train_fingerprint
    from longvila.train.engine import (autocast, enable_gradient_checkpointing, load_for_training, make_engine,
                                       training_device, use_bf16)
    from longvila.train.loop import train

    t, run = cfg.train, cfg.train.stage5[run_index]
    rank = dist.get_rank() if dist.is_initialized() else 0
    device, bf16 = training_device(), use_bf16(t.precision)
    claim_run_dir(run_dir, {"stage5": asdict(run), "train": train_fingerprint(t), "world": dims.world_size,
                            "inputs": file_stamps(init_dir, *([train_json] if isinstance(train_json, (str, Path))
                                                                  else train_json))}, rank)
    torch.manual_seed(t.seed)
    model, saved_dtype = load_for_training(init_dir, device)           # fp32 master weights (bf16 = autocast)
    tokenizer = AutoTokenizer.from_pretrained(Path(init_dir) / "llm")
    add_media_tokens(tokenizer)
    model.resize_for_tokenizer(tokenizer)
    (newline_id,) = tokenizer("\n", add_special_tokens=False)["input_ids"]
    media_token_id = tokenizer.convert_tokens_to_ids(MEDIA_TOKENS["video"])
    size = model.vision_tower.config.image_size
    with torch.no_grad():
        tokens_per_frame = model.encode_frames(torch.zeros(1, 3, size, size, device=device)).shape[1]
    data = VideoSFTSamples(VilaVideoDataset(train_json, media_dir, tokenizer, num_frames=run.frames), size,
                           tokens_per_frame, run.max_length)
    model.requires_grad_(True)                                         # stage 5 is a full fine-tune
    apply_sequence_parallel(model, dims)
    if run.gradient_checkpointing:
        enable_gradient_checkpointing(model.llm, model.vision_tower)
    total = optimizer_steps(len(data), dims.dp_degree, run.per_device_batch, run.grad_accum, run.epochs)
    total = min(total, run.max_steps or total)
    schedule = lr_with_warmup(total, t.warmup_ratio, run.lr_schedule)
    engine = make_engine(t.engine, model, dims, lr=run.lr, lr_lambda=schedule,
                         grad_accum=run.grad_accum, zero_stage=run.zero_stage, bf16=bf16)

    def loss_fn(batch, total):
        with autocast(device, bf16 and t.engine == "torch"):
            return sft_loss(model, batch, dims, media_token_id=media_token_id, newline_id=newline_id,
                            total=total, device=device)

    result = train(engine, data, loss_fn, dims, run_dir, steps=total, grad_accum=run.grad_accum,
                   save_every=run.save_every, seed=t.seed, stop_after=stop_after, rank=rank,
                   batch_size=run.per_device_batch)
    result["skipped"] = len(data.skipped)
    if result["step"] >= total:
        with engine.gathered():                                        # collective (ZeRO-3 gathers the weights)
            if rank == 0:
                model.llm.set_attn_implementation("sdpa")              # the saved model is single-process
                model.to(saved_dtype)
                with atomic_dir(out_dir) as tmp:
                    model.save_pretrained(tmp, tokenizer=tokenizer)
        if rank == 0:
            get_logger().info(f"stage 5 {run.frames} frames: {total} steps, loss {result['losses'][0]:.4f} -> "
                              f"{result['losses'][-1]:.4f}; checkpoint -> {out_dir}")
    return result
