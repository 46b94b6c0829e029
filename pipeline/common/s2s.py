"""Shared plumbing of the stage-5 rule CLIs: the output folder, the manifest with the step's accounting, and
the refusal of an empty result (no later step, nor training, can use 0 rows: the step fails with exit code 2,
the top reject reasons and what to change, and writes nothing)."""

from __future__ import annotations

from pathlib import Path

from longvila.config import config_to_dict
from longvila.data.manifest import code_version
from longvila.data.shot2story.common import Rejects
from longvila.utils.io import write_json_atomic
from longvila.utils.logging import get_logger


def finish(tmp: Path, step: str, cfg, n_in: int, n_out: int, rejects: Rejects, **extra) -> dict:
    """Write rejects.jsonl + manifest.json into the step's (temporary) folder; check the accounting."""
    rejects.write(tmp / "rejects.jsonl")
    manifest = {"step": step, "in": n_in, "out": n_out, "rejected": dict(rejects.counts),
                "rejected_total": rejects.total, **extra, "config": config_to_dict(cfg.shot2story),
                "code_version": code_version()}
    write_json_atomic(tmp / "manifest.json", manifest)
    get_logger().info(f"{step}: {n_in} in, {n_out} out, {rejects.total} rejected {dict(rejects.counts)}")
    return manifest


def data_root(cfg, root_arg: str | None) -> Path:
    root = Path(root_arg or cfg.shot2story.root or "results/make_shot2story")
    if not root.is_dir():
        raise ValueError(f"Shot2Story root {root} is not a folder; set shot2story.root or run rule make_shot2story")
    return root


def refuse_empty(step: str, made: str, n_in: int, took: str, rejects: Rejects, fixes: dict[str, str], otherwise: str,
                 out: str) -> None:
    """Raise the ValueError of a step that made 0 `made` from `n_in` `took`: why (the top reject reasons) and the fix
    for the largest reason (`fixes`), or `otherwise` when nothing was rejected (the input itself was empty)."""
    if rejects.total:
        top = min(rejects.counts, key=lambda r: (-rejects.counts[r], r))  # the first one rejects.top() lists
        why = f": every one was rejected ({rejects.top()}). {fixes.get(top, otherwise)}"
    else:
        why = f". {otherwise}"
    raise ValueError(f"{step}: 0 {made} from {n_in:,} {took}{why}. Nothing was written to {out}")
