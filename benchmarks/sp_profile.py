"""Time and memory of `sp_attention` forward + backward on 4 gloo ranks (CPU, fp32, causal), per U x R split.

For U x R in {4x1, 1x4, 2x2}, S in {4096, 16384} global tokens, 8 query heads of dim 64 and 8 (MHA) or 2 (GQA)
KV heads, the `torch_cpu` kernel and each side's DEFAULT layout (or --layout), every rank reports:
  time     median wall time of one forward + backward (the slowest rank of each repetition, after a warm-up);
  cpu      median CPU time of one forward + backward, summed over the ranks (less sensitive to other jobs on
           the machine than wall time: 4 ranks share its cores);
  peak     rise of resident memory over one forward + backward (sampled every ~0.5 ms, after the warm-up);
           the processes run with MALLOC_MMAP_THRESHOLD_=65536 (large buffers are mapped and unmapped, so
           resident memory follows live memory instead of the allocator's high-water mark);
  saved    bytes autograd keeps for the backward (saved_tensors_hooks, each storage counted once).
The table shows the largest peak / saved over the ranks.

    python benchmarks/sp_profile.py                        # this tree
    python benchmarks/sp_profile.py --compare main         # REF (git archive of a revision) vs this tree,
                                                           # interleaved case by case, in the same run
    python benchmarks/sp_profile.py --trace 4x1 --seq-len 16384   # torch.profiler table of rank 0
Each (implementation, case) runs in a fresh process tree, so one side's allocations never shape the other's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rss import PeakRss  # benchmarks/ is the script's folder

HERE = Path(__file__).resolve().parent.parent
SPLITS = [(4, 1), (1, 4), (2, 2)]
SEQ_LENS = (4096, 16384)
KV_HEADS = (8, 2)
HEADS, HEAD_DIM = 8, 64


def _case(rank, world, ulysses, ring, seq_len, kv_heads, layout, reps, trace):
    import torch
    import torch.distributed as dist

    from longvila.parallel import ParallelDims, sp_attention

    torch.set_num_threads(1)
    kwargs = {} if layout is None else {"layout": layout}
    dims = ParallelDims(ulysses=ulysses, ring=ring, world_size=world, **kwargs).build()
    s_loc = seq_len // world
    gen = torch.Generator().manual_seed(rank)
    q, k, v = (torch.randn(1, s_loc, h, HEAD_DIM, generator=gen).requires_grad_()
               for h in (HEADS, kv_heads, kv_heads))
    dout = torch.randn(1, s_loc, HEADS, HEAD_DIM, generator=gen)

    def step():
        sp_attention(q, k, v, dims, causal=True, backend="torch_cpu").backward(dout)

    step()                                            # warm-up: block plans, thread pools, gradient buffers
    times, cpu = [], []
    for _ in range(reps):
        dist.barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        cpu.append(time.process_time() - c0)
        dist.barrier()
        times.append(time.perf_counter() - t0)
    saved: dict[int, int] = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    dist.barrier()
    with PeakRss(0.0005) as rss:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = sp_attention(q, k, v, dims, causal=True, backend="torch_cpu")
        out.backward(dout)
        del out
    result = {"times": times, "cpu": cpu, "peak": rss.peak, "saved": sum(saved.values()), "layout": dims.layout}
    if trace and rank == 0:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
        result["trace"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    elif trace:
        step()
    return result


def run_one(ulysses, ring, seq_len, kv_heads, layout, reps, trace=False) -> dict:
    """One case on 4 ranks of this process's `longvila` -> the table's numbers."""
    from tests.helpers.spawn import run_distributed

    per_rank = run_distributed(_case, ulysses * ring, ulysses, ring, seq_len, kv_heads, layout, reps, trace,
                               timeout=1800)
    slowest = [max(r["times"][i] for r in per_rank) for i in range(reps)]
    cpu = [sum(r["cpu"][i] for r in per_rank) for i in range(reps)]
    return {"time": statistics.median(slowest), "cpu": statistics.median(cpu), "peak": max(r["peak"] for r in per_rank),
            "saved": max(r["saved"] for r in per_rank), "layout": per_rank[0]["layout"],
            "trace": per_rank[0].get("trace")}


def _subprocess(root: Path, case: tuple, layout, reps) -> dict:
    """`run_one` in a fresh interpreter whose `longvila` (and test harness) come from `root`."""
    env = {**os.environ, "PYTHONPATH": str(root), "MALLOC_MMAP_THRESHOLD_": "65536"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps([*case, layout, reps]),
           "--root", str(root)]
    done = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{root}: case {case} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _export(ref: str) -> Path:
    """The files of revision `ref` of this repository in a temporary folder (git archive: no worktree made)."""
    target = Path(tempfile.mkdtemp(prefix="sp_profile_ref_"))
    archive = subprocess.run(["git", "-C", str(HERE), "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def _load() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def _cases(args) -> list[tuple]:
    splits = [tuple(int(x) for x in s.split("x")) for s in args.splits.split(",")]
    return [(u, r, s, h) for s in args.seq_lens for u, r in splits for h in args.kv_heads]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--compare", metavar="REF", help="also run git revision REF, interleaved with this tree")
    p.add_argument("--splits", default="4x1,1x4,2x2", help="comma-separated UxR (default: 4x1,1x4,2x2)")
    p.add_argument("--seq-lens", type=int, nargs="+", default=list(SEQ_LENS), metavar="S")
    p.add_argument("--kv-heads", type=int, nargs="+", default=list(KV_HEADS), metavar="H")
    p.add_argument("--layout", choices=("zigzag", "contiguous"), help="force a layout (default: each side's default)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per case and process (median reported)")
    p.add_argument("--rounds", type=int, default=1, help="fresh processes per case and side, interleaved")
    p.add_argument("--trace", metavar="UxR", help="print torch.profiler's table for one split (rank 0) and stop")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    args = p.parse_args()
    sys.path.insert(0, args.root or str(HERE))
    if args.one:                                         # child: one case, one JSON line
        u, r, s, h, layout, reps = json.loads(args.one)
        print(json.dumps(run_one(u, r, s, h, layout, reps)))
        return
    if args.trace:
        u, r = (int(x) for x in args.trace.split("x"))
        for s in args.seq_lens:
            for h in args.kv_heads:
                res = run_one(u, r, s, h, args.layout, 1, trace=True)
                print(f"U x R = {u}x{r}, S = {s}, KV heads {h}, layout {res['layout']}\n{res['trace']}")
        return
    sides = [("ours", HERE)]
    if args.compare:
        sides.insert(0, (args.compare, _export(args.compare)))
    print(f"sp_attention fwd+bwd, 4 gloo ranks, 1 thread each, fp32, causal, {HEADS} heads x {HEAD_DIM}, torch_cpu; "
          f"median of {args.reps} x {args.rounds} round(s); load at start {_load()}")
    print(f"{'UxR':>4} {'S':>6} {'KV':>3} {'side':>10} {'layout':>10} {'time s':>7} {'cpu s':>7} {'peak MiB':>8} "
          f"{'saved MiB':>9} | {'time':>5} {'cpu':>5} {'peak':>5} (ref / ours)  load 1/5/15 min")
    for u, r, s, h in _cases(args):
        runs = {name: [] for name, _ in sides}
        for _ in range(args.rounds):                     # interleaved: ref, ours, ref, ours, ...
            for name, root in sides:
                runs[name].append(_subprocess(root, (u, r, s, h), args.layout, args.reps))
        rows = [{key: statistics.median(x[key] for x in runs[name]) if key != "layout" else runs[name][0][key]
                 for key in ("time", "cpu", "peak", "saved", "layout")} for name, _ in sides]
        for (name, _), res in zip(sides, rows):
            ratio = ""
            if len(rows) == 2 and res is rows[1]:
                ratio = " ".join(f"{rows[0][key] / max(res[key], 1e-9):>4.2f}x" for key in ("time", "cpu", "peak"))
            print(f"{u}x{r:<2} {s:>6} {h:>3} {name[:10]:>10} {res['layout']:>10} {res['time']:>7.3f} {res['cpu']:>7.3f} "
                  f"{res['peak'] / 2**20:>8.1f} {res['saved'] / 2**20:>9.1f} | {ratio:>17}  {_load()}", flush=True)

if __name__ == "__main__":
    main()
