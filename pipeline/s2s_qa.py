"""Rule `s2s_qa`: long-video QA from the ordered clip captions (template | openai | transformers) -> qa.parquet.

The LLM backends' raw output is kept (qa_raw.jsonl); unusable output is repaired or rejected by reason.

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
from pipeline.common.s2s import finish
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
        with atomic_dir(args.out) as tmp:
            write_parquet(tmp / "qa.parquet", rows, QA_SCHEMA)
            write_jsonl(tmp / "qa_raw.jsonl", raw)
            finish(tmp, "s2s_qa", cfg, len(videos), len({r["video_id"] for r in rows}), rejects, qa_pairs=len(rows),
                   pairs_rejected=dict(pair_rejects), backend=q.backend, prompt_version=version)

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
