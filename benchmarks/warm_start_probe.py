"""Can the random tiny Qwen2 learn to retrieve pass keys cheaply? A probe for issue 22's warm start.

One process, no DAG: trains the tiny model (`longvila.shapes.SIZES["tiny"]`, random init) through a sequence of
phases and prints, every `--every` steps, the training loss and for held-out passkey documents of each
`--eval-len` (made by `make_passkey` from the corpus's Shakespeare pool, as rule make_corpus makes them):
greedy-equivalent accuracy over the full vocabulary (all of " " + 5 key digits are the argmax after the prompt)
and the digits' cross-entropy (chance: ln 10 = 2.30). Also "copy": the second-half loss of held-out
" d1..d12 d1..d12" digit rows (full vocabulary). `--copy-gap` puts pool text between a copy row's two halves.

Rows are single documents (padded, pads not supervised): packing several per row without document masking
puts earlier documents' digits in the way, and copying did not form that way (docs/LOG.md 2026-12-07).
Row kinds: "copy" = " " + 5-12 random digits, twice (the copy has no fixed offset, so only a content-based
induction circuit can predict it); "passkey" = one passkey document of a length drawn from `--pk-len`.
The loss normalises over the tokens the pool, the passkey template and the digits use (~20.6k of 151,648;
~5x cheaper a step); rows outside it never get gradient. A phase is `STEPS:LR:COPY_SHARE:ROWS[:cos]` (rows per
step; `cos`: the LR decays to 0 over the phase, else it is held after a 10-step warm-up).

`--loss answer` supervises only the answers (a copy's second half, the key after the passkey question) and
evaluates the output layer only there: this is what formed retrieval at a distance (docs/LOG.md, session 13) and
what rule warm_start (longvila/train/warm_start.py) does; `both` adds the mean over every token.

    python benchmarks/warm_start_probe.py --loss answer --copy-gap 64 --phase 900:3e-3:0.5:32 --save /tmp/ws.pt
    python benchmarks/warm_start_probe.py --load /tmp/ws.pt --theta 1e5 --pk-len 512 --phase 100:3e-4:0.0:4

Load: one process, `--threads` torch threads (1 by default); steps take ~0.3 s (copy rows) to ~0.45 s
(128-token passkey rows) with two probes sharing 2 cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F



def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phase", action="append", required=True,
                   help="STEPS:LR:COPY_SHARE:ROWS[:cos] (repeatable, run in order)")
    p.add_argument("--copy-len", type=int, nargs=2, default=[5, 12], help="digits in a copy row, min and max")
    p.add_argument("--copy-gap", type=int, default=0, help="up to this many tokens of pool text between the copies")
    p.add_argument("--pk-len", type=int, nargs="+", default=[64, 128], help="passkey document lengths (tokens)")
    p.add_argument("--eval-len", type=int, nargs="+", default=[64, 128, 512])
    p.add_argument("--theta", type=float, default=1e4, help="RoPE base of the probe's model")
    p.add_argument("--layers", type=int, default=None, help="decoder layers (default: the tiny size's 2)")
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--eval-reps", type=int, default=2, help="held-out documents per length and depth")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--load", help="state_dict to start from (a --save of an earlier probe)")
    p.add_argument("--save", help="write the final state_dict here")
    p.add_argument("--loss", choices=("all", "answer", "both"), default="all",
                   help="all: every token; answer: only the answers (a copy row's second half, a passkey document's "
                        "key after the question; logits only there, so a step costs a fraction); both: the mean "
                        "over all tokens plus the mean over the answers")
    return p.parse_args()


def main() -> None:
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from longvila.config import WarmStartConfig
    from longvila.data.corpus import load_text_pools, make_passkey
    from longvila.data.tokenizer import resolve_tokenizer_dir
    from longvila.shapes import SIZES
    from longvila.train.warm_start import DEPTHS, RetrievalRows, warm_loss

    a = parse()
    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(resolve_tokenizer_dir("builtin:qwen2")[0])
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]
    pool = load_text_pools()["plays"]
    torch.manual_seed(a.seed)
    shape = {**SIZES["tiny"][0], "rope_theta": a.theta, **({"num_hidden_layers": a.layers} if a.layers else {})}
    model = Qwen2ForCausalLM(Qwen2Config(**shape))
    if a.load:
        model.load_state_dict(torch.load(a.load))
    # the rows, their vocabulary and the loss are rule warm_start's own (longvila/train/warm_start.py)
    rows_cfg = WarmStartConfig(passkey_lengths=a.pk_len, copy_digits=a.copy_len, copy_gap=a.copy_gap,
                               max_positions=max(4096, *a.pk_len), seed=a.seed)
    source = RetrievalRows(tok, pool, rows_cfg)
    vocab = source.vocab
    lut = torch.full((model.config.vocab_size,), -100, dtype=torch.long)
    lut[vocab] = torch.arange(len(vocab))
    print(f"restricted softmax over {len(vocab):,} of {model.config.vocab_size:,} tokens", flush=True)

    held = {n: [make_passkey(pool, n, d, np.random.default_rng(10_000 + 7 * i + n)) for i, d in enumerate(DEPTHS * a.eval_reps)]
            for n in a.eval_len}

    @torch.no_grad()
    def evaluate() -> dict:
        model.eval()
        out = {}
        for n, docs in held.items():
            hits, loss = 0, 0.0
            for pk in docs:
                prompt, answer = enc(pk.text[: pk.text.rindex(" " + pk.key)]), enc(" " + pk.key)
                logits = model(torch.tensor([prompt + answer])).logits[0, len(prompt) - 1: -1]
                hits += int((logits.argmax(-1) == torch.tensor(answer)).all())
                loss += F.cross_entropy(logits[1:, vocab], lut[torch.tensor(answer[1:])]).item()
            out[n] = f"acc {hits / len(docs):.2f} digit loss {loss / len(docs):.2f}"
        r = np.random.default_rng(99)
        rows = [[source.space] + [source.digits[int(d)] for d in r.integers(0, 10, 12)] for _ in range(20)]
        ids = torch.tensor([x + x for x in rows])
        out["copy"] = round(F.cross_entropy(model(ids).logits[:, 13:-1].flatten(0, 1), ids[:, 14:].flatten()).item(), 2)
        model.train()
        return out

    opt = torch.optim.AdamW(model.parameters(), lr=1.0, weight_decay=0.0, fused=True)
    t0, done = time.time(), 0
    if a.load:
        print(f"start {evaluate()}", flush=True)
    model.train()
    for spec in a.phase:
        fields = spec.split(":")
        steps, lr, share, rows = (f(v) for f, v in zip((int, float, float, int), fields[:4], strict=True))
        cosine = fields[4:] == ["cos"]
        for step in range(1, steps + 1):
            for g in opt.param_groups:
                g["lr"] = lr * min(1.0, step / 10) * (0.5 + 0.5 * np.cos(np.pi * step / steps) if cosine else 1.0)
            x, target, answer = source.batch(rows, share)
            if a.loss == "all":                          # plain next-token loss over every token (stage 4's)
                hidden = model.model(x).last_hidden_state[:, :-1][target]
                loss = F.cross_entropy(hidden @ model.lm_head.weight[vocab].T, lut[x[:, 1:]][target])
            else:
                kind = {"answer": "answer", "both": "all_and_answer"}[a.loss]
                loss = warm_loss(model, source, x, target, answer, kind, lut)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            done += 1
            if step % a.every == 0 or step == steps:
                print(f"phase {spec} step {step} (total {done}, {time.time() - t0:.0f} s) loss {loss.item():.3f} "
                      f"{evaluate()}", flush=True)
    if a.save:
        torch.save(model.state_dict(), a.save)


if __name__ == "__main__":
    main()
