"""Communication volume of sp_attention: bytes each rank sends per attention layer, measured vs theory.

Runs real gloo processes (world = U x R) and counts, through the collectives' byte counters, what one rank
sends in one forward and one backward of `sp_attention` (q, k, v, out all-to-alls; K/V ring steps; backward:
dout, dq, dk, dv all-to-alls, K/V again and dK/dV), for Ulysses, ring and 2D at several degrees and sequence
lengths; prints measured / theoretical (target 1.00).

Theory per rank, in elements (S = global tokens, P = U x R, H / Hkv heads, D head dim,
Hkv' = max(Hkv, U) after KV replication, B_kv = (U * S/P) * (Hkv'/U) * D one K or V block):
    forward   all-to-alls  (S/P) * D * (U-1)/U * (2H + 2Hkv');   ring  (R-1) * 2 * B_kv
    backward  all-to-alls  the same as forward;                  ring  (R-1) * 2 * B_kv + R * 2 * B_kv (dK/dV)

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


def theory_bytes(seq_len: int, ulysses: int, ring: int, backward: bool = False, itemsize: int = 4) -> int:
    p = ulysses * ring
    hkv = max(KV_HEADS, ulysses)
    a2a = seq_len // p * HEAD_DIM * (ulysses - 1) / ulysses * (2 * HEADS + 2 * hkv)
    block = (ulysses * seq_len // p) * (hkv // ulysses) * HEAD_DIM
    ring_elems = (ring - 1) * 2 * block + (ring * 2 * block if backward and ring > 1 else 0)
    return int(round((a2a + ring_elems) * itemsize))


def _measure(rank, world, ulysses, ring, seq_len):
    from longvila.parallel import ParallelDims, shard_sequence, sp_attention

    dims = ParallelDims(ulysses=ulysses, ring=ring, world_size=world).build()
    torch.manual_seed(0)
    q = torch.randn(1, seq_len, HEADS, HEAD_DIM)
    k, v = torch.randn(1, seq_len, KV_HEADS, HEAD_DIM), torch.randn(1, seq_len, KV_HEADS, HEAD_DIM)
    stats = Counter()
    local = [shard_sequence(t, dims).requires_grad_() for t in (q, k, v)]
    out = sp_attention(*local, dims, stats=stats)
    forward = dict(stats)
    out.backward(torch.randn_like(out))
    return forward, {key: stats[key] - forward.get(key, 0) for key in stats}


def main() -> None:
    print(f"heads {HEADS}, kv heads {KV_HEADS}, head dim {HEAD_DIM}, fp32; bytes sent by one rank, one layer")
    print(f"{'U':>2} {'R':>2} {'S':>6} {'pass':>8} {'a2a calls':>9} {'p2p calls':>9} {'measured B':>11} "
          f"{'theory B':>11} {'ratio':>6}")
    worst = 0.0
    for ulysses, ring in CASES:
        for seq_len in SEQ_LENS:
            passes = run_distributed(_measure, ulysses * ring, ulysses, ring, seq_len)[0]
            for name, stats in zip(("forward", "backward"), passes):
                measured = stats.get("all_to_all.bytes", 0) + stats.get("p2p.bytes", 0)
                theory = theory_bytes(seq_len, ulysses, ring, backward=name == "backward")
                ratio = measured / theory
                worst = max(worst, abs(ratio - 1))
                print(f"{ulysses:>2} {ring:>2} {seq_len:>6} {name:>8} {stats.get('all_to_all.calls', 0):>9} "
                      f"{stats.get('p2p.calls', 0):>9} {measured:>11,} {theory:>11,} {ratio:>6.3f}", flush=True)
    print(f"largest deviation from theory: {worst:.3%} (target 0)")


if __name__ == "__main__":
    main()
