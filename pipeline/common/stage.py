"""Shared plumbing of the rule CLIs: arguments, config, logging, manifests, exit codes.

Every `pipeline.<rule>` module builds its parser with `stage_parser`, loads the config with `load`, and
runs its body through `run_stage`, which turns a user/config error (ValueError) into a one-line message and
exit code 2, so Snakemake logs say what to fix instead of printing a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from longvila.config import Config, load_config_file
from longvila.utils.env import apply_env
from longvila.utils.logging import get_logger, init_logger

EXIT_USER_ERROR = 2


def stage_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser whose --help is the module docstring, with --config and --set."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="resolved config YAML (results/resolve_config/config.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set pack.seed=7 (repeatable)")
    return parser


def load(args: argparse.Namespace) -> Config:
    return load_config_file(args.config, args.overrides)


def run_stage(body: Callable[[], int | None]) -> int:
    """Run a stage body with logging set up; a ValueError (bad input or config) -> its message + exit 2."""
    init_logger()
    apply_env()
    try:
        return int(body() or 0)
    except ValueError as e:
        get_logger().error(f"error: {e}")
        return EXIT_USER_ERROR
