"""Rule `pack_batch`: pack one batch of corpus files into rows of one context length.

Reads the batch's `.jsonl.zst` files as a stream, tokenizes in parallel, applies the length-upsampling
sampler and this batch's share of the token budget, and writes `part-*.parquet`, `remainder.arrow` and
`manifest.json` into --out (atomically). `pack_shards` then merges all batches of the context length.

    python -m pipeline.pack_batch --config results/resolve_config/config.yaml --context 2k \\
        --root results/make_corpus --inputs results/make_corpus/train/chunk1/example_train_0.jsonl.zst \\
        --out results/pack_batch/2k/b0000
"""

from __future__ import annotations

from pathlib import Path

from longvila.config import config_to_dict
from longvila.data.inputs import corpus_files
from longvila.data.manifest import build_manifest
from longvila.data.shards import pack_files
from longvila.data.tokenizer import load_tokenizer
from longvila.utils.env import apply_env
from longvila.utils.io import atomic_dir, write_json_atomic
from longvila.utils.logging import get_logger
from pipeline.common.stage import load, run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--context", required=True, help="name of a pack.contexts entry, e.g. 2k")
    parser.add_argument("--root", required=True, help="corpus root; input names in doc ids are relative to it")
    parser.add_argument("--inputs", nargs="+", required=True, help="the batch's .jsonl.zst files")
    parser.add_argument("--out", required=True, help="batch output folder (replaced atomically)")
    args = parser.parse_args(argv)

    def body() -> None:
        cfg = load(args)
        ctx = cfg.pack.context(args.context)
        apply_env(tokenizer_threads=cfg.pack.workers)
        _, all_names = corpus_files(cfg, args.root)
        root = Path(args.root)
        inputs = [(Path(p), str(Path(p).relative_to(root))) for p in args.inputs]
        tokenizer = load_tokenizer(cfg.tokenizer)
        with atomic_dir(args.out) as tmp:
            summary = pack_files(inputs, tokenizer, seq_len=ctx.seq_len, cfg=cfg.pack, out_dir=tmp,
                                 max_rows=ctx.max_rows, budget_share=len(inputs) / len(all_names))
            write_json_atomic(tmp / "manifest.json", build_manifest(
                summary, tokenizer=tokenizer.describe(), config=config_to_dict(cfg), run_name=cfg.run_name,
                upsample=cfg.pack.upsample))
        get_logger().info(f"pack_batch {args.context}: {summary['rows']} rows, {summary['documents']} documents, "
                          f"skipped {summary['skipped']}, dropped {summary['dropped']} -> {args.out}")

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
