"""`ParallelDims`: the one owner of the data-parallel x Ulysses x ring topology. Passed explicitly.

World layout (as in the release): a sequence-parallel (SP) group is P = ulysses x ring contiguous ranks;
data-parallel replicas follow each other (DP = world_size / P). Inside an SP group of global ranks
[g0, g0 + P), Ulysses groups are contiguous runs of `ulysses` ranks (intra-node) and ring groups take every
`ulysses`-th rank (inter-node). The SP rank of a process is `ring_rank * ulysses + ulysses_rank`.

    dims = ParallelDims(ulysses=2, ring=2, world_size=8)   # validates, creates no process group (layout zigzag)
    ParallelDims(ulysses=4, world_size=4).layout           # "contiguous": the default layout follows the ring
    dims.validate_heads(num_heads=28, num_kv_heads=4)
    dims.build()                                           # after init_process_group: creates the groups
"""

from __future__ import annotations

from dataclasses import dataclass, field


def valid_ulysses_degrees(num_heads: int, num_kv_heads: int) -> list[int]:
    """Ulysses degrees U that split both head counts (KV heads replicated when U > H_kv and U % H_kv == 0)."""
    return [u for u in range(1, num_heads + 1) if num_heads % u == 0
            and (num_kv_heads % u == 0 or (u > num_kv_heads and u % num_kv_heads == 0))]


LAYOUTS = ("zigzag", "contiguous")   # how a sequence lies over the SP ranks: longvila.parallel.layout
LAYOUT_CHOICES = ("auto", *LAYOUTS)  # what configs and command lines accept: "auto" = `default_layout(ring)`


def default_layout(ring: int) -> str:
    """The fastest exact layout for a ring degree: "zigzag" when ring > 1 (every ring rank gets an early and a
    late chunk, so the causal work of the ring steps is balanced), "contiguous" when ring == 1 (after the
    Ulysses all-to-all every rank holds the whole sequence, so zigzag balances nothing and only cuts each
    causal attention into more kernel calls)."""
    return "zigzag" if ring > 1 else "contiguous"


