"""longvila: a runnable, reproducible re-implementation of LongVILA (arXiv 2408.10188).

Subpackages: `data` (SlimPajama reader, packing, Parquet shards, offline corpus), `model` (the VLM in
Transformers), `utils` (atomic I/O, logging, environment). The `longvila` command (`longvila.cli`) is the
user-facing entry point.

`import longvila` makes Transformers' Auto classes know `model_type = "llava_llama"`: at once if Transformers
is already imported, otherwise right after it is. Importing the model (torch + Transformers, several seconds)
is deferred until then, so the data tools that never touch Transformers stay fast; a process that imports
Transformers after longvila also imports the model code (and torch) at that moment.
"""

import importlib.abc
import importlib.machinery
import sys

__version__ = "0.1.0"


def _register() -> None:
    import longvila.model  # noqa: F401  (registers with AutoConfig / AutoModel / AutoModelForCausalLM)


def _register_quietly() -> None:
    """Called while `import transformers` completes: a failure here must not break that import."""
    try:
        _register()
    except Exception as e:  # e.g. a broken torch install; the Auto classes just won't know llava_llama
        import warnings

        warnings.warn(f"longvila could not register its model with transformers: {e!r}; "
                      "import longvila.model to see the error", stacklevel=2)


class _AfterTransformersImport(importlib.abc.MetaPathFinder):
    """Runs `_register` once the `transformers` package has finished importing (uses only its public API)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = None
        for finder in list(sys.meta_path):  # whoever would have found it (path, editable, zip finders)
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find else None
            if spec is not None:
                break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register_quietly()

        spec.loader.exec_module = exec_then_register
        return spec


if "transformers" in sys.modules:
    _register_quietly()
elif not any(type(f).__name__ == "_AfterTransformersImport" for f in sys.meta_path):  # also across reloads
    sys.meta_path.insert(0, _AfterTransformersImport())
