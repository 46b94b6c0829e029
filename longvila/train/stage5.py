"""Stage 5, one long-video SFT run: full fine-tune (vision tower, projector, LLM) with MM-SP two-stage sharding.

    run_stage5(cfg, run_index, init_dir, train_json, media_dir, run_dir, out_dir, dims)

Every rank: load the checkpoint (released layout; stage 5 starts from the last stage-4 merge), add the media
tokens, route the LLM's attention through MM-SP (`apply_sequence_parallel`) and train on the VILA-format
conversations (`VilaVideoDataset`, `frames` per video): each SP rank encodes 1/P of the frames, the frame
embeddings are gathered, spliced and re-sharded (`prepare_sp_inputs`), and the loss is the exact token mean
over the global batch (per-device batch x DP x grad-accum). Samples longer than `max_length` (text + frame
tokens) are skipped, counted and logged before training. LR: cosine after a linear warm-up over
`warmup_ratio` of the steps (the release's HF Trainer schedule). Rank 0 writes the full checkpoint in the
released layout (tokenizer with the media tokens included) to `out_dir`, atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.distributed as dist

from longvila.parallel.loss import token_mean_loss
from longvila.utils.io import atomic_dir
from longvila.utils.logging import get_logger


def cosine_with_warmup(total_steps: int, warmup_ratio: float):
    """LR multiplier per optimizer step s (0-based): s / W during W = ceil(ratio x total) warm-up steps, then
    half a cosine from 1 to 0 over the remaining steps (transformers' get_cosine_schedule_with_warmup)."""
    warm = math.ceil(total_steps * warmup_ratio)

    def factor(s: int) -> float:
        if s < warm:
            return s / max(1, warm)
        progress = (s - warm) / max(1, total_steps - warm)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return factor


class VideoSFTSamples:
    """A VilaVideoDataset whose items are model inputs (ids, labels, preprocessed frames), without the records
    longer than `max_length` once their frames are spliced in (skipped, counted in `skipped`)."""

    def __init__(self, dataset, frame_size: int, tokens_per_frame: int, max_length: int) -> None:
        self.dataset, self.frame_size = dataset, frame_size
        media = dataset.num_frames * (tokens_per_frame + 1)                 # every frame + its "\n" token
        self.keep, self.skipped = [], []
        for i, rec in enumerate(dataset.records):
            from longvila.model.conversation import tokenize_conversation

            length = len(tokenize_conversation(dataset.tokenizer, rec, "video").input_ids) - 1 + media
            (self.keep if length <= max_length else self.skipped).append(i)
        if self.skipped:
            get_logger().warning(f"stage 5: {len(self.skipped)} of {len(dataset)} samples exceed max_length "
                                 f"{max_length} with {dataset.num_frames} frames and are skipped "
                                 f"(raise train.stage5[].max_length to keep them)")
        if not self.keep:
            raise ValueError(f"no stage-5 sample fits max_length {max_length} with {dataset.num_frames} frames "
                             f"({media} frame tokens); raise max_length or lower frames")

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, i: int) -> dict:
        from longvila.data.video import preprocess_frames

        item = self.dataset[self.keep[i]]
        return {"input_ids": torch.tensor(item["input_ids"]), "labels": torch.tensor(item["labels"]),
                "pixels": preprocess_frames(item["frames"], self.frame_size), "id": item["id"]}


def sft_loss(model, batch: list[dict], dims, *, media_token_id: int, newline_id: int, layout: str = "zigzag"):
    """This rank's share of the global token-mean loss of its micro-batch (one SP group's samples), and the
    sequence tokens (text + frames) the whole world processed in this micro-step."""
    from longvila.parallel.mmsp import prepare_sp_inputs

    logits, targets, seq_tokens = [], [], 0
    for sample in batch:
        pixels = sample["pixels"].to(next(model.parameters()).dtype)
        inputs = prepare_sp_inputs(model, sample["input_ids"], pixels, sample["labels"], dims,
                                   media_token_id=media_token_id, newline_id=newline_id, layout=layout)
        logits.append(model(inputs_embeds=inputs.embeds[None], position_ids=inputs.positions[None]).logits[0])
        targets.append(inputs.targets)
        seq_tokens += len(inputs.embeds)
    loss, _ = token_mean_loss(torch.cat(logits), torch.cat(targets), dims)
    count = torch.tensor([float(seq_tokens)], dtype=torch.float64)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(count)
    return loss, int(count.item())


