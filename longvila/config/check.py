"""Check config files without Snakemake: YAML syntax (file, line, column, hint) and every key and value.

    python -m longvila.config.check my.yaml [more.yaml ...] [--set train.lr=1e-5]

Prints '<file>: ok' per good file, or its problems (one short block each) on stderr; exit status 0 when all are
good, 2 otherwise. Each file is checked alone, defaults filling what it leaves out (as Snakemake merges
`--configfile` files over config.yaml). Snakemake parses a `--configfile` itself and says only "not valid JSON or
YAML" on a syntax error: this names the line. The training checks that need the model's shapes and the memory
planner (world size vs SP, heads, fit) are `longvila plan --config FILE`.
"""

from __future__ import annotations

import argparse
import sys

from longvila.config.core import load_config_file

EXIT_BAD_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m longvila.config.check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", metavar="FILE", help="config YAML file(s) to check")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value before checking, e.g. --set train.lr=1e-5 (repeatable)")
    args = parser.parse_args(argv)
    status = 0
    for path in args.files:
        try:
            load_config_file(path, args.overrides)
        except OSError as e:
            print(f"{path}: cannot read it ({e.strerror or e})", file=sys.stderr)
            status = EXIT_BAD_CONFIG
        except ValueError as e:
            print(e, file=sys.stderr)
            status = EXIT_BAD_CONFIG
        else:
            print(f"{path}: ok")
    return status


if __name__ == "__main__":
    sys.exit(main())
