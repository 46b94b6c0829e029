"""Rule `s2s_assemble`: SFT data -> sft.parquet, vila_train.json / vila_val.json, report.md (+ thumbnails).

Train/val are split by video (no leakage). The VILA JSON is what the original trainer's LLaVADataset reads
(media_dir = the dataset root recorded in the index manifest). A --qa folder without any QA pair fails (exit
code 2): there is nothing to train on, and nothing is written.

    python -m pipeline.s2s_assemble --config results/resolve_config/config.yaml --index results/s2s_index \
        --clips results/s2s_clip --captions results/s2s_caption --qa results/s2s_qa --out results/s2s_assemble
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from longvila.data.shot2story.assemble import SFT_SCHEMA, sft_rows, write_report, write_vila_json
from longvila.data.shot2story.common import Rejects, read_rows, write_parquet
from longvila.utils.io import atomic_dir
from pipeline.common.s2s import finish, refuse_empty
from pipeline.common.stage import load, run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    for name in ("index", "clips", "captions", "qa"):
        parser.add_argument(f"--{name}", required=True, help=f"the s2s_{name} folder")
    parser.add_argument("--out", required=True, help="output folder (replaced atomically)")
    args = parser.parse_args(argv)

    def body() -> None:
        cfg = load(args)
        s2s = cfg.shot2story
        index = Path(args.index)
        root = Path(json.loads((index / "manifest.json").read_text())["root"])
        videos = {v["video_id"]: v for v in read_rows(index / "videos.parquet")}
        qa = read_rows(Path(args.qa) / "qa.parquet")
        if not qa:
            refuse_empty("s2s_assemble", "SFT samples", 0, "QA pairs", Rejects("s2s_assemble"), {},
                         f"{args.qa}/qa.parquet holds no QA pair: rerun s2s_qa (its manifest.json says why)", args.out)
        caption_backend = s2s.caption.backend
        rows = sft_rows(qa, videos, caption_backend, s2s.num_frames, s2s.val_fraction, s2s.split_seed)
        splits = Counter(r["split"] for r in rows)
        clips = defaultdict(list)
        for c in read_rows(Path(args.clips) / "clips.parquet"):
            clips[c["video_id"]].append(c)
        counts = {}
        for step, folder in (("s2s_index", args.index), ("s2s_clip", args.clips), ("s2s_caption", args.captions),
                             ("s2s_qa", args.qa)):
            counts[step] = json.loads((Path(folder) / "manifest.json").read_text())
        counts["s2s_assemble"] = {"in": len(qa), "out": len(rows)}
        picks = [next(r for r in rows if r["question_type"] == t) for t in dict.fromkeys(r["question_type"]
                                                                                         for r in rows)][:3]
        with atomic_dir(args.out) as tmp:
            write_parquet(tmp / "sft.parquet", rows, SFT_SCHEMA)
            n_train = write_vila_json(tmp / "vila_train.json", [r for r in rows if r["split"] == "train"])
            n_val = write_vila_json(tmp / "vila_val.json", [r for r in rows if r["split"] == "val"])
            by_id = {v["path"]: v["video_id"] for v in videos.values()}
            write_report(tmp, counts, [{**p, "video_id": by_id[p["video"]]} for p in picks], root, clips)
            finish(tmp, "s2s_assemble", cfg, len(qa), len(rows), Rejects("s2s_assemble"), media_dir=str(root),
                   splits=dict(splits), vila_train=n_train, vila_val=n_val,
                   videos_per_split={s: len({r["video"] for r in rows if r["split"] == s}) for s in splits})

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
