"""Multi-modal sequence parallelism (MM-SP): topology, layouts, collectives, attention.

Public API: `ParallelDims`, `shard_sequence`, `gather_sequence`, `sp_attention`, `apply_sequence_parallel`
(the last imports Transformers: `from longvila.parallel.parallelize import apply_sequence_parallel`).

The names are loaded on first use (PEP 562), so `from longvila.parallel.dims import ParallelDims` -- the
topology arithmetic the config checks use at DAG build -- does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "sp_attention": "longvila.parallel.attention",
    "ParallelDims": "longvila.parallel.dims",
    "valid_ulysses_degrees": "longvila.parallel.dims",
    "gather_sequence": "longvila.parallel.layout",
    "global_positions": "longvila.parallel.layout",
    "local_indices": "longvila.parallel.layout",
    "shard_sequence": "longvila.parallel.layout",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'longvila.parallel' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
