"""Reading the released checkpoint layout part by part, with errors that name the file and the field.

    <ckpt>/config.json                      LongVILAConfig (model_type llava_llama)
    <ckpt>/llm/                             Qwen2ForCausalLM (+ tokenizer files)
    <ckpt>/vision_tower/                    SiglipVisionModel (+ preprocessor_config.json)
    <ckpt>/mm_projector/config.json         {"mm_projector_type": ...}
    <ckpt>/mm_projector/model.safetensors   keys layers.0.* ... (a .bin only via torch.load(weights_only=True))
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import Qwen2ForCausalLM, SiglipVisionModel

from longvila.model.configuration import LongVILAConfig
from longvila.model.projector import MultimodalProjector

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


def load_parts(root: Path, config: LongVILAConfig, dtype=None, part_kwargs: dict | None = None):
    """(llm, vision_tower, mm_projector) loaded from `root`, checked against each other; the projector takes
    the vision tower's dtype (Transformers loads a bf16 checkpoint as bf16 unless told otherwise)."""
    _check_layout(root)
    for name in ("llm_cfg", "vision_tower_cfg", "mm_projector_cfg"):
        if not isinstance(getattr(config, name), dict):
            raise ValueError(f"{root / 'config.json'}: {name} must be a config mapping (the release stores the "
                             f"part's full config inline), got {type(getattr(config, name)).__name__}")
    llm = Qwen2ForCausalLM.from_pretrained(root / "llm", dtype=dtype, **(part_kwargs or {}))
    vision = SiglipVisionModel.from_pretrained(root / "vision_tower", dtype=dtype, **(part_kwargs or {}))
    proj_cfg = _read_json(root / "mm_projector" / "config.json")
    projector = MultimodalProjector(proj_cfg.get("mm_projector_type", config.projector_type),
                                    vision.config.hidden_size, llm.config.hidden_size)
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
    state = _projector_state(root / "mm_projector")
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
