"""The `longvila` command: the stages as user-facing tools, outside the Snakemake DAG.

    longvila pack --input 'SlimPajama/train/chunk1/*.jsonl.zst' --tokenizer builtin:qwen2 \\
        --seq-len 65536 --out data/64k --upsample per_source --max-rows 3000
    longvila export --shards data/64k --out data/64k.jsonl
    longvila infer --model results/init_model/tiny --video clip.mp4 --prompt "What happens?" --num-frames 8
    longvila infer --model results/init_model/tiny --video clip.mp4 --prompt "What happens?" --sp 2x2
    longvila serve --model results/init_model/tiny --port 8000     # OpenAI-compatible endpoint
    longvila eval needle --model DIR --haystack movie.mp4 --max-frames 6000 --interval 300 --sp 2x4

Run `longvila <command> --help` for each command's flags.
"""

from __future__ import annotations

import argparse
import glob
import os
from pathlib import Path

from longvila.cli_checks import check_infer, check_needle, check_serve
from longvila.config import ContextConfig, PackConfig, TokenizerConfig, UPSAMPLE_MODES, config_to_dict
from longvila.eval.bench_cli import add_bench_parser
from longvila.infer.sp_launch import add_infer_sp_args, run_infer_sp
from longvila.utils.args import at_least, between, fraction, nonempty, positive, sp_degrees
from longvila.utils.env import apply_env
from longvila.utils.logging import get_logger, init_logger

PACK_HELP = """Pack a SlimPajama-format corpus (JSON lines {"text", "meta": {"redpajama_set_name"}}: .jsonl.zst as
SlimPajama ships it, .jsonl.gz or plain .jsonl) into rows of exactly --seq-len tokens, written as Parquet shards
(part-*.parquet, zstd) with manifest.json (tokenizer + hash, rows, tokens, per-source tokens and documents,
skipped records by reason, inputs with format, sizes and sha256, config, code version) and remainder.arrow
(the tail that does not fill a row).

Each file's format is read from its bytes, not its name; a file that is not JSON lines (Parquet, another
archive, a JSON array, ...) is refused by name before any work, and a misleading name is only a warning.
Bad records (malformed JSON, missing or non-string text, invalid UTF-8, empty text, unknown source) and bad
files (truncated or corrupt zstd/gzip) are counted by reason and logged with file:line; --strict makes the first
one an error. A pack that makes no row (every record skipped, or fewer tokens than one --seq-len row) fails
with exit code 2 and the reason, and writes nothing. The output folder appears complete or not at all; the
same inputs and flags give byte-identical shards.
"""


NEEDLE_HELP = """Video needle-in-a-haystack (V-NIAH), scored as the original harness scores it: the haystack at
1 frame/s, a needle frame inserted at int(depth x frames) for every (frames, depth) cell of the grid
(frames = interval, 2 x interval, ..., max-frames), the original's ChatML prompts, teacher-forced exact match
of the answer tokens, mean over the needles. The checkpoint's rope_theta and rope_scaling are used (and
reported). With --sp the prefill is sharded over local ranks (MM-SP: zigzag ring x Ulysses); each rank encodes
1/P of the haystack frames once (cached per model, video and sampling).

Writes <out>/cells/*.json (finished cells are skipped on a rerun), all_accuracies.json (the original's schema:
"Num. Frame", "Frame Depth", "Score"), avg_accuracy.txt, heatmap.png and summary.json.
"""


