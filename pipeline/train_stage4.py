"""Rule `train_stage4` (one context step): extend the LLM's context with LoRA + MM-SP, merge, save.

Launches `train.cluster.cpu_processes` local processes (gloo) — the `local` launcher — each running
`longvila.train.stage4.run_stage4_step`; intermediate checkpoints live in --run-dir (not a rule output, so
Snakemake never deletes them; a rerun resumes from the newest complete one); the merged checkpoint in the
released layout is written to --out.

    python -m pipeline.train_stage4 --config results/resolve_config/config.yaml --step 0 \
        --init results/init_model/tiny --shards results/pack_shards/512 --run-dir results/runs/stage4/512 \
        --out results/train_stage4/512
"""

from __future__ import annotations

import os
import socket
import sys

from pipeline._stage import load, run_stage, stage_parser


def _worker(rank: int, world: int, port: int, config: str, overrides: list[str], args: dict) -> None:
    import torch.distributed as dist

    from longvila.config import load_config_file
    from longvila.parallel import ParallelDims
    from longvila.train.stage4 import run_stage4_step
    from longvila.utils.logging import init_logger

    init_logger(rank=rank)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    cfg = load_config_file(config, overrides)
    step = cfg.train.stage4[args["step"]]
    dims = ParallelDims(ulysses=step.ulysses, ring=step.ring, world_size=world).build()
    run_stage4_step(cfg, args["step"], args["init"], args["shards"], args["run_dir"], args["out"], dims,
                    stop_after=args["stop_after"])
    dist.barrier()                               # gloo can abort at exit (ENVIRONMENT.md 2.3): leave cleanly
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--step", type=int, required=True, help="index into train.stage4")
    parser.add_argument("--init", required=True, help="checkpoint to start from (released layout)")
    parser.add_argument("--shards", required=True, help="the context's pack_shards folder")
    parser.add_argument("--run-dir", required=True, help="run folder: checkpoints, metrics.jsonl (kept)")
    parser.add_argument("--out", required=True, help="merged checkpoint folder (written atomically)")
    parser.add_argument("--stop-after", type=int, default=None, help="stop after N steps (tests: preemption)")
    args = parser.parse_args(argv)

    def body() -> int:
        import torch.multiprocessing as mp

        from longvila.config_train import check_training

        cfg = load(args)
        check_training(cfg)
        if not 0 <= args.step < len(cfg.train.stage4):
            raise ValueError(f"--step {args.step}: train.stage4 has {len(cfg.train.stage4)} steps")
        if cfg.train.launcher != "local" or cfg.train.cluster.gpus_per_node:
            raise ValueError("pipeline.train_stage4 runs the local CPU launcher (train.launcher: local, "
                             "cluster.gpus_per_node: 0); the GPU / SLURM launchers are not built yet")
        world = cfg.train.cluster.cpu_processes
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        job = {"step": args.step, "init": args.init, "shards": args.shards, "run_dir": args.run_dir,
               "out": args.out, "stop_after": args.stop_after}
        ctx = mp.start_processes(_worker, args=(world, port, args.config, args.overrides, job), nprocs=world,
                                 join=False, start_method="spawn")
        while not ctx.join():
            pass
        return 0

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
