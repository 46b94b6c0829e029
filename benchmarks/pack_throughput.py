"""Pack-stage throughput and memory benchmark: is `pack_files` tokenizer-bound, and is its memory bounded?

What it measures, in one run, on the same input and the same cores, for two sizes of the offline corpus
(`--tokens`, and `--scale` copies of the same files, so that only the number of documents changes):
  (a) raw tokenizer throughput: every document text of the corpus is read into memory first (not timed),
      then only `tokenizer.encode_batch(texts[i:i + B])` is timed, B = PackConfig().encode_batch.
      tokens/s = sum of the lengths of the id arrays per second.
  (b) the full pack stage: `pack_files(...)` with `PackConfig(upsample="none")` into a fresh empty folder
      (read .jsonl.zst -> tokenize -> shuffle -> pack -> write Parquet).
      tokens/s = accepted document tokens (sum of summary["sources"][*]["tokens"]) per second.
  (c) peak RSS of the full pack stage, each corpus size packed once in a fresh child process (this script
      with the hidden `--child` mode), which reports its own VmHWM (peak RSS of its address space since
      exec). Not ru_maxrss via wait4/RUSAGE_CHILDREN: on Linux exec carries the forking parent's RSS into
      the child's ru_maxrss, and the parent here holds the whole corpus text, so that number would grow with
      the corpus whatever pack_files does.
(a) and (b) are interleaved `--repeats` times after a warm-up (imports, tokenizer load, a small encode and
a one-file pack). The shared 2-core VMs this runs on drift by +-15% from run to run, so the verdict uses the
median of the paired ratios (raw_i / pack_i of adjacent runs); best/best and CPU-time ratios are printed too.

Targets: pack tok/s / raw tok/s >= 0.9 (packing costs little beyond tokenizing), and a peak RSS that does not
grow with the corpus size (peak ratio ~1.0).

Run:  python benchmarks/pack_throughput.py [--tokens 1500000] [--scale 4] [--seq-len 2048] [--workers 0]
                                            [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from longvila.config import CorpusConfig, PackConfig, TokenizerConfig
from longvila.data.corpus import build_corpus
from longvila.data.shards import pack_files
from longvila.data.slimpajama import InputFile, SkipLog, read_documents
from longvila.data.tokenizer import TextTokenizer, load_tokenizer
from longvila.utils.env import apply_env

TARGET_RATIO = 0.9


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=1_500_000, help="base corpus size in tokens")
    p.add_argument("--scale", type=int, default=4, help="the second corpus is this many copies of the first")
    p.add_argument("--seq-len", type=int, default=2048, help="tokens per packed row")
    p.add_argument("--workers", type=int, default=0, help="tokenizer threads (0 = all cores)")
    p.add_argument("--repeats", type=int, default=3, help="timed, interleaved repeats of (a) and (b)")
    p.add_argument("--row-group-mb", type=int, default=4,
                   help="Parquet row-group size; small, so both corpora span several groups and the memory "
                        "bound (shuffle buffer + queues + one row group) is what is measured")
    p.add_argument("--child", metavar="CORPUS_DIR", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def make_corpus(num_tokens: int, out_dir: Path, copies: int = 1) -> tuple[list[tuple[Path, str]], float]:
    """Build the offline corpus, `copies` times over (chunk folders chunk{k}_{copy}); return its training
    inputs [(path, name)] and their compressed size in MB.

    The larger corpus repeats the smaller one's files, so both have the same document-length distribution
    and the same largest document: peak memory then shows how it scales with the number of documents, not
    with the longest document drawn (one document is always tokenized whole).
    """
    build_corpus(CorpusConfig(num_tokens=num_tokens, length_scale=0.25, num_chunks=2, files_per_chunk=3),
                 out_dir, seed=0)
    for path in sorted(out_dir.glob("train/chunk*/*.jsonl.zst")):
        for copy in range(1, copies):
            twin = out_dir / "train" / f"{path.parent.name}_{copy}" / path.name
            twin.parent.mkdir(exist_ok=True)
            shutil.copyfile(path, twin)
    inputs = corpus_inputs(out_dir)
    return inputs, sum(path.stat().st_size for path, _ in inputs) / 1e6


def corpus_inputs(corpus_dir: Path) -> list[tuple[Path, str]]:
    paths = sorted(Path(corpus_dir).glob("train/chunk*/*.jsonl.zst"))
    return [(p, str(p.relative_to(Path(corpus_dir) / "train"))) for p in paths]


def read_texts(inputs: list[tuple[Path, str]]) -> list[str]:
    return [doc.text for path, name in inputs for doc in read_documents(path, name, SkipLog(), InputFile(name))]


def time_raw(tok: TextTokenizer, texts: list[str], batch: int) -> tuple[int, float]:
    """(a) Tokens and seconds of batch-encoding `texts` (already in memory)."""
    t0, c0, tokens = time.perf_counter(), time.process_time(), 0
    for i in range(0, len(texts), batch):
        tokens += sum(len(ids) for ids in tok.encode_batch(texts[i:i + batch]))
    return tokens, time.perf_counter() - t0, time.process_time() - c0


def time_pack(tok: TextTokenizer, inputs: list[tuple[Path, str]], seq_len: int,
              row_group_mb: int) -> tuple[int, float, float]:
    """(b) Accepted document tokens, wall and CPU seconds of one full `pack_files` run into a fresh folder."""
    with tempfile.TemporaryDirectory(prefix="pack-out-") as out:
        t0, c0 = time.perf_counter(), time.process_time()
        summary = pack_files(inputs, tok, seq_len=seq_len, cfg=PackConfig(upsample="none", row_group_mb=row_group_mb),
                             out_dir=Path(out),
                             progress=False)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return sum(v["tokens"] for v in summary["sources"].values()), seconds, cpu


def warm_up(tok: TextTokenizer, inputs: list[tuple[Path, str]], seq_len: int) -> None:
    tok.encode_batch(read_texts(inputs[:1])[:64])
    time_pack(tok, inputs[:1], seq_len, 4)


def peak_rss_mib() -> float:
    """This process's peak RSS since exec (Linux VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (this benchmark needs Linux)")


