"""Ours vs DeepSpeed-Ulysses and yunchang (USP): sequence-parallel attention measured side by side.

4 gloo processes (tests/helpers/spawn.py), fp32, causal, 8 query heads of dim 64 (MHA: 8 KV heads, GQA: 2),
U x R in {4x1, 1x4, 2x2}, S in {4096, 16384}. Every implementation runs its blocks on the same kernel,
`aten._scaled_dot_product_flash_attention_for_cpu` (benchmarks/peers_impls.py), gets its inputs in the layout it
expects, and must match one process's fp64 attention (output and q/k/v gradients, gathered back to the global
order; max |error| / max |reference| < 1e-4) before it is timed. One launch per case; in it, per implementation:
  1. the correctness run (its first call), which also counts the bytes this rank sends (torch.distributed's
     collectives and p2p wrapped in the benchmark processes: peers_impls.ByteCounter);
  2. two untimed runs (the first also warms up) that sample the resident-memory growth over one forward +
     backward (as sp_memory.py does; after malloc_trim, without which memory freed by the implementation before
     is reused unseen: peers measured 0 MiB); the smaller growth of the two is reported;
  3. `--reps` timed forward + backward runs, interleaved with the other implementations (barrier before each;
     a run's time is the slowest rank's); the median is reported.
Peaks, bytes and times are the maximum over the 4 ranks. ratio = its time / ours with the default layout of the
split (marked *; contiguous at ring 1, zigzag otherwise): > 1 means ours is faster. The last table is the
acceptance view: ours (default) against the fastest and the leanest peer of each case. Each case also shows the 1-min load average at its start and the CPU cores other processes used during
it (/proc/stat minus this benchmark's CPU time): 4 ranks share the 2 cores of the CI machine, so foreign load
slows every implementation, and the interleaving keeps the ratios comparable. DeepSpeed's DistributedAttention and yunchang's UlyssesAttention are pure Ulysses: in the 4x1 rows only.

    pip install -e .[peers]        # yunchang==0.6.4, deepspeed==0.19.8
    python benchmarks/peers.py [--quick] [--cases '2x2/*/GQA,1x4/4096/*'] [--reps 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import ctypes
import fnmatch
import gc
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
import peers_impls as P  # noqa: E402
from rss import PeakRss  # noqa: E402
from tests.helpers.spawn import run_distributed  # noqa: E402

WORLD = 4
SPLITS = [(4, 1), (1, 4), (2, 2)]
SEQ_LENS = (4096, 16384)
MEMORY_RUNS = 2                        # the smallest growth of these untimed runs (the first one warms up)
TOLERANCE = 1e-4                       # max |error| / max |reference|, output and each gradient
_libc = ctypes.CDLL("libc.so.6")


def case_label(ulysses: int, ring: int, seq_len: int, attn: str) -> str:
    return f"{ulysses}x{ring}/{seq_len}/{attn}"


def _to_global(t: torch.Tensor, idx: torch.Tensor, seq_len: int, world: int) -> torch.Tensor:
    """The whole sequence from every rank's rows (uncounted: the counter is inactive here)."""
    import torch.distributed as dist
    parts, idxs = [torch.empty_like(t) for _ in range(world)], [torch.empty_like(idx) for _ in range(world)]
    dist.all_gather(parts, t.contiguous())
    dist.all_gather(idxs, idx)
    full = t.new_empty((t.shape[0], seq_len, *t.shape[2:]))
    full[:, torch.cat(idxs)] = torch.cat(parts, dim=1)
    return full


