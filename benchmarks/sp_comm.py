"""Communication volume of sp_attention: bytes each rank sends per attention layer, measured vs theory.

Runs real gloo processes (world = U x R) and counts, through the collectives' byte counters, what one rank
sends in one forward of `sp_attention` (q, k, v, out all-to-alls; K/V ring steps), for Ulysses, ring and 2D
at several degrees and sequence lengths; prints measured / theoretical (target 1.00).

Theory per rank, forward, in elements (S = global tokens, P = U x R, H / Hkv heads, D head dim,
Hkv' = max(Hkv, U) after KV replication):
    Ulysses all-to-alls  (S/P) * D * (U-1)/U * (2H + 2Hkv')
    ring steps           (R-1) * 2 * (U * S/P) * (Hkv'/U) * D

    python benchmarks/sp_comm.py
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers.spawn import run_distributed  # noqa: E402

HEADS, KV_HEADS, HEAD_DIM = 8, 2, 16
CASES = [(2, 1), (4, 1), (1, 2), (1, 4), (2, 2)]  # (ulysses, ring)
SEQ_LENS = (256, 1024)


def theory_bytes(seq_len: int, ulysses: int, ring: int, itemsize: int = 4) -> int:
    p = ulysses * ring
    hkv = max(KV_HEADS, ulysses)
    a2a = seq_len // p * HEAD_DIM * (ulysses - 1) / ulysses * (2 * HEADS + 2 * hkv)
    ring_elems = (ring - 1) * 2 * (ulysses * seq_len // p) * (hkv // ulysses) * HEAD_DIM
    return int(round((a2a + ring_elems) * itemsize))


def _measure(rank, world, ulysses, ring, seq_len):
    from longvila.parallel import ParallelDims, shard_sequence, sp_attention

    dims = ParallelDims(ulysses=ulysses, ring=ring, world_size=world).build()
    torch.manual_seed(0)
    q = torch.randn(1, seq_len, HEADS, HEAD_DIM)
    k, v = torch.randn(1, seq_len, KV_HEADS, HEAD_DIM), torch.randn(1, seq_len, KV_HEADS, HEAD_DIM)
    stats = Counter()
    with torch.no_grad():
        sp_attention(*(shard_sequence(t, dims) for t in (q, k, v)), dims, stats=stats)
    return {key: value for key, value in stats.items()}


def main() -> None:
    print(f"heads {HEADS}, kv heads {KV_HEADS}, head dim {HEAD_DIM}, fp32; bytes sent by one rank, one forward")
    print(f"{'U':>2} {'R':>2} {'S':>6} {'a2a calls':>9} {'p2p calls':>9} {'measured B':>11} {'theory B':>11} {'ratio':>6}")
    worst = 0.0
    for ulysses, ring in CASES:
        for seq_len in SEQ_LENS:
            stats = run_distributed(_measure, ulysses * ring, ulysses, ring, seq_len)[0]
            measured = stats.get("all_to_all.bytes", 0) + stats.get("p2p.bytes", 0)
            theory = theory_bytes(seq_len, ulysses, ring)
            ratio = measured / theory
            worst = max(worst, abs(ratio - 1))
            print(f"{ulysses:>2} {ring:>2} {seq_len:>6} {stats.get('all_to_all.calls', 0):>9} "
                  f"{stats.get('p2p.calls', 0):>9} {measured:>11,} {theory:>11,} {ratio:>6.3f}", flush=True)
    print(f"largest deviation from theory: {worst:.3%} (target 0)")


if __name__ == "__main__":
    main()
