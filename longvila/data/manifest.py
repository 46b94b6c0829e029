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


CLI_NAMES = {"seq_len": "--seq-len", "keep_ratio": "--keep-ratio", "short_threshold": "--short-threshold",
             "inputs": "--input"}
"""What `explain_no_rows` / `explain_unusable` call the knobs in `longvila pack`'s terms; the rule CLIs pass
config keys instead."""

_FIXES = {
    "truncated_file": "re-download the files named",
    "corrupt_file": "re-download or recompress the files named",
    "blank_line": "the files hold no text",
    "empty_text": "the records' \"text\" is empty",
    "invalid_utf8": "the files must be UTF-8",
    "malformed_json": 'each line must be one JSON object: {"text": ..., "meta": {"redpajama_set_name": ...}}',
    "missing_text": 'each record needs a "text" field (SlimPajama format)',
    "non_string_text": 'each record\'s "text" must be a string',
    "unknown_source": "each record needs meta.redpajama_set_name, one of the 7 SlimPajama sources (RedPajamaC4, ...)",
}


def _counts(counts: dict, files: dict[str, list[str]] | None = None, top: int = 3) -> str:
    """'corrupt_file 1 (a.jsonl), malformed_json 12 and 2 more reasons': the largest counts first."""
    items = sorted(((k, v) for k, v in counts.items() if v), key=lambda kv: (-kv[1], kv[0]))
    parts = []
    for reason, n in items[:top]:
        names = (files or {}).get(reason, [])
        named = f" ({', '.join(names[:3])}{f' and {len(names) - 3} more' if len(names) > 3 else ''})" if names else ""
        parts.append(f"{reason} {n:,}{named}")
    more = f" and {len(items) - top} more reasons" if len(items) > top else ""
    return ", ".join(parts) + more


def _file_skips(summary: dict) -> dict[str, list[str]]:
    files: dict[str, list[str]] = {}
    for entry in summary["inputs"]:
        if entry.get("skipped"):
            files.setdefault(entry["skipped"]["reason"], []).append(entry["name"])
    return files


def explain_unusable(summary: dict, names: dict = CLI_NAMES) -> str | None:
    """Why no input record could be used at all (None when a document was accepted or dropped only by sampling).

    Every record skipped as bad input, every file unreadable, or no record in the inputs: no setting makes
    such inputs pack, so even one batch of them is an error.
    """
    if summary["documents"] or summary["records"]["dropped"]:
        return None
    lines, n_files = summary["records"]["lines"], len(summary["inputs"])
    files = f"{n_files} file{'s' if n_files != 1 else ''}"
    if summary["skipped"]:
        top = min(summary["skipped"], key=lambda r: (-summary["skipped"][r], r))  # the first one _counts lists
        what = (f"every record was skipped ({lines:,} lines in {files})" if lines
                else f"no file could be read ({files})")
        return (f"{what}: {_counts(summary['skipped'], _file_skips(summary))}. Fix the input ({_FIXES[top]}); the log "
                "lists the first 50 of each reason with file:line")
    return f"the inputs hold no records ({files}, 0 lines); check {names['inputs']}"


def explain_no_rows(summary: dict, names: dict = CLI_NAMES) -> str | None:
    """Why a packed data set has 0 rows and what to change; None when it has rows."""
    if summary["rows"]:
        return None
    unusable = explain_unusable(summary, names)
    if unusable:
        return f"0 rows: {unusable}"
    if not summary["documents"]:
        return (f"0 rows: sampling dropped every document ({_counts(summary['dropped'])}); documents shorter than "
                f"{names['short_threshold']} tokens are kept with probability {names['keep_ratio']}: raise "
                f"{names['keep_ratio']}, lower {names['short_threshold']}, or use upsample 'none'")
    tokens, seq = summary["remainder_tokens"], summary["seq_len"]
    skipped = f"; skipped {_counts(summary['skipped'])}" if summary["skipped"] else ""
    dropped = f"; dropped {_counts(summary['dropped'])}" if summary["dropped"] else ""
    return (f"0 rows: the corpus holds {tokens:,} tokens after skips and sampling ({summary['documents']:,} documents "
            f"+ one EOS each{skipped}{dropped}), fewer than one {names['seq_len']} row of {seq:,}; lower "
            f"{names['seq_len']} to at most {tokens:,} or add data")
