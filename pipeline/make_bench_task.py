"""Rule `make_bench_task`: the lmms-eval task folder of `longvila_localmc` from the workflow-made videos.

Multiple-choice questions (A-D) about the validation videos of the stage-5 data (the videos s2s_assemble put
in vila_val.json, so none was trained on): eval.bench.questions_per_video per video, about the shots'
colour, shape, count, background and direction and the video's number of scenes (longvila/eval/localmc.py).
Writes longvila_localmc.yaml, utils.py, longvila_localmc.jsonl and manifest.json; lmms-eval reads the folder
with --include_path.

    python -m pipeline.make_bench_task --config results/resolve_config/config.yaml \
        --root results/make_shot2story --data results/s2s_assemble --out results/make_bench_task
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from pipeline.common.stage import load, run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--root", required=True, help="the Shot2Story folder (annotations/, videos/, shots/)")
    parser.add_argument("--data", required=True, help="the s2s_assemble folder (vila_val.json: the val videos)")
    parser.add_argument("--out", required=True, help="output folder (replaced atomically)")
    args = parser.parse_args(argv)

    def body() -> None:
        from longvila.config import config_to_dict
        from longvila.data.manifest import code_version
        from longvila.eval.localmc import TASK_NAME, load_val_records, make_docs, write_task
        from longvila.utils.io import atomic_dir, write_json_atomic
        from longvila.utils.logging import get_logger

        cfg = load(args)
        s2s, root = cfg.shot2story, Path(args.root)
        val_file = Path(args.data) / "vila_val.json"
        if not val_file.is_file():
            raise ValueError(f"{val_file} does not exist; --data must be the s2s_assemble folder")
        val_videos = {r["video"] for r in json.loads(val_file.read_text(encoding="utf-8"))}
        records = load_val_records(root, s2s.annotations, val_videos, video_dir=s2s.video_dir)
        docs = make_docs(records, lambda rec: root / s2s.video_dir / rec["nvid"],
                         lambda name: root / s2s.shot_dir / name, cfg.eval.bench.questions_per_video,
                         seed=s2s.split_seed)
        with atomic_dir(args.out) as tmp:
            write_task(tmp, docs, final_dir=args.out)
            write_json_atomic(tmp / "manifest.json", {
                "task": TASK_NAME, "docs": len(docs), "videos": len(records),
                "question_types": dict(Counter(d["question_type"] for d in docs)), "root": str(root.resolve()),
                "config": config_to_dict(cfg.eval.bench), "code_version": code_version()})
        get_logger().info(f"make_bench_task: {len(docs)} questions about {len(records)} val videos -> {args.out}")

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
