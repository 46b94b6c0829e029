"""longvila: a runnable, reproducible re-implementation of LongVILA (arXiv 2408.10188).

Subpackages: `data` (SlimPajama reader, packing, Parquet shards, offline corpus), `utils` (atomic I/O,
logging, environment). The `longvila` command (`longvila.cli`) is the user-facing entry point.
"""

__version__ = "0.1.0"
