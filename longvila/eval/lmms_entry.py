"""Entry point of the `lmms_eval.models` group: tells lmms-eval where longvila's model class lives.

pyproject.toml declares `longvila = "longvila.eval.lmms_entry:manifest"` under
[project.entry-points."lmms_eval.models"]; lmms-eval's ModelRegistryV2 calls `manifest()` when it starts.
lmms-eval is imported inside the function, so longvila imports (and installs) without it.

Names: lmms-eval 0.7.3 ships its own model `longvila` (LongVILA-R1 through vLLM, a chat model that needs
vllm and the checkpoint's remote_code). Ours is registered as `longvila_repro`, plus the alias `longvila`:
lmms-eval loads entry points after its built-ins and with overwrite=True, so `--model longvila` then means
ours. The alias comes in a second manifest, so that a registry that refuses to remap a name still keeps
`longvila_repro` (it stops at the manifest that fails).
"""

from __future__ import annotations

MODEL_ID = "longvila_repro"
ALIAS = "longvila"
CLASS_PATH = "longvila.eval.lmms_model.LongVILALmms"


def manifest():
    """[ModelManifest of `longvila_repro`, the same with the alias `longvila`] (a simple, doc_to_visual model)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH),
            ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH, aliases=(ALIAS,))]
