"""Communication volume and step time of a split, and the splits a configuration allows (issue 9).

Per rank and training step (one packed row of S tokens over P = U x R ranks; s = S / P; b = 2 bytes in bf16, 4 in fp32):

- compute: S (6 N + 6 L S h) / P FLOPs (the matmuls and causal attention, forward and backward; zigzag
  balances the causal work), at `tflops x mfu`; gradient checkpointing runs each forward twice (x 4/3).
- Ulysses: 4 all-to-alls per layer forward (q, k, v, o) and 4 backward, (2 h + 2 d_kv) s (U-1)/U elements
  each way: 2 L (2 h + 2 d_kv) s (U-1)/U b bytes, over NVLink (a Ulysses group stays inside a node);
  blocking, so exposed.
- ring: R-1 steps of the K/V block per layer forward, 2 S d_kv (R-1)/P elements, and in the backward the K/V
  again plus dK/dV in fp32: 2 + 4 / b times the forward bytes in all (4x in bf16). Over the inter-node link when
  the SP group spans nodes (U R > GPUs per node), else NVLink. Overlapped with the attention of the same layer:
  only what exceeds it is exposed (SEQUENCE_PARALLEL.md section 1, the overlap condition N/R >= F b d_kv / 2 B d).
- gradients and ZeRO over the world: the torch engine all-reduces fp32 gradients, 2 x 4 N_t (W-1)/W; ZeRO-2
  reduce-scatters gradients and all-gathers parameters once, 2 N_t b (W-1)/W; ZeRO-3 gathers parameters for
  the forward and the backward too, (2 N + N_t) b (W-1)/W (N_t: trained parameters; with LoRA, stage 4, the
  frozen base sends nothing under ZeRO-2 and is gathered twice under ZeRO-3). Over the inter-node link when
  W > GPUs per node. Counted as exposed (a conservative bound: DeepSpeed overlaps part of it).
- vision (stage 5): the tower's 6 N_v FLOPs per patch over the frames, divided over the SP group.
- latency: every ring step (3 (R-1) per layer: K/V forward, K/V and dK/dV backward) and every all-to-all
  (8 per layer) pays a fixed cost that nothing hides; it is what makes a long ring over many nodes slower
  than a shorter ring with Ulysses inside the node.
"""

from __future__ import annotations

from dataclasses import dataclass

from longvila.parallel.dims import ParallelDims, valid_ulysses_degrees
from longvila.plan.memory import FP32, GIB, RankMemory, Recipe, param_count, rank_memory
from longvila.shapes import LLMShape


@dataclass(frozen=True)
class Hardware:
    """The cluster: GPUs, their memory and speed, the links."""

    gpus: int
    gpus_per_node: int
    gpu_mem_gib: float = 79.2
    """What CUDA reports as the GPU's total (an "80 GB" H100 or A100: 79.2 GiB)."""
    tflops: float = 989.0
    """Dense bf16 peak per GPU (H100/H200 SXM: 989)."""
    mfu: float = 0.35
    """Fraction of the peak the step's FLOPs reach (the GPU train-step benchmark measured 0.28-0.36)."""
    intra_gbps: float = 300.0
    """Per-GPU bandwidth inside a node, GB/s (NVLink)."""
    inter_gbps: float = 25.0
    """Per-GPU bandwidth between nodes, GB/s (a 200 Gb/s NIC per GPU)."""
    intra_latency_us: float = 5.0
    """Fixed cost of one collective or ring step inside a node (launch + NVLink latency), microseconds."""
    inter_latency_us: float = 20.0
    """The same between nodes."""

    def __post_init__(self) -> None:
        if self.gpus < 1 or self.gpus_per_node < 1 or self.gpus % min(self.gpus, self.gpus_per_node):
            raise ValueError(f"--gpus {self.gpus} must be a multiple of --gpus-per-node {self.gpus_per_node}")


@dataclass(frozen=True)
class SplitPlan:
    """One (U, R, DP) split: valid or the reason why not, its memory, traffic and step time."""

    ulysses: int
    ring: int
    dp: int
    reason: str | None                  # None: valid and fits
    memory: RankMemory | None
    ulysses_bytes: int = 0
    ring_bytes: int = 0
    zero_bytes: int = 0
    compute_s: float = 0.0
    exposed_comm_s: float = 0.0
    seq_len: int = 0
    intra_bytes: int = 0
    """Of the above, what crosses NVLink inside a node ..."""
    inter_bytes: int = 0
    """... and what crosses the network between nodes."""
    batch: int = 1
    """Samples per micro-step (the times and bytes above cover all of them)."""

    @property
    def step_s(self) -> float:
        return self.compute_s + self.exposed_comm_s

    @property
    def tokens_per_s(self) -> float:
        """Training throughput of the whole cluster: DP x batch rows of seq_len tokens per micro-step."""
        return self.dp * self.batch * self.seq_len / self.step_s if self.step_s else 0.0


