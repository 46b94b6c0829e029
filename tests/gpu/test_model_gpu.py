"""GPU: bf16 + flash-attn logits of the model against the fp32 CPU reference path (run with `pytest -m gpu`).

Skipped without CUDA (tests/conftest.py) or without flash-attn. Not yet run on a GPU: see docs/LOG.md.
"""

from __future__ import annotations

import copy

import pytest
import torch

from longvila.model import LongVILAForCausalLM, build_config

pytestmark = pytest.mark.gpu
flash_attn = pytest.importorskip("flash_attn", reason="flash-attn is not installed (pip install -e '.[gpu]')")

VIDEO_ID, NEWLINE_ID = 151650, 198


def logits(model: LongVILAForCausalLM, frames: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        media = model.media_embeds(model.encode_frames(frames), NEWLINE_ID)
        embeds, _ = model.splice(ids, [media], {VIDEO_ID})
        return model(inputs_embeds=embeds[None]).logits[0].float().cpu()


@pytest.mark.parametrize("size", ["tiny", "qwen2-1.5b-384"])
def test_bf16_flash_attention_matches_the_fp32_reference(size):
    torch.manual_seed(0)
    model = LongVILAForCausalLM(build_config(size)).eval()
    image = model.vision_tower.config.image_size
    frames = torch.randn(2, 3, image, image)
    ids = torch.tensor([151644, 872, 198, VIDEO_ID, 3838, 374, 419, 30, 151645, 198])
    ref = logits(model, frames, ids)                                   # fp32, CPU, eager/sdpa attention

    fast = copy.deepcopy(model).to("cuda", torch.bfloat16)
    fast.llm.set_attn_implementation("flash_attention_2")
    got = logits(fast, frames.to("cuda", torch.bfloat16), ids.to("cuda"))
    rel = (got - ref).norm() / ref.norm()
    agree = (got.argmax(-1) == ref.argmax(-1)).float().mean()
    print(f"{size}: relative logits error {rel:.4f}, top-1 agreement {agree:.3f}")
    assert rel < 0.05 and agree > 0.9
