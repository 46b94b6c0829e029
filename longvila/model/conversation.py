"""Prompts and labels: Qwen2 ChatML for training and inference, media tokens, label masks.

VILA conversation records look like `{"video": "a.mp4", "conversations": [{"from": "human", "value": "..."},
{"from": "gpt", "value": "..."}, ...]}`. They become ChatML (the release trains with a Vicuna fallback by
accident, LONGVILA.md section 3.5; we use ChatML for both training and inference):

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
    <|im_start|>user\\n<vila/video>What happens?<|im_end|>\\n
    <|im_start|>assistant\\nA dog runs.<|im_end|>\\n

`<image>` / `<video>` strings in the text are removed, each message's text is stripped of surrounding
whitespace (as the release does: " Describe the video. " is templated as "Describe the video."), and the
media token is placed before the first user message. Labels supervise each assistant answer plus its `<|im_end|>`; every other token is -100. Labels are
found from the character offsets of one tokenization of the whole text, so input ids are exactly the
tokenization of the text; a token that straddles a prompt/answer boundary (e.g. "\n\n\n" when an answer
starts with blank lines) counts as prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

IGNORE_INDEX = -100
MEDIA_TOKENS = {"image": "<image>", "video": "<vila/video>"}
SENTINEL = "<vila/sentinel>"
# Added in this order, as the release does (with Qwen2's 151,646-token vocabulary: ids 151646..151650).
ADDED_TOKENS = ("[BOS]", "[PAD]", SENTINEL, MEDIA_TOKENS["image"], MEDIA_TOKENS["video"])
DEFAULT_SYSTEM = "You are a helpful assistant."
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
IM_START, IM_END = "<|im_start|>", "<|im_end|>"

# Qwen2-Instruct's chat template, for checking our formatter against Transformers' Jinja rendering.
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def add_media_tokens(tokenizer) -> dict[str, int]:
    """Add [BOS], [PAD], the sentinel and the media tokens (those missing) as special tokens; return their ids.

    Resize the LLM's embedding to `len(tokenizer)` afterwards (`LongVILAForCausalLM.resize_for_tokenizer`).
    """
    missing = [t for t in ADDED_TOKENS if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    return {t: tokenizer.convert_tokens_to_ids(t) for t in ADDED_TOKENS}


def to_messages(record: dict, media: str | None = None, system: str = DEFAULT_SYSTEM) -> list[dict]:
    """VILA record -> [{role, content}], with the media token before the first user message's text.

    Args:
        record: `{"conversations": [{"from", "value"}, ...], ...}`.
        media: "video", "image" or None (text only).
    """
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise ValueError("a VILA record needs a non-empty 'conversations' list of {from, value} turns")
    messages = [{"role": "system", "content": system}]
    placed = media is None
    for i, turn in enumerate(turns):
        role = ROLES.get(turn.get("from"))
        if role is None or not isinstance(turn.get("value"), str):
            raise ValueError(f"conversations[{i}] must have 'from' in {sorted(ROLES)} and a string 'value'")
        text = turn["value"]
        for tag in ("<image>", "<video>", MEDIA_TOKENS["video"]):
            text = text.replace(tag + "\n", "").replace("\n" + tag, "").replace(tag, "")
        text = text.strip()  # as the release: each message is stripped before templating (labels follow)
        if role == "user" and not placed:
            text = MEDIA_TOKENS[media] + text
            placed = True
        if role == "system":
            messages[0]["content"] = text
        else:
            messages.append({"role": role, "content": text})
    return messages


def render(messages: list[dict], add_generation_prompt: bool = False) -> tuple[str, list[tuple[int, int]]]:
    """ChatML text of `messages` and the [start, end) character ranges to supervise (answer + <|im_end|>)."""
    parts, spans, pos = [], [], 0
    for m in messages:
        head = f"{IM_START}{m['role']}\n"
        parts.append(head + m["content"] + IM_END + "\n")
        if m["role"] == "assistant":
            start = pos + len(head)
            spans.append((start, start + len(m["content"]) + len(IM_END)))
        pos += len(parts[-1])
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts), spans


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]
    text: str


def tokenize_conversation(tokenizer, record: dict, media: str | None = None,
                          add_generation_prompt: bool = False) -> Tokenized:
    """Token ids and labels of a VILA record (labels: answers + their <|im_end|>, else -100)."""
    text, spans = render(to_messages(record, media), add_generation_prompt)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = []
    for tok, (s, e) in zip(enc["input_ids"], enc["offset_mapping"]):
        inside = any(a <= s and e <= b for a, b in spans) and e > s
        labels.append(tok if inside else IGNORE_INDEX)
    return Tokenized(input_ids=list(enc["input_ids"]), labels=labels, text=text)
