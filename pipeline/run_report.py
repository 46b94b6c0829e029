"""Rule `run_report`: the one page to open after `snakemake all` (data, training, passkey, needle, benchmarks).

Writes, atomically,
    <out>/index.html     self-contained (images in img/, no JS): every section with what its numbers mean
    <out>/report.md      the same as Markdown
    <out>/img/*.png      loss curves per stage (plotted from metrics.jsonl), passkey and needle heatmaps
    <out>/s2s/           the stage-5 data report and its thumbnails, when there is one
    <out>/manifest.json  inputs, which sections ran, code version

A section whose input is absent is shown as "not run"; a malformed input file fails the rule, naming it.

    python -m pipeline.run_report --config results/resolve_config/config.yaml \
        --corpus results/make_corpus/manifest.json --shards results/pack_shards/512 --s2s results/s2s_assemble \
        --runs-root results/runs --runs stage4/512 stage5/8f --passkey results/eval_passkey/512 \
        --needle results/eval_needle/8f --bench results/eval_bench/8f --out results/report
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _by_name(folders: list[str]) -> dict[str, str]:
    """Folder list -> {folder name: folder} (the name is the context or frame count, e.g. 512, 8f)."""
    named = {Path(f).name: f for f in folders}
    if len(named) != len(folders):
        raise ValueError(f"folders with the same name in {folders}; each must be named by its context/run")
    return named


def main(argv: list[str] | None = None) -> int:
    from pipeline.common.stage import run_stage

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="resolved config YAML (results/resolve_config/config.yaml)")
    parser.add_argument("--corpus", nargs="?", default=None, help="make_corpus manifest.json (absent: real corpus)")
    parser.add_argument("--shards", nargs="*", default=[], help="pack_shards folders, one per context")
    parser.add_argument("--s2s", nargs="?", default=None, help="the s2s_assemble folder")
    parser.add_argument("--runs-root", default="results/runs", help="folder of the run directories")
    parser.add_argument("--runs", nargs="*", default=[], help="run names under --runs-root, e.g. stage4/512")
    parser.add_argument("--passkey", nargs="*", default=[], help="eval_passkey folders, one per stage-4 step")
    parser.add_argument("--needle", nargs="*", default=[], help="eval_needle folders, one per stage-5 model")
    parser.add_argument("--bench", nargs="*", default=[], help="eval_bench folders, one per stage-5 model")
    parser.add_argument("--out", required=True, help="output folder (written atomically)")
    args = parser.parse_args(argv)

    def body() -> int:
        from longvila.data.manifest import code_version
        from longvila.eval.report import ReportInputs, write_report
        from longvila.utils.io import atomic_dir, write_json_atomic
        from longvila.utils.logging import get_logger

        inputs = ReportInputs(config=args.config, corpus=args.corpus, shards=_by_name(args.shards), s2s=args.s2s,
                              runs={r: Path(args.runs_root) / r / "metrics.jsonl" for r in args.runs},
                              passkey=_by_name(args.passkey), needle=_by_name(args.needle),
                              bench=_by_name(args.bench))
        with atomic_dir(args.out) as tmp:
            status = write_report(tmp, inputs)
            write_json_atomic(tmp / "manifest.json", {"step": "run_report", **status,
                                                      "inputs": {k: v for k, v in vars(args).items() if k != "out"},
                                                      "code_version": code_version()})
        not_run = [k for k, v in status["sections"].items() if v != "ok"]
        get_logger().info(f"run report -> {args.out}/index.html" + (f" (not run: {', '.join(not_run)})"
                                                                     if not_run else ""))
        return 0

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
