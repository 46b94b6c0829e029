"""`manifest.json` of a packed data set: what was packed, from what, with what, by which code."""

from __future__ import annotations

import subprocess
from pathlib import Path

import longvila

FORMAT_VERSION = 1


def code_version() -> dict:
    """The package version, plus the git commit of the source tree when it is a git checkout."""
    info = {"package": longvila.__version__}
    root = Path(longvila.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
        info.update(git=sha, dirty=dirty)
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def budget_report(summary: dict) -> tuple[dict | None, list[str]]:
    """How the token budget was used: ({budget, used, met, per_key}, warnings), or (None, []) without one.

    A document is accepted while its source's budget is not yet spent, so a source can overshoot by up to
    one document (a long book can exceed a small share), and undershoot when the corpus holds too few
    documents of that source after upsampling. Both are reported here rather than hidden.
    """
    budgets = summary.get("budget_tokens")
    if not budgets:
        return None, []
    sources = summary["sources"]
    per_key, warnings = {}, []
    for key, budget in budgets.items():
        picked = [s for s in sources if key in (s, "None")]
        used = sum(sources[s]["tokens"] + sources[s]["documents"] for s in picked)  # + one EOS per document
        per_key[key] = {"budget": budget, "used": used}
        if budget and not 0.9 <= used / budget <= 1.1:
            label = "the budget" if key == "None" else f"{key}'s share of the budget"
            why = "too few documents after upsampling" if used < budget else "its last document overshoots"
            warnings.append(f"{label}: used {used:,} of {budget:,} tokens ({used / budget:.0%}): {why}")
    total, used = sum(budgets.values()), sum(v["used"] for v in per_key.values())
    return {"budget": total, "used": used, "met": used >= total, "per_key": per_key}, warnings


def build_manifest(summary: dict, *, tokenizer: dict, config: dict, run_name: str, upsample: str) -> dict:
    """The manifest: the pack summary plus tokenizer, resolved config and code version.

    Keys (at least): format_version, seq_len, rows, tokens, remainder_tokens, tokenizer, sources, skipped,
    dropped, records, inputs, parts, config, code_version.
    """
    head = {"format_version": FORMAT_VERSION, "run_name": run_name, "upsample": upsample,
            "seq_len": summary["seq_len"], "rows": summary["rows"], "tokens": summary["tokens"],
            "remainder_tokens": summary["remainder_tokens"], "tokenizer": tokenizer}
    tail = {"budget": budget_report(summary)[0], "config": config, "code_version": code_version()}
    body = {k: v for k, v in summary.items() if k not in head}
    return {**head, **body, **tail}


def check_conservation(manifest: dict) -> None:
    """Raise AssertionError unless rows x seq_len + remainder = document tokens + one EOS per document."""
    doc_tokens = sum(s["tokens"] for s in manifest["sources"].values())
    packed = manifest["rows"] * manifest["seq_len"] + manifest["remainder_tokens"]
    assert packed == doc_tokens + manifest["eos_tokens"], (packed, doc_tokens, manifest["eos_tokens"])
    rec = manifest["records"]
    assert rec["lines"] == rec["accepted"] + rec["skipped"] + rec["dropped"], rec
