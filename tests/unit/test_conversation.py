"""ChatML prompts, media placement, label masks and media tokens, with the real Qwen2 tokenizer."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from longvila.data.tokenizer import resolve_tokenizer_dir
from longvila.model.conversation import (ADDED_TOKENS, IGNORE_INDEX, QWEN2_CHAT_TEMPLATE, add_media_tokens,
                                         to_messages, tokenize_conversation)

RECORD = {"video": "v.mp4", "conversations": [
    {"from": "human", "value": "<video>\nWhat happens?"}, {"from": "gpt", "value": "A dog runs."},
    {"from": "human", "value": "Then?"}, {"from": "gpt", "value": "\n\nIt sleeps."}]}


@pytest.fixture(scope="module")
def tok():
    t = AutoTokenizer.from_pretrained(resolve_tokenizer_dir("builtin:qwen2")[0])
    add_media_tokens(t)
    return t


def test_media_tokens_are_single_special_tokens(tok):
    n = len(tok)
    ids = add_media_tokens(tok)       # idempotent
    assert len(tok) == n and list(ids) == list(ADDED_TOKENS)
    assert [ids[t] for t in ADDED_TOKENS] == list(range(n - 5, n))  # appended in the release's order
    # this tokenizer is a newer Qwen vocabulary (151,669 tokens); on Qwen2's 151,646 these are 151646..151650
    assert tok("<vila/video>x", add_special_tokens=False)["input_ids"][0] == ids["<vila/video>"]


def test_text_matches_the_qwen2_jinja_template(tok):
    t = tokenize_conversation(tok, RECORD, "video")
    msgs = to_messages(RECORD, "video")
    assert t.text == tok.apply_chat_template(msgs[1:], chat_template=QWEN2_CHAT_TEMPLATE, tokenize=False)
    assert t.text.count("<vila/video>") == 1 and "<video>" not in t.text
    assert t.text.index("<vila/video>") == t.text.index("<|im_start|>user\n") + len("<|im_start|>user\n")
    assert t.input_ids == tok(t.text, add_special_tokens=False)["input_ids"]


def test_labels_are_answers_plus_im_end_only(tok):
    t = tokenize_conversation(tok, RECORD, "video")
    supervised = [i for i, l in zip(t.input_ids, t.labels) if l != IGNORE_INDEX]
    assert all(l in (IGNORE_INDEX, i) for i, l in zip(t.input_ids, t.labels))
    # "\n\nIt sleeps." is stripped first, as the release does, so no token straddles the answer's start
    assert tok.decode(supervised) == "A dog runs.<|im_end|>It sleeps.<|im_end|>"
    gen = tokenize_conversation(tok, {"conversations": RECORD["conversations"][:1]}, "video", add_generation_prompt=True)
    assert set(gen.labels) == {IGNORE_INDEX} and gen.text.endswith("<|im_start|>assistant\n")


def test_message_text_is_stripped_as_the_release_does(tok):
    record = {"conversations": [{"from": "human", "value": " <video>\n Describe the video. "},
                                {"from": "gpt", "value": "\nA dog runs.\n"}]}
    t = tokenize_conversation(tok, record, "video")
    assert "<|im_start|>user\n<vila/video>Describe the video.<|im_end|>\n" in t.text
    assert "<|im_start|>assistant\nA dog runs.<|im_end|>\n" in t.text
    supervised = [i for i, l in zip(t.input_ids, t.labels) if l != IGNORE_INDEX]
    assert tok.decode(supervised) == "A dog runs.<|im_end|>"
    assert to_messages({"conversations": [{"from": "human", "value": "Why?\n<image>"}]}, "image")[1]["content"] == \
        "<image>Why?"


def test_bad_records_name_the_problem():
    with pytest.raises(ValueError, match="non-empty 'conversations'"):
        to_messages({"video": "x"})
    with pytest.raises(ValueError, match=r"conversations\[1\] must have 'from'"):
        to_messages({"conversations": [{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}]})
