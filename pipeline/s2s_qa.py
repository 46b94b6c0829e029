"""Rule `s2s_qa`: long-video QA from the ordered clip captions (template | openai | transformers) -> qa.parquet.

The LLM backends' raw output is kept (qa_raw.jsonl); unusable output is repaired or rejected by reason. 0 QA
pairs fails (exit code 2) with the reasons (the log shows the first rejected outputs), and writes nothing.

    python -m pipeline.s2s_qa --config results/resolve_config/config.yaml --index results/s2s_index \
        --captions results/s2s_caption --out results/s2s_qa
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from longvila.data.shot2story.caption import read_prompt
from longvila.data.shot2story.common import Rejects, read_rows, write_jsonl, write_parquet
from longvila.data.shot2story.qa import QA_SCHEMA, generate_qa
from longvila.utils.io import atomic_dir
from pipeline.common.s2s import finish, refuse_empty
from pipeline.common.stage import load, run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--index", required=True, help="the s2s_index folder")
    parser.add_argument("--captions", required=True, help="the s2s_caption folder")
    parser.add_argument("--out", required=True, help="output folder (replaced atomically)")
    args = parser.parse_args(argv)

    def body() -> None:
        cfg = load(args)
        q = cfg.shot2story.qa
        videos = read_rows(Path(args.index) / "videos.parquet")
        by_video = defaultdict(list)
        for c in sorted(read_rows(Path(args.captions) / "captions.parquet"),
                        key=lambda c: (c["video_id"], c["clip_index"])):
            by_video[c["video_id"]].append(c)
        template = read_prompt(q.prompt_file) if q.backend != "template" else ""
        version = Path(q.prompt_file).stem if q.backend != "template" else "rules-v1"
        rejects = Rejects("s2s_qa", strict=cfg.shot2story.strict)
        pair_rejects = Counter()
        rows, raw = generate_qa(videos, by_video, q, rejects, template, version, progress=True,
                                pair_rejects=pair_rejects)
        if not rows:
            llm = (f"The {q.backend} backend's output held no usable QA (the log shows the first ones): check the "
                   "model and shot2story.qa.prompt_file, or use shot2story.qa.backend: template")
            refuse_empty("s2s_qa", "QA pairs", len(videos), "indexed videos", rejects, {
                "no_captions": f"No indexed video has a caption in {args.captions} (are the captions from another "
                               f"index?): rerun s2s_caption on {args.index}",
                "no_pairs": f"No question type in shot2story.qa.types ({', '.join(q.types)}) fits the videos' clips "
                            "(e.g. temporal_order needs two different scenes): add types such as summary",
                "endpoint_error": "The endpoint failed for every video: check shot2story.qa.endpoint.url and that "
                                  "the server answers",
                **{reason: llm for reason in ("no_json", "missing_fields", "unknown_type", "empty")},
            }, f"The index {args.index} holds no video: rerun s2s_index", args.out)
        with atomic_dir(args.out) as tmp:
            write_parquet(tmp / "qa.parquet", rows, QA_SCHEMA)
            write_jsonl(tmp / "qa_raw.jsonl", raw)
            finish(tmp, "s2s_qa", cfg, len(videos), len({r["video_id"] for r in rows}), rejects, qa_pairs=len(rows),
                   pairs_rejected=dict(pair_rejects), backend=q.backend, prompt_version=version)

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
