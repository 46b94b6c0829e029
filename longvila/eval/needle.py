"""Video needle-in-a-haystack (V-NIAH), as the original harness scores it, with sequence-parallel prefill.

    results = run_grid(model, tokenizer, haystack_FTD, needles, frame_grid(32, 8), NEEDLE_DEPTHS, out, dims)
    write_outputs(out, frame_grid(32, 8), NEEDLE_DEPTHS, summary={...})

Per cell (frames F, depth d) and needle: input = embed(PREPROMPT) | haystack[:idx] | needle | haystack[idx:F] |
embed(question) | embed(POSTPROMPT) | embed(answer), idx = int(d x F) (LONGVILA.md section 6.1); each frame is
followed by the "\\n" token's embedding, as our model (and VILA) sees frames in training. One forward pass
(teacher forcing): the answer counts when the argmax at every answer position is the answer token (decoded,
spaces removed, lower-cased, exact match). The cell's score is the mean over the needles.

With `dims` (SP degree P > 1) the prefill is MM-SP: the sequence is padded at the END to the layout's divisor
(causally harmless), sharded (zigzag), each rank runs its shard with global positions, and only the answer
positions go through the LM head (`logits_to_keep`), so the 151k-vocabulary logits of a 1M-token sequence are
never made. DP groups (world > P) take cells round-robin.

Outputs (the original's schema): cells/frame_{F}_depth_{D}.json (resumable: finished cells are skipped),
all_accuracies.json ([{"Num. Frame", "Frame Depth", "Score"}]), avg_accuracy.txt, heatmap.png; plus
summary.json (chance, accuracy per frame count, RoPE settings, SP split).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from longvila.utils.io import write_json_atomic, write_text_atomic
from longvila.utils.logging import get_logger

PREPROMPT = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
POSTPROMPT = "<|im_end|>\n<|im_start|>assistant\n"
HEATMAP_COLOURS = ("#F0496E", "#EBB839", "#9ad5b3")


def frame_grid(max_frames: int, interval: int) -> list[int]:
    """The grid's columns: interval, 2 x interval, ..., up to max_frames (the original's range)."""
    if interval < 1 or max_frames < interval:
        raise ValueError(f"need 1 <= interval <= max_frames, got interval {interval}, max_frames {max_frames}")
    return list(range(interval, max_frames + 1, interval))


def needle_index(depth: float, frames: int) -> int:
    """Where the needle frame goes: int(depth x frames) (0 = before the first frame, frames = after the last)."""
    return int(depth * frames)


def depth_percent(depth: float) -> float:
    """The original's "Frame Depth": depth x 100 rounded to tens."""
    return float(round(depth * 100, -1))


def cell_name(frames: int, depth: float) -> str:
    return f"frame_{frames}_depth_{int(depth_percent(depth))}"


def insert_needle(haystack: torch.Tensor, needle: torch.Tensor, depth: float) -> torch.Tensor:
    """haystack [F, ...] with needle [...] inserted as one more frame at needle_index(depth, F): [F + 1, ...]."""
    i = needle_index(depth, len(haystack))
    return torch.cat([haystack[:i], needle[None].to(haystack.dtype), haystack[i:]])


def normalise(text: str) -> str:
    """The original's comparison form: spaces removed, lower-cased."""
    return text.replace(" ", "").strip().lower()


def exact_match(prediction: str, answer: str) -> bool:
    return normalise(prediction) == normalise(answer)


def _ids(tokenizer, text: str) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    return ids[1:] if ids and bos is not None and ids[0] == bos else ids   # the original strips a BOS


