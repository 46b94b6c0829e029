"""Rule `train_stage5` (one frame count): long-video SFT of the whole model with MM-SP, full checkpoint.

Builds a `pipeline.launch.Job` whose target (`train_run`, below) runs `longvila.train.stage5.run_stage5` on
every rank, and launches it with `train.launcher` (local processes, or a SLURM job through submitit that this
command waits for). Intermediate checkpoints, metrics.jsonl, per-rank logs and plan.json live in --run-dir
(not a rule output: Snakemake never deletes them, and a rerun or requeued job resumes from the newest
complete checkpoint); the full checkpoint in the released layout is written to --out, and the run's loss
curve to --run-dir/loss_curve.png. `--print-plan [--json]` prints the job and runs nothing.

    python -m pipeline.train_stage5 --config results/resolve_config/config.yaml --run 0 \
        --init results/train_stage4/1k --data results/s2s_assemble/vila_train.json --media results/make_shot2story \
        --run-dir results/runs/stage5/8f --out results/train_stage5/8f
"""

from __future__ import annotations

from pipeline.common.stage import load, run_stage, stage_parser
from pipeline.common.train import add_run_args, run_training

TARGET = "pipeline.train_stage5:train_run"


def train_run(config: str, overrides: list[str], run: int, init: str, data: list[str], media: list[str], run_dir: str,
              out: str, stop_after: int | None = None) -> dict:
    """Launch target, on every rank (process group up): one stage-5 run over the whole world."""
    import torch.distributed as dist

    from longvila.config import load_config_file
    from longvila.parallel import ParallelDims
    from longvila.train.stage5 import run_stage5

    cfg = load_config_file(config, overrides)
    r = cfg.train.stage5[run]
    dims = ParallelDims(ulysses=r.ulysses, ring=r.ring, world_size=dist.get_world_size(),
                        layout=cfg.train.layout).build()
    result = run_stage5(cfg, run, init, data, media, run_dir, out, dims, stop_after=stop_after)
    return {"losses": result["losses"], "step": result["step"], "skipped": result["skipped"]}


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--run", type=int, required=True, help="index into train.stage5")
    parser.add_argument("--init", help="checkpoint to start from (the last stage-4 merge, released layout)")
    parser.add_argument("--data", nargs="+", help="VILA-format JSON of the training conversations (rule "
                        "s2s_assemble); several files = a data mixture")
    parser.add_argument("--media", nargs="+", help="folder the records' video paths are relative to, one per --data")
    add_run_args(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        from longvila.plan.check import check_training

        cfg = load(args)
        check_training(cfg)
        if not 0 <= args.run < len(cfg.train.stage5):
            raise ValueError(f"--run {args.run}: train.stage5 has {len(cfg.train.stage5)} runs")
        run = cfg.train.stage5[args.run]
        return run_training(args, cfg, name=f"stage5-{run.frames}f", target=TARGET, nodes=run.nodes,
                            paths=("init", "data", "media"), extra={"run": args.run},
                            curve=(f"stage5/{run.frames}f", f"stage 5, {run.frames} frames"))

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
