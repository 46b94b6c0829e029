"""Rule `init_model`: write the starting model as a checkpoint in the released layout (with its tokenizer).

A randomly initialised model of `model.size` (tiny by default), its tokenizer (`tokenizer.path`) with the
media tokens added and the embedding resized to match. The folder is written atomically.

    python -m pipeline.init_model --config results/resolve_config/config.yaml --out results/init_model/tiny
"""

from __future__ import annotations

from longvila.utils.io import atomic_dir
from longvila.utils.logging import get_logger
from pipeline.common.stage import load, run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--out", required=True, help="checkpoint folder (replaced atomically)")
    args = parser.parse_args(argv)

    def body() -> None:
        from transformers import AutoTokenizer

        from longvila.data.tokenizer import resolve_tokenizer_dir
        from longvila.model.sizes import build_model

        cfg = load(args)
        tokenizer = AutoTokenizer.from_pretrained(resolve_tokenizer_dir(cfg.tokenizer.path)[0])
        model = build_model(cfg.model.size, tokenizer, seed=cfg.model.seed)
        with atomic_dir(args.out) as tmp:
            model.save_pretrained(tmp, tokenizer=tokenizer)
        n = sum(p.numel() for p in model.parameters())
        get_logger().info(f"init_model: {cfg.model.size}, {n / 1e6:.1f}M parameters, vocab {len(tokenizer)} -> {args.out}")

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
