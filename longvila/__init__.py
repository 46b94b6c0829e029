"""longvila: a runnable, reproducible re-implementation of LongVILA (arXiv 2408.10188).

Subpackages: `data` (SlimPajama reader, packing, Parquet shards, offline corpus), `model` (the VLM in
Transformers), `utils` (atomic I/O, logging, environment). The `longvila` command (`longvila.cli`) is the
user-facing entry point.

`import longvila` makes Transformers' Auto classes know `model_type = "llava_llama"`: at once if Transformers
is already imported, otherwise right after it is. Importing the model (torch + Transformers, several seconds)
is deferred until then, so the data tools that never touch Transformers stay fast.
"""

import importlib.abc
import importlib.machinery
import sys

__version__ = "0.1.0"


def _register() -> None:
    import longvila.model  # noqa: F401  (registers with AutoConfig / AutoModel / AutoModelForCausalLM)


class _AfterTransformersImport(importlib.abc.MetaPathFinder):
    """Runs `_register` once the `transformers` package has finished importing (uses only its public API)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register()

        spec.loader.exec_module = exec_then_register
        return spec


if "transformers" in sys.modules:
    _register()
elif not any(isinstance(f, _AfterTransformersImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _AfterTransformersImport())
