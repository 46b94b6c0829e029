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
    st = folder / "model.safetensors"
    if st.is_file():
        return load_file(str(st))
    binary = folder / "pytorch_model.bin"
    if binary.is_file():
        return torch.load(binary, map_location="cpu", weights_only=True)
    raise ValueError(f"{folder} has no model.safetensors (nor pytorch_model.bin): the projector weights are missing")


def _agree(what: str, file: Path, field: str, found, expected) -> None:
    if found != expected:
        raise ValueError(f"{file}: {field} = {found}, but {what} = {expected}; the checkpoint's parts disagree")


def load_parts(root: Path, config: LongVILAConfig, dtype=None):
    """(llm, vision_tower, mm_projector) loaded from `root`, checked against each other."""
    _check_layout(root)
    llm = Qwen2ForCausalLM.from_pretrained(root / "llm", dtype=dtype)
    vision = SiglipVisionModel.from_pretrained(root / "vision_tower", dtype=dtype)
    proj_cfg = json.loads((root / "mm_projector" / "config.json").read_text())
    projector = MultimodalProjector(proj_cfg.get("mm_projector_type", config.projector_type),
                                    vision.config.hidden_size, llm.config.hidden_size)
    for field in ("hidden_size", "vocab_size"):
        inline = config.llm_cfg.get(field)
        if inline is not None:
            _agree(f"llm/config.json {field}", root / "config.json", f"llm_cfg.{field}", inline,
                   getattr(llm.config, field))
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
    if dtype is not None:
        projector = projector.to(dtype)
    return llm, vision, projector