def _glob_root(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard (file names are recorded relative to it)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _check_pack_flags(args: argparse.Namespace) -> None:
    """Refuse bad numbers by their flag's name, before any file is opened or the tokenizer loads."""
    problems = []
    if args.seq_len < 8:
        problems.append(f"--seq-len {args.seq_len}: must be >= 8 tokens per row, e.g. --seq-len 65536")
    if args.max_rows is not None and args.max_rows < 1:
        problems.append(f"--max-rows {args.max_rows}: must be >= 1 row; leave it out for no budget")
    elif args.max_rows is not None and args.upsample == "none":
        problems.append("--max-rows needs --upsample per_source or global (--upsample none packs every document "
                        "exactly once, without a budget); leave --max-rows out or choose an upsampling mode")
    if not 0.0 <= args.keep_ratio <= 1.0:
        problems.append(f"--keep-ratio {args.keep_ratio}: must be a probability in [0, 1], e.g. 0.1")
    if args.short_threshold < 0:
        problems.append(f"--short-threshold {args.short_threshold}: must be >= 0 tokens")
    if args.shuffle_buffer < 1:
        problems.append(f"--shuffle-buffer {args.shuffle_buffer}: must be >= 1 document")
    if args.workers < 0:
        problems.append(f"--workers {args.workers}: use 0 (all cores) or a thread count")
    if problems:
        raise ValueError("; ".join(problems))


def _pack(args: argparse.Namespace) -> int:
    from longvila.data.formats import check_inputs
    from longvila.data.manifest import budget_report, build_manifest, check_conservation, explain_no_rows
    from longvila.data.shards import pack_files
    from longvila.data.tokenizer import load_tokenizer
    from longvila.utils.io import atomic_dir, check_output_dir, write_json_atomic

    _check_pack_flags(args)
    files = sorted(p for p in glob.glob(args.input, recursive=True) if os.path.isfile(p))
    if not files:
        raise ValueError(f"--input {args.input!r} matches no file; quote the glob so the shell does not expand it")
    check_output_dir(args.out, files)
    check_inputs(files, "--input")
    root = _glob_root(args.input)
    inputs = [(Path(p), str(Path(p).relative_to(root))) for p in files]
    cfg = PackConfig(contexts=[ContextConfig(name="cli", seq_len=args.seq_len, max_rows=args.max_rows)],
                     upsample=args.upsample, seed=args.seed, workers=args.workers, strict=args.strict,
                     keep_ratio=args.keep_ratio, short_threshold=args.short_threshold,
                     shuffle_buffer=args.shuffle_buffer)
    apply_env(tokenizer_threads=cfg.workers)
    tok_cfg = TokenizerConfig(path=args.tokenizer, eos_token=args.eos_token)
    tokenizer = load_tokenizer(tok_cfg)
    get_logger().info(f"pack: {len(files)} files under {root}, tokenizer {tokenizer.name}, seq_len {args.seq_len}")
    with atomic_dir(args.out) as tmp:
        summary = pack_files(inputs, tokenizer, seq_len=args.seq_len, cfg=cfg, out_dir=tmp, max_rows=args.max_rows,
                             progress=not args.quiet)
        if why := explain_no_rows(summary):  # raised inside: the temporary folder goes, --out stays as it was
            raise ValueError(f"{why}. Nothing was written to {args.out}")
        manifest = build_manifest(summary, tokenizer=tokenizer.describe(), run_name="longvila pack",
                                  config={"tokenizer": config_to_dict(tok_cfg), "pack": config_to_dict(cfg)},
                                  upsample=cfg.upsample)
        check_conservation(manifest)
        write_json_atomic(tmp / "manifest.json", manifest)
    for warning in budget_report(summary)[1]:
        get_logger().warning(f"pack: {warning}")
    get_logger().info(f"pack: {summary['rows']} rows, {summary['remainder_tokens']} remainder tokens, "
                      f"skipped {summary['skipped'] or 'none'}, dropped {summary['dropped'] or 'none'} -> {args.out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from longvila.data.export import export_jsonl

    rows = export_jsonl(args.shards, args.out)
    get_logger().info(f"export: {rows} rows -> {args.out}")
    return 0


def _infer(args: argparse.Namespace) -> int:
    check_infer(args)                         # before torch is imported and the checkpoint loaded
    if args.sp is not None:
        return run_infer_sp(args)
    from longvila.infer.single import answer, load_for_inference

    if not (args.video or args.image):
        get_logger().warning("infer: no --video or --image given; answering from the text alone")
    model, tokenizer = load_for_inference(args.model)
    text = answer(model, tokenizer, args.prompt, video=args.video, image=args.image, num_frames=args.num_frames,
                  max_new_tokens=args.max_new_tokens, progress=not args.quiet)
    print(text, flush=True)
    return 0


def _eval_needle(args: argparse.Namespace) -> int:
    out, cache = check_needle(args)           # before torch is imported and anything is written
    from longvila.eval.haystack import make_needles
    from longvila.eval.needle import frame_grid
    from longvila.eval.vniah import evaluate_needle, needle_rank
    from longvila.utils.ranks import default_device, launch_local, parse_sp

    ulysses, ring = parse_sp(args.sp)
    frames = frame_grid(args.max_frames, args.interval)
    needles = args.needles
    if needles is None:
        needles = out / "needles"
        make_needles(needles)
        get_logger().info(f"eval needle: no --needles, using the built-in colour needles ({needles})")
    kwargs = {"model_dir": args.model, "haystack": args.haystack, "needles_dir": needles, "out_dir": out,
              "frames": frames, "depths": args.depths, "cache_dir": cache,
              "progress": not args.quiet}
    if ulysses * ring == 1:
        summary = evaluate_needle(**kwargs)
    else:
        world = ulysses * ring
        summary = launch_local(needle_rank, world, {**kwargs, "ulysses": ulysses, "ring": ring, "layout": args.layout},
                               device=default_device(world))[0]
    print(f"Average Accuracy: {summary['avg_accuracy']} (chance {summary['chance']:.3f}); {out}/heatmap.png",
          flush=True)
    return 0


def _serve(args: argparse.Namespace) -> int:
    check_serve(args)                         # before the checkpoint is loaded
    from longvila.infer.serve import make_server

    server = make_server(args.model, args.host, args.port, args.name)
    host, port = server.server_address[:2]
    get_logger().info(f"serve: {args.model} as '{args.name}' on http://{host}:{port}/v1 (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="longvila", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    defaults = PackConfig()
    p = sub.add_parser("pack", help="pack a SlimPajama-format corpus into fixed-length Parquet shards",
                       description=PACK_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, metavar="GLOB",
                   help="quoted glob of JSON-lines files: .jsonl.zst, .jsonl.gz or plain .jsonl (the format is read "
                        "from each file's first bytes; anything else is refused before work starts)")
    p.add_argument("--tokenizer", required=True, metavar="DIR",
                   help="Hugging Face tokenizer folder (with tokenizer.json), or builtin:qwen2 (offline Qwen2)")
    p.add_argument("--seq-len", type=int, required=True, metavar="N", help="tokens per row, e.g. 65536")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (replaced atomically if it exists)")
    p.add_argument("--upsample", choices=UPSAMPLE_MODES, default="none",
                   help="none: every document once, seeded shuffle; per_source / global: Fu et al. length "
                        "upsampling (default: none)")
    p.add_argument("--max-rows", type=int, default=None, metavar="R",
                   help="token budget in rows for per_source/global (default: no budget)")
    p.add_argument("--keep-ratio", type=float, default=defaults.keep_ratio, metavar="P",
                   help=f"keep probability of short documents when upsampling (default {defaults.keep_ratio})")
    p.add_argument("--short-threshold", type=int, default=defaults.short_threshold, metavar="T",
                   help=f"documents under T estimated tokens are short (default {defaults.short_threshold})")
    p.add_argument("--shuffle-buffer", type=int, default=defaults.shuffle_buffer, metavar="D",
                   help=f"documents in the seeded shuffle buffer (default {defaults.shuffle_buffer})")
    p.add_argument("--eos-token", default="<|endoftext|>", help="separator between documents (default Qwen2's)")
    p.add_argument("--workers", type=int, default=0, metavar="N", help="tokenizer threads (default 0 = all cores)")
    p.add_argument("--seed", type=int, default=defaults.seed, metavar="S", help=f"seed (default {defaults.seed})")
    p.add_argument("--strict", action="store_true", help="fail on the first bad record instead of counting it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_pack)
    e = sub.add_parser("export", help="write packed shards in the original LongVILA trainer's JSON-lines format")
    e.add_argument("--shards", required=True, metavar="DIR", help="a packed data set folder")
    e.add_argument("--out", required=True, metavar="FILE", help="the .jsonl file to write")
    e.set_defaults(func=_export)
    i = sub.add_parser("infer", help="answer a question about a video or an image with a LongVILA checkpoint",
                       description="Load a checkpoint in the released layout (config.json, llm/, vision_tower/, "
                                   "mm_projector/), sample --num-frames frames uniformly over the whole video, and "
                                   "print the model's greedy answer to --prompt.")
    i.add_argument("--model", required=True, metavar="DIR", help="checkpoint folder (released LongVILA layout)")
    media = i.add_mutually_exclusive_group()
    media.add_argument("--video", metavar="FILE", help="a video file (decord, PyAV fallback)")
    media.add_argument("--image", metavar="FILE", help="an image file")
    i.add_argument("--prompt", required=True, metavar="TEXT", help="the question",
                   type=nonempty("ask a question, e.g. --prompt 'What happens in the video?'"))
    i.add_argument("--num-frames", type=at_least(1, "sample at least one frame, e.g. --num-frames 8"), default=8,
                   metavar="N", help="frames sampled from the video (default 8)")
    i.add_argument("--max-new-tokens", type=at_least(1, "allow at least one token, e.g. --max-new-tokens 64"),
                   default=64, metavar="T", help="answer length limit (default 64)")
    i.add_argument("--quiet", action="store_true", help="no progress bars")
    add_infer_sp_args(i)
    i.set_defaults(func=_infer)
    ev = sub.add_parser("eval", help="evaluate a checkpoint: needle in a video haystack, benchmarks")
    ev_sub = ev.add_subparsers(dest="eval_command", required=True, metavar="EVAL")
    n = ev_sub.add_parser("needle", help="video needle-in-a-haystack (V-NIAH) grid with sequence-parallel prefill",
                          description=NEEDLE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    n.add_argument("--model", required=True, metavar="DIR", help="checkpoint folder (released LongVILA layout)")
    n.add_argument("--haystack", required=True, metavar="VIDEO",
                   help="a video of at least --max-frames seconds (sampled at 1 frame/s)")
    n.add_argument("--max-frames", type=at_least(1), default=500, metavar="F", help="longest haystack (default 500)")
    n.add_argument("--interval", type=at_least(1), default=50, metavar="I", help="grid step in frames (default 50)")
    n.add_argument("--depths", type=fraction(False, "0 puts the needle before the first frame, 1 after the last"),
                   nargs="+", default=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0], metavar="D",
                   help="needle depths in [0, 1] (default 0 0.2 ... 1)")
    n.add_argument("--needles", metavar="DIR", help="folder with needles.json + images (default: built-in "
                                                    "colour needles)")
    n.add_argument("--sp", default="1", metavar="UxR", type=sp_degrees,
                   help="sequence-parallel prefill over U x R local ranks, e.g. 2x4 (Ulysses 2 x ring 4) or 8 "
                        "(ring 8); default 1")
    n.add_argument("--layout", default="auto", choices=("auto", "zigzag", "contiguous"),
                   help="token layout of the SP prefill (default auto: zigzag with a ring, contiguous for Ulysses "
                        "alone)")
    n.add_argument("--out", metavar="DIR", help="output folder (default niah_output/<model folder name>)")
    n.add_argument("--cache-dir", metavar="DIR", help="haystack embedding cache (default <out>/cache)")
    n.add_argument("--quiet", action="store_true", help="no progress bars")
    n.set_defaults(func=_eval_needle)
    add_bench_parser(ev_sub)
    pl = sub.add_parser("plan", help="capacity planner: which Ulysses x ring x DP splits fit, memory per GPU, step time",
                        description="Per split: memory per GPU (parameters, gradients, optimizer, activations, "
                        "logits, attention and communication buffers, gradient buckets, vision), communication "
                        "volume and an estimated step time; the best split first, rejected ones with the reason. "
                        "Torch-free, instant.")
    pl.add_argument("--config",
                    help="plan every training run of this config (model, splits, nodes, engine, checkpointing)")
    pl.add_argument("--stage", help="with --config: only this run, e.g. stage4/256k or stage5/512f")
    pl.add_argument("--model", help="qwen2-1.5b | qwen2-7b | a size name | a checkpoint folder")
    pl.add_argument("--seq-len", type=at_least(1), help="tokens per sample (one packed row)")
    pl.add_argument("--gpus", type=at_least(1), help="GPUs in all (with --config: instead of each run's nodes)")
    pl.add_argument("--gpus-per-node", type=at_least(1), help="GPUs per node (default 8, or the config's)")
    pl.add_argument("--gpu-mem", type=positive(),
                    help="GiB per GPU as CUDA reports it (default 79.2, an 80 GB H100; with --config: its gpu_mem_gib)")
    pl.add_argument("--ulysses", type=at_least(1),
                    help="evaluate this split only (with --ring); exit 1 if it does not fit")
    pl.add_argument("--ring", type=at_least(1), help="see --ulysses")
    pl.add_argument("--zero", type=int, choices=(0, 2, 3),
                    help="DeepSpeed ZeRO stage, or 0 for the torch engine (nothing sharded) (default 3)")
    pl.add_argument("--precision", choices=("bf16", "fp32"), help="training precision (default bf16)")
    pl.add_argument("--lora", action="store_true", help="the base weights are frozen (stage 4's LoRA)")
    pl.add_argument("--checkpointing", action="store_true", help="gradient checkpointing (each layer recomputed)")
    pl.add_argument("--batch", type=at_least(1),
                    help="samples per micro-step whose graphs coexist (stage 5's per_device_batch)")
    pl.add_argument("--frames", type=at_least(1, "leave --frames out for a text-only run"),
                    help="frames per sample (stage 5): the vision tower trains too, each SP rank encodes 1/P")
    pl.add_argument("--tflops", type=positive(), help="dense bf16 peak per GPU (default 989, H100)")
    pl.add_argument("--mfu", type=fraction(True, "the share of the peak reached, e.g. 0.35"),
                    help="share of the peak reached (default 0.35)")
    pl.add_argument("--intra-bw", type=positive(), help="GB/s per GPU inside a node (default 300)")
    pl.add_argument("--inter-bw", type=positive(), help="GB/s per GPU between nodes (default 25)")
    pl.add_argument("--nics-per-node", type=at_least(1),
                    help="inter-node NICs per node, shared by its GPUs (default one per GPU)")
    pl.add_argument("--ring-overlap", type=fraction(False, "1 = ring transfers overlap attention, 0 = never"),
                    help="share of the ring's transfers that can hide behind attention (default 1)")
    pl.add_argument("--ring-link-efficiency", type=fraction(True, "the share of the link the ring's P2P reaches"),
                    help="share of the link bandwidth the ring's send/recv reaches (default 1)")
    pl.add_argument("--all", action="store_true", help="also list the splits that do not fit in memory (with "
                    "--config: every split of each run, not only the best)")
    pl.add_argument("--json", action="store_true", help="JSON instead of the table")
    pl.set_defaults(func=_plan)

    s = sub.add_parser("serve", help="serve a checkpoint as an OpenAI-compatible chat-completions endpoint",
                       description="POST /v1/chat/completions (text, and images as base64 data URLs: one image "
                                   "or the frames of a video), greedy decoding, one request at a time. Used by the "
                                   "stage-5 captioning and QA backends (backend: openai).")
    s.add_argument("--model", required=True, metavar="DIR", help="checkpoint folder (released LongVILA layout)")
    s.add_argument("--host", default="127.0.0.1", type=nonempty("e.g. --host 127.0.0.1"),
                   help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=between(0, 65535, "0 picks any free port"), default=8000,
                   help="port (default 8000; 0 = any free port)")
    s.add_argument("--name", default="longvila", type=nonempty("e.g. --name longvila"),
                   help="model name reported and accepted (default longvila)")
    s.set_defaults(func=_serve)
    return parser


def _plan(args) -> int:
    from longvila.plan.report import run

    return run(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    init_logger()
    try:
        return args.func(args)
    except (ValueError, OSError) as e:  # bad input, config, or a path that cannot be written
        get_logger().error(f"error: {e}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
