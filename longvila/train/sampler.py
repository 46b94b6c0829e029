"""The SP-aware sampler: one SP group is one logical device.

Every rank of an SP group must read the same sample (they hold shards of one sequence); data-parallel
replicas read different samples. The order is a seeded shuffle per epoch (seed + epoch), the same on every
rank; DP replica d takes positions d, d + DP, d + 2 DP, ... of it. The sampler's state (epoch, position) is
saved with each checkpoint, so a resumed run continues mid-epoch with exactly the samples an uninterrupted
run would have read. (The release's sampler never reshuffled between epochs.)

    sampler = SPSampler(num_samples, dims.dp_degree, dims.axis_rank("dp"), seed=0)
    for index in sampler: ...
    state = sampler.state_dict(); sampler.load_state_dict(state)
"""

from __future__ import annotations

import torch


class SPSampler:
    """Infinite (epoch after epoch) iterator of sample indices for one DP replica (see the module docstring).

    Each epoch drops the tail that does not fill every DP replica, so replicas always step together.
    """

    def __init__(self, num_samples: int, dp_degree: int = 1, dp_rank: int = 0, seed: int = 0,
                 shuffle: bool = True) -> None:
        if num_samples < dp_degree:
            raise ValueError(f"{num_samples} samples cannot feed {dp_degree} data-parallel replicas; "
                             "use more data or fewer DP replicas")
        if not 0 <= dp_rank < dp_degree:
            raise ValueError(f"dp_rank {dp_rank} outside [0, {dp_degree})")
        self.n, self.dp, self.rank, self.seed, self.shuffle = num_samples, dp_degree, dp_rank, seed, shuffle
        self.epoch, self.position = 0, 0         # position: steps taken in this epoch (per replica)

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.dp

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self):
        while True:
            order = self.order(self.epoch)
            while self.position < self.steps_per_epoch:
                index = order[self.position * self.dp + self.rank]
                self.position += 1
                yield index
            self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "num_samples": self.n,
                "dp_degree": self.dp}

    def load_state_dict(self, state: dict) -> None:
        if (state["num_samples"], state["dp_degree"], state["seed"]) != (self.n, self.dp, self.seed):
            raise ValueError(f"sampler state is for {state['num_samples']} samples / DP {state['dp_degree']} / seed "
                             f"{state['seed']}, this run has {self.n} / {self.dp} / {self.seed}; resume with the "
                             "same data and topology")
        self.epoch, self.position = state["epoch"], state["position"]
