"""Typed configuration of the warm start (`model.warm_start:` in config.yaml).

What: the recipe that teaches a randomly initialised tiny LLM the one skill stage 4 extends — finding a pass
key at a distance — before stage 4's first step. Why: the paper's stage 4 starts from a pretrained LLM that
already retrieves at its original context (Qwen2-7B at 4k-32k tokens) and only extends it; a random tiny model
has nothing to extend, and stage 4's own loss (next-token over packed text) does not teach retrieval from
scratch in a demo's minutes (docs/LOG.md, sessions 11-13). The warm start stands in for pretraining: short
rows, a short context at a low RoPE base, so the stage-4 steps after it show what raising the base and
training at a longer context buys. Released checkpoints do not need it (null, workflow/configs/paper.yaml).

    from longvila.config.warm_start import WarmStartConfig
    WarmStartConfig().phases[0].loss    # 'answer'
"""

from __future__ import annotations

from dataclasses import dataclass, field

from longvila.config.checks import check

WARM_LOSSES = ("answer", "all_and_answer")


@dataclass
class WarmStartPhase:
    """One phase of the warm start: optimizer steps over rows of two kinds (digit copies and passkey documents)."""

    steps: int = 300
    """Optimizer steps."""
    lr: float = 3e-3
    """Learning rate (AdamW; linear warm-up over the phase's first 10 steps, then held)."""
    copy_share: float = 0.5
    """Share of rows that are digit copies (" " + digits, Shakespeare text, the same digits again); the rest are
    passkey documents. Copies at a distance are what form the retrieval circuit (induction) fastest."""
    rows: int = 32
    """Rows (documents) per optimizer step; each row is one document, padded, never packed."""
    loss: str = "answer"
    """'answer': only the answers are supervised (a copy's second half, the key after the passkey question), so
    the output layer is evaluated only there (a step costs a fraction); 'all_and_answer': the mean over every
    token plus the mean over the answers (the model also learns the text, so the plain next-token loss of
    stage 4 does not start from a model that has never seen text, which wipes the circuit out)."""

    def __post_init__(self) -> None:
        check(self.steps >= 1 and self.rows >= 1 and self.lr > 0, "model.warm_start.phases[]",
              "need steps >= 1, rows >= 1 and lr > 0")
        check(0.0 <= self.copy_share <= 1.0, "model.warm_start.phases[].copy_share", "use a share in [0, 1]")
        check(self.loss in WARM_LOSSES, "model.warm_start.phases[].loss", f"use one of {WARM_LOSSES}")


def _default_phases() -> list[WarmStartPhase]:
    return [WarmStartPhase(steps=300, copy_share=1.0), WarmStartPhase(steps=600, copy_share=0.5),
            WarmStartPhase(steps=300, lr=1e-3, copy_share=0.3, rows=8, loss="all_and_answer")]


@dataclass
class WarmStartConfig:
    """Teach the random model to retrieve at a short context before stage 4 (see the module docstring)."""

    rope_theta: float = 10_000.0
    """RoPE base of the warm-started model (a short-context LLM's, as Llama 2's); stage 4's steps raise it."""
    max_positions: int = 4096
    """max_position_embeddings written into the warm-started checkpoint."""
    passkey_lengths: list[int] = field(default_factory=lambda: [64, 128])
    """Token lengths of the passkey documents it trains on (made like rule make_corpus's, from the same
    Shakespeare text, other windows and fresh keys); the longest is its 'trained length' in the report."""
    copy_digits: list[int] = field(default_factory=lambda: [5, 12])
    """Fewest and most digits of a copy row."""
    copy_gap: int = 64
    """Up to this many tokens of text between a copy's two halves (drawn per row)."""
    phases: list[WarmStartPhase] = field(default_factory=_default_phases)
    """Phases, run in order on one optimizer."""
    threads: int = 0
    """torch threads (0 = all cores of the job)."""
    seed: int = 0
    """Seed of the rows drawn."""

    def __post_init__(self) -> None:
        check(self.rope_theta > 0 and self.max_positions >= max(self.passkey_lengths or [1]),
              "model.warm_start", "need rope_theta > 0 and max_positions >= the longest passkey length")
        check(bool(self.passkey_lengths) and min(self.passkey_lengths) >= 32, "model.warm_start.passkey_lengths",
              "give lengths of at least 32 tokens (the passkey template alone is ~30)")
        check(len(self.copy_digits) == 2 and 1 <= self.copy_digits[0] <= self.copy_digits[1],
              "model.warm_start.copy_digits", "give [fewest, most] digits, e.g. [5, 12]")
        check(self.copy_gap >= 0 and self.threads >= 0, "model.warm_start", "need copy_gap >= 0 and threads >= 0")
        check(bool(self.phases), "model.warm_start.phases", "give at least one phase")
