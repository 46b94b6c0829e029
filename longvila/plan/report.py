"""`longvila plan`: the splits of a model, a sequence length and a cluster, as a table or JSON.

    longvila plan --model qwen2-7b --seq-len 2097152 --gpus 256 --gpus-per-node 8 --gpu-mem 80
    longvila plan --model qwen2-7b --seq-len 1048576 --gpus 112 --gpus-per-node 14 --ulysses 14 --ring 1
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from longvila.plan.cost import Hardware, SplitPlan, all_splits, evaluate
from longvila.plan.memory import GIB, param_count
from longvila.shapes import SIZES, LLMShape, llm_shape

ALIASES = {"qwen2-1.5b": "qwen2-1.5b-384", "qwen2-7b": "qwen2-7b-384"}
JSON_VERSION = 1


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


def plan_json(plans: list[SplitPlan], *, model: str, shape: LLMShape, seq_len: int, hw: Hardware,
              zero: int) -> dict:
    """The stable JSON form (key `version`)."""
    def row(p: SplitPlan) -> dict:
        out = {"ulysses": p.ulysses, "ring": p.ring, "dp": p.dp, "fits": p.reason is None, "reason": p.reason}
        if p.memory is not None:
            out.update(memory_gib={k: round(v, 3) for k, v in p.memory.gib().items()},
                       comm_bytes={"ulysses": p.ulysses_bytes, "ring": p.ring_bytes, "zero": p.zero_bytes},
                       step_s={"compute": round(p.compute_s, 4), "exposed_comm": round(p.exposed_comm_s, 4),
                               "total": round(p.step_s, 4)}, tokens_per_s=round(p.tokens_per_s))
        return out

    best = next((p for p in plans if p.reason is None), None)
    return {"version": JSON_VERSION, "model": model, "params": param_count(shape), "seq_len": seq_len,
            "zero": zero, "hardware": asdict(hw), "recommended": None if best is None else row(best),
            "splits": [row(p) for p in plans]}


def format_table(plans: list[SplitPlan]) -> str:
    head = (f"{'U':>3} {'R':>4} {'DP':>4}  {'params':>7} {'grads':>6} {'optim':>6} {'activ':>7} {'logits':>6} "
            f"{'attn':>5} {'comm':>5} {'total':>7}  {'step s':>8} {'comm s':>7} {'tok/s':>9}  verdict")
    lines = [head, "-" * len(head)]
    for p in plans:
        if p.memory is None:
            lines.append(f"{p.ulysses:>3} {p.ring:>4} {p.dp:>4}  {'':>73}  {p.reason}")
            continue
        g = p.memory.gib()
        lines.append(f"{p.ulysses:>3} {p.ring:>4} {p.dp:>4}  {g['parameters']:>7.1f} {g['gradients']:>6.1f} "
                     f"{g['optimizer']:>6.1f} {g['activations']:>7.1f} {g['logits']:>6.1f} "
                     f"{g['attention_buffers']:>5.1f} {g['comm_buffers']:>5.1f} {g['total']:>7.1f}  "
                     f"{p.step_s:>8.2f} {p.exposed_comm_s:>7.2f} {p.tokens_per_s:>9,.0f}  {p.reason or 'fits'}")
    return "\n".join(lines)


def _hardware(args, gpus: int, gpus_per_node: int) -> Hardware:
    return Hardware(gpus=gpus, gpus_per_node=gpus_per_node, gpu_mem_gib=args.gpu_mem, tflops=args.tflops,
                    mfu=args.mfu, intra_gbps=args.intra_bw, inter_gbps=args.inter_bw)


def run(args) -> int:
    """The CLI body (arguments in longvila.cli): 0, or 1 when the asked split is invalid or does not fit."""
    if args.config is not None:
        return run_config(args)
    missing = [f"--{k.replace('_', '-')}" for k in ("model", "seq_len", "gpus") if getattr(args, k) is None]
    if missing:
        raise ValueError(f"give --config CFG, or {', '.join(missing)} (a one-off question)")
    shape, model = resolve_model(args.model)
    hw = _hardware(args, args.gpus, args.gpus_per_node)
    if (args.ulysses is None) != (args.ring is None):
        raise ValueError("give both --ulysses and --ring, or neither (then every split is listed)")
    if args.ulysses is not None:
        plans = [evaluate(shape, model, args.seq_len, args.ulysses, args.ring, hw, args.zero)]
    else:
        plans = all_splits(shape, model, args.seq_len, hw, args.zero)
    too_big = sum(p.reason is not None and p.memory is not None for p in plans)
    shown = plans if args.all or args.ulysses is not None else [
        p for p in plans if p.reason is None or p.memory is None]
    if args.json:
        print(json.dumps(plan_json(shown, model=model, shape=shape, seq_len=args.seq_len, hw=hw, zero=args.zero),
                         indent=1))
    else:
        print(f"{model}: {param_count(shape) / 1e9:.2f} B parameters, {shape.heads}/{shape.kv_heads} heads; "
              f"{args.seq_len:,} tokens per sample; {hw.gpus} GPUs ({hw.gpus_per_node} per node, "
              f"{hw.gpu_mem_gib:g} GiB); ZeRO-{args.zero}; memory per GPU in GiB, step time estimated")
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
            print("no split fits: more GPUs, ZeRO-3, or a shorter sequence")
    return 0 if any(p.reason is None for p in plans) else 1


def config_stages(cfg, only: str | None = None) -> list[dict]:
    """The training runs of a config as planner questions: name, seq_len, gpus, U, R, ZeRO stage, LoRA."""
    t = cfg.train
    if not t.cluster.gpus_per_node:
        raise ValueError("this config trains on CPU processes (train.cluster.gpus_per_node: 0); the planner models "
                         "GPUs: plan the paper config (workflow/configs/paper.yaml) or ask with --model/--gpus")
    seq = {c.name: c.seq_len for c in cfg.pack.contexts}
    stages = [dict(name=f"stage4/{s.context}", seq_len=seq[s.context], nodes=s.nodes, ulysses=s.ulysses, ring=s.ring,
                   zero=max(2, s.zero_stage), lora=True) for s in t.stage4]
    stages += [dict(name=f"stage5/{r.frames}f", seq_len=r.max_length, nodes=r.nodes, ulysses=r.ulysses, ring=r.ring,
                    zero=max(2, r.zero_stage), lora=False) for r in t.stage5]
    if only is not None:
        stages = [s for s in stages if s["name"] == only]
        if not stages:
            raise ValueError(f"--stage {only!r} is not in this config; its stages: "
                             f"{', '.join(s['name'] for s in config_stages(cfg))}")
    return stages


def run_config(args) -> int:
    """`longvila plan --config CFG [--stage NAME]`: each run's configured split, and the best one on its GPUs."""
    from longvila.config import load_config_file

    cfg = load_config_file(args.config)
    shape, model = resolve_model(cfg.model.size)
    out, ok = [], True
    for st in config_stages(cfg, args.stage):
        per_node = cfg.train.cluster.gpus_per_node
        hw = _hardware(args, st["nodes"] * per_node, per_node)
        mine = evaluate(shape, model, st["seq_len"], st["ulysses"], st["ring"], hw, st["zero"], cfg.train.layout,
                        st["lora"])
        best = next((p for p in all_splits(shape, model, st["seq_len"], hw, st["zero"], cfg.train.layout, st["lora"])
                     if p.reason is None), None)
        ok = ok and mine.reason is None
        out.append((st, hw, mine, best))
    if args.json:
        print(json.dumps({"version": JSON_VERSION, "config": str(args.config), "model": model, "stages": [
            {"stage": st["name"], **plan_json([mine] + ([best] if best else []), model=model, shape=shape,
                                              seq_len=st["seq_len"], hw=hw, zero=st["zero"])}
            for st, hw, mine, best in out]}, indent=1))
        return 0 if ok else 1
    for st, hw, mine, best in out:
        print(f"{st['name']}: {st['seq_len']:,} tokens on {hw.gpus} GPUs, ZeRO-{st['zero']}"
              f"{', LoRA' if st['lora'] else ''}")
        print(format_table([mine] + ([best] if best and best != mine else [])))
        print(f"  configured U={mine.ulysses} R={mine.ring}: {mine.reason or 'fits'}"
              + (f"; best U={best.ulysses} R={best.ring} DP={best.dp}" if best else
                 "; no split fits on these GPUs without gradient checkpointing (more nodes, or checkpointing)")
              + "\n")
    return 0 if ok else 1
