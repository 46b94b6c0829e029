"""Rule `pack_batch`: pack one batch of corpus files into rows of one context length.

Reads the batch's files as a stream (JSON lines: zstd, gzip or plain, told apart by their bytes; any other
format, or a missing file, is refused before any work), tokenizes in parallel, applies the length-upsampling
sampler and this batch's share of the token budget, and writes `part-*.parquet`, `remainder.arrow` and
`manifest.json` into --out (atomically). `pack_shards` then merges all batches of the context length.

A batch may make 0 full rows: its tokens carry on in `remainder.arrow`, which `pack_shards` packs with the
other batches' remainders. A batch with nothing usable at all (every record skipped as bad input, every file
unreadable) fails with exit code 2 and the reasons, and writes nothing.

    python -m pipeline.pack_batch --config results/resolve_config/config.yaml --context 2k \\
        --root results/make_corpus --inputs results/make_corpus/train/chunk1/example_train_0.jsonl.zst \\
        --out results/pack_batch/2k/b0000
"""

from __future__ import annotations

from pathlib import Path

from longvila.config import config_to_dict
from longvila.data.formats import check_inputs
from longvila.data.inputs import corpus_files
from longvila.data.manifest import build_manifest, explain_unusable
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
    parser.add_argument("--inputs", nargs="+", required=True,
                        help="the batch's files (JSON lines: .jsonl.zst, .jsonl.gz or .jsonl)")
    parser.add_argument("--out", required=True, help="batch output folder (replaced atomically)")
    args = parser.parse_args(argv)

    def body() -> None:
        cfg = load(args)
        ctx = cfg.pack.context(args.context)
        apply_env(tokenizer_threads=cfg.pack.workers)
        _, all_names = corpus_files(cfg, args.root)
        root = Path(args.root)
        outside = [p for p in args.inputs if not Path(p).is_relative_to(root)]
        if outside:
            raise ValueError(f"--inputs {outside[0]} is not under --root {root}; input names are recorded relative to "
                             "the corpus root, so give files inside it")
        check_inputs(args.inputs, "--inputs")
        inputs = [(Path(p), str(Path(p).relative_to(root))) for p in args.inputs]
        tokenizer = load_tokenizer(cfg.tokenizer)
        names = {"seq_len": f"pack.contexts[{ctx.name}].seq_len", "keep_ratio": "pack.keep_ratio",
                 "short_threshold": "pack.short_threshold", "inputs": "--inputs (slimpajama.root and .glob)"}
        with atomic_dir(args.out) as tmp:
            summary = pack_files(inputs, tokenizer, seq_len=ctx.seq_len, cfg=cfg.pack, out_dir=tmp,
                                 max_rows=ctx.max_rows, budget_share=len(inputs) / len(all_names))
            if why := explain_unusable(summary, names):  # 0 rows alone is fine: the tokens carry on as remainder
                raise ValueError(f"pack_batch {args.context}: {why}. Nothing was written to {args.out}")
            write_json_atomic(tmp / "manifest.json", build_manifest(
                summary, tokenizer=tokenizer.describe(), config=config_to_dict(cfg), run_name=cfg.run_name,
                upsample=cfg.pack.upsample))
        carry = f" ({summary['remainder_tokens']} tokens carry on to pack_shards)" if not summary["rows"] else ""
        get_logger().info(f"pack_batch {args.context}: {summary['rows']} rows{carry}, {summary['documents']} "
                          f"documents, skipped {summary['skipped']}, dropped {summary['dropped']} -> {args.out}")

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
