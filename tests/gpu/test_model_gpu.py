"""GPU: bf16 logits of the model on CUDA against the fp32 CPU reference (run with `pytest -m gpu tests/gpu`).

Attention on the GPU through Transformers' `sdpa` (PyTorch's fused CUDA kernels), through `flash_attention_2`
when the flash-attn package is installed, and through our sequence-parallel attention (world size 1, the
`flash_attn` block kernel) plugged in with `apply_sequence_parallel`.
"""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

from longvila.model import LongVILAForCausalLM, build_config

pytestmark = pytest.mark.gpu
VIDEO_ID, NEWLINE_ID = 151650, 198
NO_FLASH = pytest.mark.skipif(importlib.util.find_spec("flash_attn") is None,
                              reason="flash-attn is not installed (pip install -e '.[gpu]')")


def logits(model: LongVILAForCausalLM, frames: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        media = model.media_embeds(model.encode_frames(frames), NEWLINE_ID)
        embeds, _ = model.splice(ids, [media], {VIDEO_ID})
        return model(inputs_embeds=embeds[None]).logits[0].float().cpu()


@pytest.mark.parametrize("attention", ["sdpa", pytest.param("flash_attention_2", marks=NO_FLASH), "longvila_sp"])
@pytest.mark.parametrize("size", ["tiny", "qwen2-1.5b-384"])
def test_bf16_gpu_attention_matches_the_fp32_reference(size, attention):
    torch.manual_seed(0)
    model = LongVILAForCausalLM(build_config(size)).eval()
    image = model.vision_tower.config.image_size
    frames = torch.randn(2, 3, image, image)
    ids = torch.tensor([151644, 872, 198, VIDEO_ID, 3838, 374, 419, 30, 151645, 198])
    ref = logits(model, frames, ids)                                   # fp32, CPU, eager/sdpa attention

    fast = copy.deepcopy(model).to("cuda", torch.bfloat16)
    if attention == "longvila_sp":
        from longvila.parallel import ParallelDims
        from longvila.parallel.parallelize import apply_sequence_parallel
        apply_sequence_parallel(fast, ParallelDims(world_size=1), backend="flash_attn")
    else:
        fast.llm.set_attn_implementation(attention)
    got = logits(fast, frames.to("cuda", torch.bfloat16), ids.to("cuda"))
    rel = (got - ref).norm() / ref.norm()
    agree = (got.argmax(-1) == ref.argmax(-1)).float().mean()
    print(f"{size} / {attention}: relative logits error {rel:.4f}, top-1 agreement {agree:.3f}")
    assert rel < 0.05 and agree > 0.9
