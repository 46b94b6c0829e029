"""`LongVILAForCausalLM`: SigLIP vision tower -> mlp_downsample projector -> Qwen2, in the released layout.

Shapes: N frames, T tokens per frame, D LLM hidden size, B batch, L sequence length.

A pure single-process module (no process groups). Media enter the LLM at placeholder tokens (`<vila/video>`
or `<image>`): each placeholder is replaced by its frames' embeddings, each frame followed by the embedding
of one "\\n" token (LONGVILA.md section 3.4).

Checkpoint layout (read and written): `config.json` (model_type llava_llama, part configs inline),
`llm/` (Qwen2ForCausalLM + tokenizer files), `vision_tower/` (SiglipVisionModel, keys `vision_model.*`),
`mm_projector/` (`config.json` with `token_order` + `model.safetensors` with keys `layers.1/2/4`), each
written as the release's Transformers 4.46 writes it (tests/compat load it with 4.46 itself). Weights load
from safetensors only.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedModel, Qwen2ForCausalLM, SiglipImageProcessor, SiglipVisionModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from longvila.model.configuration import LongVILAConfig
from longvila.model.projector import MultimodalProjector
from longvila.model.tokenizer_files import save_release_tokenizer
from longvila.utils.logging import get_logger

VISION_PREFIX = "vision_model."  # SiglipVisionModel's keys in a released vision_tower/model.safetensors
_PART_KWARGS = ("attn_implementation",)  # passed on to the llm/ and vision_tower/ loaders
_HUB_KWARGS = {"adapter_kwargs", "revision", "trust_remote_code", "cache_dir", "force_download", "local_files_only",
               "token", "proxies", "subfolder", "code_revision"}  # what AutoModel passes along; local folders only


def legacy_llm_config(cfg: dict, dtype: torch.dtype) -> dict:
    """An LLM config dict that Transformers 4.x (the release's 4.46) also reads: Transformers 5 keeps RoPE
    settings only under `rope_parameters`, so `rope_theta`, `rope_scaling` and `torch_dtype` are added."""
    cfg = dict(cfg)
    rope = dict(cfg.get("rope_parameters") or {})
    if "rope_theta" in rope:
        cfg["rope_theta"] = rope["rope_theta"]
    kind = rope.get("rope_type", "default")
    cfg["rope_scaling"] = None if kind == "default" else {
        "type": kind, **{k: v for k, v in rope.items() if k not in ("rope_theta", "rope_type", "type")}}
    cfg["torch_dtype"] = cfg["dtype"] = str(dtype).replace("torch.", "")
    return cfg


class LongVILAForCausalLM(PreTrainedModel):
    config_class = LongVILAConfig
    base_model_prefix = "llm"
    _no_split_modules = ["Qwen2DecoderLayer", "SiglipEncoderLayer"]

    def __init__(self, config: LongVILAConfig, llm: Qwen2ForCausalLM | None = None,
                 vision_tower: SiglipVisionModel | None = None, mm_projector: MultimodalProjector | None = None):
        super().__init__(config)
        self.llm = llm if llm is not None else Qwen2ForCausalLM(config.llm_config())
        self.vision_tower = vision_tower if vision_tower is not None else SiglipVisionModel(config.vision_config())
        self.mm_projector = mm_projector if mm_projector is not None else MultimodalProjector(
            config.projector_type, self.vision_tower.config.hidden_size, self.llm.config.hidden_size,
            token_order=config.token_order)
        # LongVILA reads a hidden layer (mm_vision_select_layer), never SigLIP's pooling head: skip computing it
        # (its weights stay in the checkpoint). The head also reads nn.MultiheadAttention's weights directly,
        # which DeepSpeed ZeRO-3 cannot gather.
        getattr(self.vision_tower, "vision_model", self.vision_tower).use_head = False
        self.post_init()

    # ---------------------------------------------------------------- media
    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] preprocessed frames -> [N, T, D] (vision tower -> select layer -> projector)."""
        out = self.vision_tower(pixel_values=pixel_values.to(self.vision_tower.dtype), output_hidden_states=True)
        feats_NPC = out.hidden_states[self.config.mm_vision_select_layer]
        return self.mm_projector(feats_NPC)

    def media_embeds(self, frames_NTD: torch.Tensor, newline_id: int) -> torch.Tensor:
        """[N, T, D] frame tokens -> [N * (T + 1), D]: each frame followed by the "\\n" token's embedding."""
        newline = self.llm.get_input_embeddings()(torch.tensor([newline_id], device=frames_NTD.device))
        n, _, d = frames_NTD.shape
        return torch.cat([frames_NTD, newline.expand(n, 1, d).to(frames_NTD.dtype)], dim=1).reshape(-1, d)

    def splice(self, input_ids_L: torch.Tensor, media: list[torch.Tensor], media_token_ids: set[int],
               labels_L: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embed one sequence and replace its media placeholders, in order, by `media` ([M_k, D] each).

        Returns the [L', D] embeddings and, if given, labels with -100 over every media position.
        """
        where = [i for i, t in enumerate(input_ids_L.tolist()) if t in media_token_ids]
        safe_ids = input_ids_L.clone()
        safe_ids[where] = 0  # placeholder rows are replaced anyway; their ids may lie past an unresized vocabulary
        embeds_LD = self.llm.get_input_embeddings()(safe_ids)
        if len(where) != len(media):
            raise ValueError(f"the sequence has {len(where)} media placeholders but {len(media)} media were given")
        pieces, label_pieces, start = [], [], 0
        for pos, m in zip(where, media):
            pieces += [embeds_LD[start:pos], m.to(embeds_LD.dtype)]
            if labels_L is not None:
                label_pieces += [labels_L[start:pos], labels_L.new_full((len(m),), -100)]
            start = pos + 1
        pieces.append(embeds_LD[start:])
        if labels_L is not None:
            label_pieces.append(labels_L[start:])
        return torch.cat(pieces), (torch.cat(label_pieces) if labels_L is not None else None)

    def forward(self, input_ids=None, inputs_embeds=None, attention_mask=None, position_ids=None, labels=None,
                **kwargs) -> CausalLMOutputWithPast:
        """The LLM on token ids or on spliced embeddings (see `splice`); the loss is Qwen2's. Other keyword
        arguments (the KV cache, use_cache, ...) go to Qwen2ForCausalLM unchanged."""
        return self.llm(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                        position_ids=position_ids, labels=labels, **kwargs)

    def resize_for_tokenizer(self, tokenizer) -> None:
        """Grow the LLM's embeddings to the tokenizer's length (after `add_media_tokens`), as the release does."""
        if len(tokenizer) > self.llm.get_input_embeddings().num_embeddings:
            self.llm.resize_token_embeddings(len(tokenizer))
            self.config.llm_cfg = self.llm.config.to_dict()

    @torch.no_grad()
    def generate_with_media(self, input_ids_L: torch.Tensor, media: list[torch.Tensor], media_token_ids: set[int],
                            max_new_tokens: int = 32, eos_token_id: int | None = None, **kwargs) -> torch.Tensor:
        """Greedy (by default) generation with a KV cache after media are spliced in; returns the new ids [T]."""
        embeds_LD, _ = self.splice(input_ids_L, media, media_token_ids)
        out = self.llm.generate(inputs_embeds=embeds_LD[None], attention_mask=torch.ones(1, len(embeds_LD),
                                dtype=torch.long, device=embeds_LD.device), max_new_tokens=max_new_tokens,
                                do_sample=kwargs.pop("do_sample", False), eos_token_id=eos_token_id,
                                pad_token_id=eos_token_id, **kwargs)
        return out[0]

    # ---------------------------------------------------------------- checkpoint layout
    def save_pretrained(self, save_directory, tokenizer=None, **kwargs) -> None:
        """Write the released layout as the release's Transformers (4.46) writes it: config.json (parts inline),
        llm/ (Qwen2 weights, config with the 4.x RoPE keys, and with `tokenizer=` the release's tokenizer files),
        vision_tower/ (SigLIP keys under `vision_model.`, preprocessor_config.json), mm_projector/ (config.json
        with `token_order`, keys `layers.1/2/4`)."""
        root = Path(save_directory)
        root.mkdir(parents=True, exist_ok=True)
        self.llm.save_pretrained(root / "llm", **kwargs)
        llm_json = root / "llm" / "config.json"
        self.config.llm_cfg = legacy_llm_config(json.loads(llm_json.read_text()), self.llm.dtype)
        llm_json.write_text(json.dumps(self.config.llm_cfg, indent=2, sort_keys=True) + "\n")
        if tokenizer is not None:
            save_release_tokenizer(tokenizer, root / "llm")
        else:
            get_logger().warning(f"save_pretrained({root}) without tokenizer=: llm/ gets no tokenizer files, which "
                                 "inference needs; pass the tokenizer")
        self._save_vision_tower(root / "vision_tower")
        proj = root / "mm_projector"
        proj.mkdir(exist_ok=True)
        self.config.mm_projector_cfg = self.mm_projector.config_dict(next(self.mm_projector.parameters()).dtype)
        (proj / "config.json").write_text(json.dumps(self.config.mm_projector_cfg, indent=2) + "\n")
        state = {k: v.detach().contiguous() for k, v in self.mm_projector.state_dict().items()}
        save_file(state, str(proj / "model.safetensors"), metadata={"format": "pt"})
        self.config.model_dtype = str(self.llm.dtype)          # the release's "torch.bfloat16" style
        self.config.save_pretrained(root)

    def _save_vision_tower(self, folder: Path) -> None:
        """SigLIP as 4.46's `SiglipVisionModel` reads it: keys under `vision_model.` (Transformers 5 writes them
        bare, which 4.46 re-initialises silently), `torch_dtype` in its config, one safetensors file."""
        folder.mkdir(parents=True, exist_ok=True)
        vision = self.vision_tower
        vision.config.save_pretrained(folder)
        cfg = json.loads((folder / "config.json").read_text())
        cfg["torch_dtype"] = cfg["dtype"] = str(vision.dtype).replace("torch.", "")
        cfg["architectures"] = ["SiglipVisionModel"]
        (folder / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        self.config.vision_tower_cfg = cfg
        state = {f"{VISION_PREFIX}{k}": v.detach().contiguous() for k, v in vision.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        size = vision.config.image_size  # the release ships the SigLIP processor settings beside it
        SiglipImageProcessor(size={"height": size, "width": size}).save_pretrained(folder)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, config: LongVILAConfig | None = None,
                        torch_dtype=None, dtype=None, **kwargs) -> "LongVILAForCausalLM":
        """Load the released layout (also what `AutoModel.from_pretrained(path)` calls)."""
        from longvila.model.checkpoint import load_parts

        root = Path(pretrained_model_name_or_path)
        config = config if isinstance(config, LongVILAConfig) else LongVILAConfig.from_pretrained(root)
        part_kwargs = {k: kwargs.pop(k) for k in _PART_KWARGS if k in kwargs}
        ignored = sorted(k for k in kwargs if not k.startswith("_") and k not in _HUB_KWARGS)
        if ignored:
            get_logger().warning(f"LongVILAForCausalLM.from_pretrained ignores {ignored}; it takes dtype and "
                                 f"{', '.join(_PART_KWARGS)}")
        llm, vision, projector = load_parts(root, config, dtype=dtype or torch_dtype, part_kwargs=part_kwargs)
        model = cls(config, llm=llm, vision_tower=vision, mm_projector=projector)
        return model.eval()

    def _init_weights(self, module: nn.Module) -> None:
        """Sub-models initialise themselves; the projector keeps PyTorch's defaults."""
