"""`longvila infer --sp UxR`: answer about a long video with sequence-parallel prefill and a sharded KV cache.

The command starts U x R local processes itself (torch.multiprocessing, spawn): NCCL with one GPU per rank
when the machine has at least U x R GPUs (bf16), else gloo on the CPU (fp32, threads split between the
ranks). Every rank loads the checkpoint and reads the video, then answers with `longvila.infer.sp`: each
encodes 1/P of the frames, the prompt is prefilled with Ulysses x ring attention, and decoding keeps the KV
cache sharded (parallel/decode.py). Rank 0's answer is printed. On the CPU (fp32) the answer is the one
`longvila infer` gives without --sp. This module holds the command only (flags, checks before any rank
starts, the rank entry); it imports torch lazily, so `longvila --help` stays fast.

    longvila infer --model results/init_model/tiny --video clip.mp4 --prompt "What happens?" --sp 2x2
    longvila infer ... --sp 4          # a single number P is a ring of P ranks (1xP): valid for any head count

Library use (inside an initialised process group): `longvila.infer.sp.sp_generate`.
"""

from __future__ import annotations

import argparse
import os

from longvila.utils.args import sp_degrees
from longvila.utils.logging import get_logger
from longvila.utils.ranks import launch_local, parse_sp


# ---------------------------------------------------------------- the CLI
def add_infer_sp_args(parser: argparse.ArgumentParser) -> None:
    """The --sp flags of `longvila infer`."""
    parser.add_argument("--sp", metavar="UxR", default=None, type=sp_degrees,
                        help="sequence-parallel inference on U x R local processes (Ulysses x ring, e.g. 2x2; a "
                             "single number P is a ring of P): frames encoded 1/P per rank, prefill sharded, KV "
                             "cache kept sharded. U must divide the LLM's heads and KV heads. One GPU per rank "
                             "when there are enough GPUs (bf16), else CPU processes (fp32)")
    parser.add_argument("--sp-layout", choices=("auto", "zigzag", "contiguous"), default="auto",
                        help="token layout of the sharded prefill (default auto: zigzag with a ring, where it "
                             "balances the causal work; contiguous for Ulysses alone, where it balances nothing)")


def _infer_rank(rank: int, world_size: int, opts: dict) -> str | None:
    """One rank of `longvila infer --sp`: load, answer, return the text on rank 0."""
    import torch
    import transformers

    from longvila.infer.single import load_for_inference
    from longvila.infer.sp import sp_answer_ids
    from longvila.parallel.dims import ParallelDims

    dims = ParallelDims(*opts["sp"], world_size=world_size, layout=opts["layout"])
    if world_size > 1:
        dims.build()
    cuda = opts["device"] == "cuda"
    if not cuda:
        torch.set_num_threads(opts["threads"])
    if rank > 0 or not opts["progress"]:
        transformers.utils.logging.disable_progress_bar()
    model, tokenizer = load_for_inference(opts["model"], dtype=torch.bfloat16 if cuda else torch.float32)
    if cuda:
        model.to(torch.device("cuda", torch.cuda.current_device()))
    out = sp_answer_ids(model, tokenizer, opts["prompt"], dims, video=opts["video"], image=opts["image"],
                        num_frames=opts["num_frames"], max_new_tokens=opts["max_new_tokens"],
                        progress=opts["progress"] and rank == 0)
    get_logger().info(f"infer --sp {dims.ulysses}x{dims.ring}: {out.prompt_len} prompt tokens; time to first token "
                      f"{out.ttft_s:.2f} s (media {out.encode_s:.2f} s, prefill {out.prefill_s:.2f} s); "
                      f"{len(out.ids)} tokens in {out.ttft_s + out.decode_s:.2f} s")
    return tokenizer.decode(out.ids, skip_special_tokens=True).strip() if rank == 0 else None


def run_infer_sp(args: argparse.Namespace) -> int:
    """`longvila infer ... --sp UxR`: validate, start the ranks (in this process when P = 1), print the answer."""
    import torch

    from longvila.model.configuration import LongVILAConfig
    from longvila.parallel.dims import ParallelDims

    ulysses, ring = parse_sp(args.sp)
    world = ulysses * ring
    if not os.path.isfile(os.path.join(args.model, "config.json")):   # fail before starting the ranks
        raise ValueError(f"{args.model} has no config.json; point --model at a checkpoint in the released layout")
    for media in (args.video, args.image):
        if media is not None and not os.path.isfile(media):
            raise ValueError(f"{media}: no such file")
    llm = LongVILAConfig.from_pretrained(args.model).llm_config()
    try:
        ParallelDims(ulysses, ring, world_size=world).validate_heads(llm.num_attention_heads, llm.num_key_value_heads)
    except ValueError as e:
        raise ValueError(f"--sp {args.sp}: {e}; or use a ring only: --sp {world}") from None
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = "cuda" if gpus >= world else "cpu"
    if 0 < gpus < world:
        get_logger().warning(f"infer --sp: {world} ranks but {gpus} GPUs; running {world} CPU processes")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    opts = dict(sp=(ulysses, ring), device=device, threads=max(1, cores // world), model=args.model,
                prompt=args.prompt, video=args.video, image=args.image, num_frames=args.num_frames,
                max_new_tokens=args.max_new_tokens, layout=args.sp_layout, progress=not args.quiet)
    if world == 1:
        text = _infer_rank(0, 1, opts)
    else:
        text = launch_local(_infer_rank, world, opts, device=device)[0]
    print(text, flush=True)
    return 0
