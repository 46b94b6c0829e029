"""Rule `make_shot2story`: write the offline Shot2Story-format dataset (real multi-shot .mp4 + annotations).

Videos under videos/, per-shot files under shots/, annotation JSON in the real schema under annotations/,
manifest.json; the folder appears complete or not at all. Used when shot2story.root is null.

    python -m pipeline.make_shot2story --config results/resolve_config/config.yaml --out results/make_shot2story
"""

from __future__ import annotations

from longvila.config import config_to_dict
from longvila.data.manifest import code_version
from longvila.data.shot2story.synth import build_synthetic
from longvila.utils.io import atomic_dir, write_json_atomic
from longvila.utils.logging import get_logger
from pipeline.common.stage import load, run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--out", required=True, help="output folder (replaced atomically)")
    args = parser.parse_args(argv)

    def body() -> None:
        cfg = load(args)
        with atomic_dir(args.out) as tmp:
            summary = build_synthetic(cfg.shot2story.synth, tmp, progress=True)
            write_json_atomic(tmp / "manifest.json", {"kind": "synthetic Shot2Story-format dataset", **summary,
                                                      "config": config_to_dict(cfg.shot2story.synth),
                                                      "code_version": code_version()})
        get_logger().info(f"make_shot2story: {summary['videos']} videos, {summary['shots']} shots, "
                          f"{summary['seconds']:.0f} s -> {args.out}")

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
