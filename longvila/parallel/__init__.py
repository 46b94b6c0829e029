"""Multi-modal sequence parallelism (MM-SP): topology, layouts, collectives, attention.

Public API: `ParallelDims`, `shard_sequence`, `gather_sequence`, `sp_attention`, `apply_sequence_parallel`
(the last imports Transformers: `from longvila.parallel.parallelize import apply_sequence_parallel`).
"""

from longvila.parallel.attention import sp_attention
from longvila.parallel.dims import ParallelDims, valid_ulysses_degrees
from longvila.parallel.layout import gather_sequence, global_positions, local_indices, shard_sequence

__all__ = ["ParallelDims", "gather_sequence", "global_positions", "local_indices", "shard_sequence",
           "sp_attention", "valid_ulysses_degrees"]
