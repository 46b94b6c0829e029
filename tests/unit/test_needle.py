"""V-NIAH: grid arithmetic, needle insertion, scoring, resumption, outputs in the original's schema."""

from __future__ import annotations

import json

import pytest
import torch

from longvila.eval.needle import (POSTPROMPT, PREPROMPT, build_sequence, cell_name, depth_percent, exact_match,
                                  frame_grid, insert_needle, needle_index, predict_answer, read_cells, run_grid,
                                  write_outputs)


def test_frame_grid_is_the_originals_range():
    assert frame_grid(6000, 300) == list(range(300, 6001, 300))
    assert len(frame_grid(6000, 300)) == 20
    assert frame_grid(32, 8) == [8, 16, 24, 32]
    assert frame_grid(30, 8) == [8, 16, 24]
    with pytest.raises(ValueError, match="interval"):
        frame_grid(4, 8)


def test_needle_index_and_depth_labels():
    assert [needle_index(d, 300) for d in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)] == [0, 60, 120, 180, 240, 300]
    assert needle_index(0.6, 7) == 4                    # int(4.2)
    assert [depth_percent(d) for d in (0.0, 0.2, 0.4, 0.6000000000000001, 1.0)] == [0.0, 20.0, 40.0, 60.0, 100.0]
    assert cell_name(300, 0.6000000000000001) == "frame_300_depth_60"


@pytest.mark.parametrize("depth,where", [(0.0, 0), (0.5, 2), (0.99, 4), (1.0, 5)])
def test_insert_needle_exact(depth, where):
    hay = torch.arange(5, dtype=torch.float32)[:, None, None].expand(5, 2, 3)   # frame i filled with i
    needle = torch.full((2, 3), -1.0)
    out = insert_needle(hay, needle, depth)
    assert out.shape == (6, 2, 3)
    assert torch.equal(out[where], needle)
    rest = torch.cat([out[:where], out[where + 1:]])
    assert torch.equal(rest, hay)                        # haystack order unchanged around the needle


def test_exact_match_is_the_originals_comparison():
    assert exact_match("Red", "red")
    assert exact_match(" re d ", "red")                  # spaces removed, lower-cased
    assert not exact_match("reddish", "red")
    assert not exact_match("", "red")
    assert exact_match("B", " b")


class _Tok:
    """Characters as token ids (id = ord(c) + 1), enough for the sequence layout."""
    bos_token_id = None

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) + 1 for c in text]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i - 1) for i in ids if i > 0)


class _Model(torch.nn.Module):
    """An embedding table whose rows are one-hot; `media_embeds` adds one "newline" row per frame."""

    def __init__(self, d=300):
        super().__init__()
        self.emb = torch.nn.Embedding(d, d)
        self.emb.weight.data = torch.eye(d)
        self.llm = self
        self.dtype_ = torch.float32

    def get_input_embeddings(self):
        return self.emb

    def media_embeds(self, frames, newline_id):
        n, t, d = frames.shape
        nl = self.emb(torch.tensor([newline_id]))
        return torch.cat([frames, nl.expand(n, 1, d)], 1).reshape(-1, d)


def test_build_sequence_layout():
    model, tok = _Model(), _Tok()
    hay = torch.zeros(4, 2, 300)
    hay[:, :, 299] = 1.0                                 # haystack rows: one-hot 299
    needle = torch.zeros(2, 300)
    needle[:, 298] = 1.0
    embeds, start, answer = build_sequence(model, tok, hay, needle, 0.5, "Q?", "ab", newline_id=11)
    ids = embeds.argmax(-1).tolist()
    pre = [ord(c) + 1 for c in PREPROMPT]
    post = [ord(c) + 1 for c in POSTPROMPT]
    frame = lambda k: [k, k, 11]
    expected = pre + frame(299) * 2 + frame(298) + frame(299) * 2 + [ord("Q") + 1, ord("?") + 1] + post
    assert ids[:start] == expected
    assert answer == [ord("a") + 1, ord("b") + 1] and ids[start:] == answer


