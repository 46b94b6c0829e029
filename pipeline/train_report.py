"""Rule `train_report`: one page on the training runs — loss curves, throughput, passkey accuracy per step.

Reads each run's metrics.jsonl (results/runs/<stage>/<name>/) and each stage-4 step's passkey.json, and writes
    <out>/loss_curves.png   loss and learning rate per optimizer step, every run
    <out>/summary.json      per run: steps, first/last loss, median tokens/s, peak RSS; passkey accuracy per step
    <out>/summary.md        the same as tables

    python -m pipeline.train_report --runs-root results/runs --runs stage4/512 stage5/8f \
        --passkey results/eval_passkey/512 --out results/train_report
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def summarise(runs_root: Path, runs: list[str], passkey_dirs: list[str]) -> dict:
    from longvila.utils.curves import read_metrics

    rows = []
    for name in runs:
        m = read_metrics(runs_root / name / "metrics.jsonl")
        if not m:
            raise ValueError(f"{runs_root / name}/metrics.jsonl is missing or empty; rerun that training rule")
        rows.append({"run": name, "steps": m[-1]["step"], "first_loss": m[0]["loss"], "last_loss": m[-1]["loss"],
                     "median_tokens_per_s": statistics.median(r["tokens_per_s"] for r in m),
                     "peak_rss_mib": max(r["peak_rss_mib"] for r in m)})
    passkey = []
    for folder in passkey_dirs:
        result = json.loads((Path(folder) / "passkey.json").read_text())
        passkey.append({"context": result["context"], "accuracy": result["accuracy"], "grid": result["grid"],
                        "rope_theta": result["rope_theta"], "records": len(result["results"])})
    return {"runs": rows, "passkey": passkey}


def markdown(summary: dict) -> str:
    lines = ["# Training report", "", "![loss curves](loss_curves.png)", "",
             "| run | steps | first loss | last loss | median tokens/s | peak RSS (MiB) |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['steps']} | {r['first_loss']:.4f} | {r['last_loss']:.4f} | "
              f"{r['median_tokens_per_s']:.0f} | {r['peak_rss_mib']:.0f} |" for r in summary["runs"]]
    lines += ["", "## Passkey retrieval after each stage-4 step", "",
              "| context | RoPE theta | records | accuracy | accuracy by length (depth-averaged) |", "|---|---|---|---|---|"]
    for p in summary["passkey"]:
        by_length = ", ".join(f"{n}: {statistics.mean(d.values()):.2f}" for n, d in sorted(p["grid"].items(),
                                                                                       key=lambda kv: int(kv[0])))
        lines.append(f"| {p['context']} | {p['rope_theta']:.4g} | {p['records']} | {p['accuracy']:.3f} | {by_length} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from pipeline.common.stage import run_stage

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-root", required=True, help="folder of the run directories (results/runs)")
    parser.add_argument("--runs", nargs="+", required=True, help="run names under --runs-root, e.g. stage4/512")
    parser.add_argument("--passkey", nargs="*", default=[], help="eval_passkey output folders")
    parser.add_argument("--out", required=True, help="output folder (written atomically)")
    args = parser.parse_args(argv)

    def body() -> int:
        from longvila.utils.curves import plot_loss_curves
        from longvila.utils.io import atomic_dir
        from longvila.utils.logging import get_logger

        root = Path(args.runs_root)
        summary = summarise(root, args.runs, args.passkey)
        with atomic_dir(args.out) as tmp:
            plot_loss_curves({r: root / r / "metrics.jsonl" for r in args.runs}, tmp / "loss_curves.png")
            (tmp / "summary.json").write_text(json.dumps(summary, indent=1))
            (tmp / "summary.md").write_text(markdown(summary))
        get_logger().info(f"training report: {len(args.runs)} runs -> {args.out}/summary.md")
        return 0

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
