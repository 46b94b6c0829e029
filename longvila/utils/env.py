"""The one place where environment variables that change behaviour are set."""

from __future__ import annotations

import os


def apply_env(*, tokenizer_threads: int = 0) -> None:
    """Set process-wide knobs before any library that reads them starts.

    Args:
        tokenizer_threads: threads of the Rust tokenizer's pool (RAYON_NUM_THREADS); 0 = all cores. Must run
            before the first batch encode, when the pool is created.
    """
    if tokenizer_threads > 0:
        os.environ["RAYON_NUM_THREADS"] = str(tokenizer_threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
