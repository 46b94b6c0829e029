"""Rule `pack_shards`: merge the batches of one context length into the final packed data set.

Links the batches' parts as `part-00000.parquet`, ... in batch order, packs their remainders together into
further rows, and writes `remainder.arrow` and `manifest.json` (totals per source, skips by reason, inputs
with sizes and hashes, tokenizer, config, code version). The folder is replaced atomically. A data set of 0
rows (fewer tokens than one row of the context, or nothing usable) fails with exit code 2, the reason and
what to change, and writes nothing.

    python -m pipeline.pack_shards --config results/resolve_config/config.yaml \\
        --batches results/pack_batch/2k/b0000 results/pack_batch/2k/b0001 --out results/pack_shards/2k
"""

from __future__ import annotations

import json
from pathlib import Path

from longvila.config import config_to_dict
from longvila.data.manifest import budget_report, build_manifest, check_conservation, explain_no_rows
from longvila.data.shards import merge_batches
from longvila.utils.io import atomic_dir, write_json_atomic
from longvila.utils.logging import get_logger
from pipeline.common.stage import load, run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--batches", nargs="+", required=True, help="pack_batch output folders, in order")
    parser.add_argument("--out", required=True, help="the data set folder (replaced atomically)")
    args = parser.parse_args(argv)

    def body() -> None:
        cfg = load(args)
        batches = []
        for folder in args.batches:
            manifest = Path(folder) / "manifest.json"
            if not manifest.is_file():
                raise ValueError(f"{folder} has no manifest.json: it is not a finished pack_batch output; rerun it")
            batches.append((Path(folder), json.loads(manifest.read_text(encoding="utf-8"))))
        tokenizer = batches[0][1]["tokenizer"]
        if any(b["tokenizer"]["sha256"] != tokenizer["sha256"] for _, b in batches):
            raise ValueError("batches were packed with different tokenizers; rerun pack_batch for all of them")
        with atomic_dir(args.out) as tmp:
            merged = merge_batches(batches, tmp, cfg=cfg.pack, eos_id=tokenizer["eos_id"])
            seq_key = next((f"pack.contexts[{c.name}].seq_len" for c in cfg.pack.contexts
                            if c.seq_len == merged["seq_len"]), "pack.contexts[].seq_len")
            names = {"seq_len": seq_key, "keep_ratio": "pack.keep_ratio", "short_threshold": "pack.short_threshold",
                     "inputs": "slimpajama.root and slimpajama.glob"}
            if why := explain_no_rows(merged, names):
                raise ValueError(f"pack_shards: {why}. Nothing was written to {args.out}")
            manifest = build_manifest(merged, tokenizer=tokenizer, config=config_to_dict(cfg),
                                      run_name=cfg.run_name, upsample=cfg.pack.upsample)
            check_conservation(manifest)
            write_json_atomic(tmp / "manifest.json", manifest)
        for warning in budget_report(merged)[1]:
            get_logger().warning(f"pack_shards: {warning}")
        get_logger().info(f"pack_shards: {merged['rows']} rows x {merged['seq_len']} tokens in {len(merged['parts'])} "
                          f"parts, remainder {merged['remainder_tokens']} tokens -> {args.out}")

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
