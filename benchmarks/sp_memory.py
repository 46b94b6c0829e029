"""Per-rank activation memory under sequence parallelism: a fixed global sequence at P = 1, 2, 4.

One training step (forward + backward) of a small Qwen2 LLM (built from a config, fp32, CPU) over S global
tokens, with `apply_sequence_parallel` (the `torch_cpu` kernel: no S x S mask) on real gloo processes, for
Ulysses, ring and 2D. Measured on rank 0:
  saved    bytes of the tensors autograd keeps for the backward (hooked with saved_tensors_hooks; storages
           counted once; parameters excluded): the activation memory that SP divides;
  peak     rise of the process's resident memory over the step (sampled every millisecond): saved activations
           plus transient buffers (attention blocks, all-to-all and ring buffers, logits); parameter gradients
           are allocated before the step, so they do not count.
Efficiency = (P=1 value / P) / (P value); ideal 1/P scaling is 100%; target >= 85%.

    python benchmarks/sp_memory.py [--seq-len 4096]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers.spawn import run_distributed  # noqa: E402
from rss import PeakRss  # noqa: E402  (benchmarks/ is the script's folder)

CASES = [(1, 1), (2, 1), (4, 1), (1, 2), (1, 4), (2, 2)]   # (ulysses, ring)
MODEL = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
             num_key_value_heads=4, vocab_size=4096, max_position_embeddings=65536)


def _step(rank, world, ulysses, ring, seq_len):
    import torch.nn.functional as F
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from longvila.parallel import ParallelDims, shard_sequence
    from longvila.parallel.parallelize import apply_sequence_parallel

    torch.set_num_threads(1)
    dims = ParallelDims(ulysses=ulysses, ring=ring, world_size=world).build()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**MODEL))
    apply_sequence_parallel(model, dims, backend="torch_cpu")
    ids = torch.randint(0, MODEL["vocab_size"], (seq_len,))
    targets = torch.cat([ids[1:], torch.tensor([-100])])              # shifted before sharding
    shard = lambda t: shard_sequence(t, dims, dim=0)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    for p in model.parameters():                    # gradients exist before the step: not activation memory
        p.grad = torch.zeros_like(p)
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with PeakRss() as rss:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            logits = model(input_ids=shard(ids)[None], position_ids=shard(torch.arange(seq_len))[None]).logits[0]
            loss = F.cross_entropy(logits, shard(targets), ignore_index=-100, reduction="sum") / seq_len
        loss.backward()
    return {"saved": sum(saved.values()), "peak": rss.peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seq-len", type=int, default=4096, help="global tokens (a multiple of 8)")
    args = p.parse_args()
    print(f"Qwen2 {MODEL['num_hidden_layers']} layers, hidden {MODEL['hidden_size']}, heads "
          f"{MODEL['num_attention_heads']}/{MODEL['num_key_value_heads']}, vocab {MODEL['vocab_size']}, fp32; "
          f"S = {args.seq_len} global tokens; rank 0, one forward + backward")
    print(f"{'U':>2} {'R':>2} {'P':>2} {'saved MiB':>10} {'eff.':>6} {'peak MiB':>9} {'eff.':>6}")
    base = None
    worst = {"saved": 1.0, "peak": 1.0}
    for ulysses, ring in CASES:
        r = run_distributed(_step, ulysses * ring, ulysses, ring, args.seq_len, timeout=900)[0]
        base = base or r
        pdeg = ulysses * ring
        eff_saved, eff_peak = base["saved"] / pdeg / r["saved"], base["peak"] / pdeg / r["peak"]
        if pdeg > 1:
            worst = {"saved": min(worst["saved"], eff_saved), "peak": min(worst["peak"], eff_peak)}
        print(f"{ulysses:>2} {ring:>2} {pdeg:>2} {r['saved'] / 2**20:>10.1f} {eff_saved:>6.1%} "
              f"{r['peak'] / 2**20:>9.1f} {eff_peak:>6.1%}", flush=True)
    print(f"lowest efficiency at P > 1: saved activations {worst['saved']:.1%}, peak {worst['peak']:.1%} "
          "(target >= 85%)")


if __name__ == "__main__":
    main()
