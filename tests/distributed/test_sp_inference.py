"""Sequence-parallel inference on the tiny model: greedy ids equal one process (`generate_with_media`) and the
prefill logits match, for 2D 2x2, ring 1x4, ring 1x2 beside data parallelism, Ulysses 4x1 (KV heads
replicated) on the contiguous layout; padding present and never cached; and the V-NIAH teacher-forced prefill
(eval/needle.py) predicts what one process predicts. One spawn of 4 gloo ranks for all."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.spawn import run_distributed

pytestmark = pytest.mark.distributed
NEW_TOKENS = 10
PROMPT = "What happens?"
CASES = [(2, 2, "zigzag"), (1, 4, "zigzag"), (1, 2, "zigzag"), (4, 1, "contiguous")]


def _reference(model, tokenizer, frames):
    """One process, the path of `longvila.infer.single.answer`, eos off: (ids, spliced embeds, logits)."""
    from longvila.infer.single import encode_media
    from longvila.model.conversation import MEDIA_TOKENS, tokenize_conversation

    (newline_id,) = tokenizer("\n", add_special_tokens=False)["input_ids"]
    media = [encode_media(model, frames, newline_id)]
    tok = tokenize_conversation(tokenizer, {"conversations": [{"from": "human", "value": PROMPT}]}, "video",
                                add_generation_prompt=True)
    media_ids = {tokenizer.convert_tokens_to_ids(t) for t in MEDIA_TOKENS.values()}
    ids = model.generate_with_media(torch.tensor(tok.input_ids), media, media_ids, max_new_tokens=NEW_TOKENS,
                                    eos_token_id=None)
    with torch.no_grad():
        embeds, _ = model.splice(torch.tensor(tok.input_ids), media, media_ids)
        logits = model(inputs_embeds=embeds[None]).logits[0]
    return ids.tolist(), embeds, logits


def _prefill_logits_error(model, embeds, ref_logits, dims):
    """Largest |logit| difference over the real prompt positions, and the real tokens cached over the SP group."""
    import torch.distributed as dist

    from longvila.infer.sp import sp_prefill
    from longvila.parallel import gather_sequence
    from longvila.parallel.decode import SPKVCache

    cache = SPKVCache(dims, real_len=len(embeds))
    hidden = sp_prefill(model, embeds, cache)
    full = gather_sequence(hidden, dims, dim=0, seq_len=cache.seq_len)
    with torch.no_grad():
        logits = model.llm.get_output_embeddings()(full[:len(embeds)])
    cached = torch.tensor([len(cache)])
    dist.all_reduce(cached, group=dims.group("sp"))
    return (logits - ref_logits).abs().max().item(), int(cached), cache.seq_len


def _cases(rank, world):
    from transformers import AutoTokenizer

    from longvila.data.tokenizer import resolve_tokenizer_dir
    from longvila.data.video import preprocess_frames
    from longvila.infer.sp import encode_video_sharded, sp_answer_ids, sp_greedy
    from longvila.model.sizes import build_model
    from longvila.parallel import ParallelDims

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(resolve_tokenizer_dir("builtin:qwen2")[0])
    model = build_model("tiny", tokenizer)                   # random weights: greedy ids vary with the context
    frames = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)  # 6 frames: 2 pad frames
    ref_ids, embeds, ref_logits = _reference(model, tokenizer, frames)
    with torch.no_grad():
        ref_frames = model.encode_frames(preprocess_frames(frames, model.vision_tower.config.image_size))
    results = {"ref": ref_ids, "prompt_len": len(embeds)}
    for ulysses, ring, layout in CASES:
        dims = ParallelDims(ulysses=ulysses, ring=ring, world_size=world, layout=layout).build()
        out = sp_answer_ids(model, tokenizer, PROMPT, dims, frames=frames, max_new_tokens=NEW_TOKENS,
                            stop_at_eos=False)
        with torch.no_grad():
            media_err = (encode_video_sharded(model, frames, dims) - ref_frames).abs().max().item()
        logit_err, cached, seq_len = _prefill_logits_error(model, embeds, ref_logits, dims)
        results[(ulysses, ring, layout)] = dict(ids=out.ids, logit_err=logit_err, cached=cached, seq_len=seq_len,
                                                media_err=media_err, prompt_len=out.prompt_len,
                                                timed=out.prefill_s > 0 and out.decode_s > 0)
    stop_at = ref_ids[4]                                      # eos: every rank stops after its first occurrence
    dims = ParallelDims(ulysses=2, ring=2, world_size=world).build()
    results["eos"] = sp_greedy(model, embeds, dims, max_new_tokens=NEW_TOKENS, eos_token_id=stop_at).ids
    results["eos_expected"] = ref_ids[:ref_ids.index(stop_at) + 1]
    return results


def _needle_cases(rank, world):
    """V-NIAH's teacher-forced SP prefill (eval/needle.py) = one process, at 2x2 and 1x4."""
    from transformers import AutoTokenizer

    from longvila.data.tokenizer import resolve_tokenizer_dir
    from longvila.eval.needle import build_sequence, predict_answer
    from longvila.model.sizes import build_model
    from longvila.parallel import ParallelDims
    from longvila.parallel.parallelize import apply_sequence_parallel

    tok = AutoTokenizer.from_pretrained(resolve_tokenizer_dir("builtin:qwen2")[0])
    ref = build_model("tiny", tok, seed=3).double()
    sp = build_model("tiny", tok, seed=3).double()
    torch.manual_seed(0)
    hay = torch.randn(12, 16, 64, dtype=torch.float64)     # 12 frames x 16 tokens (projector outputs)
    needle = torch.randn(16, 64, dtype=torch.float64)
    (newline,) = tok("\n", add_special_tokens=False)["input_ids"]
    out = {}
    for name, (u, r) in {"2x2": (2, 2), "1x4": (1, 4)}.items():
        dims = ParallelDims(ulysses=u, ring=r, world_size=world).build()
        apply_sequence_parallel(sp, dims)
        rows = []
        for depth in (0.0, 0.5, 1.0):
            with torch.no_grad():
                embeds, start, answer = build_sequence(ref, tok, hay, needle, depth, "What colour?", "purple",
                                                       newline)
                want = predict_answer(ref, embeds, start, len(answer))
                got = predict_answer(sp, embeds, start, len(answer), dims)
            rows.append((want, got, len(embeds)))
        out[name] = rows
    return out


