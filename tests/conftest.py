"""Shared fixtures: a small offline corpus and the real Qwen2 tokenizer, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from longvila.config import CorpusConfig, PasskeyConfig, TokenizerConfig
from longvila.data.corpus import build_corpus
from longvila.data.tokenizer import load_tokenizer
from longvila.utils.env import apply_env

REPO = Path(__file__).resolve().parent.parent

SMALL_CORPUS = CorpusConfig(num_tokens=60_000, num_chunks=2, files_per_chunk=2, heldout_tokens=5_000,
                            length_scale=0.05, seed=3,
                            passkey=PasskeyConfig(train_docs=6, heldout_docs=5, lengths=[128, 256]))


@pytest.fixture(scope="session")
def tokenizer():
    apply_env()
    return load_tokenizer(TokenizerConfig())


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """A SlimPajama-format corpus of ~60k tokens (4 train files) built from the offline text."""
    root = tmp_path_factory.mktemp("corpus")
    build_corpus(SMALL_CORPUS, root, seed=SMALL_CORPUS.seed)
    return root


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A tiny randomly initialised checkpoint in the released layout (rule init_model on config.yaml)."""
    from pipeline import init_model, resolve_config

    tmp = tmp_path_factory.mktemp("init")
    cfg = tmp / "config.yaml"
    assert resolve_config.main(["--from-yaml", str(REPO / "config.yaml"), "--out", str(cfg)]) == 0
    assert init_model.main(["--config", str(cfg), "--out", str(tmp / "tiny")]) == 0
    return tmp / "tiny"


@pytest.fixture(scope="session")
def tiny_dag(tmp_path_factory) -> Path:
    """The whole DAG of tests/workflow/config.yaml, run once locally (--cores 2): the workflow test checks
    it, the SLURM test compares its own run with it."""
    from tests.helpers.snake import in_dir

    root = tmp_path_factory.mktemp("tiny_dag")
    in_dir(root, "all", "--cores", "2")
    return root


def corpus_inputs(root: Path) -> list[tuple[Path, str]]:
    return [(p, str(p.relative_to(root))) for p in sorted(root.glob("train/chunk*/*.jsonl.zst"))]


def pytest_addoption(parser):
    parser.addoption("--require-slurm", action="store_true",
                     help="fail (instead of skip) the SLURM tests when no cluster answers; .ci/run sets it")


def pytest_collection_modifyitems(config, items):
    """Skip tests marked `gpu` when no CUDA device is present (CI has none; the device checks run them)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (run on a GPU machine: pytest -m gpu)")
        for item in gpu_items:
            item.add_marker(skip)
