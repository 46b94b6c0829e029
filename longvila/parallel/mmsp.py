"""Two-stage sharding of multi-modal sequences (LongVILA's MM-SP).

Stage 1 (vision): the video's frames are split evenly across the P ranks of the SP group; each rank runs the
vision tower + projector on its own frames only. Stage 2 (language): the frame embeddings are gathered with
an autograd-correct all-gather (every frame's gradient returns to the rank that encoded it), spliced into
the token sequence, padded to the layout's divisor with ignored tokens, and re-sharded for attention.
Labels are shifted BEFORE sharding (no target is lost at shard boundaries or zigzag junctions) and position
ids stay global.

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


def encode_frames_sharded(model, frames_N3HW: torch.Tensor, dims: ParallelDims) -> torch.Tensor:
    """All frames' projector outputs [N, T, D] on every SP rank, each rank encoding only N/P of them.

    A frame count that does not divide by P is padded with zero frames, whose outputs are dropped.
    Process group: dims.group("sp").
    """
    n, p = frames_N3HW.shape[0], dims.sp_degree
    per_rank = -(-n // p)
    padded = torch.cat([frames_N3HW, frames_N3HW.new_zeros(per_rank * p - n, *frames_N3HW.shape[1:])])
    rank = dims.axis_rank("sp")
    local = model.encode_frames(padded[rank * per_rank:(rank + 1) * per_rank])
    return gather_along(local, dims.group("sp"), dim=0)[:n]


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
