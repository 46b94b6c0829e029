"""`longvila plan`: the splits of a model, a sequence length and a cluster, as a table or JSON.

    longvila plan --model qwen2-7b --seq-len 2097152 --gpus 256 --gpus-per-node 8 --gpu-mem 80
    longvila plan --model qwen2-7b --seq-len 1048576 --gpus 112 --gpus-per-node 14 --ulysses 14 --ring 1
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from longvila.plan.cost import Hardware, SplitPlan, all_splits, evaluate, ring_vs_2d
from longvila.plan.config import STAGE5_SUPERVISED_TOKENS
from longvila.plan.memory import GIB, Recipe, param_count
from longvila.shapes import SIZES, LLMShape, VisionShape, llm_shape, vision_shape

ALIASES = {"qwen2-1.5b": "qwen2-1.5b-384", "qwen2-7b": "qwen2-7b-384"}
JSON_VERSION = 3
"""3: `step_s` has `ring_overhead` and `terms`; `ring_vs_2d` (issue 21). 2: the recipe's `batch`."""


def resolve_model(arg: str) -> tuple[LLMShape, str]:
    """A size name (or alias) or a checkpoint folder (its config.json or llm/config.json)."""
    size = ALIASES.get(arg, arg)
    if size in SIZES:
        return llm_shape(size), size
    folder = Path(arg)
    for path in (folder / "llm" / "config.json", folder / "config.json"):
        if path.is_file():
            c = json.loads(path.read_text())
            try:
                return LLMShape.from_qwen2(c if "num_hidden_layers" in c else c.get("llm_cfg", c)), str(folder)
            except KeyError as e:
                raise ValueError(f"{path} has no {e}: point --model at a Qwen2 checkpoint folder") from e
    raise ValueError(f"--model {arg!r}: not a known size ({', '.join([*ALIASES, *SIZES])}) nor a folder with "
                     "config.json or llm/config.json")


def resolve_vision(arg: str, llm_hidden: int) -> VisionShape:
    """The vision tower + projector of a size name or a checkpoint folder (vision_tower/config.json)."""
    size = ALIASES.get(arg, arg)
    if size in SIZES:
        return vision_shape(size)
    path = Path(arg) / "vision_tower" / "config.json"
    if not path.is_file():
        raise ValueError(f"--frames needs the vision tower's shape: {path} does not exist")
    c = json.loads(path.read_text())
    return VisionShape.from_siglip(c.get("vision_config", c), llm_hidden)


def plan_json(plans: list[SplitPlan], *, model: str, shape: LLMShape, seq_len: int, hw: Hardware,
              recipe: Recipe, recommended: SplitPlan | None = None, compared: list[SplitPlan] | None = None) -> dict:
    """The stable JSON form (key `version`); `ring_vs_2d` compares among `compared` (default: `plans`)."""
    def row(p: SplitPlan) -> dict:
        out = {"ulysses": p.ulysses, "ring": p.ring, "dp": p.dp, "fits": p.reason is None, "reason": p.reason}
        if p.memory is not None:
            out.update(memory_gib={k: round(v, 3) for k, v in p.memory.gib().items()},
                       comm_bytes={"ulysses": p.ulysses_bytes, "ring": p.ring_bytes, "zero": p.zero_bytes,
                                   "intra_node": p.intra_bytes, "inter_node": p.inter_bytes},
                       step_s={"compute": round(p.compute_s, 4), "ring_overhead": round(p.ring_overhead_s, 4),
                               "exposed_comm": round(p.exposed_comm_s, 4), "total": round(p.step_s, 4),
                               "terms": {k: round(v, 4) for k, v in p.terms.items()}},
                       tokens_per_s=round(p.tokens_per_s))
        return out

    best = recommended or next((p for p in plans if p.reason is None), None)
    recipe_json = {k: v for k, v in asdict(recipe).items() if k != "vision"}
    versus = ring_vs_2d(plans if compared is None else compared)
    return {"version": JSON_VERSION, "model": model, "params": param_count(shape), "seq_len": seq_len,
            "recipe": recipe_json, "hardware": asdict(hw), "recommended": None if best is None else row(best),
            "ring_vs_2d": None if versus is None else {"ring": row(versus[0]), "two_d": row(versus[1]),
                                                        "ratio": round(versus[2], 3)},
            "splits": [row(p) for p in plans]}


def ring_line(plans: list[SplitPlan]) -> str | None:
    """'pure ring (1 x 64): 18.5 s per step, 1.2x the best 2D split (8 x 8: 16.0 s per step)', or None when the
    question has no fitting 2D split or no pure ring over as many GPUs."""
    versus = ring_vs_2d(plans)
    if versus is None:
        return None
    ring, two_d, ratio = versus
    dp = f", DP {ring.dp}" if ring.dp > 1 else ""
    return (f"pure ring (1 x {ring.ring}{dp}): {ring.step_s:.1f} s per step, {ratio:.2f}x the best 2D split "
            f"({two_d.ulysses} x {two_d.ring}: {two_d.step_s:.1f} s per step)"
            + (f"; the ring does not fit: {ring.reason}" if ring.reason else ""))


