"""The tiny VLM with sequence parallelism (2D U x R) vs one process: same loss and gradients (fp64)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.spawn import run_distributed

pytestmark = pytest.mark.distributed
VOCAB = 2048                      # a small vocabulary: SP does not touch it, and the 151k one dominated the time
VIDEO_ID, NEWLINE_ID, IM_START, IM_END = 2040, 198, 2044, 2045


def _errors_vs_reference(model, loss, ref, ref_grads, dims):
    """Backward this rank's loss; sum loss and gradients over the SP group; largest differences from one process."""
    import torch.distributed as dist

    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total, group=dims.group("sp"))
    worst = 0.0
    for n, p in model.named_parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        dist.all_reduce(g, group=dims.group("sp"))
        worst = max(worst, (g - ref_grads.get(n, torch.zeros_like(p))).abs().max().item())
    return abs(total.item() - ref.item()), worst


def _vlm_case(rank, world, ulysses, ring):
    import torch.nn.functional as F

    from longvila.model import LongVILAForCausalLM, build_config
    from longvila.parallel import ParallelDims, shard_sequence
    from longvila.parallel.parallelize import apply_sequence_parallel

    dims = ParallelDims(ulysses=ulysses, ring=ring, world_size=world).build()
    torch.manual_seed(0)
    model = LongVILAForCausalLM(build_config("tiny", vocab_size=VOCAB)).double()
    frames = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    ids = torch.tensor([IM_START, 872, 198, VIDEO_ID, 838, 374, IM_END, 198, IM_START, 1091, 198, 32, 562, IM_END])
    labels = torch.full_like(ids, -100)
    labels[-3:] = ids[-3:]

    def embed():
        media = model.media_embeds(model.encode_frames(frames), NEWLINE_ID)
        return model.splice(ids, [media], {VIDEO_ID}, labels)

    embeds, lab = embed()
    pad = -len(embeds) % dims.seq_len_divisor()
    targets = torch.cat([lab[1:], torch.full((1 + pad,), -100)])      # shifted BEFORE sharding
    n_valid = int((targets != -100).sum())
    seq = len(embeds) + pad
    positions = torch.arange(seq)

    def loss_of(e, pos, tgt):
        logits = model(inputs_embeds=e[None], position_ids=pos[None]).logits[0]
        return F.cross_entropy(logits, tgt, ignore_index=-100, reduction="sum") / n_valid

    full = torch.cat([embeds, embeds.new_zeros(pad, embeds.shape[1])])
    ref = loss_of(full, positions, targets)
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    apply_sequence_parallel(model, dims)
    embeds, _ = embed()
    full = torch.cat([embeds, embeds.new_zeros(pad, embeds.shape[1])])
    shard = lambda t: shard_sequence(t, dims, dim=0)
    loss = loss_of(shard(full), shard(positions), shard(targets))
    loss_err, worst = _errors_vs_reference(model, loss, ref, ref_grads, dims)
    vision_grad = sum(ref_grads[n].abs().sum().item() for n in ref_grads if n.startswith("vision_tower"))
    return loss_err, worst, vision_grad


@pytest.mark.parametrize("ulysses, ring", [(2, 2), (1, 2), (2, 1)], ids=["2d-2x2", "ring2", "ulysses2"])
def test_vlm_loss_and_every_gradient_match_one_process(ulysses, ring):
    for loss_err, grad_err, vision_grad in run_distributed(_vlm_case, ulysses * ring, ulysses, ring):
        assert vision_grad > 0            # the gradient reaches the vision tower in the reference
        assert loss_err < 1e-10 and grad_err < 1e-10, (loss_err, grad_err)


def _two_stage_case(rank, world, ulysses, ring, num_frames):
    import torch.nn.functional as F

    from longvila.model import LongVILAForCausalLM, build_config
    from longvila.parallel import ParallelDims
    from longvila.parallel.mmsp import prepare_sp_inputs
    from longvila.parallel.parallelize import apply_sequence_parallel

    dims = ParallelDims(ulysses=ulysses, ring=ring, world_size=world).build()
    torch.manual_seed(0)
    model = LongVILAForCausalLM(build_config("tiny", vocab_size=VOCAB)).double()
    frames = torch.randn(num_frames, 3, 32, 32, dtype=torch.float64)
    ids = torch.tensor([IM_START, 872, 198, VIDEO_ID, 838, IM_END, 198, IM_START, 1091, 198, 32, 562, IM_END])
    labels = torch.full_like(ids, -100)
    labels[-3:] = ids[-3:]

    # reference: one process, next-token loss on the unsharded sequence (in fp64: HF's own loss upcasts to fp32)
    media = model.media_embeds(model.encode_frames(frames), NEWLINE_ID)
    embeds, lab = model.splice(ids, [media], {VIDEO_ID}, labels)
    logits = model(inputs_embeds=embeds[None]).logits[0, :-1]
    ref = F.cross_entropy(logits, lab[1:], ignore_index=-100, reduction="sum") / int((lab[1:] != -100).sum())
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    apply_sequence_parallel(model, dims)
    inputs = prepare_sp_inputs(model, ids, frames, labels, dims, media_token_id=VIDEO_ID, newline_id=NEWLINE_ID)
    logits = model(inputs_embeds=inputs.embeds[None], position_ids=inputs.positions[None]).logits[0]
    loss = F.cross_entropy(logits, inputs.targets, ignore_index=-100, reduction="sum") / inputs.num_targets
    loss_err, worst = _errors_vs_reference(model, loss, ref, ref_grads, dims)
    return loss_err, worst


@pytest.mark.parametrize("ulysses, ring, num_frames", [(2, 2, 4), (2, 2, 6), (1, 2, 3)],
                         ids=["2d-4frames", "2d-6frames-padded", "ring2-3frames"])
def test_two_stage_sharding_matches_one_process(ulysses, ring, num_frames):
    """Frames encoded 1/P per rank, gathered with autograd, re-sharded: loss and gradients equal one process."""
    for loss_err, grad_err in run_distributed(_two_stage_case, ulysses * ring, ulysses, ring, num_frames):
        assert loss_err < 1e-10 and grad_err < 1e-10, (loss_err, grad_err)
