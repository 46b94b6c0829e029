"""Rule `make_corpus`: build the offline SlimPajama-format corpus (real text, all 7 sources, passkeys).

Writes `train/chunk{k}/example_train_{i}.jsonl.zst`, `validation/chunk1/example_holdout_0.jsonl.zst`,
`passkeys.jsonl` (the held-out passkey documents, for the passkey eval) and `manifest.json` into --out,
atomically (the folder appears complete or not at all).

    python -m pipeline.make_corpus --config results/resolve_config/config.yaml --out results/make_corpus
"""

from __future__ import annotations

from longvila.config import config_to_dict
from longvila.data.corpus import build_corpus
from longvila.data.manifest import code_version
from longvila.utils.io import atomic_dir, sha256_file, write_json_atomic
from longvila.utils.logging import get_logger
from pipeline.common.stage import load, run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--out", required=True, help="output folder (replaced atomically)")
    args = parser.parse_args(argv)

    def body() -> None:
        cfg = load(args)
        with atomic_dir(args.out) as tmp:
            summary = build_corpus(cfg.corpus, tmp, seed=cfg.corpus.seed)
            for name, info in summary["files"].items():
                info["sha256"] = sha256_file(tmp / name)
            write_json_atomic(tmp / "manifest.json", {
                "kind": "slimpajama-format corpus (offline, real text)", **summary,
                "config": config_to_dict(cfg.corpus), "code_version": code_version()})
        get_logger().info(f"make_corpus: {summary['train_records']} train and {summary['heldout_records']} held-out "
                          f"records in {len(summary['files'])} files -> {args.out}")

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
