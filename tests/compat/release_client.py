"""The release's side of the round trip, run by the transformers==4.46.0 environment (release_env.py).

    python release_client.py PROJECT_SITE read  CKPT INPUTS OUT   # load CKPT's parts with 4.46, run them
    python release_client.py PROJECT_SITE write CKPT INPUTS OUT   # write a checkpoint as the release does

Imports nothing of longvila: only 4.46's own classes (`Qwen2ForCausalLM`, `SiglipVisionModel`, `AutoTokenizer`,
`SiglipImageProcessor`) and torch, borrowed from the project's site-packages (appended after this env's own).
INPUTS (safetensors): `input_ids` [1, L], `pixel_values` [N, 3, H, W]; INPUTS.json: {"texts": [...]}.
OUT (safetensors + OUT.json): logits, SigLIP hidden states, projector output, the texts' token ids, what the
loaders reported (missing / unexpected keys), and the tokenizer's view of its special tokens.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.append(sys.argv[1])             # torch from the project env, after this env's transformers 4.46

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from torch import nn  # noqa: E402
from transformers import (AutoTokenizer, Qwen2Config, Qwen2ForCausalLM, SiglipImageProcessor,  # noqa: E402
                          SiglipVisionConfig, SiglipVisionModel)

MEDIA = ["[BOS]", "[PAD]", "<vila/sentinel>", "<image>", "<vila/video>"]


class DownSampleBlock(nn.Module):
    """The release's parameter-free 2x2 block (row-major tokens, 2024-12 code), written from LONGVILA.md 3.3."""

    def forward(self, x):
        n, p, c = x.shape
        h = int(round(p ** 0.5))
        x = x.reshape(n, h, h, c)
        if h % 2:
            x = torch.cat([x, x.new_zeros(n, 1, h, c)], dim=1)
            x = torch.cat([x, x.new_zeros(n, h + 1, 1, c)], dim=2)
            h += 1
        b = h // 2
        out = x.new_zeros(n, b, b, 4 * c)
        for i in range(b):
            for j in range(b):
                out[:, i, j] = torch.cat([x[:, 2 * i, 2 * j], x[:, 2 * i, 2 * j + 1], x[:, 2 * i + 1, 2 * j],
                                          x[:, 2 * i + 1, 2 * j + 1]], dim=-1)
        return out.reshape(n, b * b, 4 * c)


