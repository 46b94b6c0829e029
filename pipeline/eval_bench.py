"""Rule `eval_bench`: lmms-eval benchmarks of one stage-5 model -> metrics.json (longvila/eval/bench.py).

Runs eval.bench.tasks (frames: eval.bench.num_frames, else vila-eval's 256 Video-MME / 128 VNBench / 32
others; at most eval.bench.limit docs each), one `python -m lmms_eval --model longvila` process per task,
with the local task folder of rule make_bench_task on lmms-eval's include path. Writes
    <out>/metrics.json                 every task's numbers, frames, docs, chance level, lmms-eval version
    <out>/<task>/results.json          lmms-eval's results, samples.jsonl (every answer), lmms_eval.log
    <out>/manifest.json
The folder appears only when every task ran (a failed task: exit 1, its log in this rule's log).

    python -m pipeline.eval_bench --config results/resolve_config/config.yaml --model results/train_stage5/8f \
        --task-dir results/make_bench_task --out results/eval_bench/8f
"""

from __future__ import annotations

from pipeline.common.stage import load, run_stage, stage_parser


class _TasksFailed(Exception):
    """Some lmms-eval task failed (raised inside atomic_dir so that no partial folder is kept)."""


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--model", required=True, help="the stage-5 checkpoint (released layout)")
    parser.add_argument("--task-dir", required=True, help="the make_bench_task folder (lmms-eval --include_path)")
    parser.add_argument("--out", required=True, help="output folder (written atomically)")
    args = parser.parse_args(argv)

    def body() -> int:
        from longvila.config import config_to_dict
        from longvila.data.manifest import code_version
        from longvila.eval.bench import expand_tasks, run_bench
        from longvila.utils.io import atomic_dir, write_json_atomic
        from longvila.utils.logging import get_logger

        cfg = load(args)
        bench = cfg.eval.bench
        tasks = expand_tasks(bench.tasks, bench.num_frames)
        try:
            with atomic_dir(args.out) as tmp:
                metrics = run_bench(args.model, tasks, tmp, include_path=args.task_dir, limit=bench.limit)
                if metrics["errors"]:
                    raise _TasksFailed(sorted(metrics["errors"]))
                write_json_atomic(tmp / "manifest.json", {"step": "eval_bench", "model": args.model,
                                                          "tasks": [t.label for t in tasks],
                                                          "config": config_to_dict(bench),
                                                          "code_version": code_version()})
        except _TasksFailed as e:                       # the folder is not written: Snakemake sees a failure
            get_logger().error(f"eval_bench: failed tasks {e.args[0]}; their lmms-eval output is above")
            return 1
        get_logger().info(f"eval_bench: {', '.join(f'{k}: {v}' for k, v in metrics['tasks'].items())} -> {args.out}")
        return 0

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