class _Echo(torch.nn.Module):
    """A 'model' whose logits at position i predict the id embedded at i + 1 (a perfect teacher-forced
    reader), or the id `wrong` when asked to fail."""

    def __init__(self, seq_ids, wrong=None):
        super().__init__()
        self.seq_ids, self.wrong = seq_ids, wrong

    def forward(self, inputs_embeds, position_ids, logits_to_keep):
        pos = position_ids[0][logits_to_keep]
        logits = torch.zeros(len(pos), 400)
        for j, p in enumerate(pos.tolist()):
            logits[j, self.wrong if self.wrong is not None else self.seq_ids[p + 1]] = 1.0
        return type("Out", (), {"logits": logits[None]})()


def test_predict_answer_teacher_forced_positions():
    seq = [5, 6, 7, 8, 9, 10]                             # answer = the last two tokens, starting at 4
    embeds = torch.zeros(len(seq), 3)
    assert predict_answer(_Echo(seq), embeds, 4, 2) == [9, 10]
    assert predict_answer(_Echo(seq, wrong=1), embeds, 4, 2) == [1, 1]


def _needles():
    return [{"name": "n0", "embeds": torch.zeros(2, 300), "question": "Q", "answer": "x"},
            {"name": "n1", "embeds": torch.zeros(2, 300), "question": "Q", "answer": "y"}]


class _Grid(torch.nn.Module):
    """Full stand-in for run_grid: embeddings as in _Model, predictions = 'x' always (scores 0.5 per cell)."""

    def __init__(self):
        super().__init__()
        self.inner = _Model()
        self.llm = self.inner
        self.calls = 0

    def media_embeds(self, frames, newline_id):
        return self.inner.media_embeds(frames, newline_id)

    def forward(self, inputs_embeds, position_ids, logits_to_keep):
        self.calls += 1
        logits = torch.zeros(len(logits_to_keep), 400)
        logits[:, ord("x") + 1] = 1.0
        return type("Out", (), {"logits": logits[None]})()


def test_run_grid_scores_resumes_and_writes_the_originals_schema(tmp_path):
    model, tok = _Grid(), _Tok()
    hay = torch.zeros(16, 2, 300)
    frames, depths = [8, 16], [0.0, 0.5, 1.0]
    assert run_grid(model, tok, hay, _needles(), frames, depths, tmp_path, progress=False) == 6
    assert model.calls == 12                              # 6 cells x 2 needles
    cells = read_cells(tmp_path, frames, depths)
    assert [c["Score"] for c in cells] == [0.5] * 6       # 'x' right, 'y' wrong
    assert cells[1]["needles"][0]["prediction"] == "x" and cells[1]["needles"][1]["correct"] is False
    # resumption: finished cells are skipped; a deleted one is redone
    (tmp_path / "cells" / f"{cell_name(16, 0.5)}.json").unlink()
    assert run_grid(model, tok, hay, _needles(), frames, depths, tmp_path, progress=False) == 1
    assert model.calls == 14
    summary = write_outputs(tmp_path, frames, depths, {"chance": 0.5, "trained_frames": 8})
    acc = json.loads((tmp_path / "all_accuracies.json").read_text())
    assert [sorted(r) for r in acc] == [["Frame Depth", "Num. Frame", "Score"]] * 6
    assert acc[0] == {"Num. Frame": 8, "Frame Depth": 0.0, "Score": 0.5}
    assert acc[-1] == {"Num. Frame": 16, "Frame Depth": 100.0, "Score": 0.5}
    assert (tmp_path / "avg_accuracy.txt").read_text() == "Average Accuracy: 0.5\n"
    assert (tmp_path / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(summary["scores"]) == len(depths) and all(len(r) == len(frames) for r in summary["scores"])
    assert summary["accuracy_by_frames"] == {"8": 0.5, "16": 0.5} and summary["accuracy_at_trained"] == 0.5


def test_missing_cell_is_named(tmp_path):
    with pytest.raises(ValueError, match="frame_8_depth_0"):
        read_cells(tmp_path, [8], [0.0])


def test_haystack_too_short_names_the_fix(tmp_path):
    from longvila.eval.haystack import make_haystack, read_haystack_frames

    info = make_haystack(tmp_path / "h.mp4", seconds=6)
    assert info["seconds"] == 6 and info["source_frames"] > 100
    assert read_haystack_frames(tmp_path / "h.mp4", 6).shape[0] == 6
    with pytest.raises(ValueError, match="at least 9 s"):
        read_haystack_frames(tmp_path / "h.mp4", 9)
