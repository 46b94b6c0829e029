"""Typed configuration: the dataclasses that `config.yaml` sections mirror, and their strict loader.

One module per concern, each depending on no other `longvila` package (this package is imported in every
Snakemake process, so it stays torch-free and cheap):

    core.py      the top `Config`, the `model:` section, load_config / load_config_file / apply_overrides /
                 config_to_dict / numbers_as_numbers
    errors.py    how problems are worded: ConfigError (all problems, one short block each), unknown keys with
                 "did you mean", numbers such as 2e-5, YAML syntax errors naming file, line and hint
    check.py     `python -m longvila.config.check FILE`: check a config file without Snakemake
    data.py      `tokenizer:`, `corpus:`, `slimpajama:`, `pack:` (stage-4 text data)
    video.py     `shot2story:` (stage-5 data)
    warm_start.py `model.warm_start:` (the tiny demo's retrieval warm start before stage 4)
    train.py     `train:` (stages 4 and 5, cluster); the checks against the model's shapes, ParallelDims and
                 the memory planner are `longvila.plan.check.check_training`
    eval.py      `eval:` (V-NIAH needle grid, lmms-eval benchmarks)
    schema.py    the JSON schema generated from the dataclasses (`python -m longvila.config.schema`)
    sources.py   SlimPajama's seven sources, their original mix and median lengths (pack.mix is checked
                 against it; longvila.data reads it from here)
    checks.py    `check(ok, key, message)`, the one validation helper: ValueError naming the key and the fix

The public names are re-exported here:

    from longvila.config import load_config_file
    cfg = load_config_file("config.yaml", overrides=["pack.seed=7"])
"""

from longvila.config.core import (Config, ModelConfig, apply_overrides, config_to_dict, load_config,
                                  load_config_file, numbers_as_numbers)
from longvila.config.data import (UPSAMPLE_MODES, ContextConfig, CorpusConfig, PackConfig, PasskeyConfig,
                                  SlimPajamaConfig, TokenizerConfig)
from longvila.config.errors import ConfigError
from longvila.config.eval import BenchConfig, EvalConfig, NeedleConfig
from longvila.config.train import ClusterConfig, Stage4Step, Stage5Run, TrainConfig
from longvila.config.video import (CaptionConfig, ClipConfig, EndpointConfig, QAConfig, Shot2StoryConfig,
                                   SynthConfig)
from longvila.config.warm_start import WarmStartConfig, WarmStartPhase

__all__ = [
    "Config", "ConfigError", "ModelConfig", "apply_overrides", "config_to_dict", "load_config", "load_config_file",
    "numbers_as_numbers",
    "UPSAMPLE_MODES", "ContextConfig", "CorpusConfig", "PackConfig", "PasskeyConfig", "SlimPajamaConfig",
    "TokenizerConfig",
    "BenchConfig", "EvalConfig", "NeedleConfig",
    "ClusterConfig", "Stage4Step", "Stage5Run", "TrainConfig",
    "CaptionConfig", "ClipConfig", "EndpointConfig", "QAConfig", "Shot2StoryConfig", "SynthConfig",
    "WarmStartConfig", "WarmStartPhase",
]