def format_table(plans: list[SplitPlan]) -> str:
    head = (f"{'U':>3} {'R':>4} {'DP':>4}  {'params':>7} {'grads':>6} {'optim':>6} {'activ':>7} {'logits':>6} "
            f"{'attn':>5} {'comm':>5} {'bucket':>6} {'vision':>6} {'rt':>4} {'peak':>7}  {'intra GB':>8} "
            f"{'inter GB':>8} {'step s':>8} {'comm s':>7} {'tok/s':>9}  verdict")
    lines = [head, "-" * len(head)]
    for p in plans:
        if p.memory is None:
            lines.append(f"{p.ulysses:>3} {p.ring:>4} {p.dp:>4}  {'':>110}  {p.reason}")
            continue
        g = p.memory.gib()
        lines.append(f"{p.ulysses:>3} {p.ring:>4} {p.dp:>4}  {g['parameters']:>7.1f} {g['gradients']:>6.1f} "
                     f"{g['optimizer']:>6.1f} {g['activations']:>7.1f} {g['logits']:>6.1f} "
                     f"{g['attention_buffers']:>5.1f} {g['comm_buffers']:>5.1f} {g['grad_buckets']:>6.1f} "
                     f"{g['vision']:>6.1f} {g['runtime'] + g['allocator_slack']:>4.1f} {g['total']:>7.1f}  "
                     f"{p.intra_bytes / 1e9:>8.1f} {p.inter_bytes / 1e9:>8.1f} {p.step_s:>8.2f} "
                     f"{p.exposed_comm_s:>7.2f} "
                     f"{p.tokens_per_s:>9,.0f}  {p.reason or 'fits'}")
    return "\n".join(lines)


_HW_FLAGS = {"gpu_mem": "gpu_mem_gib", "tflops": "tflops", "mfu": "mfu", "intra_bw": "intra_gbps",
             "inter_bw": "inter_gbps", "nics_per_node": "nics_per_node", "ring_overlap": "ring_overlap",
             "ring_link_efficiency": "ring_link_efficiency"}


def _hardware(args, base: Hardware) -> Hardware:
    """`base` with the hardware flags the user gave."""
    return replace(base, **{f: getattr(args, a) for a, f in _HW_FLAGS.items() if getattr(args, a) is not None})


def _recipe_line(r: Recipe) -> str:
    engine = "torch engine" if r.zero == 0 else f"ZeRO-{r.zero}"
    extra = [x for x, on in (("LoRA", r.lora), (f"{r.frames} frames", r.frames),
                             ("gradient checkpointing", r.checkpointing)) if on]
    return ", ".join([engine, r.precision, *extra])