def child_main(args: argparse.Namespace) -> None:
    """Hidden `--child` mode: pack a corpus once in this fresh process; print JSON with its peak RSS."""
    tok = load_tokenizer(TokenizerConfig())
    inputs = corpus_inputs(Path(args.child))
    tok.encode_batch(["warm up the tokenizer thread pool"] * 8)
    base = peak_rss_mib()  # imports + tokenizer, before any packing
    tokens, seconds, _ = time_pack(tok, inputs, args.seq_len, args.row_group_mb)
    print(json.dumps({"tokens": tokens, "seconds": seconds, "base_rss_mib": base, "peak_rss_mib": peak_rss_mib()}))


def measure_child(corpus_dir: Path, args: argparse.Namespace) -> dict:
    """(c) Pack `corpus_dir` in a fresh subprocess; return its report (tokens, seconds, base/peak RSS)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", str(corpus_dir),
           "--seq-len", str(args.seq_len), "--workers", str(args.workers), "--row-group-mb", str(args.row_group_mb)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child pack of {corpus_dir} failed with exit code {proc.returncode}")
    return json.loads(proc.stdout)


def bench_size(tok: TextTokenizer, corpus_dir: Path, copies: int, args: argparse.Namespace) -> dict:
    """Build the corpus `copies` times over; run (a) and (b) interleaved on it, then (c) in a child process."""
    inputs, mb = make_corpus(args.tokens, corpus_dir, copies)
    texts = read_texts(inputs)
    raw, pack = [], []
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit both alike
        raw.append(time_raw(tok, texts, PackConfig().encode_batch))
        pack.append(time_pack(tok, inputs, args.seq_len, args.row_group_mb))
    del texts
    raw_tokens, pack_tokens = raw[0][0], pack[0][0]
    if raw_tokens != pack_tokens:
        print(f"note: raw encode saw {raw_tokens:,} tokens, pack accepted {pack_tokens:,}", file=sys.stderr)
    paired = sorted(r[1] / p[1] for r, p in zip(raw, pack))
    row = {"tokens": pack_tokens, "mb": mb,
           "raw_tps": raw_tokens / min(r[1] for r in raw), "pack_tps": pack_tokens / min(p[1] for p in pack),
           "raw_s": [round(r[1], 2) for r in raw], "pack_s": [round(p[1], 2) for p in pack],
           "ratio": statistics.median(paired), "paired": [round(x, 3) for x in paired],
           "cpu_ratio": min(r[2] for r in raw) / min(p[2] for p in pack)}
    row["best_ratio"] = row["pack_tps"] / row["raw_tps"]
    row.update(measure_child(corpus_dir, args))
    return row


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    apply_env(tokenizer_threads=args.workers)  # before the tokenizer's thread pool starts
    if args.child:
        child_main(args)
        return
    t_start = time.perf_counter()
    print(f"pack throughput: seq_len={args.seq_len} encode_batch={PackConfig().encode_batch} "
          f"workers={args.workers or 'all'} ({os.cpu_count()} cpus) repeats={args.repeats} "
          f"row_group_mb={args.row_group_mb}", flush=True)
    tok = load_tokenizer(TokenizerConfig())
    rows = []
    with tempfile.TemporaryDirectory(prefix="pack-bench-") as tmp:
        warm_up(tok, make_corpus(20_000, Path(tmp) / "warmup")[0], args.seq_len)
        for scale in (1, args.scale):
            rows.append(bench_size(tok, Path(tmp) / f"corpus-{scale}x", scale, args))
            r = rows[-1]
            print(f"  {scale}x: raw times {r['raw_s']} s, pack times {r['pack_s']} s, paired b/a {r['paired']}, "
                  f"child pack {r['seconds']:.2f} s", flush=True)

    print(f"\n{'size':>4} {'tokens':>11} {'MB zst':>7} {'raw tok/s':>11} {'pack tok/s':>11} {'b/a med':>7} "
          f"{'b/a best':>8} {'b/a CPU':>7} {'base RSS MiB':>12} {'peak RSS MiB':>12}")
    for scale, r in zip((1, args.scale), rows):
        print(f"{scale:>3}x {r['tokens']:>11,} {r['mb']:>7.2f} {r['raw_tps']:>11,.0f} {r['pack_tps']:>11,.0f} "
              f"{r['ratio']:>7.3f} {r['best_ratio']:>8.3f} {r['cpu_ratio']:>7.3f} {r['base_rss_mib']:>12.1f} "
              f"{r['peak_rss_mib']:>12.1f}")
    ratio = min(r["ratio"] for r in rows)
    peak_ratio = rows[1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    print(f"\npack/raw throughput ratio (b/a, median of paired runs): {ratio:.3f} (worst of both sizes; "
          f"target >= {TARGET_RATIO}) "
          f"-> {'OK' if ratio >= TARGET_RATIO else 'BELOW TARGET'}")
    print(f"peak RSS {args.scale}x / 1x: {rows[1]['peak_rss_mib']:.1f} / {rows[0]['peak_rss_mib']:.1f} MiB "
          f"= {peak_ratio:.3f} (target ~1.0: memory must not grow with corpus size)")
    print(f"total wall time: {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
