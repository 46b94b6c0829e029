"""The warm start: teach a random LLM to retrieve pass keys at a short context, before stage 4 extends it.

    rows = RetrievalRows(tokenizer, pool_text, cfg)           # cfg: longvila.config.WarmStartConfig
    history = train_warm_start(llm, rows, cfg)                # in place, one process; losses per step

Why and what (`model.warm_start` in config.yaml): stage 4 extends a context the LLM already uses; the tiny
demo's LLM is random, and the next-token loss over packed text does not teach it retrieval in minutes
(docs/LOG.md). Two kinds of rows, one document per row (never packed: earlier documents' digits would be in
the way):

- copy rows: " " + 5-12 random digits, 0-`copy_gap` tokens of Shakespeare, the same " " + digits again. Only a
  content-based induction circuit predicts the second half (its offset varies per row), and the text between
  makes it look back over a distance;
- passkey rows: `make_passkey` documents (the corpus's template and text, other windows, fresh keys) of
  `passkey_lengths` tokens, the key at depth 0, 0.25, ... 1.

Phases (`cfg.phases`) run in order on one AdamW optimizer. Loss 'answer' supervises only the answers (a copy's
second half, the " " + key + "." + EOS after the passkey question) and evaluates the output layer only there;
'all_and_answer' adds the mean next-token loss over every token, so the model also learns the text before
stage 4's plain next-token loss reaches it. The softmax runs over the tokens the rows can contain (the text,
the template, digits, space, EOS: ~20.6k of Qwen2's 151,648; `RetrievalRows.vocab`), a sampled softmax that
makes a step ~5x cheaper; the other tokens' logits get no gradient, and they stay below (the passkey eval
decodes over the full vocabulary).
"""

from __future__ import annotations

import resource
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from longvila.data.corpus import make_passkey

DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
WARMUP_STEPS = 10                      # linear warm-up at the start of every phase


