"""Checkpoints round-trip with the release's own client: Transformers 4.46.0 in an isolated, cached venv.

longvila -> 4.46: a checkpoint our `save_pretrained` wrote loads with 4.46's `Qwen2ForCausalLM`,
`SiglipVisionModel` and `AutoTokenizer` with no missing or unexpected keys (nothing re-initialised) and gives
the logits, hidden states and token ids our loader gives. 4.46 -> longvila: a checkpoint written by 4.46's
classes, with a released-style tokenizer (no tokenizer.json) and projector (`layers.1/2/4`, no token_order),
loads through `AutoModel.from_pretrained` and matches what 4.46 computed.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer

import longvila.model  # noqa: F401  (registers llava_llama)
from longvila.data.tokenizer import resolve_tokenizer_dir
from longvila.model.conversation import add_media_tokens
from longvila.model.sizes import SIZES, build_model
from tests.compat.release_env import IndexUnreachable, project_site, release_python

pytestmark = [pytest.mark.compat, pytest.mark.slow]
CLIENT = Path(__file__).with_name("release_client.py")
TEXTS = ["<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<vila/video>What happens?"
         "<|im_end|>\n<|im_start|>assistant\n", "A dog runs.  Then it sleeps\n\n\n", "Ünïcödé — 日本語 テキスト 🙂",
         "def f(x):\n    return x ** 2  # 12345", "<image><vila/sentinel>[BOS][PAD]<|endoftext|>", "   leading"]


@pytest.fixture(scope="module")
def python() -> Path:
    try:
        return release_python()
    except IndexUnreachable as e:
        pytest.skip(str(e).splitlines()[0])


def run_client(python: Path, mode: str, ckpt: Path, inputs: Path, out: Path) -> tuple[dict, dict]:
    proc = subprocess.run([str(python), str(CLIENT), project_site(), mode, str(ckpt), str(inputs), str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    meta = json.loads(Path(str(out) + ".json").read_text())
    assert meta["transformers"] == "4.46.0"
    return load_file(str(out)), meta


def write_inputs(path: Path, vocab: int, spec: dict | None = None) -> dict:
    torch.manual_seed(3)
    inputs = {"input_ids": torch.randint(0, vocab, (1, 24)), "pixel_values": torch.randn(3, 3, 32, 32)}
    save_file(inputs, str(path))
    Path(str(path) + ".json").write_text(json.dumps({"texts": TEXTS, "spec": spec}))
    return inputs


def ours(model, tok, inputs: dict) -> dict:
    with torch.no_grad():
        hidden = model.vision_tower(pixel_values=inputs["pixel_values"], output_hidden_states=True).hidden_states
        return {"logits": model.llm(input_ids=inputs["input_ids"]).logits[0], "vision_select": hidden[-2],
                "vision_last": hidden[-1], "frames": model.encode_frames(inputs["pixel_values"]),
                "ids": [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]}


def test_our_checkpoint_loads_in_transformers_4_46_unchanged(python, tmp_path):
    tok = AutoTokenizer.from_pretrained(resolve_tokenizer_dir("builtin:qwen2")[0])
    model = build_model("tiny", tok, seed=5)
    model.save_pretrained(tmp_path / "ckpt", tokenizer=tok)
    files = {p.name for p in (tmp_path / "ckpt/llm").iterdir()}
    assert {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
            "added_tokens.json"} <= files, files
    inputs = write_inputs(tmp_path / "inputs.safetensors", len(tok))
    theirs, meta = run_client(python, "read", tmp_path / "ckpt", tmp_path / "inputs.safetensors", tmp_path / "out")

    # nothing re-initialised, nothing left over
    for part in ("llm", "vision"):
        assert meta[part] == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}, (part, meta[part])
    ref = ours(model, tok, inputs)
    for key in ("logits", "vision_select", "vision_last"):
        torch.testing.assert_close(theirs[key], ref[key], atol=1e-5, rtol=1e-5, msg=key)
    media = add_media_tokens(tok)
    for view in ("tokenizer", "slow_tokenizer"):       # with tokenizer.json, and from vocab.json + merges.txt
        got = meta[view]
        assert got["ids"] == ref["ids"], view
        assert got["len"] == len(tok) and got["media_ids"] == list(media.values()), view
        assert set(media) <= set(got["additional"]) and got["eos"] == tok.eos_token and got["template"], view
    assert meta["preprocessor"] == {"height": 32, "width": 32}


def test_a_checkpoint_written_by_transformers_4_46_loads_through_automodel(python, tmp_path):
    llm_kw, vis_kw = SIZES["tiny"]
    spec = {"llm": {**llm_kw, "rope_theta": 15_300_000.0, "rope_scaling": {"type": "linear", "factor": 4.0},
                    "max_position_embeddings": 131072},
            "vision": vis_kw, "tokenizer": str(resolve_tokenizer_dir("builtin:qwen2")[0])}
    inputs = write_inputs(tmp_path / "inputs.safetensors", llm_kw["vocab_size"], spec)
    theirs, meta = run_client(python, "write", tmp_path / "ckpt", tmp_path / "inputs.safetensors", tmp_path / "out")
    assert "tokenizer.json" not in meta["files"] and "vocab.json" in meta["files"]

    model = AutoModel.from_pretrained(tmp_path / "ckpt")
    tok = AutoTokenizer.from_pretrained(tmp_path / "ckpt/llm")     # from the slow files, as a released llm/
    assert model.mm_projector.token_order == "row"                 # absent in the file: the release's order
    ref = ours(model, tok, inputs)
    for key in ("logits", "vision_select", "vision_last", "frames"):
        torch.testing.assert_close(ref[key], theirs[key], atol=1e-5, rtol=1e-5, msg=key)
    assert ref["ids"] == meta["tokenizer"]["ids"]
    assert tok.convert_tokens_to_ids(list(add_media_tokens(tok))) == meta["tokenizer"]["media_ids"]
    assert model.llm.config.rope_parameters["rope_theta"] == 15_300_000.0

    model.save_pretrained(tmp_path / "again", tokenizer=tok)       # and back again, as 4.46 reads it
    theirs_again, meta_again = run_client(python, "read", tmp_path / "again", tmp_path / "inputs.safetensors",
                                          tmp_path / "out2")
    assert meta_again["llm"]["missing_keys"] == [] and meta_again["vision"]["missing_keys"] == []
    assert meta_again["rope_theta"] == 15_300_000.0 and meta_again["rope_scaling"]["factor"] == 4.0
    torch.testing.assert_close(theirs_again["logits"], theirs["logits"], atol=1e-5, rtol=1e-5)
    assert meta_again["slow_tokenizer"]["ids"] == meta["tokenizer"]["ids"]


def test_a_released_llm_folder_without_tokenizer_json_packs_with_the_same_ids(tmp_path, tokenizer):
    """`tokenizer.path` (and `longvila pack --tokenizer`) may point at a released llm/ folder: vocab.json +
    merges.txt and the added tokens, no tokenizer.json."""
    import shutil

    from longvila.config import TokenizerConfig
    from longvila.data.tokenizer import load_tokenizer
    from longvila.model.tokenizer_files import save_release_tokenizer

    save_release_tokenizer(AutoTokenizer.from_pretrained(tokenizer.path), tmp_path / "llm")
    (tmp_path / "llm/tokenizer.json").unlink()
    slow = load_tokenizer(TokenizerConfig(str(tmp_path / "llm")))
    texts = [t.replace("<vila/video>", "") for t in TEXTS]
    assert [a.tolist() for a in slow.encode_batch(texts)] == [a.tolist() for a in tokenizer.encode_batch(texts)]
    assert slow.eos_id == tokenizer.eos_id and len(slow.sha256) == 64
    shutil.rmtree(tmp_path / "llm")
    (tmp_path / "llm").mkdir()
    with pytest.raises(ValueError, match=r"has no tokenizer.json \(nor vocab.json \+ merges.txt\)"):
        load_tokenizer(TokenizerConfig(str(tmp_path / "llm")))