def build_sequence(model, tokenizer, haystack_FTD: torch.Tensor, needle_TD: torch.Tensor, depth: float,
                   question: str, answer: str, newline_id: int) -> tuple[torch.Tensor, int, list[int]]:
    """The cell's embeddings [L, D], the index of the first answer token, and the answer's token ids."""
    embed = model.llm.get_input_embeddings()
    device = haystack_FTD.device
    text = lambda s: embed(torch.tensor(_ids(tokenizer, s), dtype=torch.long, device=device))
    answer_ids = _ids(tokenizer, answer)
    frames = insert_needle(haystack_FTD, needle_TD, depth)
    media = model.media_embeds(frames, newline_id)
    parts = [text(PREPROMPT), media.to(embed.weight.dtype), text(question), text(POSTPROMPT)]
    prompt_len = sum(len(p) for p in parts)
    parts.append(embed(torch.tensor(answer_ids, dtype=torch.long, device=device)))
    return torch.cat(parts), prompt_len, answer_ids


@torch.no_grad()
def predict_answer(model, embeds_LD: torch.Tensor, answer_start: int, answer_len: int, dims=None) -> list[int]:
    """Teacher-forced argmax at the answer positions [answer_start - 1, answer_start + answer_len - 1), with
    the prefill sharded over the SP group of `dims` (every rank returns the same ids)."""
    from longvila.parallel.layout import local_indices

    p = 1 if dims is None else dims.sp_degree
    divisor = 1 if p == 1 else dims.seq_len_divisor()
    pad = -len(embeds_LD) % divisor
    embeds = torch.cat([embeds_LD, embeds_LD.new_zeros(pad, embeds_LD.shape[1])])
    rank = 0 if p == 1 else dims.axis_rank("sp")
    idx = local_indices(len(embeds), p, rank, "zigzag" if p == 1 else dims.layout).to(embeds.device)
    first = answer_start - 1
    keep = ((idx >= first) & (idx < first + answer_len)).nonzero().flatten()
    out = model(inputs_embeds=embeds[idx][None], position_ids=idx[None], logits_to_keep=keep)
    preds = torch.full((answer_len,), -1, dtype=torch.long, device=embeds.device)
    preds[idx[keep] - first] = out.logits[0].argmax(-1)
    if p > 1:
        import torch.distributed as dist

        dist.all_reduce(preds, op=dist.ReduceOp.MAX, group=dims.group("sp"))
    return preds.tolist()


def _owner(dims) -> bool:
    return dims is None or dims.axis_rank("sp") == 0


def run_grid(model, tokenizer, haystack_FTD: torch.Tensor, needles: list[dict], frames: list[int],
             depths: list[float], out_dir: str | Path, dims=None, progress: bool = True) -> int:
    """Evaluate every missing cell of frames x depths (needles: [{"embeds": [T, D], "question", "answer",
    "name"}]); SP rank 0 of the cell's DP group writes cells/<cell>.json. Returns the cells evaluated here."""
    import torch.distributed as dist
    from tqdm import tqdm

    cells_dir = Path(out_dir) / "cells"
    if max(frames) > len(haystack_FTD):
        raise ValueError(f"the grid needs {max(frames)} haystack frames, the haystack has {len(haystack_FTD)}")
    grid = [(f, d) for f in frames for d in depths]
    todo = [(f, d) for f, d in grid if not (cells_dir / f"{cell_name(f, d)}.json").is_file()]
    if dist.is_initialized():
        dist.barrier()                           # every rank listed the finished cells before any is written
    dp, dp_rank = (1, 0) if dims is None else (dims.dp_degree, dims.axis_rank("dp"))
    mine = todo[dp_rank::dp]
    if len(todo) < len(grid):
        get_logger().info(f"needle: {len(grid) - len(todo)} of {len(grid)} cells already done, skipped")
    (newline_id,) = tokenizer("\n", add_special_tokens=False)["input_ids"]
    bar = tqdm(mine, desc="needle cells", unit="cell", disable=not (progress and _owner(dims) and dp_rank == 0))
    for f, d in bar:
        rows = []
        for nd in needles:
            embeds, start, answer_ids = build_sequence(model, tokenizer, haystack_FTD[:f], nd["embeds"], d,
                                                       nd["question"], nd["answer"], newline_id)
            pred = predict_answer(model, embeds, start, len(answer_ids), dims)
            text = tokenizer.decode(pred, skip_special_tokens=True)
            rows.append({"needle": nd["name"], "answer": nd["answer"], "prediction": text,
                         "correct": exact_match(text, nd["answer"]), "tokens": len(embeds)})
        score = sum(r["correct"] for r in rows) / len(rows)
        bar.set_postfix(frames=f, depth=d, score=f"{score:.2f}")
        if _owner(dims):
            write_json_atomic(cells_dir / f"{cell_name(f, d)}.json",
                              {"Num. Frame": f, "Frame Depth": depth_percent(d), "Score": score, "depth": d,
                               "needles": rows})
    if dist.is_initialized():
        dist.barrier()
    return len(mine)


