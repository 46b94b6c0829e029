"""Run the bad inputs of issue 20 and print a table: case, exit code (seconds), first line of the message, what
was written under the case's final output name.

    python docs/bad_inputs.py --model results/init_model/tiny --video results/make_shot2story/videos/synth0000.mp4 \
        --corpus results/make_corpus/train/chunk1/example_train_0.jsonl.zst [--keep DIR]

Every case runs in a fresh scratch folder as its own process (the installed `longvila`, `python -m pipeline.*`,
`snakemake -n`); the table in docs/LOG.md ("bad input -> before -> after") is this script's output on the code
before and after. "wrote" lists what appeared under the case's final output name (it should stay empty on an
error). The model, video and corpus are read, never written.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zstandard

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
READ_ONLY = "/proc/longvila-out"                     # not writable, even by root
NOISE = re.compile(r"^\s*$|it/s\]|s/it\]|%\|")     # progress bars and blank lines


def message(out: str) -> str:
    """The line a user reads first: our `error:` line (with the first problem when it is a count), snakemake's
    line after `WorkflowError`, a traceback's exception line, else the last line."""
    lines = [ln.strip() for ln in out.splitlines() if not NOISE.search(ln)]
    for i, ln in enumerate(lines):
        if re.search(r"\] error: |^error: |^[\w .-]+: error: ", ln):
            text = ln[ln.index("error:"):]
            if re.search(r"\d+ config problems?$", text) and i + 1 < len(lines):
                text += " / " + lines[i + 1]
            return text
    for i, ln in enumerate(lines):
        if ln.startswith("WorkflowError") and i + 1 < len(lines):
            return f"{ln} {lines[i + 1]}"
    raised = [x for x in lines if re.match(r"^[\w.]+(Error|Exception)\b", x)]
    if raised:
        return raised[-1]
    return lines[-1] if lines else ""