def optimizer_steps(num_samples: int, dp: int, per_device_batch: int, grad_accum: int, epochs: int) -> int:
    """Optimizer steps of a run: whole global batches per epoch (the tail is dropped) times epochs."""
    per_epoch = (num_samples // dp) // (per_device_batch * grad_accum)
    if per_epoch == 0:
        raise ValueError(f"{num_samples} samples do not fill one global batch ({per_device_batch} per device x "
                         f"DP {dp} x grad_accum {grad_accum}); lower per_device_batch/grad_accum or add data")
    return per_epoch * epochs


def run_stage5(cfg, run_index: int, init_dir: str | Path, train_json: str | Path, media_dir: str | Path,
               run_dir: str | Path, out_dir: str | Path, dims, stop_after: int | None = None) -> dict:
    """Train one stage-5 run on this rank (see the module docstring); returns the loop's result."""
    from transformers import AutoTokenizer

    from longvila.data.sft_dataset import VilaVideoDataset
    from longvila.model import LongVILAForCausalLM
    from longvila.model.conversation import MEDIA_TOKENS, add_media_tokens
    from longvila.parallel.parallelize import apply_sequence_parallel
    from longvila.train.engine import make_engine
    from longvila.train.loop import train

    t, run = cfg.train, cfg.train.stage5[run_index]
    rank = dist.get_rank() if dist.is_initialized() else 0
    torch.manual_seed(t.seed)
    model = LongVILAForCausalLM.from_pretrained(init_dir)
    tokenizer = AutoTokenizer.from_pretrained(Path(init_dir) / "llm")
    add_media_tokens(tokenizer)
    model.resize_for_tokenizer(tokenizer)
    (newline_id,) = tokenizer("\n", add_special_tokens=False)["input_ids"]
    media_token_id = tokenizer.convert_tokens_to_ids(MEDIA_TOKENS["video"])
    size = model.vision_tower.config.image_size
    with torch.no_grad():
        tokens_per_frame = model.encode_frames(torch.zeros(1, 3, size, size)).shape[1]
    data = VideoSFTSamples(VilaVideoDataset(train_json, media_dir, tokenizer, num_frames=run.frames), size,
                           tokens_per_frame, run.max_length)
    model.requires_grad_(True)                                         # stage 5 is a full fine-tune
    apply_sequence_parallel(model, dims, layout=t.layout)
    total = optimizer_steps(len(data), dims.dp_degree, run.per_device_batch, run.grad_accum, run.epochs)
    total = min(total, run.max_steps or total)
    engine = make_engine(t.engine, model, dims, lr=run.lr, lr_lambda=cosine_with_warmup(total, t.warmup_ratio),
                         grad_accum=run.grad_accum, zero_stage=run.zero_stage)
    loss_fn = lambda batch: sft_loss(model, batch, dims, media_token_id=media_token_id, newline_id=newline_id,
                                     layout=t.layout)
    result = train(engine, data, loss_fn, dims, run_dir, steps=total, grad_accum=run.grad_accum,
                   save_every=run.save_every, seed=t.seed, stop_after=stop_after, rank=rank,
                   batch_size=run.per_device_batch)
    result["skipped"] = len(data.skipped)
    if result["step"] >= total:
        with engine.gathered():                                        # collective (ZeRO-3 gathers the weights)
            if rank == 0:
                model.llm.set_attn_implementation("sdpa")              # the saved model is single-process
                with atomic_dir(out_dir) as tmp:
                    model.save_pretrained(tmp, tokenizer=tokenizer)
        if rank == 0:
            get_logger().info(f"stage 5 {run.frames} frames: {total} steps, loss {result['losses'][0]:.4f} -> "
                              f"{result['losses'][-1]:.4f}; checkpoint -> {out_dir}")
    return result
