"""The LongVILA model: SigLIP vision tower -> mlp_downsample projector -> Qwen2 LLM.

Importing this package registers `LongVILAConfig` (model_type "llava_llama") and `LongVILAForCausalLM` with
Transformers' AutoConfig / AutoModel / AutoModelForCausalLM, so `AutoModel.from_pretrained(ckpt)` loads a
released checkpoint folder without trust_remote_code. (`import longvila` arranges the same as soon as
Transformers is imported; see longvila/__init__.py.)
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from longvila.model.configuration import LongVILAConfig
from longvila.model.projector import MultimodalProjector
from longvila.model.sizes import build_config
from longvila.model.vlm import LongVILAForCausalLM

__all__ = ["LongVILAConfig", "LongVILAForCausalLM", "MultimodalProjector", "build_config", "register"]


def register() -> None:
    """Register with the Auto classes (idempotent)."""
    try:
        AutoConfig.register("llava_llama", LongVILAConfig)
    except ValueError:  # already registered
        pass
    for auto in (AutoModel, AutoModelForCausalLM):
        try:
            auto.register(LongVILAConfig, LongVILAForCausalLM)
        except ValueError:
            pass


register()