def cases(a, w: Path) -> list[tuple[str, list[str], Path | None]]:
    """(name, argv, final output path) for every bad input; files the cases need are made in `w`."""
    raw = zstandard.ZstdDecompressor().stream_reader(open(a.corpus, "rb")).read()
    (w / "plain").mkdir()
    (w / "plain/part.jsonl").write_bytes(raw)
    (w / "gz").mkdir()
    (w / "gz/part.jsonl.gz").write_bytes(gzip.compress(raw, mtime=0))
    (w / "zst").mkdir()
    shutil.copy(a.corpus, w / "zst/part.jsonl.zst")
    (w / "misnamed").mkdir()
    (w / "misnamed/part.jsonl.zst").write_bytes(raw)           # plain text behind a .zst name
    (w / "parquet").mkdir()
    (w / "parquet/part.parquet").write_bytes(b"PAR1" + b"\0" * 64)
    (w / "folder").mkdir()
    cfg = (REPO / "config.yaml").read_text()
    (w / "typo.yaml").write_text(cfg.replace("run_name:", "run_nmae:", 1))
    (w / "lr.yaml").write_text(re.sub(r"(\n\s+lr:) [0-9.e-]+", r"\1 2e-5", cfg, count=1))
    (w / "syntax.yaml").write_text(re.sub(r"\ntrain:[^\n]*\n", "\ntrain:\n\tbad: 1\n", cfg, count=1))   # a tab
    (w / "badval.yaml").write_text(cfg.replace("run_name:", "run_name: x\nseed_typo: 1\n# ", 1))
    lv = [str(BIN / "longvila")]
    pack = lv + ["pack", "--tokenizer", "builtin:qwen2", "--quiet"]
    infer = lv + ["infer", "--model", a.model, "--prompt", "What happens?", "--quiet"]
    needle = lv + ["eval", "needle", "--model", a.model, "--quiet"]
    snake = [str(BIN / "snakemake"), "-n", "-s", str(REPO / "Snakefile"), "-d", str(REPO), "--configfile"]
    out = w / "out"
    py = [str(BIN / "python"), "-m"]
    cfgfile = str(REPO / "config.yaml")
    return [
        ("pack: plain .jsonl input", pack + ["--input", f"{w}/plain/*.jsonl", "--seq-len", "256", "--out", str(out)],
         out),
        ("pack: .jsonl.gz input", pack + ["--input", f"{w}/gz/*.jsonl.gz", "--seq-len", "256", "--out", str(out)],
         out),
        ("pack: plain text named .jsonl.zst", pack + ["--input", f"{w}/misnamed/*", "--seq-len", "256",
                                                      "--out", str(out)], out),
        ("pack: a .parquet input", pack + ["--input", f"{w}/parquet/*", "--seq-len", "256", "--out", str(out)], out),
        ("pack: glob matches nothing", pack + ["--input", f"{w}/nothing/*.jsonl.zst", "--seq-len", "256",
                                               "--out", str(out)], out),
        ("pack: --seq-len above the corpus", pack + ["--input", f"{w}/zst/*", "--seq-len", "100000000",
                                                     "--out", str(out)], out),
        ("pack: --seq-len 0", pack + ["--input", f"{w}/zst/*", "--seq-len", "0", "--out", str(out)], out),
        ("pack: --out in a read-only place", pack + ["--input", f"{w}/zst/*", "--seq-len", "256",
                                                      "--out", READ_ONLY], None),
        ("pack: --out is the input folder", pack + ["--input", f"{w}/zst/*", "--seq-len", "256",
                                                    "--out", f"{w}/zst"], None),
        ("pack: --tokenizer missing", lv + ["pack", "--input", f"{w}/zst/*", "--tokenizer", f"{w}/no-tok",
                                            "--seq-len", "256", "--out", str(out)], out),
        ("export: --shards not packed", lv + ["export", "--shards", f"{w}/folder", "--out", f"{w}/x.jsonl"],
         w / "x.jsonl"),
        ("infer: --num-frames 0", infer + ["--video", a.video, "--num-frames", "0"], None),
        ("infer: --video missing", infer + ["--video", f"{w}/missing.mp4"], None),
        ("infer: --video is a folder", infer + ["--video", f"{w}/folder"], None),
        ("infer: --video not a video", infer + ["--video", str(w / "typo.yaml")], None),
        ("infer: --model a Hub id", lv + ["infer", "--model", "Efficient-Large-Model/qwen2-7b-longvila-256f",
                                          "--video", a.video, "--prompt", "Hi", "--quiet"], None),
        ("infer: --model missing folder", lv + ["infer", "--model", f"{w}/no-model", "--video", a.video,
                                                "--prompt", "Hi", "--quiet"], None),
        ("infer: --sp 3x", infer + ["--video", a.video, "--sp", "3x"], None),
        ("eval needle: --haystack missing", needle + ["--haystack", f"{w}/missing.mp4", "--out", str(out)], out),
        ("eval needle: --interval above --max-frames", needle + ["--haystack", a.video, "--max-frames", "4",
                                                                 "--interval", "8", "--out", str(out)], out),
        ("eval needle: --out read-only", needle + ["--haystack", a.video, "--max-frames", "4", "--interval", "4",
                                                   "--out", READ_ONLY], None),
        ("plan: --model unknown", lv + ["plan", "--model", "qwen9-99b", "--seq-len", "65536", "--gpus", "8"], None),
        ("plan: --seq-len 0", lv + ["plan", "--model", "qwen2-7b", "--seq-len", "0", "--gpus", "8"], None),
        ("rule CLI: pack_batch on plain .jsonl", py + ["pipeline.pack_batch", "--config", cfgfile, "--context", "128",
                                                       "--root", f"{w}/plain", "--inputs", f"{w}/plain/part.jsonl",
                                                       "--out", str(out)], out),
        ("rule CLI: pack_batch, context above the corpus",
         py + ["pipeline.pack_batch", "--config", cfgfile, "--context", "128", "--set",
               "pack.contexts=[{name: '128', seq_len: 100000000}]", "--root", f"{w}/zst", "--inputs",
               f"{w}/zst/part.jsonl.zst", "--out", str(out)], out),
        ("rule CLI: --config with a typo", py + ["pipeline.pack_batch", "--config", str(w / "typo.yaml"), "--context",
                                                 "128", "--root", f"{w}/zst", "--inputs", f"{w}/zst/part.jsonl.zst",
                                                 "--out", str(out)], out),
        ("rule CLI: --config YAML syntax error", py + ["pipeline.pack_batch", "--config", str(w / "syntax.yaml"),
                                                       "--context", "128", "--root", f"{w}/zst", "--inputs",
                                                       f"{w}/zst/part.jsonl.zst", "--out", str(out)], out),
        ("snakemake -n: unknown key (run_nmae)", snake + [str(w / "typo.yaml")], None),
        ("snakemake -n: lr: 2e-5", snake + [str(w / "lr.yaml")], None),
        ("snakemake -n: YAML syntax error", snake + [str(w / "syntax.yaml")], None),
        ("snakemake -n: unknown top-level key", snake + [str(w / "badval.yaml")], None),
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--video", required=True)
    p.add_argument("--corpus", required=True, help="one SlimPajama-format .jsonl.zst file")
    p.add_argument("--keep", help="write each case's full output here")
    p.add_argument("--only", help="run the cases whose name contains this")
    a = p.parse_args()
    a.model, a.video, a.corpus = (str(Path(x).resolve()) for x in (a.model, a.video, a.corpus))
    print("| bad input | exit | first line of the message | wrote |\n|---|---|---|---|")
    for i, (name, argv, final) in enumerate(cases(a, Path(tempfile.mkdtemp(prefix="bad-")))):
        if a.only and a.only not in name:
            continue
        if final is not None and final.exists():
            shutil.rmtree(final) if final.is_dir() else final.unlink()
        t0 = time.monotonic()
        r = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=600,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
        seconds = time.monotonic() - t0
        out = r.stderr + "\n" + r.stdout
        wrote = "-"
        if final is not None and final.exists():
            wrote = ", ".join(sorted(x.name for x in final.iterdir()))[:60] if final.is_dir() else final.name
        first = message(out).replace("|", "\\|")
        print(f"| {name} | {r.returncode} ({seconds:.1f} s) | {first[:200]} | {wrote} |", flush=True)
        if a.keep:
            Path(a.keep).mkdir(parents=True, exist_ok=True)
            (Path(a.keep) / f"{i:02d}.txt").write_text(f"$ {' '.join(argv)}\nrc={r.returncode}\n{out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
