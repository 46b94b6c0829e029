"""Which corpus files are packed, and how they are split into batches (one Snakemake job per batch).

The DAG (at build time) and the pack stages use these same functions, so both agree on the file list.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from longvila.config import Config
from longvila.data.corpus import train_file_names


def corpus_files(cfg: Config, made_root: str | Path) -> tuple[Path, list[str]]:
    """(root, sorted relative file names) of the training corpus.

    With `slimpajama.root` null the corpus is the one `make_corpus` writes under `made_root` (its file
    names are known from the config before it runs); otherwise `slimpajama.glob` is expanded under the root.
    `slimpajama.max_files` keeps a seeded random subset.
    """
    sp = cfg.slimpajama
    if sp.root is None:
        root, names = Path(made_root), sorted(train_file_names(cfg.corpus))
    else:
        root = Path(sp.root)
        if not root.is_dir():
            raise ValueError(f"slimpajama.root {sp.root!r} is not a folder; point it at a SlimPajama copy "
                             "(holding train/chunk*/...) or set it to null to use the offline corpus")
        names = sorted(str(p.relative_to(root)) for p in root.glob(sp.glob) if p.is_file())
        if not names:
            raise ValueError(f"slimpajama.glob {sp.glob!r} matches no file under {root}; "
                             "SlimPajama's layout is train/chunk*/example_train_*.jsonl.zst")
    if sp.max_files is not None and sp.max_files < len(names):
        keep = np.random.default_rng(cfg.pack.seed).choice(len(names), size=sp.max_files, replace=False)
        names = sorted(names[i] for i in keep)
    return root, names


def batch_names(names: list[str], files_per_batch: int) -> list[list[str]]:
    """Consecutive groups of `files_per_batch` names (the last may be shorter)."""
    return [names[i:i + files_per_batch] for i in range(0, len(names), files_per_batch)]
