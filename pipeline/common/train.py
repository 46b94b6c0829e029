"""Shared plumbing of the training CLIs (train_stage4, train_stage5): run-folder arguments, the job, launching.

    parser = stage_parser(__doc__); add_run_args(parser); args = parser.parse_args(argv)
    return run_training(args, cfg, name="stage5-8f", target=TARGET, nodes=1, paths=("init", "data", ...),
                        extra={"run": 0}, curve=("stage5/8f", "stage 5, 8 frames"))
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """--run-dir, --out, --stop-after, --print-plan, --json."""
    parser.add_argument("--run-dir", help="run folder: checkpoints, metrics.jsonl, logs, plan.json (kept)")
    parser.add_argument("--out", help="output checkpoint folder (written atomically)")
    parser.add_argument("--stop-after", type=int, default=None, help="stop after N steps (tests: preemption)")
    parser.add_argument("--print-plan", action="store_true", help="print what would run, and exit")
    parser.add_argument("--json", action="store_true", help="with --print-plan: print it as JSON")


def run_training(args: argparse.Namespace, cfg, *, name: str, target: str, nodes: int, paths: tuple[str, ...],
                 extra: dict, curve: tuple[str, str]) -> int:
    """Build the Job (absolute paths; `<name>` placeholders for --print-plan without them), then print the
    plan, or write the resolved config.yaml into the run folder, launch, and draw the run's loss curve
    (`curve` = (legend, title)) there."""
    import yaml

    from longvila.config import config_to_dict
    from longvila.utils.curves import plot_loss_curves
    from longvila.utils.io import write_text_atomic
    from longvila.utils.logging import get_logger
    from pipeline.launch import Job, launch, print_plan

    keys = (*paths, "run_dir", "out")
    missing = [f"--{k.replace('_', '-')}" for k in keys if not getattr(args, k)]
    if missing and not args.print_plan:
        raise ValueError(f"missing {', '.join(missing)} (only --print-plan runs without them)")
    absolute = lambda v: [os.path.abspath(x) for x in v] if isinstance(v, list) else os.path.abspath(v)
    resolved = {k: absolute(getattr(args, k)) if getattr(args, k) else f"<{k}>" for k in keys}
    run_dir = Path(resolved["run_dir"])
    job = Job(name=name, target=target, nodes=nodes, run_dir=run_dir,
              kwargs={"config": os.path.abspath(args.config), "overrides": list(args.overrides), **extra,
                      **resolved, "stop_after": args.stop_after})
    if args.print_plan:
        return print_plan(job, cfg, as_json=args.json)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    code = launch(job, cfg)
    try:
        plot_loss_curves({curve[0]: run_dir / "metrics.jsonl"}, run_dir / "loss_curve.png", title=curve[1])
    except (OSError, ValueError, KeyError) as e:        # a plot must never fail a finished training run
        get_logger().warning(f"no loss curve for {run_dir}: {e}")
    return code