def _max_over_ranks(values: list[float]) -> list[float]:
    import torch.distributed as dist
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def _case(rank, world, ulysses, ring, seq_len, attn, reps, ref_path, unpatched, problems):
    import torch.distributed as dist

    torch.set_num_threads(1)
    cpu_start = time.process_time()
    counter = P.ByteCounter().install()
    q, k, v, dout = P.make_inputs(seq_len, P.KV_HEADS[attn])
    ref = torch.load(ref_path) if rank == 0 else None
    rows, live = [], []
    for name, impl, why in P.build_impls(rank, world, ulysses, ring, seq_len, unpatched, problems):
        row = {"name": name, "status": "skipped", "msg": why}
        rows.append(row)
        if impl is None:
            continue
        leaves = [t[:, impl.indices].contiguous().requires_grad_() for t in (q, k, v)]
        grad_out = dout[:, impl.indices].contiguous()
        counter.bytes, failure = 0, None
        try:                                                  # 1. correctness (and bytes sent)
            impl.setup()
            counter.active = True
            out = impl.fn(*leaves)
            out.backward(grad_out)
        except Exception as e:                                # noqa: BLE001  (reported in the table)
            kind = "refuses" if isinstance(e, (AssertionError, ValueError)) else "fails"
            msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160]}"
            if "Pair is not connected" in msg and ring == 1:
                msg = "ring degree 1: its RingComm sends to its own rank, which gloo cannot ('Pair is not connected')"
            failure = (kind, msg)
        finally:
            counter.active = False
        if _max_over_ranks([failure is not None])[0]:
            row.update(status=failure[0] if failure else "fails", msg=failure[1] if failure else "on another rank")
            continue
        errs = {}
        for key, t in (("out", out.detach()), ("dq", leaves[0].grad), ("dk", leaves[1].grad), ("dv", leaves[2].grad)):
            full = _to_global(t, impl.indices, seq_len, world)
            if rank == 0:
                errs[key] = ((full.double() - ref[key]).abs().max().item(), ref[key].abs().max().item())
        verdict = torch.zeros(3, dtype=torch.float64)
        if rank == 0:
            verdict[0] = errs["out"][0]
            verdict[1] = max(errs[g][0] for g in ("dq", "dk", "dv"))
            verdict[2] = max(e / s for e, s in errs.values())
        dist.broadcast(verdict, src=0)
        ok = verdict[2].item() < TOLERANCE
        row.update(status="ok" if ok else "WRONG", err_out=verdict[0].item(), err_grad=verdict[1].item(),
                   rel_err=verdict[2].item(), sent_bytes=_max_over_ranks([counter.bytes])[0],
                   calls=dict(counter.calls), msg="" if ok else f"relative error {verdict[2].item():.2e} >= {TOLERANCE}")
        counter.calls.clear()
        if ok and not impl.check_only:
            live.append((row, impl, leaves, grad_out))
        del out
    for _ in range(MEMORY_RUNS):                              # 2. warm-up, resident-memory growth
        for row, impl, leaves, grad_out in live:
            for t in leaves:
                t.grad = None
            impl.setup()
            gc.collect()
            _libc.malloc_trim(0)
            dist.barrier()
            with PeakRss() as rss:
                impl.fn(*leaves).backward(grad_out)
            peak = _max_over_ranks([rss.peak])[0]
            row["peak_bytes"] = min(row.get("peak_bytes", peak), peak)
    times = [[] for _ in live]
    for _ in range(reps):                                     # 3. timed, interleaved
        for i, (row, impl, leaves, grad_out) in enumerate(live):
            for t in leaves:
                t.grad = None
            impl.setup()
            dist.barrier()
            start = time.perf_counter()
            impl.fn(*leaves).backward(grad_out)
            times[i].append(time.perf_counter() - start)
    for (row, *_), local in zip(live, times):
        row["times_ms"] = [1000 * t for t in _max_over_ranks(local)]
        row["median_ms"] = statistics.median(row["times_ms"])
    cpu = time.process_time() - cpu_start
    return {"rows": rows, "edits": P.FP32_FIX_EDITS, "cpu_s": cpu} if rank == 0 else {"cpu_s": cpu}