@dataclass
class ParallelDims:
    """Degrees of sequence parallelism (Ulysses x ring), the data parallelism they leave, and the sequence
    layout over the SP ranks: one object, so sharding and attention can never disagree on where tokens are.

    Args:
        ulysses: Ulysses (all-to-all, head-split) degree U.
        ring: ring (point-to-point, sequence-split) degree R.
        world_size: number of processes; default: the current process group's size (or U x R).
        layout: "zigzag" (2P chunks, rank s holds s and 2P-1-s: causal work balanced), "contiguous", or
            None / "auto" (the default): `default_layout(ring)`, zigzag for a ring, contiguous for Ulysses alone.
            Resolved here: `dims.layout` is always "zigzag" or "contiguous".
    """

    ulysses: int = 1
    ring: int = 1
    world_size: int | None = None
    layout: str | None = None
    rank: int = 0
    _groups: dict = field(default_factory=dict, repr=False)
    _memo: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.ulysses < 1 or self.ring < 1:
            raise ValueError(f"ulysses={self.ulysses}, ring={self.ring}: both degrees must be >= 1")
        if self.layout in (None, "auto"):
            self.layout = default_layout(self.ring)
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; use one of {LAYOUTS} or 'auto' (None)")
        if self.world_size is None:
            import torch.distributed as dist          # here, not at import: the config checks stay torch-free

            self.world_size = dist.get_world_size() if dist.is_initialized() else self.sp_degree
        if self.world_size % self.sp_degree:
            raise ValueError(f"world_size={self.world_size} is not a multiple of ulysses x ring = {self.sp_degree}; "
                             f"choose degrees whose product divides the number of processes")

    @property
    def sp_degree(self) -> int:
        return self.ulysses * self.ring

    @property
    def dp_degree(self) -> int:
        return self.world_size // self.sp_degree

    def validate_heads(self, num_heads: int, num_kv_heads: int) -> None:
        """Raise ValueError unless the Ulysses degree can split these heads (listing the valid degrees)."""
        if self.ulysses not in valid_ulysses_degrees(num_heads, num_kv_heads):
            raise ValueError(f"ulysses={self.ulysses} cannot split {num_heads} query / {num_kv_heads} KV heads; "
                             f"valid Ulysses degrees: {valid_ulysses_degrees(num_heads, num_kv_heads)}")

    def check_layout(self, layout: str | None = None) -> str:
        """`self.layout`; a `layout` given anyway (the library's functions still take one) must equal it."""
        if layout is None or layout == self.layout:
            return self.layout
        raise ValueError(f"layout={layout!r} but ParallelDims(ulysses={self.ulysses}, ring={self.ring}) has layout="
                         f"{self.layout!r}: the layout belongs to the topology; build ParallelDims(..., "
                         f"layout={layout!r}) and pass no layout= to the functions that use it")

    def seq_len_divisor(self, layout: str | None = None) -> int:
        """Pad sequences to multiples of this: 2P for zigzag (required), P for contiguous (equal shards; uneven
        contiguous shards also work, at the cost of one tiny all-gather of lengths per attention call)."""
        return 2 * self.sp_degree if self.check_layout(layout) == "zigzag" else self.sp_degree

    # ------------------------------------------------------------------ ranks (pure arithmetic)
    def coords(self, rank: int) -> dict[str, int]:
        """dp, sp, ulysses and ring coordinates of a global rank."""
        sp = rank % self.sp_degree
        return {"dp": rank // self.sp_degree, "sp": sp, "ulysses": sp % self.ulysses, "ring": sp // self.ulysses}

    def group_ranks(self, axis: str) -> list[list[int]]:
        """All groups along `axis` ("sp", "ulysses", "ring", "dp") as lists of global ranks."""
        p, u = self.sp_degree, self.ulysses
        if axis == "sp":
            return [list(range(d * p, (d + 1) * p)) for d in range(self.dp_degree)]
        if axis == "ulysses":
            return [list(range(s, s + u)) for s in range(0, self.world_size, u)]
        if axis == "ring":
            return [[d * p + r * u + i for r in range(self.ring)] for d in range(self.dp_degree) for i in range(u)]
        if axis == "dp":
            return [list(range(s, self.world_size, p)) for s in range(p)]
        raise ValueError(f"unknown axis {axis!r}; axes: sp, ulysses, ring, dp")

    # ------------------------------------------------------------------ process groups
    def build(self) -> "ParallelDims":
        """Create this process's groups (every rank must call it, in the same order)."""
        import torch.distributed as dist

        if not dist.is_initialized():
            raise ValueError("ParallelDims.build() needs torch.distributed.init_process_group() first")
        if dist.get_world_size() != self.world_size:
            raise ValueError(f"world_size={self.world_size} but the process group has {dist.get_world_size()} ranks")
        self.rank = dist.get_rank()
        for axis in ("sp", "ulysses", "ring", "dp"):
            for ranks in self.group_ranks(axis):
                group = dist.new_group(ranks)
                if self.rank in ranks:
                    self._groups[axis] = group
        return self

    def memo(self, key, make, limit: int = 64):
        """`make()` computed once per `key` for this topology (the attention's block plans: they hold device
        index tensors, so they live on the object the caller owns, not in a module-level cache); at most
        `limit` entries, the oldest dropped first."""
        if key not in self._memo:
            if len(self._memo) >= limit:
                self._memo.pop(next(iter(self._memo)))
            self._memo[key] = make()
        return self._memo[key]

    def group(self, axis: str):
        """The process group of this rank along `axis`; None when not built (single process)."""
        return self._groups.get(axis)

    def axis_rank(self, axis: str) -> int:
        """This process's index along `axis` ("dp", "sp", "ulysses", "ring")."""
        return self.coords(self.rank)[axis]