def loading(info: dict) -> dict:
    return {k: sorted(v) for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys")}


def run_parts(llm, vision, projector, inputs: dict, select_layer: int) -> dict:
    with torch.no_grad():
        hidden = vision(pixel_values=inputs["pixel_values"], output_hidden_states=True).hidden_states
        out = {"logits": llm(input_ids=inputs["input_ids"]).logits[0], "vision_select": hidden[select_layer],
               "vision_last": hidden[-1]}
        if projector is not None:
            out["frames"] = projector(hidden[select_layer])
    return out


def tokenizer_view(tok, texts: list[str]) -> dict:
    return {"class": type(tok).__name__, "len": len(tok), "ids": [tok(t, add_special_tokens=False)["input_ids"]
                                                                  for t in texts],
            "media_ids": tok.convert_tokens_to_ids(MEDIA), "additional": list(tok.additional_special_tokens),
            "eos": tok.eos_token, "pad": tok.pad_token, "template": tok.chat_template is not None}


def read(ckpt: Path, inputs: dict, texts: list[str]) -> tuple[dict, dict]:
    """Load each part of a checkpoint written by longvila with 4.46's classes and run them."""
    llm, llm_info = Qwen2ForCausalLM.from_pretrained(ckpt / "llm", output_loading_info=True)
    vision, vision_info = SiglipVisionModel.from_pretrained(ckpt / "vision_tower", output_loading_info=True)
    cfg = json.loads((ckpt / "config.json").read_text())
    tensors = run_parts(llm.eval(), vision.eval(), None, inputs, cfg["mm_vision_select_layer"])
    slow = ckpt.parent / "slow-tokenizer"        # the same folder without tokenizer.json: vocab.json + merges.txt
    shutil.copytree(ckpt / "llm", slow, ignore=shutil.ignore_patterns("*.safetensors*", "tokenizer.json"))
    meta = {"llm": loading(llm_info), "vision": loading(vision_info),
            "tokenizer": tokenizer_view(AutoTokenizer.from_pretrained(ckpt / "llm"), texts),
            "slow_tokenizer": tokenizer_view(AutoTokenizer.from_pretrained(slow), texts),
            "rope_theta": llm.config.rope_theta, "rope_scaling": llm.config.rope_scaling,
            "preprocessor": SiglipImageProcessor.from_pretrained(ckpt / "vision_tower").size}
    return tensors, meta


def write(ckpt: Path, inputs: dict, texts: list[str], spec: dict) -> tuple[dict, dict]:
    """A checkpoint as the release writes it: 4.46's save_pretrained for llm/ and vision_tower/, the
    tokenizer's slow files (no tokenizer.json, as in a released llm/), and the projector with the release's
    Sequential layout (layers.1/2/4) and mm_projector/config.json as the 1M checkpoint has it."""
    torch.manual_seed(7)
    llm = Qwen2ForCausalLM(Qwen2Config(**spec["llm"])).eval()
    vision = SiglipVisionModel(SiglipVisionConfig(**spec["vision"])).eval()
    tok = AutoTokenizer.from_pretrained(spec["tokenizer"])
    tok.add_special_tokens({"additional_special_tokens": MEDIA})
    llm.resize_token_embeddings(len(tok))
    c, d = vision.config.hidden_size, llm.config.hidden_size
    projector = nn.Sequential(DownSampleBlock(), nn.LayerNorm(4 * c), nn.Linear(4 * c, d), nn.GELU(),
                              nn.Linear(d, d)).eval()
    for p in projector.parameters():
        nn.init.normal_(p, std=0.05)
    llm.save_pretrained(ckpt / "llm")
    tok.save_pretrained(ckpt / "llm")
    (ckpt / "llm" / "tokenizer.json").unlink()
    vision.save_pretrained(ckpt / "vision_tower")
    size = vision.config.image_size
    SiglipImageProcessor(size={"height": size, "width": size}).save_pretrained(ckpt / "vision_tower")
    (ckpt / "mm_projector").mkdir()
    save_file({f"layers.{k}": v.contiguous() for k, v in projector.state_dict().items()},
              str(ckpt / "mm_projector" / "model.safetensors"), metadata={"format": "pt"})
    proj_cfg = {"architectures": ["MultimodalProjector"], "mm_projector_type": "mlp_downsample",
                "model_type": "v2l_projector", "torch_dtype": "float32"}
    (ckpt / "mm_projector" / "config.json").write_text(json.dumps(proj_cfg))
    (ckpt / "config.json").write_text(json.dumps({
        "architectures": ["LlavaLlamaModel"], "model_type": "llava_llama", "llm_cfg": llm.config.to_dict(),
        "vision_tower_cfg": vision.config.to_dict(), "mm_projector_cfg": proj_cfg, "hidden_size": d,
        "mm_hidden_size": c, "mm_vision_select_layer": -2, "mm_vision_select_feature": "cls_patch",
        "image_aspect_ratio": "resize", "num_video_frames": 8, "fps": 0.0, "model_dtype": "torch.float32",
        "transformers_version": transformers.__version__}, indent=2))
    tensors = run_parts(llm, vision, projector, inputs, -2)
    meta = {"tokenizer": tokenizer_view(tok, texts), "files": sorted(p.name for p in (ckpt / "llm").iterdir())}
    return tensors, meta


def main() -> None:
    _, _, mode, ckpt, inputs_path, out = sys.argv
    inputs = load_file(inputs_path)
    extra = json.loads(Path(inputs_path + ".json").read_text())
    if mode == "read":
        tensors, meta = read(Path(ckpt), inputs, extra["texts"])
    else:
        tensors, meta = write(Path(ckpt), inputs, extra["texts"], extra["spec"])
    meta["transformers"] = transformers.__version__
    save_file({k: v.contiguous() for k, v in tensors.items()}, out)
    Path(out + ".json").write_text(json.dumps(meta))


if __name__ == "__main__":
    main()
