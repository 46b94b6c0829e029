"""Rule `s2s_index`: validate Shot2Story annotations, resolve and probe the videos -> videos.parquet.

Missing, corrupt and zero-length videos, invalid records, non-UTF-8 text, duplicate ids and shot lists
longer than the video are counted by reason (manifest.json) and listed (rejects.jsonl), never fatal unless
--strict. Works with a partial download: only the videos present are indexed. When no video is usable the
step fails (exit code 2) with the top reasons and what to check, and writes nothing.

    python -m pipeline.s2s_index --config results/resolve_config/config.yaml --root DATA --out results/s2s_index
"""

from __future__ import annotations

from pathlib import Path

from longvila.data.shot2story.common import Rejects, write_parquet
from longvila.data.shot2story.index import VIDEOS_SCHEMA, build_index, load_annotations
from longvila.utils.io import atomic_dir
from pipeline.common.s2s import data_root, finish, refuse_empty
from pipeline.common.stage import load, run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--root", help="Shot2Story folder (default: shot2story.root or results/make_shot2story)")
    parser.add_argument("--out", required=True, help="output folder (replaced atomically)")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad record")
    parser.add_argument("--workers", type=int, default=4, help="threads probing videos")
    args = parser.parse_args(argv)

    def body() -> None:
        cfg = load(args)
        s2s = cfg.shot2story
        root = data_root(cfg, args.root)
        rejects = Rejects("s2s_index", strict=args.strict or s2s.strict)
        records = []
        for name in s2s.annotations:
            path = Path(name) if Path(name).is_file() else root / "annotations" / name
            if not path.is_file():
                raise ValueError(f"annotation file {path} not found; check shot2story.annotations")
            records += load_annotations(path, rejects)
        n_in = len(records) + rejects.total
        beyond = max(0, len(records) - s2s.max_videos) if s2s.max_videos else 0
        records = records[:len(records) - beyond]
        rows, notes = build_index(records, root, s2s.video_dir, s2s.shot_dir, rejects, args.workers, progress=True)
        if n_in != len(rows) + rejects.total + beyond:
            raise AssertionError(f"s2s_index accounting: {n_in} in != {len(rows)} out + {rejects.total} rejected "
                                 f"+ {beyond} beyond max_videos")
        if not rows:
            videos = root / s2s.video_dir
            refuse_empty("s2s_index", "usable videos", n_in, "annotation records", rejects, {
                "missing_video": f"Videos are looked up as {videos}/<nvid>: set shot2story.root (or --root) and "
                                 "shot2story.video_dir to where they are, or download them",
                "corrupt_video": f"The files in {videos} cannot be decoded: re-download them",
                "zero_length": f"The files in {videos} hold no frames: re-download them",
                "shots_exceed_video": f"The per-shot files in {root / s2s.shot_dir} are longer than the videos: are "
                                      "they from another download? Fix or remove shot2story.shot_dir's folder",
            }, f"Check that shot2story.annotations ({', '.join(s2s.annotations)}) are Shot2Story annotation files "
               "(README: Stage-5 data)", args.out)
        with atomic_dir(args.out) as tmp:
            write_parquet(tmp / "videos.parquet", rows, VIDEOS_SCHEMA)
            finish(tmp, "s2s_index", cfg, n_in, len(rows), rejects, root=str(root.resolve()), notes=dict(notes),
                   beyond_max_videos=beyond)

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
