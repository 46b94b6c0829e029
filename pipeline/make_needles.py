"""Rules `make_haystack` and `make_needles`: the default V-NIAH inputs, made from files that ship offline.

    python -m pipeline.make_needles haystack --config results/resolve_config/config.yaml --out results/make_haystack
        -> haystack.mp4 (eval.needle.max_frames seconds at 1 frame/s of looped real footage) + haystack.json
    python -m pipeline.make_needles needles --config results/resolve_config/config.yaml --out results/make_needles
        -> needles.json + needle_<colour>.png, and (eval.needle.train_samples > 0) train/<F>f/vila_train.json +
           videos/ for every stage-5 frame count F: needle SFT samples mixed into that stage-5 run

Both folders are written atomically (longvila/eval/haystack.py documents what they hold and why).
"""

from __future__ import annotations

import argparse

from pipeline.common.stage import load, run_stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("haystack", "needles"), help="which input to make")
    parser.add_argument("--config", required=True, help="resolved config YAML (results/resolve_config/config.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable)")
    parser.add_argument("--out", required=True, help="output folder (replaced atomically)")
    args = parser.parse_args(argv)

    def body() -> None:
        from longvila.eval.haystack import make_haystack, make_needle_training, make_needles
        from longvila.utils.io import atomic_dir, write_json_atomic
        from longvila.utils.logging import get_logger

        cfg = load(args)
        n = cfg.eval.needle
        with atomic_dir(args.out) as tmp:
            if args.what == "haystack":
                info = make_haystack(tmp / "haystack.mp4", seconds=n.max_frames)
                write_json_atomic(tmp / "haystack.json", info)
                get_logger().info(f"make_haystack: {info['seconds']} s at 1 frame/s from {info['source_frames']} "
                                  f"real frames ({', '.join(info['sources'])}) -> {args.out}/haystack.mp4")
                return
            needles = make_needles(tmp)
            counts = {}
            for run in cfg.train.stage5 if n.train_samples else []:
                counts[run.frames] = make_needle_training(tmp / "train" / f"{run.frames}f", run.frames,
                                                          n.train_samples, seed=n.seed + run.frames)
            get_logger().info(f"make_needles: {len(needles)} needles, training samples per frame count {counts} "
                              f"-> {args.out}")

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
