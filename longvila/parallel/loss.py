"""The exact global token-mean loss under sequence and data parallelism.

Every rank holds a shard of one sample (SP) of its data-parallel replica's batch (DP). The loss of the
global batch is (sum of token losses over every rank) / (number of supervised tokens over every rank). Each
rank returns its own sum divided by the GLOBAL count, so that SUMMING gradients over all ranks (SP and DP)
gives the exact gradient of the global mean. Engines that AVERAGE gradients over the DP group (DDP, ZeRO)
must be given `loss * dims.dp_degree` (see `token_mean_loss`'s `dp_averaged`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from longvila.parallel.comm import world_sum
from longvila.parallel.dims import ParallelDims

IGNORE_INDEX = -100


def token_mean_loss(logits_SV: torch.Tensor, targets_S: torch.Tensor, dims: ParallelDims,
                    dp_averaged: bool = False, total: int | None = None) -> tuple[torch.Tensor, int]:
    """(this rank's share of the global token-mean cross-entropy, the global supervised-token count).

    Args:
        logits_SV: [S_loc, V] this rank's logits; targets_S: [S_loc] next-token targets (-100 = ignored),
            already shifted before sharding.
        dp_averaged: the engine averages gradients over DP ranks: scale by dp_degree to keep the exact mean.
        total: the global supervised-token count to divide by when the caller knows it (e.g. over a whole
            gradient-accumulation window); by default this call's count over the world (one all-reduce).
    Process group: the whole world (SP and DP) for the count.
    """
    local_sum = F.cross_entropy(logits_SV.float() if logits_SV.dtype in (torch.float16, torch.bfloat16)
                                else logits_SV, targets_S, ignore_index=IGNORE_INDEX, reduction="sum")
    total = int(world_sum(int((targets_S != IGNORE_INDEX).sum()))) if total is None else total
    if total == 0:
        raise ValueError("no supervised token in the whole global batch (every label is -100); check the data")
    scale = dims.dp_degree if dp_averaged else 1
    return local_sum * scale / total, total