def _profile_case(rank, world, ulysses, ring, seq_len, attn, problems):
    """torch.profiler's table per implementation on rank 0: three fwd + bwd after two warm-up runs, twice
    round (the second round is kept). yunchang's USP is left out at ring 1 (it cannot run there)."""
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(1)
    q, k, v, dout = P.make_inputs(seq_len, P.KV_HEADS[attn])
    impls = [(n, i) for n, i, _ in P.build_impls(rank, world, ulysses, ring, seq_len, False, problems)
             if i is not None and not i.check_only and not (ring == 1 and "USP" in n)]
    tables = {}
    for keep in (False, True):
        for name, impl in impls:
            leaves = [t[:, impl.indices].contiguous().requires_grad_() for t in (q, k, v)]
            grad_out = dout[:, impl.indices].contiguous()
            for _ in range(2):
                impl.setup()
                impl.fn(*leaves).backward(grad_out)
            torch.distributed.barrier()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(3):
                    impl.setup()
                    impl.fn(*leaves).backward(grad_out)
            if keep and rank == 0:
                tables[name] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14)
    return tables


def _cell(value, fmt: str, width: int) -> str:
    return f"{'-' if value is None else format(value, fmt):>{width}}"


def _busy_cpu_s() -> float:
    """CPU seconds all processes have used (/proc/stat: user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields[i] for i in (0, 1, 2, 5, 6, 7)) / os.sysconf("SC_CLK_TCK")


def default_name(ring: int) -> str:
    """Our row with the layout a user gets by default (`ParallelDims(layout=None)`: contiguous when ring = 1)."""
    from longvila.parallel import ParallelDims

    return f"ours ({ParallelDims(ulysses=WORLD // ring, ring=ring).layout})"


def summary(result: dict) -> dict:
    """One acceptance line of a case: ours (default layout) against the fastest and the leanest peer that ran."""
    rows = {r["name"]: r for r in result["rows"] if r.get("median_ms") is not None and "as shipped" not in r["name"]}
    ring = int(result["case"].split("/")[0].split("x")[1])
    ours = rows.get(result.get("default") or default_name(ring))
    peers = [r for name, r in rows.items() if not name.startswith("ours")]
    if ours is None or not peers:
        return {"case": result["case"], "ours": ours and ours["name"], "peer": None}
    fast = min(peers, key=lambda r: r["median_ms"])
    lean = min(peers, key=lambda r: r["peak_bytes"])
    best = min((r for name, r in rows.items() if name.startswith("ours")), key=lambda r: r["median_ms"])
    return {"case": result["case"], "ours": ours["name"], "ours_ms": ours["median_ms"], "fast": fast["name"],
            "fast_ms": fast["median_ms"], "speed": fast["median_ms"] / ours["median_ms"],
            "best": best["name"][6:-1], "best_speed": fast["median_ms"] / best["median_ms"],
            "ours_mib": ours["peak_bytes"] / 2**20, "lean": lean["name"], "lean_mib": lean["peak_bytes"] / 2**20,
            "memory": ours["peak_bytes"] / lean["peak_bytes"]}


def print_summary(results: list[dict]) -> None:
    print("acceptance: ours (default layout) vs the fastest and the leanest peer of each case; speed = peer ms / "
          "ours ms (>= 1: ours as fast or faster), memory = ours / peer peak (<= 1: ours as lean or leaner); "
          "best = our faster layout and its speed ratio")
    print(f"{'case':<15} {'ours':<18} {'ms':>8}  {'fastest peer':<20} {'ms':>8} {'speed':>6}  {'MiB':>7}  "
          f"{'leanest peer':<20} {'MiB':>7} {'memory':>6}  {'best':>17}")
    for res in results:
        s = summary(res)
        if s.get("peer", True) is None:
            print(f"{s['case']:<15} {s['ours'] or '-':<18} no peer runs this case")
            continue
        print(f"{s['case']:<15} {s['ours']:<18} {s['ours_ms']:>8.1f}  {s['fast']:<20} {s['fast_ms']:>8.1f} "
              f"{s['speed']:>6.2f}  {s['ours_mib']:>7.1f}  {s['lean']:<20} {s['lean_mib']:>7.1f} {s['memory']:>6.2f}  "
              f"{s['best']:>10} {s['best_speed']:>6.2f}")


def print_case(label: str, load: float, other: float, rows: list[dict], base_name: str) -> None:
    base = next((r.get("median_ms") for r in rows if r["name"] == base_name), None)
    for i, r in enumerate(r for r in rows if "as shipped" not in r["name"]):
        ms = r.get("median_ms")
        head = f"{label:<15} {load:>5.1f} {other:>5.2f}" if i == 0 else " " * 27
        time_cell = _cell(ms, ".1f", 10) if ms is not None else f"{r['status']:>10}"
        ratio = ms / base if ms is not None and base else None
        peak, sent = r.get("peak_bytes"), r.get("sent_bytes")
        name = r["name"] + (" *" if r["name"] == base_name else "")
        print(f"{head}  {name:<22} {time_cell} {_cell(ratio, '.2f', 6)} "
              f"{_cell(peak and peak / 2**20, '.1f', 9)} {_cell(sent and sent / 2**20, '.2f', 9)} "
              f"{_cell(r.get('err_out'), '.1e', 8)} {_cell(r.get('err_grad'), '.1e', 8)}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="S = 4096 only, 3 repetitions")
    p.add_argument("--cases", default="*", help="comma-separated patterns over U x R/S/attn, e.g. '2x2/*/GQA'")
    p.add_argument("--seq-lens", type=int, nargs="+", help=f"instead of {SEQ_LENS} (multiples of 32)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per implementation (default 5)")
    p.add_argument("--json", type=Path, help="write the raw results (every time, byte and error) here")
    p.add_argument("--skip-missing", action="store_true", help="run without the peers that are not installed")
    p.add_argument("--summary", type=Path, metavar="JSON", help="print the acceptance table of a saved --json run "
                   "and exit (measures nothing)")
    p.add_argument("--profile", metavar="CASE", help="print torch.profiler's table of every implementation for one "
                   "case (rank 0), e.g. 4x1/4096/MHA, and exit")
    args = p.parse_args()
    if args.profile:
        u, r, s, a = re.fullmatch(r"(\d+)x(\d+)/(\d+)/(MHA|GQA)", args.profile).groups()
        tables = run_distributed(_profile_case, WORLD, int(u), int(r), int(s), a, P.peer_problems(), timeout=3600)[0]
        for name, table in tables.items():
            print(f"===== {name}, {args.profile}, rank 0, 3 x fwd+bwd\n{table}")
        return
    if args.summary:
        print_summary(json.loads(args.summary.read_text())["results"])
        return
    problems = P.peer_problems()
    if problems and not args.skip_missing:
        sys.exit(f"benchmarks/peers.py: {'; '.join(problems.values())}. Install the pinned peers with\n"
                 f"    pip install -e .[peers]\nor pass --skip-missing to run without them.")
    for name in problems:
        print(f"skipping {name}: {problems[name]} (pip install -e .[peers])")
    for name, version in P.peer_versions().items():
        if version != P.PEERS[name]:
            print(f"warning: {name} {version} installed, the pinned version is {P.PEERS[name]}")
    reps = args.reps or (3 if args.quick else 5)
    patterns = [s.strip().lower() for s in args.cases.split(",")]
    cases = [(u, r, s, a) for s in (args.seq_lens or SEQ_LENS[:1 if args.quick else 2]) for a in P.KV_HEADS for u, r in SPLITS
             if any(fnmatch.fnmatch(case_label(u, r, s, a).lower(), pat) for pat in patterns)]
    if not cases:
        sys.exit(f"no case matches --cases {args.cases!r}; labels look like {case_label(2, 2, 4096, 'GQA')}")
    started = time.time()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min) on {os.cpu_count()} CPUs; "
          f"torch {torch.__version__}, threads: {torch.get_num_threads()} here (fp64 reference), 1 per rank")
    print(f"{WORLD} gloo ranks, fp32, causal, {P.HEADS} query heads x dim {P.HEAD_DIM}; KV heads MHA "
          f"{P.KV_HEADS['MHA']}, GQA {P.KV_HEADS['GQA']}; {reps} timed reps (median); peers: "
          f"{', '.join(f'{n} {v}' for n, v in P.peer_versions().items()) or 'none'}")
    print("kernel for all: aten._scaled_dot_product_flash_attention_for_cpu (ours: backend='torch_cpu'; DeepSpeed: "
          "its local attention; yunchang: stand-in yunchang_standin_fwd/_bwd/_attn for AttnType.TORCH_FLASH)")
    print("* = our default layout for the split; ratio = its time / ours (default), > 1: ours faster; peak = resident growth over one fwd+bwd; sent = bytes "
          "this rank sends (torch.distributed wrapped in the benchmark process); err = max |x - fp64 reference|")
    print("load = 1-min load average at the case's start (this benchmark's own 4 ranks count ~4); other = CPU cores "
          "that other processes used on average during the case (/proc/stat minus this benchmark's CPU time)")
    print(f"{'case U x R/S/attn':<15} {'load':>5} {'other':>5}  {'implementation':<22} {'ms':>10} {'ratio':>6} {'peak MiB':>9} "
          f"{'sent MiB':>9} {'err out':>8} {'err grad':>8}")
    results, notes, refs = [], {}, {}
    unpatched_done = False
    with tempfile.TemporaryDirectory(prefix="peers-ref-") as tmp:
        for u, r, s, a in cases:
            if (s, a) not in refs:
                refs[s, a] = os.path.join(tmp, f"ref-{s}-{a}.pt")
                torch.save(P.reference(s, P.KV_HEADS[a]), refs[s, a])
            unpatched = r > 1 and not unpatched_done and "yunchang" not in problems
            unpatched_done |= unpatched
            load, busy, wall, mine = os.getloadavg()[0], _busy_cpu_s(), time.perf_counter(), time.process_time()
            ranks = run_distributed(_case, WORLD, u, r, s, a, reps, refs[s, a], unpatched, problems, timeout=3600)
            wall, out = time.perf_counter() - wall, ranks[0]
            ours = sum(x["cpu_s"] for x in ranks) + time.process_time() - mine
            other = max(0.0, (_busy_cpu_s() - busy - ours) / wall)
            print_case(case_label(u, r, s, a), load, other, out["rows"], default_name(r))
            results.append({"case": case_label(u, r, s, a), "load1": load, "other_cores": other, "wall_s": wall,
                            "default": default_name(r), "rows": out["rows"]})
            for row in out["rows"]:
                if row["status"] != "ok" and row.get("msg") and "as shipped" not in row["name"]:
                    key = (row["name"], row["status"], re.sub(r"\d+", "#", row["msg"]))   # sizes differ per case
                    notes.setdefault(key, [row["msg"]]).append(results[-1]["case"])
                if "as shipped" in row["name"]:
                    notes.setdefault(f"{row['name']} (fp32 fix off, not timed): max |error| out "
                                     f"{row.get('err_out', float('nan')):.2e}, grad {row.get('err_grad', float('nan')):.2e}"
                                     f", relative {row.get('rel_err', float('nan')):.2e}", []).append(results[-1]["case"])
            if out["edits"]:
                notes.setdefault("yunchang fp32 fix applied in this benchmark only: " + "; ".join(out["edits"]), [])
            if args.json:                                     # after every case: a long run cut short keeps its rows
                args.json.write_text(json.dumps({"load_now": os.getloadavg(), "reps": reps, "results": results,
                                                 "peers": P.peer_versions(), "torch": torch.__version__}, indent=1))
    print_summary(results)
    print("notes:")
    for note, where in notes.items():
        if isinstance(note, tuple):                       # (implementation, status, _): [first message, cases...]
            note, where = f"{note[0]}: {note[1]} in {', '.join(where[1:])}: {where[0]}", []
        print(f"  {note}" + (f"  [{', '.join(where)}]" if where else ""))
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