def read_cells(out_dir: str | Path, frames: list[int], depths: list[float]) -> list[dict]:
    """The grid's cell records, frames-major; an error names a missing cell."""
    cells = []
    for f in frames:
        for d in depths:
            path = Path(out_dir) / "cells" / f"{cell_name(f, d)}.json"
            try:
                cells.append(json.loads(path.read_text()))
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(f"{path}: missing or unreadable ({e}); rerun the needle eval to fill it") from e
    return cells


def plot_heatmap(scores, frames: list[int], depths: list[float], path: str | Path, title: str = "") -> None:
    """heatmap.png: depth (rows) x frames (columns), 0-1 colour scale, the original's colours and labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap

    from longvila.utils.io import atomic_path

    cmap = LinearSegmentedColormap.from_list("niah", list(HEATMAP_COLOURS))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(frames) + 2), 0.45 * len(depths) + 2))
    im = ax.imshow(scores, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    fmt = lambda f: f"{f / 1000:g}K" if f >= 1000 else str(f)
    ax.set_xticks(range(len(frames)), [fmt(f) for f in frames], rotation=45 if len(frames) > 10 else 0)
    ax.set_yticks(range(len(depths)), [f"{depth_percent(d):g}" for d in depths])
    ax.set_xlabel("Num. of Frames")
    ax.set_ylabel("Depth Percent")
    for i in range(len(depths)):
        for j in range(len(frames)):
            ax.text(j, i, f"{scores[i][j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax)
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_outputs(out_dir: str | Path, frames: list[int], depths: list[float], summary: dict) -> dict:
    """all_accuracies.json, avg_accuracy.txt, heatmap.png and summary.json from the cells; returns summary."""
    out = Path(out_dir)
    cells = read_cells(out, frames, depths)
    write_json_atomic(out / "all_accuracies.json",
                      [{k: c[k] for k in ("Num. Frame", "Frame Depth", "Score")} for c in cells])
    avg = sum(c["Score"] for c in cells) / len(cells)
    write_text_atomic(out / "avg_accuracy.txt", f"Average Accuracy: {avg}\n")
    by = {f: [c["Score"] for c in cells if c["Num. Frame"] == f] for f in frames}
    scores = [[cells[j * len(depths) + i]["Score"] for j in range(len(frames))] for i in range(len(depths))]
    chance = summary.get("chance")
    title = f"V-NIAH: mean {avg:.2f}" + (f" (chance {chance:.2f})" if chance is not None else "")
    plot_heatmap(scores, frames, depths, out / "heatmap.png", title=title)
    trained = summary.get("trained_frames")
    at_trained = [c["Score"] for c in cells if trained is not None and c["Num. Frame"] <= trained]
    summary = {**summary, "frames": frames, "depths": depths, "cells": len(cells), "avg_accuracy": avg,
               "accuracy_by_frames": {str(f): sum(v) / len(v) for f, v in by.items()},
               "accuracy_at_trained": sum(at_trained) / len(at_trained) if at_trained else None,
               "scores": scores}
    write_json_atomic(out / "summary.json", summary)
    return summary
