"""Rule `resolve_config`: write the run's resolved configuration, the one file every other rule reads.

Snakemake has already merged `config.yaml`, `--configfile` and `--config` overrides and filled schema
defaults; this stage re-validates that mapping against the dataclasses (strict: an unknown key is an error)
and writes it with every default spelled out, so each stage's settings are on disk.

    python -m pipeline.resolve_config --from-yaml config.yaml --out results/resolve_config/config.yaml
"""

from __future__ import annotations

import argparse
import base64
import json

import yaml

from longvila.config import config_to_dict, load_config, load_config_file
from longvila.utils.io import write_text_atomic
from pipeline.common.stage import run_stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-yaml", help="a config YAML file")
    src.add_argument("--from-b64", help="the config mapping as base64-encoded JSON (what the Snakemake rule passes)")
    parser.add_argument("--out", required=True, help="where to write the resolved YAML")
    args = parser.parse_args(argv)

    def body() -> None:
        if args.from_yaml:
            cfg = load_config_file(args.from_yaml)
        else:
            cfg = load_config(json.loads(base64.b64decode(args.from_b64)))
        write_text_atomic(args.out, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
