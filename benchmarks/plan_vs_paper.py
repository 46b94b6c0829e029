"""The capacity planner against the paper's ring-vs-2D numbers (issue 21), as Markdown tables. Torch-free, instant.

1. Table 8's point (578K tokens, 64 H100): step time of U x R = 64 for R in {8, 16, 32, 64} with every ring cost
   term off ("bytes only"), each candidate term alone, and all at their defaults, beside the paper's numbers.
2. What the ring would have to look like for the paper's 4.6x: the share of link bandwidth its P2P reaches.
3. The 2.1-5.7x band: ring / 2D on 32 H100 against the sequence length, with the defaults and the what-if.
4. A check of the compute-side defaults against ring-flash-attn's own measurement (its README).

    python benchmarks/plan_vs_paper.py
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from longvila.plan import paper as P  # noqa: E402
from longvila.plan.cost import Hardware, _ring_time  # noqa: E402
from longvila.plan.memory import Recipe  # noqa: E402


def table8() -> None:
    cols = P.columns()
    print(f"## Table 8: {P.TABLE8_SEQ_LEN:,} tokens on {P.TABLE8_GPUS} H100 "
          "(s per step; ratio = 1 x 64 / first 2D row)\n")
    for title, (shape, recipe, splits) in P.scenarios().items():
        print(f"### {title}\n")
        print("| U x R | " + " | ".join(cols) + " | paper |")
        print("|---" * (len(cols) + 2) + "|")
        for split in splits:
            paper = {(8, 8): f"{P.TABLE8_2D_S}", (1, 64): f"{P.TABLE8_RING_S}"}.get(split, "")
            cells = []
            for hw in cols.values():
                p = P.step(shape, recipe, split, hw)
                cells.append(f"{p.step_s:.2f}" + ("" if p.reason is None else "*"))
            print(f"| {split[0]} x {split[1]} | " + " | ".join(cells) + f" | {paper} |")
        paper_ratio = f"{P.TABLE8_RING_S / P.TABLE8_2D_S:.2f}" if splits[0] == (8, 8) else ""
        print("| ring / 2D | " + " | ".join(f"{P.ring_ratio(shape, recipe, hw, splits[0]):.2f}"
                                            for hw in cols.values()) + f" | {paper_ratio} |\n")
        full = P.step(shape, recipe, (1, 64), cols["all (defaults)"])
        print("Pure ring at the defaults, seconds per step by term: "
              + ", ".join(f"{k} {v:.2f}" for k, v in full.terms.items()) + f"; compute {full.compute_s:.2f}\n")


def what_it_takes() -> None:
    print("## What the ring would need for the paper's ratio (4.57)\n")
    print("| model | ring_overlap | ratio at full link | link share for 4.57 | = GB/s per GPU (of 25) "
          "| 2D / ring s then |")
    print("|---|---|---|---|---|---|")
    target = P.TABLE8_RING_S / P.TABLE8_2D_S
    for title, (shape, recipe, splits) in P.scenarios().items():
        for overlap in (1.0, 0.5, 0.0):
            hw = Hardware(gpus=P.TABLE8_GPUS, gpus_per_node=8, ring_overlap=overlap)
            share = P.link_efficiency_for(target, shape, recipe, hw, splits[0])
            ratio = P.ring_ratio(shape, recipe, hw, splits[0])
            need = "unreachable" if share is None else f"{share:.3f}"
            gbps = "" if share is None else f"{share * hw.inter_gbps:.1f}"
            slow = replace(hw, ring_link_efficiency=share or 1.0)
            then = "" if share is None else "{:.1f} / {:.1f}".format(
                *(P.step(shape, recipe, sp, slow).step_s for sp in (splits[0], (1, 64))))
            print(f"| {title.split(',')[0]} ({splits[0][0]} x {splits[0][1]}) | {overlap:g} | {ratio:.2f} | {need} "
                  f"| {gbps} | {then} |")
    shape, recipe, splits = P.scenarios()["Llama-3-8B, ZeRO-3, no checkpointing"]
    print("\nThe issue's premise for (d): every hop of the pure ring crossing nodes (8 senders per node instead of "
          "VILA's 1) on nodes with one NIC, so the ring's P2P gets 1/8 of it; the 2D split's 8 ring senders and "
          "ZeRO-3 share that NIC as well: ring / 2D = "
          + ", ".join("{:.1f} / {:.1f} s = {:.2f} (ring_overlap {:g})".format(*on_one_nic(shape, recipe, o), o)
                      for o in (1.0, 0.0))
          + "\n")


def on_one_nic(shape, recipe, overlap: float) -> tuple[float, float, float]:
    """Ring and 2D step seconds and their ratio when every GPU of a node sends through its one NIC."""
    hw = Hardware(gpus=P.TABLE8_GPUS, gpus_per_node=8, nics_per_node=1, ring_overlap=overlap)
    ring = P.step(shape, recipe, (1, 64), replace(hw, ring_link_efficiency=1 / 8)).step_s   # 1 sender -> 8
    two_d = P.step(shape, recipe, (8, 8), hw).step_s
    return ring, two_d, ring / two_d


def band() -> None:
    shape, gpus = P.LLAMA3_8B, 32
    share = P.link_efficiency_for(P.TABLE8_RING_S / P.TABLE8_2D_S, shape, Recipe(zero=3),
                                  Hardware(gpus=P.TABLE8_GPUS, gpus_per_node=8), (8, 8))
    cases = {"defaults": Hardware(gpus=gpus, gpus_per_node=8),
             f"link share {share:.3f} (fits Table 8)": Hardware(gpus=gpus, gpus_per_node=8, ring_link_efficiency=share)}
    lengths = [k * 1024 for k in (16, 32, 64, 128, 256, 512, 1024)]
    print(f"## The band: 1 x 32 over 8 x 4 on {gpus} H100, Llama-3-8B, ZeRO-3 (paper: {P.BAND[0]}-{P.BAND[1]}x)\n")
    print("| ring terms | checkpointing | " + " | ".join(f"{s // 1024}K" for s in lengths) + " |")
    print("|---|---" + "|---" * len(lengths) + "|")
    for name, hw in cases.items():
        for ckpt in (False, True):
            cells = []
            for s in lengths:
                ring = P.step(shape, Recipe(zero=3, checkpointing=ckpt), (1, 32), hw, s)
                two_d = P.step(shape, Recipe(zero=3, checkpointing=ckpt), (8, 4), hw, s)
                fits = ring.reason is None and two_d.reason is None
                cells.append(f"{ring.step_s / two_d.step_s:.2f}" + ("" if fits else "*"))
            print(f"| {name} | {'yes' if ckpt else 'no'} | " + " | ".join(cells) + " |")
    print("\n(* does not fit in 80 GB: time only)\n")


def ring_flash_attn_check() -> None:
    """ring-flash-attn's README: zigzag fwd+bwd at 90.2% (batch API) / 75.9% (varlen) of 1/8 of single-GPU
    flash-attn, Llama-3.1-8B shapes, 8K tokens per GPU on 8 H800 (NVLink; SEQUENCE_PARALLEL.md section 2(4))."""
    hw, seq_len, ring, h = Hardware(gpus=8, gpus_per_node=8), 8 * 8192, 8, P.LLAMA3_8B.hidden
    attn_fwd = 2 * seq_len * seq_len * h / ring / (hw.tflops * 1e12 * hw.mfu)
    terms = _ring_time(hw, seq_len, 1, ring, h, 1, attn_fwd, 0.0, 0.0)
    ideal = 3 * attn_fwd * (1 + hw.attn_half_block / (seq_len / 2))          # one GPU, the whole sequence
    print("## Compute-side defaults vs ring-flash-attn's measurement (8 x 8K tokens, zigzag, NVLink)\n")
    print(f"planner: {ideal / (3 * attn_fwd + sum(terms.values())):.1%} of ideal ("
          + ", ".join(f"{k} {v / (3 * attn_fwd):.1%}" for k, v in terms.items() if v) + "); "
          "ring-flash-attn README: 90.2% (batch API), 75.9% (varlen)\n")


def main() -> None:
    table8()
    what_it_takes()
    band()
    ring_flash_attn_check()
    off = replace(Hardware(gpus=8, gpus_per_node=8), **P.OFF)
    assert off.merge_passes == 0                                          # the columns' baseline is all off


if __name__ == "__main__":
    main()
