"""Reading the released checkpoint layout part by part, with errors that name the file and the field.

    <ckpt>/config.json                      LongVILAConfig (model_type llava_llama)
    <ckpt>/llm/                             Qwen2ForCausalLM (+ tokenizer files)
    <ckpt>/vision_tower/                    SiglipVisionModel (+ preprocessor_config.json)
    <ckpt>/mm_projector/config.json         {"mm_projector_type": ..., "token_order": "row" | "column"}
    <ckpt>/mm_projector/model.safetensors   keys layers.1/2/4.* (a .bin only via torch.load(weights_only=True))

The vision tower's keys may be bare or under `vision_model.` (released files); both load.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import Qwen2ForCausalLM, SiglipVisionModel

from longvila.model.configuration import LongVILAConfig
from longvila.model.projector import DEFAULT_TOKEN_ORDER, MultimodalProjector, check_token_order, upgrade_legacy_state
from longvila.utils.logging import get_logger

REQUIRED = {"llm": "config.json", "vision_tower": "config.json", "mm_projector": "config.json"}
def _check_layout(root: Path) -> None:
    if not (root / "config.json").is_file():
        raise ValueError(f"{root / 'config.json'} is missing: not a LongVILA checkpoint folder")
    for part, name in REQUIRED.items():
        if not (root / part / name).is_file():
            raise ValueError(f"{root / part / name} is missing: a LongVILA checkpoint has llm/, vision_tower/ "
                             "and mm_projector/ folders, each with its config.json")


def _projector_state(folder: Path) -> dict:
    st, binary = folder / "model.safetensors", folder / "pytorch_model.bin"
    path = st if st.is_file() else binary
    if not path.is_file():
        raise ValueError(f"{folder} has no model.safetensors (nor pytorch_model.bin): the projector weights are missing")
    try:
        return load_file(str(path)) if path == st else torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors / pickle errors have no common base class
        raise ValueError(f"{path} is not a readable weights file ({type(e).__name__}: {e}); re-copy it") from e


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not readable JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def _agree(what: str, file: Path, field: str, found, expected) -> None:
    if found != expected:
        raise ValueError(f"{file}: {field} = {found}, but {what} = {expected}; the checkpoint's parts disagree")


def _load_part(cls, folder: Path, dtype, part_kwargs: dict | None):
    """A part loaded with Transformers; weights the file lacks are an error, not a silent random init (SigLIP's
    pooling head excepted: LongVILA never runs it, and some released towers ship without it)."""
    model, info = cls.from_pretrained(folder, dtype=dtype, output_loading_info=True, **(part_kwargs or {}))
    missing = sorted(k for k in info.get("missing_keys", ()) if not (k.startswith("head.") or ".head." in k))
    if missing:
        raise ValueError(f"{folder}: the weights file lacks {len(missing)} of the model's tensors (e.g. "
                         f"{', '.join(missing[:3])}); they would be random. Re-copy the checkpoint, or check that "
                         "its keys are the model's (a SigLIP tower's may be bare or under 'vision_model.')")
    return model


def _token_order(root: Path, proj_cfg: dict, config: LongVILAConfig, projector_type: str, legacy: bool) -> str:
    """The checkpoint's projector token order: mm_projector/config.json, else config.json's mm_projector_cfg,
    else "column" for longvila's own pre-release-layout files (layers.0/1/3) and "row" (the release) otherwise."""
    in_file, inline = proj_cfg.get("token_order"), config.mm_projector_cfg.get("token_order")
    if in_file is not None and inline is not None and in_file != inline:
        raise ValueError(f"{root / 'mm_projector' / 'config.json'} says token_order {in_file!r} but {root / 'config.json'}"
                         f" mm_projector_cfg.token_order says {inline!r}; set both to the order the checkpoint was "
                         "trained with ('row': Qwen2 LongVILA 2024-12 and later, 'column': the 2024-08 code)")
    order = in_file or inline
    if order is None and legacy:
        order = "column"
        get_logger().warning(f"{root / 'mm_projector'}: projector keys layers.0/1/3 are longvila's layout before it "
                             "matched the release, trained with column-major tokens: loading as token_order "
                             "'column'. Save the model again to write the release's keys and the order.")
    order = order or DEFAULT_TOKEN_ORDER
    check_token_order(order, projector_type, where=f"{root / 'mm_projector' / 'config.json'}: token_order")
    return order


def load_parts(root: Path, config: LongVILAConfig, dtype=None, part_kwargs: dict | None = None):
    """(llm, vision_tower, mm_projector) loaded from `root`, checked against each other; the projector takes
    the vision tower's dtype (Transformers loads a bf16 checkpoint as bf16 unless told otherwise)."""
    _check_layout(root)
    for name in ("llm_cfg", "vision_tower_cfg", "mm_projector_cfg"):
        if not isinstance(getattr(config, name), dict):
            raise ValueError(f"{root / 'config.json'}: {name} must be a config mapping (the release stores the "
                             f"part's full config inline), got {type(getattr(config, name)).__name__}")
    llm = _load_part(Qwen2ForCausalLM, root / "llm", dtype, part_kwargs)
    vision = _load_part(SiglipVisionModel, root / "vision_tower", dtype, part_kwargs)
    proj_cfg = _read_json(root / "mm_projector" / "config.json")
    projector_type = proj_cfg.get("mm_projector_type", config.projector_type)
    state, legacy = upgrade_legacy_state(_projector_state(root / "mm_projector"))
    order = _token_order(root, proj_cfg, config, projector_type, legacy)
    projector = MultimodalProjector(projector_type, vision.config.hidden_size, llm.config.hidden_size, order)
    config.mm_projector_cfg = {**config.mm_projector_cfg, "mm_projector_type": projector_type, "token_order": order}
    for part, inline_cfg, loaded in (("llm", config.llm_cfg, llm.config), ("vision_tower", config.vision_tower_cfg,
                                                                           vision.config)):
        for field in ("hidden_size", "vocab_size"):
            if inline_cfg.get(field) is not None:
                _agree(f"{part}/config.json {field}", root / "config.json", f"{part}_cfg.{field}", inline_cfg[field],
                       getattr(loaded, field))
    layers = vision.config.num_hidden_layers
    if not -(layers + 1) <= config.mm_vision_select_layer <= layers:
        raise ValueError(f"{root / 'config.json'}: mm_vision_select_layer = {config.mm_vision_select_layer}, but the "
                         f"vision tower has {layers} layers (valid: -{layers + 1}..{layers}; the release uses -2)")
    if config.hidden_size is not None:
        _agree("llm/config.json hidden_size", root / "config.json", "hidden_size", config.hidden_size,
               llm.config.hidden_size)
    if config.mm_hidden_size is not None:
        _agree("vision_tower/config.json hidden_size", root / "config.json", "mm_hidden_size",
               config.mm_hidden_size, vision.config.hidden_size)
    expected = projector.state_dict()
    for key, value in state.items():
        if key in expected:
            _agree(f"the projector for vision {vision.config.hidden_size} -> llm {llm.config.hidden_size}",
                   root / "mm_projector" / "model.safetensors", f"{key}.shape", tuple(value.shape),
                   tuple(expected[key].shape))
    missing, unexpected = projector.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{root / 'mm_projector' / 'model.safetensors'}: missing keys {missing}, "
                         f"unexpected keys {unexpected}")
    return llm, vision, projector.to(vision.dtype)
