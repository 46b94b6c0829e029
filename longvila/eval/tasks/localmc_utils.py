"""lmms-eval hooks of the `longvila_localmc` task (copied verbatim into the task folder as utils.py).

The task YAML names these functions (`!function utils.doc_to_visual`, ...). Self-contained on purpose:
lmms-eval imports this file from the task folder, so it needs nothing but the standard library.

A doc: {"id", "video" (absolute path), "question", "options": ["A. red", ...], "answer": "B",
"question_type", "source"}.
"""

import re

POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."
_LETTER = re.compile(r"\b([A-Z])\b")


def doc_to_visual(doc):
    """The doc's video path (lmms-eval passes it to the model's generate_until)."""
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    """Question, one option per line, then the instruction to answer with a letter."""
    kwargs = lmms_eval_specific_kwargs or {}
    pre = kwargs.get("pre_prompt", "")
    post = kwargs.get("post_prompt", POST_PROMPT)
    return f"{pre}{doc['question']}\n" + "\n".join(doc["options"]) + post


def extract_letter(text, num_options=4):
    """The option letter a free-form answer picks ("B", "b", "B.", "(B) red", "The answer is B"), else None.
    Capital letters only past the first character, so that the article in "a red circle" is no answer."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:num_options]
    text = (text or "").strip()
    if len(text) == 1 and text.upper() in letters:
        return text.upper()
    if text[:1] and text[0] in letters and not text[1:2].isalpha():   # "B", "B. red", not "Blue"
        return text[0]
    for match in _LETTER.finditer(text):
        if match.group(1) in letters:
            return match.group(1)
    return None


def process_results(doc, results):
    """{"accuracy": 1.0 when the answer's letter is the right option, else 0.0}."""
    pred = extract_letter(results[0] if results else "", len(doc["options"]))
    return {"accuracy": float(pred == doc["answer"])}
