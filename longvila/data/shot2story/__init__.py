"""Stage-5 data: Shot2Story long videos -> clips -> captions -> long-video QA -> SFT Parquet + VILA JSON.

    synth.py     the offline Shot2Story-format dataset (real .mp4 shots with captions that describe them)
    index.py     annotation schema validation, video resolution and probing -> videos.parquet
    clips.py     clip arithmetic (shot spans or fixed windows) -> clips.parquet
    caption.py   captioner backends (annotation, longvila, openai) with a resumable cache -> captions.parquet
    qa.py        QA backends (template, openai, transformers), parsing and repair -> qa.parquet
    assemble.py  SFT rows, split by video, VILA JSON, report
    common.py    reasons ledger, Parquet/JSONL writing
"""
