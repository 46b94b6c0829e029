"""Rule `train_stage4` (one context step): extend the LLM's context with LoRA + MM-SP, merge, save.

Builds a `pipeline.launch.Job` whose target (`train_step`, below) runs `longvila.train.stage4.run_stage4_step`
on every rank, and launches it with `train.launcher`: local processes (gloo on CPU, NCCL on GPUs) or a
SLURM job through submitit that this command waits for. Intermediate checkpoints live in --run-dir (not a
rule output, so Snakemake never deletes them; a rerun or a requeued job resumes from the newest complete
one); the merged checkpoint in the released layout is written to --out, the loss curve to
--run-dir/loss_curve.png. `--print-plan [--json]` prints the
job (nodes, tasks, world, SP, DP, global batch, and the sbatch script for submitit) and runs nothing.

    python -m pipeline.train_stage4 --config results/resolve_config/config.yaml --step 0 \
        --init results/init_model/tiny --shards results/pack_shards/512 --run-dir results/runs/stage4/512 \
        --out results/train_stage4/512
    python -m pipeline.train_stage4 --config config.yaml --step 0 --print-plan
"""

from __future__ import annotations

from pipeline.common.stage import load, run_stage, stage_parser
from pipeline.common.train import add_run_args, run_training

TARGET = "pipeline.train_stage4:train_step"


def train_step(config: str, overrides: list[str], step: int, init: str, shards: str, run_dir: str, out: str,
               stop_after: int | None = None) -> dict:
    """Launch target, on every rank (process group up): one stage-4 step over the whole world."""
    import torch.distributed as dist

    from longvila.config import load_config_file
    from longvila.parallel import ParallelDims
    from longvila.train.stage4 import run_stage4_step

    cfg = load_config_file(config, overrides)
    s = cfg.train.stage4[step]
    dims = ParallelDims(ulysses=s.ulysses, ring=s.ring, world_size=dist.get_world_size(),
                        layout=cfg.train.layout).build()
    return run_stage4_step(cfg, step, init, shards, run_dir, out, dims, stop_after=stop_after)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--step", type=int, required=True, help="index into train.stage4")
    parser.add_argument("--init", help="checkpoint to start from (released layout)")
    parser.add_argument("--shards", help="the context's pack_shards folder")
    add_run_args(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        from longvila.plan.check import check_training

        cfg = load(args)
        check_training(cfg)
        if not 0 <= args.step < len(cfg.train.stage4):
            raise ValueError(f"--step {args.step}: train.stage4 has {len(cfg.train.stage4)} steps")
        step = cfg.train.stage4[args.step]
        return run_training(args, cfg, name=f"stage4-{step.context}", target=TARGET, nodes=step.nodes,
                            paths=("init", "shards"), extra={"step": args.step},
                            curve=(f"stage4/{step.context}", f"stage 4, context {step.context}"))

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
