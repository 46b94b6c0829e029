"""Rules `eval_passkey` / `eval_passkey_warm`: passkey retrieval of a stage-4 checkpoint (or of the warm start)
at its context length and the previous one.

Reads the held-out passkey documents (rule make_corpus: passkeys.jsonl) and evaluates, at every depth, the
two longest of `corpus.passkey.lengths` that fit the step's context (its own length and the one before; for
the warm start, --length: the longest it trained on) and,
with --next-context, the longest that fits the next step's context: the value before that step extends the
context, which the report sets beside the value after it. Writes
    <out>/passkey.json   accuracy, the (length x depth) grid, every record's output, rope_theta, max positions
    <out>/heatmap.png    accuracy per length and depth

    python -m pipeline.eval_passkey --config results/resolve_config/config.yaml --context 512 \
        --model results/train_stage4/512 --passkeys results/make_corpus/passkeys.jsonl --out results/eval_passkey/512
"""

from __future__ import annotations

import json

from pipeline.common.stage import load, run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--context", help="context name of the stage-4 step (pack.contexts)")
    which.add_argument("--length", type=int, help="the model's trained length in tokens (the warm start's longest "
                       "passkey length), instead of a stage-4 context")
    parser.add_argument("--model", required=True, help="the step's merged checkpoint (released layout)")
    parser.add_argument("--passkeys", required=True, help="passkeys.jsonl (held-out passkey documents)")
    parser.add_argument("--next-context", help="the next stage-4 step's context: also evaluate its length "
                        "(the 'before' of that extension)")
    parser.add_argument("--out", required=True, help="output folder (written atomically)")
    args = parser.parse_args(argv)

    def body() -> int:
        from transformers import AutoTokenizer

        from longvila.eval.passkey import evaluate_passkeys, heatmap, load_passkeys
        from longvila.model import LongVILAForCausalLM
        from longvila.utils.io import atomic_dir
        from longvila.utils.logging import get_logger

        cfg = load(args)
        seq = {c.name: c.seq_len for c in cfg.pack.contexts}
        for name in (args.context, args.next_context):
            if name is not None and name not in seq:
                raise ValueError(f"context {name!r} is not in pack.contexts {sorted(seq)}")
        limit = seq[args.context] if args.context is not None else args.length
        fits = sorted(n for n in cfg.corpus.passkey.lengths if n <= limit)
        if not fits:
            raise ValueError(f"no corpus.passkey.lengths {cfg.corpus.passkey.lengths} fit {limit} tokens "
                             f"({args.context or '--length'}); add a shorter length")
        lengths = fits[-2:]
        if args.next_context is not None:
            ahead = [n for n in cfg.corpus.passkey.lengths if fits[-1] < n <= seq[args.next_context]]
            lengths += [max(ahead)] if ahead else []
        records = load_passkeys(args.passkeys, lengths)
        if not records:
            raise ValueError(f"{args.passkeys} has no records of lengths {lengths}; rebuild the corpus (make_corpus)")
        model = LongVILAForCausalLM.from_pretrained(args.model).eval()
        tokenizer = AutoTokenizer.from_pretrained(f"{args.model}/llm")
        result = evaluate_passkeys(model, tokenizer, records, progress=True)
        llm_cfg = model.llm.config
        rope = dict(getattr(llm_cfg, "rope_parameters", None) or {})
        result.update(context=args.context or "warm start", next_context=args.next_context, own_length=fits[-1],
                      lengths=lengths, rope_theta=rope.get("rope_theta"),
                      rope_scaling=rope.get("rope_type", "default"),
                      max_position_embeddings=llm_cfg.max_position_embeddings)
        with atomic_dir(args.out) as tmp:
            (tmp / "passkey.json").write_text(json.dumps(result, indent=1))
            title = f"stage 4 ({args.context})" if args.context else f"the warm start ({args.length} tokens)"
            heatmap(result["grid"], tmp / "heatmap.png", title=f"passkey retrieval after {title}")
        get_logger().info(f"passkey {result['context']}: accuracy {result['accuracy']:.3f} over {len(records)} records, "
                          f"lengths {lengths}; {args.out}/heatmap.png")
        return 0

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