def _all_cases(rank, world):
    return _cases(rank, world), _needle_cases(rank, world)      # one spawn of 4 ranks for both (suite time)


def test_sp_inference_and_needle_prefill_match_one_process():
    both = run_distributed(_all_cases, 4, timeout=420)            # two suites of cases in one spawn
    per_rank = [b[0] for b in both]
    for _, needle in both:                                    # V-NIAH predictions, every depth and split
        for name, rows in needle.items():
            for want, got, length in rows:
                assert got == want and min(want) >= 0, (name, length)
    assert both[0][1] == both[3][1]
    ref = per_rank[0]["ref"]
    assert len(ref) == NEW_TOKENS and len(set(ref)) > 3, ref          # eos off, decoding not degenerate
    for rank, results in enumerate(per_rank):
        assert results["ref"] == ref
        assert results["eos"] == results["eos_expected"], (rank, results["eos"])
        for case in CASES:
            got = results[case]
            assert got["ids"] == ref, (rank, case, got["ids"], ref)
            assert got["prompt_len"] == results["prompt_len"]
            assert got["logit_err"] < 1e-4 and got["media_err"] < 1e-4, (rank, case, got)
            assert got["cached"] == results["prompt_len"], (rank, case, got)   # padding never cached
            assert got["timed"]
    padded = [case for case in CASES if per_rank[0][case]["seq_len"] > per_rank[0]["prompt_len"]]
    assert (2, 2, "zigzag") in padded and (1, 4, "zigzag") in padded, "the prompt must need padding at P = 4"


@pytest.mark.slow
def test_infer_sp_command_starts_its_ranks_and_prints_the_answer(tiny_ckpt, tmp_path, capsys):
    """`longvila infer --sp 1x2` (the CLI's own launcher, 2 gloo processes) prints what `infer` prints."""
    import argparse

    from longvila.data.shot2story.synth import write_video
    from longvila.infer.single import answer, load_for_inference
    from longvila.infer.sp_launch import run_infer_sp

    frames = np.random.default_rng(1).integers(0, 256, (12, 48, 64, 3), dtype=np.uint8)
    video = tmp_path / "clip.mp4"
    write_video(video, frames, fps=8, width=64, height=48)
    args = argparse.Namespace(model=str(tiny_ckpt), video=str(video), image=None, prompt=PROMPT, num_frames=5,
                              max_new_tokens=6, quiet=True, sp="1x2", sp_layout="zigzag")
    assert run_infer_sp(args) == 0
    model, tokenizer = load_for_inference(tiny_ckpt)
    expected = answer(model, tokenizer, PROMPT, video=video, num_frames=5, max_new_tokens=6)
    assert capsys.readouterr().out == expected + "\n"
    with pytest.raises(ValueError, match="missing.mp4: no such file"):       # before any rank starts
        run_infer_sp(argparse.Namespace(**{**vars(args), "video": str(tmp_path / "missing.mp4"), "sp": "2"}))
