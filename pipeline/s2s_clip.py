"""Rule `s2s_clip`: cut every indexed video into clips (shot spans or fixed windows) -> clips.parquet.

0 clips fails (exit code 2) with the reasons, and writes nothing.

    python -m pipeline.s2s_clip --config results/resolve_config/config.yaml --index results/s2s_index \
        --out results/s2s_clip
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from longvila.data.shot2story.clips import CLIPS_SCHEMA, clips_for_video
from longvila.data.shot2story.common import Rejects, read_rows, write_parquet
from longvila.utils.io import atomic_dir
from pipeline.common.s2s import finish, refuse_empty
from pipeline.common.stage import load, run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--index", required=True, help="the s2s_index folder")
    parser.add_argument("--out", required=True, help="output folder (replaced atomically)")
    args = parser.parse_args(argv)

    def body() -> None:
        cfg = load(args)
        c = cfg.shot2story.clip
        videos = read_rows(Path(args.index) / "videos.parquet")
        rows, modes, empty_shots = [], Counter(), 0
        rejects = Rejects("s2s_clip", strict=cfg.shot2story.strict)
        for v in videos:
            clips = clips_for_video(v, c.mode, c.window_seconds, c.min_seconds)
            if not clips:
                rejects.add("no_clips", "no frame span to cut", video_id=v["video_id"])
                continue
            modes[clips[0]["mode"]] += 1
            if clips[0]["mode"] == "shots":
                empty_shots += v["shots"] - len(clips)
            rows += clips
        if not rows:
            refuse_empty("s2s_clip", "clips", len(videos), "indexed videos", rejects, {
                "no_clips": "Their shot spans lie outside the videos' frames: check the per-shot files "
                            "(shot2story.shot_dir), or set shot2story.clip.mode: fixed",
            }, f"The index {args.index} holds no video: rerun s2s_index", args.out)
        with atomic_dir(args.out) as tmp:
            write_parquet(tmp / "clips.parquet", rows, CLIPS_SCHEMA)
            finish(tmp, "s2s_clip", cfg, len(videos), len(videos) - rejects.total, rejects, clips=len(rows),
                   videos_by_mode=dict(modes), empty_shots_dropped=empty_shots)

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
