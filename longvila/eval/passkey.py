"""Passkey retrieval: does the model find a 5-digit key hidden at a given depth of a long text?

Records come from `passkeys.jsonl` (rule make_corpus: held-out documents; or any file with the same fields:
id, target_tokens, depth, key, prompt, answer). The prompt ends with "What is the pass key? The pass key is";
the model continues greedily (raw text, no chat template, as LongLoRA's eval does) and a record counts as
found when the generated digits equal the key. Results: accuracy per (length, depth), the grid stage 4
reports after each context step, and optionally a heatmap.

    grid = evaluate_passkeys(model, tokenizer, load_passkeys("results/make_corpus/passkeys.jsonl"))
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm


def load_passkeys(path: str | Path, lengths: list[int] | None = None) -> list[dict]:
    """Records of a passkeys.jsonl file (only `lengths` when given); errors name the file and line."""
    out = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            ok = all(k in rec for k in ("target_tokens", "depth", "key", "prompt"))
        except json.JSONDecodeError:
            ok = False
        if not ok:
            raise ValueError(f"{path}:{i}: not a passkey record (needs target_tokens, depth, key, prompt)")
        if lengths is None or rec["target_tokens"] in lengths:
            out.append(rec)
    return out


@torch.no_grad()
def answer_of(model, tokenizer, prompt: str, max_new_tokens: int = 8) -> str:
    """Greedy continuation of the raw prompt (any causal LM, or a LongVILA model's LLM)."""
    llm = getattr(model, "llm", model)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].to(llm.device)
    out = llm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                       pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def evaluate_passkeys(model, tokenizer, records: list[dict], progress: bool = False) -> dict:
    """{"accuracy": overall, "grid": {length: {depth: accuracy}}, "results": [per record]}."""
    results, cells = [], defaultdict(list)
    for rec in tqdm(records, desc="passkey", unit="doc", disable=not progress):
        text = answer_of(model, tokenizer, rec["prompt"])
        digits = re.findall(r"\d+", text)
        found = bool(digits) and digits[0] == str(rec["key"])
        results.append({"id": rec.get("id"), "length": rec["target_tokens"], "depth": rec["depth"],
                        "key": rec["key"], "output": text, "found": found})
        cells[(rec["target_tokens"], rec["depth"])].append(found)
    grid: dict = defaultdict(dict)
    for (length, depth), hits in sorted(cells.items()):
        grid[str(length)][str(depth)] = sum(hits) / len(hits)
    accuracy = sum(r["found"] for r in results) / len(results) if results else 0.0
    return {"accuracy": accuracy, "grid": dict(grid), "results": results}


def heatmap(grid: dict, path: str | Path, title: str = "passkey retrieval") -> None:
    """Accuracy per (length, depth) as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted(grid, key=int)
    depths = sorted({d for row in grid.values() for d in row}, key=float)
    values = [[grid[n].get(d, float("nan")) for n in lengths] for d in depths]
    fig, ax = plt.subplots(figsize=(max(4.8, 1.6 + 0.9 * len(lengths)), 1.6 + 0.5 * len(depths)))
    im = ax.imshow(values, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(lengths)), lengths)
    ax.set_yticks(range(len(depths)), depths)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("depth")
    ax.set_title(title, fontsize=10)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            if v == v:                                                  # not NaN: print the accuracy in the cell
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def length_accuracy(result: dict, length: int) -> float | None:
    """Depth-averaged accuracy of one evaluation (`evaluate_passkeys` output) at `length`; None if not tested."""
    row = result["grid"].get(str(length))
    return sum(row.values()) / len(row) if row else None


def extension_rows(steps: list[tuple[str, dict]]) -> list[dict]:
    """Before and after each context extension, from the stage-4 steps' evaluations in order ([(context,
    passkey.json)]): the step's own length (`own_length`), measured on the previous step's model (which had not
    trained there; it evaluated that length as its `--next-context`) and on this step's model."""
    rows = []
    for i, (ctx, res) in enumerate(steps):
        length = res.get("own_length") or max(int(n) for n in res["grid"])
        before = length_accuracy(steps[i - 1][1], length) if i else None
        rows.append({"context": ctx, "length": length, "before": before, "after": length_accuracy(res, length)})
    return rows
