"""Rule `warm_start`: teach the initial model to retrieve pass keys at a short context, before stage 4.

The tiny demo's stand-in for a pretrained LLM (`model.warm_start`, longvila/config/warm_start.py): sets the
RoPE base to `rope_theta`, trains the LLM one process on digit copies and passkey documents made from the
corpus's Shakespeare text (`longvila.train.warm_start`), and writes the model in the released layout (vision
tower, projector and tokenizer carried over) to --out, atomically, with summary.json (steps, seconds, losses). One line per step goes to
<run-dir>/metrics.jsonl (the run report's loss curve), written when the run ends. A killed run starts over
(a couple of minutes on 2 cores).

    python -m pipeline.warm_start --config results/resolve_config/config.yaml --init results/init_model/tiny \
        --run-dir results/runs/warm_start/tiny --out results/warm_start/tiny
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pipeline.common.stage import load, run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--init", required=True, help="the starting checkpoint (rule init_model)")
    parser.add_argument("--run-dir", required=True, help="folder for metrics.jsonl (the run report reads it)")
    parser.add_argument("--out", required=True, help="output checkpoint folder (written atomically)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: model.warm_start."
                        "threads; 0 = the cores this process may use). The same count gives the same model")
    args = parser.parse_args(argv)

    def body() -> int:
        import torch
        from transformers import AutoTokenizer

        from longvila.data.corpus import load_text_pools
        from longvila.model import LongVILAForCausalLM
        from longvila.train.rope import set_rope_base
        from longvila.train.warm_start import RetrievalRows, train_warm_start
        from longvila.utils.io import atomic_dir, write_text_atomic
        from longvila.utils.logging import get_logger

        cfg = load(args)
        warm = cfg.model.warm_start
        if warm is None:
            raise ValueError("model.warm_start is null: set it (see config.yaml) or start stage 4 from the init model")
        threads = args.threads if args.threads is not None else warm.threads
        torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
        model = LongVILAForCausalLM.from_pretrained(args.init)
        saved_dtype = next(model.parameters()).dtype
        model.float()
        set_rope_base(model, warm.rope_theta, warm.max_positions)
        tokenizer = AutoTokenizer.from_pretrained(Path(args.init) / "llm")
        rows = RetrievalRows(tokenizer, load_text_pools()["plays"], warm)
        t0 = time.perf_counter()
        history = train_warm_start(model.llm, rows, warm)
        seconds = time.perf_counter() - t0
        model.to(saved_dtype)
        with atomic_dir(args.out) as tmp:
            model.save_pretrained(tmp, tokenizer=tokenizer)
            (tmp / "summary.json").write_text(json.dumps(
                {"steps": len(history), "seconds": round(seconds, 1), "first_loss": history[0]["loss"],
                 "last_loss": history[-1]["loss"], "vocab": len(rows.vocab), "rope_theta": warm.rope_theta,
                 "passkey_lengths": warm.passkey_lengths}, indent=1))
        Path(args.run_dir).mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(args.run_dir) / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        get_logger().info(f"warm start: {len(history)} steps in {seconds:.0f} s, loss {history[0]['loss']:.3f} -> "
                          f"{history[-1]['loss']:.3f}, softmax over {len(rows.vocab):,} tokens -> {args.out}")
        return 0

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
