"""Two-stage sharding of multi-modal sequences (LongVILA's MM-SP).

Stage 1 (vision, `encode_frames_sharded`): the video's frames are split evenly across the P ranks of the SP
group; each rank runs the vision tower + projector on its own frames only. Training passes pixels; SP
inference (`longvila.infer.sp.encode_video_sharded`) passes uint8 frames with its preprocessing and a chunk
size, under no_grad: one implementation of the sharding for both. Stage 2 (language): the frame embeddings
are gathered with an autograd-correct all-gather (every frame's gradient returns to the rank that encoded
it), spliced into the token sequence, padded to the layout's divisor with ignored tokens, and re-sharded for
attention. Labels are shifted BEFORE sharding (no target is lost at shard boundaries or zigzag junctions)
and position ids stay global.

    inputs = prepare_sp_inputs(model, ids, frames, labels, dims, media_token_id=vid, newline_id=nl)
    logits = model(inputs_embeds=inputs.embeds[None], position_ids=inputs.positions[None]).logits[0]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longvila.parallel.comm import gather_along
from longvila.parallel.dims import ParallelDims
from longvila.parallel.layout import shard_sequence

IGNORE_INDEX = -100


def encode_frames_sharded(model, frames, dims: ParallelDims, *, prepare=None, batch: int | None = None) -> torch.Tensor:
    """All frames' projector outputs [N, T, D] on every SP rank, each rank encoding only N/P of them.

    The one sharded frame encoder, for training (pixels, gradients) and inference (uint8 frames, no_grad).

    Args:
        frames: [N, ...], the same on every rank: preprocessed pixels [N, 3, H, W] (a tensor), or raw frames
            (e.g. uint8 [N, H, W, 3], a tensor or a numpy array) that `prepare` turns into pixels.
        prepare: chunk of this rank's frames -> pixels [n, 3, H, W] on the model's device (the caller's
            preprocessing, run on this rank's frames only); None: `frames` are pixels already.
        batch: run the tower on this rank's frames in chunks of `batch` (bounds its activations); None: all at once.
    Returns:
        [N, T, D] on every rank. A frame count that does not divide by P is padded with zero frames (zeros of
        `frames`, before `prepare`), whose outputs are dropped. The all-gather is autograd-correct: every
        frame's gradient returns to the rank that encoded it (run under torch.no_grad() for inference).
    Process group: dims.group("sp").
    """
    n, p = len(frames), dims.sp_degree
    per_rank, rank = -(-n // p), dims.axis_rank("sp")
    mine = _pad_frames(frames[rank * per_rank:(rank + 1) * per_rank], per_rank)
    encode = model.encode_frames if prepare is None else lambda chunk: model.encode_frames(prepare(chunk))
    if batch is None:
        local = encode(mine)
    else:
        local = torch.cat([encode(mine[i:i + batch]) for i in range(0, per_rank, batch)])
    return gather_along(local, dims.group("sp"), dim=0)[:n]


def _pad_frames(frames, length: int):
    """`frames` (a tensor or a numpy array) with zero frames appended up to `length`."""
    missing = length - len(frames)
    if missing == 0:
        return frames
    if isinstance(frames, torch.Tensor):
        return torch.cat([frames, frames.new_zeros(missing, *frames.shape[1:])])
    import numpy as np

    return np.concatenate([frames, np.zeros((missing, *frames.shape[1:]), frames.dtype)])


@dataclass
class SPInputs:
    embeds: torch.Tensor      # [S_loc, D] this rank's shard of the spliced embeddings
    positions: torch.Tensor   # [S_loc] global position ids
    targets: torch.Tensor     # [S_loc] next-token targets (shifted before sharding), -100 = ignored
    num_targets: int          # supervised tokens in the whole sequence (the loss denominator)


def prepare_sp_inputs(model, input_ids_L: torch.Tensor, frames_N3HW: torch.Tensor, labels_L: torch.Tensor,
                      dims: ParallelDims, *, media_token_id: int, newline_id: int) -> SPInputs:
    """This rank's attention inputs for one sample with one video (see the module docstring)."""
    media = model.media_embeds(encode_frames_sharded(model, frames_N3HW, dims), newline_id)
    embeds, labels = model.splice(input_ids_L, [media], {media_token_id}, labels_L)
    pad = -len(embeds) % dims.seq_len_divisor()
    embeds = torch.cat([embeds, embeds.new_zeros(pad, embeds.shape[1])])
    targets = torch.cat([labels[1:], labels.new_full((1 + pad,), IGNORE_INDEX)])
    positions = torch.arange(len(embeds), device=embeds.device)
    shard = lambda t: shard_sequence(t, dims, dim=0)
    return SPInputs(shard(embeds), shard(positions), shard(targets), int((targets != IGNORE_INDEX).sum()))