def evaluate(shape: LLMShape, name: str, seq_len: int, ulysses: int, ring: int, hw: Hardware,
             recipe: Recipe = Recipe(), layout: str = "auto") -> SplitPlan:
    """The plan of one split; `reason` says why it is invalid or does not fit."""
    sp = ulysses * ring
    if sp < 1 or hw.gpus % sp:
        return SplitPlan(ulysses, ring, 0, f"U x R = {sp} does not divide {hw.gpus} GPUs", None)
    dp = hw.gpus // sp
    valid = valid_ulysses_degrees(shape.heads, shape.kv_heads)
    if ulysses not in valid:
        return SplitPlan(ulysses, ring, dp, f"U={ulysses} invalid: {name} has {shape.heads} heads / "
                         f"{shape.kv_heads} KV heads; valid U in {{{', '.join(map(str, valid))}}}", None)
    if ulysses > hw.gpus_per_node:
        return SplitPlan(ulysses, ring, dp, f"U={ulysses} exceeds {hw.gpus_per_node} GPUs per node (a Ulysses "
                         "group stays inside a node)", None)
    dims = ParallelDims(ulysses=ulysses, ring=ring, world_size=hw.gpus, layout=layout)
    divisor = dims.seq_len_divisor()
    if seq_len % divisor:
        return SplitPlan(ulysses, ring, dp, f"seq_len {seq_len} is not a multiple of {divisor} ({dims.layout} over "
                         f"P={sp})", None)
    mem = rank_memory(shape, seq_len=seq_len, ulysses=ulysses, ring=ring, world=hw.gpus, recipe=recipe)
    n, h, kv, layers, b, v = param_count(shape), shape.hidden, shape.kv_dim, shape.layers, recipe.bytes, recipe.vision
    n_all, trained = recipe.param_counts(shape)
    s = seq_len // sp
    rows = recipe.batch                                                # samples per micro-step, one after another
    u_bytes = rows * 2 * layers * (2 * h + 2 * kv) * s * (ulysses - 1) // ulysses * b
    r_fwd_layer = 2 * seq_len * kv * (ring - 1) // sp * b
    r_bytes = rows * (2 + FP32 // b) * layers * r_fwd_layer           # K/V fwd + bwd, dK/dV in fp32
    synced = {0: 2 * FP32 * trained, 2: 2 * b * trained, 3: b * (2 * n_all + trained)}[recipe.zero]
    z_bytes = synced * (hw.gpus - 1) // hw.gpus
    flops_s = hw.tflops * 1e12 * hw.mfu
    vision_flops = 6 * v.params * recipe.frames * v.patches if v and recipe.frames else 0
    recompute = 4 / 3 if recipe.checkpointing else 1.0                # the forward runs twice: 4 units, not 3
    compute = rows * recompute * (seq_len * (6 * n + 6 * layers * seq_len * h) + vision_flops) / sp / flops_s
    attention_layer = 6 * seq_len * seq_len * h / sp / flops_s        # one layer's attention, fwd + bwd
    ring_inter, zero_inter = sp > hw.gpus_per_node, hw.gpus > hw.gpus_per_node     # crossing nodes?
    ring_bw = (hw.inter_gbps if ring_inter else hw.intra_gbps) * 1e9
    ring_exposed = rows * layers * max(0.0, (2 + FP32 // b) * r_fwd_layer / ring_bw - attention_layer)
    zero_bw = (hw.inter_gbps if zero_inter else hw.intra_gbps) * 1e9
    ring_latency = (hw.inter_latency_us if ring_inter else hw.intra_latency_us) * 1e-6
    latency = rows * layers * (3 * (ring - 1) * ring_latency + (8 * hw.intra_latency_us * 1e-6 if ulysses > 1 else 0))
    exposed = u_bytes / (hw.intra_gbps * 1e9) + ring_exposed + z_bytes / zero_bw + latency
    fits = mem.total <= hw.gpu_mem_gib * GIB
    reason = None if fits else f"needs {mem.total / GIB:.1f} GiB per GPU > {hw.gpu_mem_gib:g} GiB"
    inter = (r_bytes if ring_inter else 0) + (z_bytes if zero_inter else 0)
    return SplitPlan(ulysses, ring, dp, reason, mem, u_bytes, r_bytes, z_bytes, compute, exposed, seq_len,
                     u_bytes + r_bytes + z_bytes - inter, inter, rows)


def all_splits(shape: LLMShape, name: str, seq_len: int, hw: Hardware, recipe: Recipe = Recipe(),
               layout: str = "auto") -> list[SplitPlan]:
    """Every U x R dividing the GPU count: fitting splits first, highest throughput (tokens/s) first, then the
    rejected ones."""
    plans = [evaluate(shape, name, seq_len, u, sp // u, hw, recipe, layout)
             for sp in range(1, hw.gpus + 1) if hw.gpus % sp == 0
             for u in range(1, sp + 1) if sp % u == 0]
    return sorted(plans, key=lambda p: (p.reason is not None, -p.tokens_per_s if p.reason is None else 0,
                                        p.ulysses * p.ring, p.ulysses))
