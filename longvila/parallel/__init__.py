"""Multi-modal sequence parallelism (MM-SP): topology, layouts, collectives, attention.

Public API: `ParallelDims` (the topology, and the sequence layout: `ParallelDims(ulysses, ring, world_size,
layout=None)`, zigzag with a ring, contiguous for Ulysses alone), `shard_sequence`, `gather_sequence`, `sp_attention`, `apply_sequence_parallel` (which
imports Transformers on first use).

The names are loaded on first use (PEP 562), so `from longvila.parallel import ParallelDims` -- the topology
arithmetic the config checks use at DAG build -- does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "sp_attention": "longvila.parallel.attention",
    "apply_sequence_parallel": "longvila.parallel.parallelize",
    "LAYOUTS": "longvila.parallel.dims",
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
