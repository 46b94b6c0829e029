"""Rule `s2s_caption`: caption every clip (annotation | longvila | openai backend) -> captions.parquet.

Model captions are cached (JSON lines, one per clip, flushed as written) under --cache, outside the output
folder, so a killed run resumes where it stopped and reruns repeat no work. 0 captions fails (exit code 2)
with the reasons, and writes nothing under --out (the cache keeps what was captioned).

    python -m pipeline.s2s_caption --config results/resolve_config/config.yaml --index results/s2s_index \
        --clips results/s2s_clip --cache results/cache/s2s_caption --out results/s2s_caption
"""

from __future__ import annotations

import json
from pathlib import Path

from longvila.data.shot2story.caption import CAPTIONS_SCHEMA, caption_clips
from longvila.data.shot2story.common import Rejects, read_rows, write_parquet
from longvila.utils.io import atomic_dir
from pipeline.common.s2s import finish, refuse_empty
from pipeline.common.stage import load, run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--index", required=True, help="the s2s_index folder")
    parser.add_argument("--clips", required=True, help="the s2s_clip folder")
    parser.add_argument("--cache", required=True, help="cache folder (kept between runs)")
    parser.add_argument("--model", help="checkpoint for backend 'longvila' (default: shot2story.caption.model_dir)")
    parser.add_argument("--out", required=True, help="output folder (replaced atomically)")
    args = parser.parse_args(argv)

    def body() -> None:
        cfg = load(args)
        c = cfg.shot2story.caption
        index = Path(args.index)
        root = Path(json.loads((index / "manifest.json").read_text())["root"])
        videos = {v["video_id"]: v for v in read_rows(index / "videos.parquet")}
        clips = read_rows(Path(args.clips) / "clips.parquet")
        model_dir = args.model or c.model_dir or f"results/init_model/{cfg.model.size}"
        rejects = Rejects("s2s_caption", strict=cfg.shot2story.strict)
        make = None
        if c.backend == "longvila":
            from longvila.infer.captioner import LongVILACaptioner

            make = lambda: LongVILACaptioner(model_dir, c)  # noqa: E731  (loaded only when a clip needs it)
        rows = caption_clips(clips, videos, root, c, Path(args.cache) / f"{c.backend}.jsonl", rejects,
                             model_dir=model_dir, progress=True, make_captioner=make)
        if not rows:
            refuse_empty("s2s_caption", "captions", len(clips), "clips", rejects, {
                "no_shot_alignment": "Backend 'annotation' takes a clip's caption from its shot, and these clips have "
                                     "none (videos without per-shot files are cut in fixed windows): provide the "
                                     "shots folder (shot2story.shot_dir) or caption with a model "
                                     "(shot2story.caption.backend: longvila or openai)",
                "empty_caption": "The annotations' shot captions are empty: caption with a model "
                                 "(shot2story.caption.backend: longvila or openai)",
                "endpoint_error": "The endpoint failed for every clip: check shot2story.caption.endpoint.url and "
                                  "that the server answers (e.g. longvila serve)",
                "bad_caption": "The model returned no text: check shot2story.caption.model_dir / the endpoint's model",
                "missing_video": "The videos are gone since s2s_index ran: restore them and rerun s2s_index",
                "unreadable_clip": "The videos cannot be decoded: re-download them and rerun s2s_index",
            }, f"{args.clips} holds no clip: rerun s2s_clip", args.out)
        with atomic_dir(args.out) as tmp:
            write_parquet(tmp / "captions.parquet", rows, CAPTIONS_SCHEMA)
            finish(tmp, "s2s_caption", cfg, len(clips), len(rows), rejects, backend=c.backend)

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
