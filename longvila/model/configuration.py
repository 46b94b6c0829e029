"""`LongVILAConfig`: the released top-level `config.json` (`model_type = "llava_llama"`).

The release stores the three parts' full configs inline (`llm_cfg`, `vision_tower_cfg`, `mm_projector_cfg`);
on load a dict means "the part lives in the checkpoint's `llm/`, `vision_tower/`, `mm_projector/` folder".
`mm_projector_cfg.token_order` ("row" | "column", absent = "row") is the projector's 2x2 block order (see
`longvila.model.projector`). Other top-level fields of the release are kept as they are (PretrainedConfig stores unknown keys), so a
released config round-trips.
"""

from __future__ import annotations

from transformers import PretrainedConfig, Qwen2Config, SiglipVisionConfig

from longvila.model.projector import DEFAULT_TOKEN_ORDER, check_token_order


class LongVILAConfig(PretrainedConfig):
    model_type = "llava_llama"

    def __init__(self, llm_cfg: dict | None = None, vision_tower_cfg: dict | None = None,
                 mm_projector_cfg: dict | None = None, hidden_size: int | None = None,
                 mm_hidden_size: int | None = None, mm_vision_select_layer: int = -2,
                 mm_vision_select_feature: str = "cls_patch", image_aspect_ratio: str = "resize",
                 num_video_frames: int = 8, fps: float = 0.0, **kwargs) -> None:
        kwargs.setdefault("architectures", ["LlavaLlamaModel"])
        super().__init__(**kwargs)
        self.llm_cfg = dict(llm_cfg or {})
        self.vision_tower_cfg = dict(vision_tower_cfg or {})
        self.mm_projector_cfg = dict(mm_projector_cfg or {"mm_projector_type": "mlp_downsample",
                                                          "model_type": "v2l_projector"})
        self.hidden_size = hidden_size if hidden_size is not None else self.llm_cfg.get("hidden_size")
        self.mm_hidden_size = mm_hidden_size if mm_hidden_size is not None else self.vision_tower_cfg.get("hidden_size")
        self.mm_vision_select_layer = mm_vision_select_layer
        self.mm_vision_select_feature = mm_vision_select_feature
        self.image_aspect_ratio = image_aspect_ratio
        self.num_video_frames = num_video_frames
        self.fps = fps

    def llm_config(self) -> Qwen2Config:
        cfg = {k: v for k, v in self.llm_cfg.items() if k not in ("model_type", "transformers_version")}
        return Qwen2Config(**cfg)

    def vision_config(self) -> SiglipVisionConfig:
        cfg = {k: v for k, v in self.vision_tower_cfg.items() if k not in ("model_type", "transformers_version")}
        return SiglipVisionConfig(**cfg)

    @property
    def projector_type(self) -> str:
        return self.mm_projector_cfg.get("mm_projector_type", "mlp_downsample")

    @property
    def token_order(self) -> str:
        """The projector's 2x2 block order, "row" or "column" (absent: "row", the 2024-12 release and later)."""
        return self.mm_projector_cfg.get("token_order", DEFAULT_TOKEN_ORDER)

    @classmethod
    def from_parts(cls, llm: Qwen2Config, vision: SiglipVisionConfig, projector_type: str = "mlp_downsample",
                   token_order: str = DEFAULT_TOKEN_ORDER, **kwargs) -> "LongVILAConfig":
        """Compose a config from the parts' configs (what `save_pretrained` then writes inline)."""
        check_token_order(token_order, projector_type)
        return cls(llm_cfg=llm.to_dict(), vision_tower_cfg=vision.to_dict(),
                   mm_projector_cfg={"mm_projector_type": projector_type, "model_type": "v2l_projector",
                                     "architectures": ["MultimodalProjector"], "token_order": token_order},
                   **kwargs)
