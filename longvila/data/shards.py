"""Pack SlimPajama files into fixed-length Parquet shards, and merge batches of shards into one data set.

`pack_files` streams a batch of JSON-lines files, zstd, gzip or plain (read -> sample -> batch-encode ->
shuffle -> pack -> write) into `part-*.parquet` + `remainder.arrow` in a folder and returns the batch summary
(the core of `manifest.json`). `merge_batches` joins batch folders in order: their parts are linked under new
sequential names, their remainders are packed together into further rows, and the summaries are added up.
Memory is bounded by the shuffle buffer, one encode batch and one row group, whatever the corpus size.

    summary = pack_files([(path, "chunk1/example_train_0.jsonl.zst")], tokenizer, seq_len=2048,
                         cfg=PackConfig(upsample="none"), out_dir=tmp)
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from longvila.config import PackConfig
from longvila.data.packing import Packer, Sampler, ShuffleBuffer, uniform_hash
from longvila.data.parquet import ShardWriter, read_remainder, write_remainder
from longvila.data.slimpajama import SkipLog
from longvila.data.tokenizer import TextTokenizer
from longvila.data.workers import PackerStage, ReaderStage

FILE_LEVEL_SKIPS = ("truncated_file", "corrupt_file")  # events, not lines


class _Stats:
    def __init__(self) -> None:
        self.sources: dict[str, Counter] = {}
        self.dropped: Counter = Counter()
        self.accepted = 0

    def accept(self, source: str, num_tokens: int) -> None:
        c = self.sources.setdefault(source, Counter())
        c["documents"] += 1
        c["tokens"] += num_tokens
        self.accepted += 1


def _progress(enabled: bool, desc: str) -> tqdm:
    interactive = sys.stderr.isatty()
    return tqdm(desc=desc, unit="doc", file=sys.stderr, disable=not enabled, mininterval=0.5 if interactive else 10,
                dynamic_ncols=interactive, ascii=not interactive)


def pack_files(inputs: list[tuple[Path, str]], tokenizer: TextTokenizer, *, seq_len: int, cfg: PackConfig,
               out_dir: Path, max_rows: int | None = None, budget_share: float = 1.0,
               progress: bool = True) -> dict:
    """Pack `inputs` [(path, name)] into rows of `seq_len` tokens under `out_dir`; return the summary.

    Args:
        inputs: the batch's files with their names relative to the corpus root (used in doc ids).
        tokenizer: from `load_tokenizer`.
        seq_len: tokens per row.
        cfg: sampling, shuffling, Parquet sizes, strictness.
        out_dir: an existing empty folder; receives `part-*.parquet` and `remainder.arrow`.
        max_rows: the data set's budget in rows (None = no budget); this batch gets `budget_share` of it.
    """
    sampler = Sampler(cfg, None if max_rows is None else max_rows * seq_len * budget_share)
    rng = np.random.default_rng([cfg.seed, int(uniform_hash(cfg.seed, "batch", "\n".join(n for _, n in inputs)) * 2**32)])
    packer = Packer(seq_len, tokenizer.eos_id)
    writer = ShardWriter(out_dir, seq_len, cfg.row_group_mb, cfg.part_mb)
    skips, stats = SkipLog(strict=cfg.strict), _Stats()
    reader = ReaderStage(inputs, rng.permutation(len(inputs)), sampler, skips, cfg.encode_batch)
    sink = PackerStage(ShuffleBuffer(cfg.shuffle_buffer, rng), packer, writer)
    bar = _progress(progress, f"pack {seq_len}")
    t0, encoded = time.perf_counter(), 0
    reader.start()
    sink.start()
    try:
        for batch in reader.batches():
            docs = [d for d in batch if not sampler.over_budget(d.source)]
            accepted = []
            for doc, ids in zip(docs, tokenizer.encode_batch([d.text for d in docs]) if docs else []):
                if sampler.charge(doc.source, len(ids) + 1):
                    stats.accept(doc.source, len(ids))
                    accepted.append((doc.source, doc.doc_id, ids))
                    encoded += len(ids)
            stats.dropped["over_budget"] += len(batch) - len(accepted)
            sink.put(accepted)
            bar.update(len(batch))
            bar.set_postfix_str(f"{encoded / max(time.perf_counter() - t0, 1e-9):,.0f} tok/s", refresh=False)
        sink.finish()
    finally:
        reader.close()
        sink.close()
        bar.close()
    stats.dropped["short_document"] += reader.dropped_short
    rem_ids, rem_spans = packer.remainder()
    write_remainder(out_dir, rem_ids, rem_spans)
    parts = writer.close()
    files = sorted(reader.files, key=lambda f: f.name)
    return _summary(seq_len, parts, len(rem_ids), stats, skips.counts, files, sampler)


def _summary(seq_len, parts, remainder_tokens, stats: _Stats, skipped: Counter, files, sampler: Sampler) -> dict:
    rows = sum(p["rows"] for p in parts)
    lines = sum(f.records for f in files)
    skipped_lines = sum(n for r, n in skipped.items() if r not in FILE_LEVEL_SKIPS)
    return {
        "seq_len": seq_len,
        "rows": rows,
        "tokens": rows * seq_len,
        "remainder_tokens": remainder_tokens,
        "documents": stats.accepted,
        "eos_tokens": stats.accepted,
        "sources": {s: dict(stats.sources[s]) for s in sorted(stats.sources)},
        "records": {"lines": lines, "accepted": stats.accepted, "skipped": skipped_lines,
                    "dropped": sum(stats.dropped.values())},
        "skipped": dict(sorted(skipped.items())),
        "dropped": {k: v for k, v in sorted(stats.dropped.items()) if v},
        "budget_tokens": {str(k): round(v) for k, v in sampler.budgets.items()} or None,
        "parts": parts,
        "inputs": [f.as_dict() for f in files],
    }


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(src, dst)


def _add_counts(into: dict, more: dict) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def merge_batches(batches: list[tuple[Path, dict]], out_dir: Path, *, cfg: PackConfig, eos_id: int) -> dict:
    """Join packed batches [(folder, summary)] in order into `out_dir`; return the merged summary.

    Parts are linked (or copied) as part-00000.parquet, ... in batch order; the batches' remainders are
    packed together into further rows (written after them), and what is left becomes the final
    `remainder.arrow`. Token conservation carries over: rows * seq_len + remainder = document tokens + EOS.
    """
    if not batches:
        raise ValueError("merge_batches needs at least one batch folder")
    seq_len = batches[0][1]["seq_len"]
    if any(s["seq_len"] != seq_len for _, s in batches):
        raise ValueError(f"batches have different seq_len: {sorted({s['seq_len'] for _, s in batches})}")
    parts, index = [], 0
    for folder, summary in batches:
        for p in summary["parts"]:
            _link(Path(folder) / p["file"], out_dir / f"part-{index:05d}.parquet")
            parts.append({"file": f"part-{index:05d}.parquet", "rows": p["rows"]})
            index += 1
    packer = Packer(seq_len, eos_id)
    writer = ShardWriter(out_dir, seq_len, cfg.row_group_mb, cfg.part_mb, first_part=index)
    for folder, _ in batches:
        writer.add(packer.add_piece(*read_remainder(folder)))
    rem_ids, rem_spans = packer.remainder()
    write_remainder(out_dir, rem_ids, rem_spans)
    parts += writer.close()

    merged: dict = {"seq_len": seq_len, "sources": {}, "records": {}, "skipped": {}, "dropped": {}, "inputs": []}
    for _, s in batches:
        for src, counts in s["sources"].items():
            _add_counts(merged["sources"].setdefault(src, {}), counts)
        for key in ("records", "skipped", "dropped"):
            _add_counts(merged[key], s[key])
        merged["inputs"] += s["inputs"]
    rows = sum(p["rows"] for p in parts)
    merged.update(rows=rows, tokens=rows * seq_len, remainder_tokens=len(rem_ids), parts=parts,
                  documents=sum(s["documents"] for _, s in batches), eos_tokens=sum(s["eos_tokens"] for _, s in batches))
    merged["sources"] = dict(sorted(merged["sources"].items()))
    merged["skipped"] = dict(sorted(merged["skipped"].items()))
    merged["dropped"] = dict(sorted(merged["dropped"].items()))
    merged["inputs"].sort(key=lambda f: f["name"])
    budgets = [s.get("budget_tokens") for _, s in batches]
    merged["budget_tokens"] = None if budgets[0] is None else {
        k: sum(b[k] for b in budgets) for k in budgets[0]}
    return merged
