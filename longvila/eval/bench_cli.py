"""`longvila eval bench`: benchmarks through lmms-eval with vila-eval's flags (-m, -nf, -t, --output-dir).

    longvila eval bench -m results/train_stage5/8f -t longvila_localmc -nf 8 --include-path results/make_bench_task
    longvila eval bench -m runs/qwen2-7b-longvila-256f -t lmms-videomme-256,vnbench_val,mvbench --online

`add_bench_parser(subparsers)` adds the command to an `eval` command group (longvila/cli.py); its handler
returns an exit code: 0 when every task ran, 1 when some failed (metrics.json lists them under "errors").
"""

from __future__ import annotations

import argparse
from pathlib import Path

from longvila.utils.args import at_least, check_checkpoint, check_output

BENCH_HELP = """Run lmms-eval benchmarks on a LongVILA checkpoint, one lmms-eval process per task, with the
lmms-eval model `longvila_repro` (alias `longvila`) that longvila's entry point registers; lmms-eval itself
comes from requirements-eval.txt, installed --no-deps. Frames per video follow vila-eval's convention unless -nf is
given: 256 for Video-MME, 128 for VNBench, 32 for the others; `-N` on a task name pins its frames
(lmms-videomme-256). Each task's results.json, samples.jsonl and lmms_eval.log go to <output-dir>/<task>/,
and all numbers to <output-dir>/metrics.json. Hugging Face runs offline (benchmark data must already be in
its cache) unless --online. The offline task longvila_localmc asks multiple-choice questions about the
workflow-made videos; its folder is written by rule make_bench_task (pass it with --include-path).
"""


def check_bench(args: argparse.Namespace) -> Path:
    """The checkpoint, --include-path and --output-dir, before any task starts; returns the output folder."""
    model = check_checkpoint(args.model)
    if args.include_path is not None and not Path(args.include_path).is_dir():
        raise ValueError(f"--include-path {args.include_path}: no such folder; give the lmms-eval task folder, "
                         "e.g. results/make_bench_task (written by rule make_bench_task)")
    out = args.output_dir or Path("runs/eval") / model.resolve().name
    return check_output(out, "--output-dir", model, {"--include-path": args.include_path})


def _bench(args: argparse.Namespace) -> int:
    from longvila.eval.bench import expand_tasks, run_bench
    from longvila.utils.logging import get_logger

    out = check_bench(args)
    tasks = expand_tasks(args.tasks, args.num_frames)
    metrics = run_bench(args.model, tasks, out, include_path=args.include_path, limit=args.limit,
                        online=args.online)
    for label, values in metrics["tasks"].items():
        key = metrics["primary_metric"].get(label) or next(iter(values), None)
        shown = f"{key} = {values[key]:.4f}" if key in values else "no metric"
        frames, docs = metrics["num_frames"][label], metrics["num_docs"][label]
        get_logger().info(f"{label} ({frames} frames, {docs} docs): {shown}")
    get_logger().info(f"metrics -> {out / 'metrics.json'}")
    if metrics["errors"]:
        get_logger().error(f"failed: {', '.join(metrics['errors'])} (see their lmms_eval.log under {out})")
        return 1
    return 0


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Add `bench` to an argparse subparsers object (the `eval` group); returns its parser."""
    b = subparsers.add_parser("bench", help="benchmarks through lmms-eval (Video-MME, ..., the offline local task)",
                              description=BENCH_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("-m", "--model", required=True, metavar="DIR", help="checkpoint folder (released LongVILA layout)")
    b.add_argument("-t", "--tasks", required=True, metavar="TASKS",
                   help="lmms-eval or vila-eval task names separated by ',' or '/', e.g. "
                        "lmms-videomme-256/vnbench_val,mvbench or longvila_localmc")
    b.add_argument("-nf", "--num-frames", type=at_least(1), default=None, metavar="N",
                   help="frames per video for every task without a -N suffix (default: 256 Video-MME, "
                        "128 VNBench, 32 others)")
    b.add_argument("--output-dir", default=None, metavar="DIR",
                   help="where results go (default runs/eval/<model folder name>)")
    b.add_argument("--limit", type=at_least(1), default=None, metavar="N",
                   help="at most N documents per task (smoke runs)")
    b.add_argument("--include-path", default=None, metavar="DIR",
                   help="an extra lmms-eval task folder, e.g. results/make_bench_task for longvila_localmc")
    b.add_argument("--online", action="store_true",
                   help="let lmms-eval download benchmark data from the Hugging Face Hub (default: offline)")
    b.set_defaults(func=_bench)
    return b