def run(args) -> int:
    """The CLI body (arguments in longvila.cli): 0, or 1 when the asked split is invalid or does not fit."""
    if args.config is not None:
        asked = [f for f, v in (("--model", args.model), ("--seq-len", args.seq_len), ("--ulysses", args.ulysses),
                                ("--ring", args.ring), ("--zero", args.zero), ("--precision", args.precision),
                                ("--lora", args.lora), ("--checkpointing", args.checkpointing),
                                ("--frames", args.frames), ("--batch", args.batch)) if v not in (None, False)]
        if asked:
            raise ValueError(f"{', '.join(asked)}: the config sets these for each run; with --config give only "
                             "--stage, --all, --json and the hardware flags (--gpus, --gpus-per-node, --gpu-mem, "
                             "--tflops, --mfu, --intra-bw, --inter-bw, --nics-per-node, --ring-overlap, "
                             "--ring-link-efficiency)")
        return run_config(args)
    if args.stage is not None:
        raise ValueError("--stage needs --config")
    missing = [f"--{k.replace('_', '-')}" for k in ("model", "seq_len", "gpus") if getattr(args, k) is None]
    if missing:
        raise ValueError(f"give --config CFG, or {', '.join(missing)} (a one-off question)")
    shape, model = resolve_model(args.model)
    try:
        vision = resolve_vision(args.model, shape.hidden)           # the VLM holds its tower (frozen unless frames)
    except ValueError:
        if args.frames:
            raise
        vision = None                                                # an LLM-only checkpoint folder
    recipe = Recipe(zero=3 if args.zero is None else args.zero, precision=args.precision or "bf16",
                    lora=args.lora, frames=args.frames or 0, checkpointing=args.checkpointing, vision=vision,
                    batch=args.batch or 1, logit_tokens=STAGE5_SUPERVISED_TOKENS if args.frames else None)
    per_node = 8 if args.gpus_per_node is None else args.gpus_per_node
    hw = _hardware(args, Hardware(gpus=args.gpus, gpus_per_node=per_node))
    if (args.ulysses is None) != (args.ring is None):
        raise ValueError("give both --ulysses and --ring, or neither (then every split is listed)")
    if args.ulysses is not None:
        plans = [evaluate(shape, model, args.seq_len, args.ulysses, args.ring, hw, recipe)]
    else:
        plans = all_splits(shape, model, args.seq_len, hw, recipe)
    too_big = sum(p.reason is not None and p.memory is not None for p in plans)
    shown = plans if args.all or args.ulysses is not None else [
        p for p in plans if p.reason is None or p.memory is None]
    if args.json:
        print(json.dumps(plan_json(shown, model=model, shape=shape, seq_len=args.seq_len, hw=hw, recipe=recipe),
                         indent=1))
    else:
        print(f"{model}: {param_count(shape) / 1e9:.2f} B parameters, {shape.heads}/{shape.kv_heads} heads; "
              f"{args.seq_len:,} tokens per sample; {hw.gpus} GPUs ({hw.gpus_per_node} per node, "
              f"{hw.gpu_mem_gib:g} GiB); {_recipe_line(recipe)}; memory per GPU in GiB (rt: runtime + allocator "
              "slack), step time estimated")
        print(format_table(shown))
        if too_big and shown is not plans:
            print(f"({too_big} more splits do not fit in {hw.gpu_mem_gib:g} GiB; --all lists them)")
        best = next((p for p in plans if p.reason is None), None)
        if args.ulysses is not None:
            print(plans[0].reason or f"U={args.ulysses} R={args.ring}: fits")
        elif best:
            print(f"recommended: U={best.ulysses} R={best.ring} DP={best.dp} ({best.memory.total / GIB:.1f} GiB "
                  f"per GPU, ~{best.step_s:.2f} s per step, ~{best.tokens_per_s:,.0f} tokens/s in all)")
        else:
            print("no split fits: more GPUs, ZeRO-3, gradient checkpointing, or a shorter sequence")
        if args.ulysses is None and (line := ring_line(plans)):
            print(line)
    return 0 if any(p.reason is None for p in plans) else 1


def run_config(args) -> int:
    """`longvila plan --config CFG [--stage NAME]`: each run's configured split and the best one on its
    hardware (GPUs, or CPU processes sharing the node), as the training config check sees them."""
    from longvila.config import load_config_file
    from longvila.plan.config import hardware, plan_run, run_questions

    cfg = load_config_file(args.config)
    shape, model = resolve_model(cfg.model.size)
    questions = run_questions(cfg)
    if args.stage is not None:
        questions = [q for q in questions if q.name == args.stage]
        if not questions:
            raise ValueError(f"--stage {args.stage!r} is not in this config; its stages: "
                             f"{', '.join(q.name for q in run_questions(cfg))}")
    out, ok = [], True
    for q in questions:
        hw = _hardware(args, hardware(cfg, q.nodes))
        if args.gpus is not None or args.gpus_per_node is not None:    # what-if: the same run on other GPUs
            per_node = args.gpus_per_node or hw.gpus_per_node
            hw = replace(hw, gpus=args.gpus or q.nodes * per_node, gpus_per_node=per_node)
        _, mine = plan_run(cfg, q, hw)
        splits = all_splits(shape, model, q.seq_len, hw, q.recipe, cfg.train.layout)
        best = next((p for p in splits if p.reason is None), None)
        ok = ok and mine.reason is None
        listed = [mine] + [p for p in (splits if args.all else [best] if best else []) if p != mine]
        out.append((q, hw, mine, best, listed, splits))
    if args.json:
        print(json.dumps({"version": JSON_VERSION, "config": str(args.config), "model": model, "stages": [
            {"stage": q.name, **plan_json(listed, model=model, shape=shape, seq_len=q.seq_len, hw=hw,
                                          recipe=q.recipe, recommended=best, compared=splits)}
            for q, hw, mine, best, listed, splits in out]}, indent=1))
        return 0 if ok else 1
    unit = "GPUs" if cfg.train.cluster.gpus_per_node else "CPU processes"
    for q, hw, mine, best, listed, splits in out:
        print(f"{q.name}: {q.seq_len:,} tokens on {hw.gpus} {unit} ({hw.gpu_mem_gib:.1f} GiB each), "
              f"{_recipe_line(q.recipe)}; the configured split first")
        print(format_table(listed))
        print(f"  configured U={mine.ulysses} R={mine.ring}: {mine.reason or 'fits'}"
              + (f"; best U={best.ulysses} R={best.ring} DP={best.dp}" if best else
                 "; no split fits on this hardware (more nodes, or gradient checkpointing)"))
        if line := ring_line(splits):
            print(f"  {line}")
        print()
    return 0 if ok else 1