class RetrievalRows:
    """Draws the warm start's rows (token ids, first answer position) from a text pool and a tokenizer.
    `vocab`: the sorted token ids the rows can contain (the text, the passkey template, digits, space, EOS),
    the restricted softmax's classes."""

    def __init__(self, tokenizer, pool: str, cfg, seed: int | None = None) -> None:
        self.tokenizer, self.pool, self.cfg = tokenizer, pool, cfg
        self.rng = np.random.default_rng(cfg.seed if seed is None else seed)
        self.eos = tokenizer.eos_token_id
        if self.eos is None:
            raise ValueError("the warm start needs a tokenizer with an eos_token (it ends every row)")
        self.digits = [self._single(str(d)) for d in range(10)]
        self.space = self.encode(" 1")[0]
        if self.encode(" 1") != [self.space, self.digits[1]]:
            raise ValueError("the warm start needs a tokenizer that writes ' 1' as ' ' + '1' (Qwen2 does); "
                             "set model.warm_start: null for this tokenizer")
        self.pool_ids = self.encode(pool)
        if len(self.pool_ids) <= cfg.copy_gap + 1:
            raise ValueError(f"the text pool has {len(self.pool_ids)} tokens; the warm start needs more than "
                             f"copy_gap {cfg.copy_gap}")
        template = make_passkey(pool, max(cfg.passkey_lengths), 0.5, np.random.default_rng(0)).text
        used = set(self.pool_ids) | set(self.encode(template)) | set(self.digits) | {self.space, self.eos}
        self.vocab = torch.tensor(sorted(used))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _single(self, text: str) -> int:
        ids = self.encode(text)
        if len(ids) != 1:
            raise ValueError(f"the warm start needs one token per digit; {text!r} is {ids}")
        return ids[0]

    def copy_row(self) -> tuple[list[int], int]:
        """(" " + digits + text + " " + digits + EOS, index of the second half's first digit)."""
        lo, hi = self.cfg.copy_digits
        key = [self.space] + [self.digits[int(d)] for d in self.rng.integers(0, 10, int(self.rng.integers(lo, hi + 1)))]
        gap = int(self.rng.integers(0, self.cfg.copy_gap + 1)) if self.cfg.copy_gap else 0
        start = int(self.rng.integers(0, len(self.pool_ids) - gap))
        head = key + self.pool_ids[start:start + gap]
        return head + key + [self.eos], len(head) + 1

    def passkey_row(self) -> tuple[list[int], int]:
        """(a passkey document + EOS, index of the " " before the answer's key)."""
        n = int(self.rng.choice(self.cfg.passkey_lengths))
        pk = make_passkey(self.pool, n, float(self.rng.choice(DEPTHS)), self.rng)
        ids = self.encode(pk.text) + [self.eos]
        answer = self.encode(" " + pk.key + ".") + [self.eos]
        if ids[-len(answer):] != answer:
            raise ValueError(f"the passkey answer {pk.key!r} is not tokenized apart from its prompt")
        return ids, len(ids) - len(answer)

    def batch(self, rows: int, copy_share: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids [B, T] padded with EOS, target mask [B, T-1], answer mask [B, T-1]) of `rows` fresh rows."""
        docs = [self.copy_row() if self.rng.random() < copy_share else self.passkey_row() for _ in range(rows)]
        width = max(len(d) for d, _ in docs)
        ids = torch.tensor([d + [self.eos] * (width - len(d)) for d, _ in docs])
        j = torch.arange(1, width)
        length = torch.tensor([len(d) for d, _ in docs])[:, None]
        first = torch.tensor([f for _, f in docs])[:, None]
        return ids, j < length, (j >= first) & (j < length)


def warm_loss(llm, rows: RetrievalRows, ids: torch.Tensor, target: torch.Tensor, answer: torch.Tensor,
              kind: str, lut: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy over `rows.vocab` at the answer positions ('answer'), or that plus the mean over
    every target position ('all_and_answer'). `lut` maps a token id to its class in `rows.vocab`."""
    hidden = llm.model(input_ids=ids).last_hidden_state[:, :-1]
    head = llm.get_output_embeddings().weight[rows.vocab]
    classes = lut[ids[:, 1:]]
    if kind == "answer":
        return F.cross_entropy(hidden[answer] @ head.T, classes[answer])
    per = F.cross_entropy((hidden @ head.T).flatten(0, 1), classes.flatten(), reduction="none").view_as(classes)
    return per[target].mean() + per[answer].mean()


def train_warm_start(llm, rows: RetrievalRows, cfg, progress: bool = True, log=None) -> list[dict]:
    """Train `llm` (a causal LM, in place) through `cfg.phases`; one dict per step (phase, step, loss, lr, s)."""
    lut = torch.full((llm.get_output_embeddings().weight.shape[0],), -100, dtype=torch.long)
    lut[rows.vocab] = torch.arange(len(rows.vocab))
    opt = torch.optim.AdamW([p for p in llm.parameters() if p.requires_grad], lr=1.0, weight_decay=0.0,
                            fused=True)          # one kernel over all tensors: the 2 x 9.7M-weight vocab tables dominate
    llm.train()
    history, t0 = [], time.perf_counter()
    total = sum(p.steps for p in cfg.phases)
    bar = tqdm(total=total, desc="warm start", unit="step", disable=not progress, mininterval=5.0)
    for k, phase in enumerate(cfg.phases):
        for step in range(1, phase.steps + 1):
            lr = phase.lr * min(1.0, step / WARMUP_STEPS)
            for g in opt.param_groups:
                g["lr"] = lr
            ids, target, answer = rows.batch(phase.rows, phase.copy_share)
            loss = warm_loss(llm, rows, ids, target, answer, phase.loss, lut)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(llm.parameters(), 1.0)
            opt.step()
            row = {"phase": k, "step": len(history) + 1, "loss": loss.item(), "lr": lr, "grad_norm": norm.item(),
                   "tokens_per_s": int(target.sum()) / max(time.perf_counter() - t0, 1e-9),
                   "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
            t0 = time.perf_counter()
            history.append(row)
            bar.update(1)
            bar.set_postfix(phase=k, loss=f"{row['loss']:.3f}", refresh=False)
            if log is not None:
                log(row)
    bar.close()
    llm.eval()
    return history
