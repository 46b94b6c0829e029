"""Rule `eval_needle`: video needle-in-a-haystack (V-NIAH) grid of one stage-5 checkpoint, with SP prefill.

Launches `eval.needle.ulysses x ring` sequence-parallel ranks per DP group over the whole launcher world
(train.launcher / train.cluster, like training: local processes or a SLURM job through submitit); DP groups
take cells round-robin. Finished cells live in --run-dir/cells (not a rule output: a rerun or requeued job
skips them; a changed model, haystack or needle set moves them to stale-*/). The haystack embeddings are
cached in --cache-dir per (model, video, sampling). The results are copied to --out atomically:
    all_accuracies.json  [{"Num. Frame", "Frame Depth", "Score"}]   (the original's schema)
    avg_accuracy.txt     "Average Accuracy: x"
    heatmap.png          frames x depth, 0-1 scale
    summary.json         chance, accuracy per frame count and at the trained length, RoPE settings, SP split
    cells/               one JSON per cell with every needle's prediction

    python -m pipeline.eval_needle --config results/resolve_config/config.yaml --model results/train_stage5/8f \
        --haystack results/make_haystack/haystack.mp4 --needles results/make_needles --trained-frames 8 \
        --run-dir results/runs/eval_needle/8f --cache-dir results/cache/needle --out results/eval_needle/8f
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline.common.stage import load, run_stage, stage_parser

TARGET = "pipeline.eval_needle:needle_run"
OUTPUTS = ("all_accuracies.json", "avg_accuracy.txt", "heatmap.png", "summary.json")


def needle_run(config: str, overrides: list[str], model: str, haystack: str, needles: str, run_dir: str,
               cache_dir: str, trained_frames: int | None) -> None:
    """Launch target, on every rank (process group up)."""
    import torch.distributed as dist

    from longvila.config import load_config_file
    from longvila.eval.haystack import haystack_key
    from longvila.eval.needle import frame_grid
    from longvila.eval.vniah import evaluate_needle
    from longvila.parallel import ParallelDims
    from longvila.train.checkpoint import claim_run_dir
    from longvila.utils.io import file_stamps

    cfg = load_config_file(config, overrides)
    n = cfg.eval.needle
    dims = ParallelDims(ulysses=n.ulysses, ring=n.ring, world_size=dist.get_world_size(),
                        layout=cfg.train.layout).build()
    frames = frame_grid(n.max_frames, n.interval)
    claim_run_dir(run_dir, {"haystack": haystack_key(model, haystack, max(frames)), "needles": file_stamps(needles),
                            "depths": n.depths}, dist.get_rank(), state=("cells",))
    evaluate_needle(model, haystack, needles, run_dir, frames, n.depths, dims, cache_dir=cache_dir,
                    trained_frames=trained_frames)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--model", required=True, help="checkpoint folder (released layout)")
    parser.add_argument("--haystack", required=True, help="haystack video (>= eval.needle.max_frames seconds)")
    parser.add_argument("--needles", required=True, help="folder with needles.json and the needle images")
    parser.add_argument("--trained-frames", type=int, default=None, help="frames the model was trained on")
    parser.add_argument("--run-dir", required=True, help="cells, logs and run.json (kept between runs)")
    parser.add_argument("--cache-dir", required=True, help="haystack embedding cache")
    parser.add_argument("--out", required=True, help="output folder (written atomically)")
    args = parser.parse_args(argv)

    def body() -> int:
        from longvila.parallel import ParallelDims
        from longvila.utils.io import atomic_dir
        from pipeline.launch import Job, launch

        cfg = load(args)
        n = cfg.eval.needle
        job = Job(name=f"eval-needle-{Path(args.out).name}", target=TARGET, run_dir=Path(args.run_dir).absolute(),
                  kwargs={"config": os.path.abspath(args.config), "overrides": list(args.overrides),
                          **{k: os.path.abspath(getattr(args, k)) for k in
                             ("model", "haystack", "needles", "run_dir", "cache_dir")},
                          "trained_frames": args.trained_frames})
        world = cfg.train.cluster.cpu_processes if not cfg.train.cluster.gpus_per_node else \
            cfg.train.cluster.gpus_per_node
        ParallelDims(ulysses=n.ulysses, ring=n.ring, world_size=world)   # U x R must divide the world: names the fix
        code = launch(job, cfg)
        if code:
            return code
        run_dir = Path(args.run_dir)
        with atomic_dir(args.out) as tmp:
            for name in OUTPUTS:
                shutil.copy2(run_dir / name, tmp / name)
            shutil.copytree(run_dir / "cells", tmp / "cells")
        return 0

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
