"""Rule `export_original`: write a packed data set in the original LongVILA trainer's format.

The original `train_llm_to_long.py` loads `load_dataset("json", data_files=...)` and reads a `text` column
that already holds token ids; this writes one JSON line `{"text": [id, ...]}` per packed row, streaming.

    python -m pipeline.export_original --shards results/pack_shards/2k --out results/export_original/2k.jsonl
"""

from __future__ import annotations

import argparse

from longvila.data.export import export_jsonl
from longvila.utils.logging import get_logger
from pipeline.common.stage import run_stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", required=True, help="a pack_shards folder")
    parser.add_argument("--out", required=True, help="the .jsonl file to write (atomically)")
    args = parser.parse_args(argv)

    def body() -> None:
        rows = export_jsonl(args.shards, args.out)
        get_logger().info(f"export_original: {rows} rows -> {args.out}")

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
