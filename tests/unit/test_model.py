"""The LongVILA model against a hand-composed reference, loading a checkpoint written in the released layout."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

import longvila.model  # noqa: F401  (registers llava_llama with the Auto classes)
from longvila.model import LongVILAForCausalLM, build_config
from longvila.model.sizes import SIZES
from tests.unit.test_projector import reference_downsample

VIDEO_ID, NEWLINE_ID = 151650, 198


class ReleaseDownSample(nn.Module):
    """A parameter-free first layer, as the release's `DownSampleBlock` is: it holds index 0 of the Sequential, so
    the weights are named layers.1/2/4 (the test's own loops compute it, in the order the checkpoint says)."""

    def __init__(self, order="row"):
        super().__init__()
        self.order = order

    def forward(self, x):
        return reference_downsample(x, int(round(x.shape[1] ** 0.5)), self.order)


def write_released_checkpoint(root, rope=None, order=None, order_in="mm_projector", image_size=32):
    """A tiny checkpoint in the released on-disk layout, written with Transformers' own classes, the release's
    projector module structure and key names (`vision_model.` SigLIP keys, `layers.1/2/4` projector keys):
    independent of longvila's saver. `order` ("row", "column" or None = absent) goes into mm_projector/config.json
    or, with order_in="config", into config.json's mm_projector_cfg. Returns the projector module."""
    torch.manual_seed(0)
    llm_kw, vis_kw = SIZES["tiny"]
    llm_cfg = Qwen2Config(**{**llm_kw, **(rope or {})})
    vis_cfg = SiglipVisionConfig(**{**vis_kw, "image_size": image_size})   # 32 px: 8x8 patches; 28 px: 7x7
    Qwen2ForCausalLM(llm_cfg).save_pretrained(root / "llm", max_shard_size="20MB")  # sharded + index, as released
    vision = SiglipVisionModel(vis_cfg)
    vision.save_pretrained(root / "vision_tower")
    save_file({f"vision_model.{k}": v.contiguous() for k, v in vision.state_dict().items()},
              str(root / "vision_tower/model.safetensors"), metadata={"format": "pt"})
    c4, d = 4 * vis_cfg.hidden_size, llm_cfg.hidden_size
    proj = nn.Sequential(ReleaseDownSample(order or "row"), nn.LayerNorm(c4), nn.Linear(c4, d), nn.GELU(),
                         nn.Linear(d, d))
    for p in proj.parameters():
        nn.init.normal_(p, std=0.05)
    (root / "mm_projector").mkdir()
    save_file({f"layers.{k}": v.contiguous() for k, v in proj.state_dict().items()},
              str(root / "mm_projector/model.safetensors"))
    proj_cfg = {"architectures": ["MultimodalProjector"], "mm_projector_type": "mlp_downsample",
                "model_type": "v2l_projector", "torch_dtype": "float32"}
    inline = {"mm_projector_type": "mlp_downsample"}
    if order is not None:
        (proj_cfg if order_in == "mm_projector" else inline)["token_order"] = order
    (root / "mm_projector/config.json").write_text(json.dumps(proj_cfg))
    (root / "config.json").write_text(json.dumps({
        "architectures": ["LlavaLlamaModel"], "model_type": "llava_llama", "llm_cfg": llm_cfg.to_dict(),
        "vision_tower_cfg": vis_cfg.to_dict(), "mm_projector_cfg": inline,
        "hidden_size": llm_cfg.hidden_size, "mm_hidden_size": vis_cfg.hidden_size, "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "cls_patch", "image_aspect_ratio": "resize", "num_video_frames": 3,
        "fps": 0.0, "model_dtype": "torch.float32", "drop_path_rate": 0.0, "interpolate_mode": "linear"}))
    return proj


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return root, write_released_checkpoint(root)


def check_against_reference(root, proj, order):
    """AutoModel on `root` equals the reference composed by hand from the parts as saved, in `order`."""
    model = AutoModel.from_pretrained(root)
    assert isinstance(model, LongVILAForCausalLM) and model.mm_projector.token_order == order
    torch.manual_seed(1)
    size = model.vision_tower.config.image_size
    frames = torch.randn(3, 3, size, size)
    ids = torch.tensor([151644, 872, 198, VIDEO_ID, 3838, 374, 419, 30, 151645])
    vision = SiglipVisionModel.from_pretrained(root / "vision_tower").eval()
    llm = Qwen2ForCausalLM.from_pretrained(root / "llm").eval()
    with torch.no_grad():
        feats = vision(pixel_values=frames, output_hidden_states=True).hidden_states[-2]   # [3, h*h, 32]
        h = size // 4
        tokens = proj[1:](reference_downsample(feats, h, order))                             # [3, ceil(h/2)^2, 64]
        torch.testing.assert_close(model.encode_frames(frames), tokens, atol=1e-6, rtol=0)
        emb = llm.get_input_embeddings()
        newline = emb(torch.tensor([NEWLINE_ID]))[0]
        media = torch.cat([torch.cat([t, newline[None]]) for t in tokens])                    # 3 x (16 + 1)
        pos = ids.tolist().index(VIDEO_ID)
        seq = torch.cat([emb(ids[:pos]), media, emb(ids[pos + 1:])])
        want = llm(inputs_embeds=seq[None]).logits

        got_media = model.media_embeds(model.encode_frames(frames), NEWLINE_ID)
        embeds, _ = model.splice(ids, [got_media], {VIDEO_ID})
        got = model(inputs_embeds=embeds[None]).logits
    assert got.shape == (1, len(ids) - 1 + 3 * (((h + 1) // 2) ** 2 + 1), SIZES["tiny"][0]["vocab_size"])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    return model


def test_automodel_loads_the_released_layout_and_matches_the_reference(released):
    root, proj = released
    check_against_reference(root, proj, "row")       # token_order absent: row, as the Qwen2 checkpoints
    assert isinstance(AutoModelForCausalLM.from_pretrained(root), LongVILAForCausalLM)


@pytest.mark.parametrize("image_size", [32, 28])    # even (8x8) and odd (7x7, zero-padded) patch grids
@pytest.mark.parametrize("order, where", [("row", "mm_projector"), ("column", "mm_projector"), ("column", "config")])
def test_token_order_is_read_from_the_checkpoint(tmp_path, order, where, image_size):
    proj = write_released_checkpoint(tmp_path, order=order, order_in=where, image_size=image_size)
    model = check_against_reference(tmp_path, proj, order)
    model.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again/mm_projector/config.json").read_text())["token_order"] == order
    assert json.loads((tmp_path / "again/config.json").read_text())["mm_projector_cfg"]["token_order"] == order
    assert AutoModel.from_pretrained(tmp_path / "again").mm_projector.token_order == order


def test_disagreeing_token_orders_are_an_error(tmp_path):
    write_released_checkpoint(tmp_path, order="column")
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["mm_projector_cfg"]["token_order"] = "row"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="says token_order 'column' but .*config.json mm_projector_cfg.token_order"):
        AutoModel.from_pretrained(tmp_path)


def test_longvila_legacy_projector_files_load_as_column_order(tmp_path):
    """Checkpoints longvila wrote before it followed the release (keys layers.0/1/3, no token_order) were trained
    column-major: they load as such, and saving again writes the release's keys with token_order 'column'."""
    proj = write_released_checkpoint(tmp_path)
    legacy = nn.Sequential(*list(proj)[1:])                                   # Sequential(LN, Linear, GELU, Linear)
    save_file({f"layers.{k}": v.contiguous() for k, v in legacy.state_dict().items()},
              str(tmp_path / "mm_projector/model.safetensors"))
    assert sorted(load_file(str(tmp_path / "mm_projector/model.safetensors")))[0] == "layers.0.bias"
    proj[0].order = "column"
    model = check_against_reference(tmp_path, proj, "column")
    model.save_pretrained(tmp_path / "again")
    assert sorted(load_file(str(tmp_path / "again/mm_projector/model.safetensors")))[0] == "layers.1.bias"
    assert AutoModel.from_pretrained(tmp_path / "again").mm_projector.token_order == "column"


def test_a_vision_tower_with_foreign_keys_is_an_error_not_a_random_init(tmp_path):
    write_released_checkpoint(tmp_path)
    state = load_file(str(tmp_path / "vision_tower/model.safetensors"))
    save_file({k.replace("vision_model.", "siglip."): v for k, v in state.items()},
              str(tmp_path / "vision_tower/model.safetensors"))
    with pytest.raises(ValueError, match="vision_tower: the weights file lacks .* they would be random"):
        AutoModel.from_pretrained(tmp_path)


def test_labels_are_masked_over_media(released):
    model = AutoModel.from_pretrained(released[0])
    ids = torch.tensor([1, VIDEO_ID, 2, 3])
    labels = torch.tensor([-100, -100, 2, 3])
    media = torch.zeros(5, 64)
    embeds, out = model.splice(ids, [media], {VIDEO_ID}, labels)
    assert embeds.shape == (8, 64) and out.tolist() == [-100] * 6 + [2, 3]
    with pytest.raises(ValueError, match="1 media placeholders but 2 media"):
        model.splice(ids, [media, media], {VIDEO_ID})


def test_save_load_round_trip_is_bit_identical(released, tmp_path):
    model = AutoModel.from_pretrained(released[0])
    model.save_pretrained(tmp_path / "again")
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == ["config.json", "llm", "mm_projector", "vision_tower"]
    again = AutoModel.from_pretrained(tmp_path / "again")
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pre = json.loads((tmp_path / "again/vision_tower/preprocessor_config.json").read_text())
    assert pre["size"] == {"height": 32, "width": 32} and pre["image_mean"] == [0.5, 0.5, 0.5]
    cfg = json.loads((tmp_path / "again/config.json").read_text())
    assert cfg["model_type"] == "llava_llama" and cfg["architectures"] == ["LlavaLlamaModel"]
    assert cfg["llm_cfg"]["hidden_size"] == 64 and cfg["interpolate_mode"] == "linear"
    assert cfg["model_dtype"] == "torch.float32" and cfg["mm_projector_cfg"]["token_order"] == "row"
    vision = json.loads((tmp_path / "again/vision_tower/config.json").read_text())
    assert vision["torch_dtype"] == "float32" and vision["architectures"] == ["SiglipVisionModel"]
    assert all(k.startswith("vision_model.") for k in load_file(str(tmp_path / "again/vision_tower/model.safetensors")))


def test_rope_theta_and_linear_scaling_are_honoured(tmp_path):
    rope = {"rope_theta": 15_300_000.0, "rope_scaling": {"type": "linear", "factor": 4.0},
            "max_position_embeddings": 131072}
    write_released_checkpoint(tmp_path, rope=rope)
    model = AutoModel.from_pretrained(tmp_path)
    rotary = model.llm.model.rotary_emb
    dim = 64 // 4
    expected = 1.0 / (15_300_000.0 ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)) / 4.0
    torch.testing.assert_close(rotary.inv_freq, expected)
    assert model.llm.config.max_position_embeddings == 131072


@pytest.mark.parametrize("damage, message", [
    (lambda r: (r / "vision_tower/config.json").unlink(), "vision_tower/config.json is missing"),
    (lambda r: (r / "mm_projector/model.safetensors").unlink(), "projector weights are missing"),
    (lambda r: (r / "config.json").write_text(json.dumps({**json.loads((r / "config.json").read_text()),
                                                           "hidden_size": 128})), "hidden_size = 128"),
    (lambda r: (r / "config.json").write_text(json.dumps({**json.loads((r / "config.json").read_text()), "llm_cfg": {
        **json.loads((r / "config.json").read_text())["llm_cfg"], "vocab_size": 1000}})), "llm_cfg.vocab_size = 1000"),
    (lambda r: (r / "mm_projector/config.json").write_text(json.dumps({"mm_projector_type": "mlp_downsample_fix"})),
     "unknown mm_projector_type 'mlp_downsample_fix'"),
    (lambda r: (r / "mm_projector/config.json").write_text("{oops"), "mm_projector/config.json is not readable JSON"),
    (lambda r: (r / "mm_projector/model.safetensors").write_bytes(b"\x01\x02"), "model.safetensors is not a readable"),
    (lambda r: (r / "config.json").write_text(json.dumps({**json.loads((r / "config.json").read_text()),
                                                           "mm_vision_select_layer": 99})), "mm_vision_select_layer = 99"),
])
def test_broken_checkpoints_name_the_file_and_field(tmp_path, damage, message):
    write_released_checkpoint(tmp_path)
    damage(tmp_path)
    with pytest.raises(ValueError, match=message):
        AutoModel.from_pretrained(tmp_path)


def test_released_sizes_give_197_and_257_llm_tokens_per_frame():
    for size, per_frame in [("qwen2-1.5b-384", 197), ("qwen2-7b-384", 197), ("qwen2-7b-448", 257)]:
        cfg = build_config(size)
        vis = cfg.vision_config()
        patches = (vis.image_size // vis.patch_size) ** 2            # 729 or 1024, all kept ("cls_patch")
        proj = longvila.model.MultimodalProjector(cfg.projector_type, vis.hidden_size, cfg.llm_config().hidden_size)
        assert proj.tokens_per_frame(patches) + 1 == per_frame    # + one "\n" token per frame


def test_named_sizes():
    cfg = build_config("qwen2-7b-448")
    assert cfg.llm_config().num_key_value_heads == 4 and cfg.vision_config().image_size == 448
    with pytest.raises(ValueError, match="unknown model size"):
        build_config("70b")


def test_greedy_generation_matches_a_step_by_step_forward_without_cache(released):
    model = AutoModel.from_pretrained(released[0])
    torch.manual_seed(2)
    frames = torch.randn(2, 3, 32, 32)
    ids = torch.tensor([151644, 872, 198, VIDEO_ID, 3838, 151645, 198, 151644, 77091, 198])
    with torch.no_grad():
        media = model.media_embeds(model.encode_frames(frames), NEWLINE_ID)
        out = model.generate_with_media(ids, [media], {VIDEO_ID}, max_new_tokens=6)
        again = model.generate_with_media(ids, [media], {VIDEO_ID}, max_new_tokens=6)
        cur, _ = model.splice(ids, [media], {VIDEO_ID})
        manual = []
        for _ in range(6):
            nxt = int(model(inputs_embeds=cur[None], use_cache=False).logits[0, -1].argmax())
            manual.append(nxt)
            cur = torch.cat([cur, model.llm.get_input_embeddings()(torch.tensor([nxt]))])
    assert out.tolist() == again.tolist() == manual


def test_resize_for_tokenizer_grows_the_embedding(released):
    class Tok:
        def __len__(self):
            return 151_700
    model = AutoModel.from_pretrained(released[0])
    model.resize_for_tokenizer(Tok())
    assert model.llm.get_input_embeddings().num_embeddings == 151_700 == model.config.llm_cfg["vocab_size"]


def test_saved_llm_config_is_readable_by_the_release_transformers(tmp_path):
    rope = {"rope_theta": 15_300_000.0, "rope_scaling": {"type": "linear", "factor": 4.0}}
    write_released_checkpoint(tmp_path / "src", rope=rope)
    model = AutoModel.from_pretrained(tmp_path / "src")
    model.save_pretrained(tmp_path / "out")
    for cfg in (json.loads((tmp_path / "out/llm/config.json").read_text()),
                json.loads((tmp_path / "out/config.json").read_text())["llm_cfg"]):
        assert cfg["rope_theta"] == 15_300_000.0 and cfg["rope_scaling"] == {"type": "linear", "factor": 4.0}
        assert cfg["torch_dtype"] == "float32"
    again = AutoModel.from_pretrained(tmp_path / "out")
    torch.testing.assert_close(again.llm.model.rotary_emb.inv_freq, model.llm.model.rotary_emb.inv_freq)


def test_bf16_checkpoint_loads_in_bf16_and_encodes(released, tmp_path):
    model = AutoModel.from_pretrained(released[0]).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    loaded = AutoModel.from_pretrained(tmp_path / "bf16")
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    assert loaded.encode_frames(torch.randn(1, 3, 32, 32)).dtype == torch.bfloat16
    as_fp32 = AutoModel.from_pretrained(tmp_path / "bf16", dtype=torch.float32)
    assert {p.dtype for p in as_fp32.parameters()} == {torch.float32}


def test_placeholders_beyond_an_unresized_vocabulary_still_splice(released):
    model = AutoModel.from_pretrained(released[0])
    beyond = model.llm.get_input_embeddings().num_embeddings + 2
    embeds, _ = model.splice(torch.tensor([1, beyond, 2]), [torch.zeros(3, 64)], {beyond})
    assert embeds.shape == (5, 64)
