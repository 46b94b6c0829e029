"""Communication volume and step time of a split, and the splits a configuration allows (issues 9, 21).

Per rank and training step (one packed row of S tokens over P = U x R ranks; s = S / P; b = 2 bytes in bf16, 4 in
fp32; with gradient checkpointing the forward, its all-to-alls and its ring run twice):

- compute: S (6 N + 6 L S h) / P FLOPs (the matmuls and causal attention, forward and backward; zigzag
  balances the causal work), at `tflops x mfu`; gradient checkpointing runs each forward twice (x 4/3).
- Ulysses: 4 all-to-alls per layer forward (q, k, v, o) and 4 backward, (2 h + 2 d_kv) s (U-1)/U elements
  each way: 2 L (2 h + 2 d_kv) s (U-1)/U b bytes, over NVLink (a Ulysses group stays inside a node);
  blocking, so exposed.
- ring: R-1 steps of the K/V block per layer forward, 2 S d_kv (R-1)/P elements, and in the backward the K/V
  again plus dK/dV in fp32: 2 + 4 / b times the forward bytes in all (4x in bf16). Over the inter-node link when
  the SP group spans nodes (U R > GPUs per node), else NVLink. Each phase (forward, backward) overlaps its
  transfers with its own ring steps' attention (the R-1 steps that have a transfer in flight): only what exceeds
  them is exposed (SEQUENCE_PARALLEL.md section 1, the overlap condition N/R >= F b d_kv / 2 B d).
- gradients and ZeRO over the world: the torch engine all-reduces fp32 gradients, 2 x 4 N_t (W-1)/W; ZeRO-2
  reduce-scatters gradients and all-gathers parameters once, 2 N_t b (W-1)/W; ZeRO-3 gathers parameters for
  the forward and the backward too, (2 N + N_t) b (W-1)/W (N_t: trained parameters; with LoRA, stage 4, the
  frozen base sends nothing under ZeRO-2 and is gathered twice under ZeRO-3). Over the inter-node link when
  W > GPUs per node. Counted as exposed (a conservative bound: DeepSpeed overlaps part of it).
- vision (stage 5): the tower's 6 N_v FLOPs per patch over the frames, divided over the SP group.

What a long ring costs beyond bytes (issue 21: the paper measured ZigZag-RingAttn 4.6x slower than 2D attention
at 578K tokens on 64 H100, Table 8). Each term is a `Hardware` field; each is off at its neutral value:

- (a) `attn_half_block`: the attention kernel's throughput falls for short blocks. A ring step's key block is
  S / 2R tokens (zigzag chunks); the kernel runs at n / (n + attn_half_block) of its long-block speed.
- (b) latency and host time per ring step: every ring step (3 (R-1) per layer: K/V forward, K/V and dK/dV
  backward) and every all-to-all (8 per layer) pays `intra/inter_latency_us`, which nothing hides; and a ring
  step takes at least `ring_step_host_us` (the host launching its kernels and P2P calls), which hides only behind
  that step's GPU work.
- (c) `overlap_slowdown`: attention slows down while NCCL moves the next block (its kernels take SMs): the
  paper's Table 2, fwd + bwd, is fit by overlap_slowdown x (4096 / n)^0.88 for a block of n = S / R local
  tokens (9.3, 6.8, 2.7, 2.6, 1.5% at 4-32K measured; 10.4, 5.7, 3.0, 2.1, 1.7% fit).
- (d) `nics_per_node`: a node's GPUs share its NICs. With the VILA placement (Ulysses groups are contiguous
  ranks, ring groups stride U) a ring that spans nodes has U senders per node on the inter-node link (one for a
  pure ring, whose other hops stay on NVLink), so each gets min(1, nics / U) of `inter_gbps`; ZeRO traffic,
  sent by all GPUs of a node at once, gets min(1, nics / GPUs per node).
- (e) `merge_passes`: each ring step merges its block into the running fp32 output by LSE (forward) and adds
  block gradients into fp32 accumulators (backward): memory-bound passes over an s x h fp32 tensor at
  `hbm_gbps` on the compute stream, R-1 per layer and phase. 14 in all: about 10 forward, counted in the
  ring-flash-attn package VILA pins (0.1.1; its `update_out_and_lse`: the block cast to fp32, two rescaled terms
  and their sum, and zigzag's half-block slice written back), about 4 backward (dq cast and added in fp32, dK/dV
  added). Checked against ring-flash-attn's own measurement (benchmarks/plan_vs_paper.py): (a) + (c) + (e) put
  its zigzag at 82% of ideal at 8 x 8K tokens; its README measured 90% (batch API) and 76% (varlen).
- `ring_overlap`: the share of the ring's transfers that can overlap attention at all (1: Ring Attention's
  premise, which ring-flash-attn implements by posting the next block's send/recv before computing the current
  one; 0: transfer and compute take turns), and `ring_link_efficiency`, the share of the link the ring's P2P
  reaches. Both are what-ifs for a ring implementation that falls short, neutral by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from longvila.parallel.dims import ParallelDims, valid_ulysses_degrees
from longvila.plan.memory import FP32, GIB, RankMemory, Recipe, param_count, rank_memory
from longvila.shapes import LLMShape

OVERLAP_SLOWDOWN_BLOCK = 4096
OVERLAP_SLOWDOWN_EXPONENT = 0.88
"""(c) The slowdown of attention under a concurrent transfer falls as (OVERLAP_SLOWDOWN_BLOCK / n)^0.88: the
log-log least-squares fit of the paper's Table 2 (fwd + bwd kernel time with and without overlap, 4K-32K)."""
OVERLAP_SLOWDOWN_CAP = 0.5
"""(c) Below 4K tokens the fit is extrapolated (Table 2 stops there); it is capped at +50%."""
MERGE_FORWARD_SHARE = 10 / 14
"""(e) Of `merge_passes`, the forward's share (it runs twice under gradient checkpointing)."""


@dataclass(frozen=True)
class Hardware:
    """The cluster: GPUs, their memory and speed, the links; and what a ring step costs beyond its bytes."""

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
    """(b) Fixed cost of one collective or ring step inside a node (launch + NVLink latency), microseconds."""
    inter_latency_us: float = 20.0
    """(b) The same between nodes."""
    ring_step_host_us: float = 150.0
    """(b) Least time of one ring step in one phase, microseconds: the host launching its ~20 kernels and P2P
    calls at ~5-10 us each (PyTorch eager, ring-flash-attn's zigzag step; an estimate, not measured here). It
    only shows when a step's GPU work is shorter (blocks of a few hundred tokens). 0: off."""
    attn_half_block: float = 256.0
    """(a) Key-block length (tokens) at which the attention kernel runs at half its long-block throughput:
    FlashAttention-2 on an H100 reaches about 2/3 of its 16K-token speed at 512 tokens and ~97% at 8K (read off
    the FlashAttention-2 README's H100 fwd+bwd figure, head dim 128; approximate). 0: off."""
    overlap_slowdown: float = 0.104
    """(c) Slowdown of attention while a ring transfer runs, at a 4,096-token block (the paper's Table 2:
    +9.3% fwd+bwd at 4K, +1.5% at 32K; this is the fit's value). 0: off."""
    nics_per_node: int | None = None
    """(d) Inter-node NICs per node, each of `inter_gbps`; None: one per GPU (a DGX H100 has eight)."""
    merge_passes: float = 14.0
    """(e) fp32 s x h passes per ring step (LSE merge forward, gradient accumulation backward). 0: off."""
    hbm_gbps: float = 3000.0
    """(e) Memory bandwidth an elementwise kernel reaches, GB/s (H100 SXM: 3,350 peak)."""
    ring_overlap: float = 1.0
    """Share of the ring's transfers that can overlap attention (1: all; 0: none)."""
    ring_link_efficiency: float = 1.0
    """Share of a link's bandwidth the ring's P2P send/recv reaches (1: the link's rate, as NCCL's send/recv
    reaches for blocks of megabytes; the ring's K/V blocks are tens of MB at these lengths)."""

    def __post_init__(self) -> None:
        if self.gpus < 1 or self.gpus_per_node < 1 or self.gpus % min(self.gpus, self.gpus_per_node):
            raise ValueError(f"--gpus {self.gpus} must be a multiple of --gpus-per-node {self.gpus_per_node}")

    def bandwidth(self, inter: bool, senders: int) -> float:
        """Bytes/s per GPU when `senders` GPUs of a node send at once (over the network when `inter`)."""
        if not inter:
            return self.intra_gbps * 1e9
        nics = self.gpus_per_node if self.nics_per_node is None else self.nics_per_node
        return self.inter_gbps * 1e9 * min(1.0, nics / senders)


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
    ring_overhead_s: float = 0.0
    """Time the ring adds on the compute stream: short blocks (a), host time (b), overlap slowdown (c), merges (e)."""
    terms: dict = field(default_factory=dict)
    """Seconds per micro-step of each part of the step beyond `compute_s`, by name (see `TERMS`)."""

    @property
    def step_s(self) -> float:
        return self.compute_s + self.ring_overhead_s + self.exposed_comm_s

    @property
    def tokens_per_s(self) -> float:
        """Training throughput of the whole cluster: DP x batch rows of seq_len tokens per micro-step."""
        return self.dp * self.batch * self.seq_len / self.step_s if self.step_s else 0.0


TERMS = ("block_efficiency", "host_floor", "overlap_slowdown", "merge", "ring_exposed", "latency", "ulysses", "zero")
"""`SplitPlan.terms`: the first four make `ring_overhead_s`, the last four `exposed_comm_s`."""


def _ring_time(hw: Hardware, seq_len: int, ulysses: int, ring: int, h: int, fwd_runs: int,
               attn_fwd: float, transfer_fwd: float, transfer_bwd: float) -> dict[str, float]:
    """One layer's ring-side seconds beyond the ideal attention (`attn_fwd`, forward; the backward is twice
    it): the four compute-stream terms and the exposed transfer. `transfer_*`: one phase's ring transfer time."""
    out = dict.fromkeys(("block_efficiency", "host_floor", "overlap_slowdown", "merge", "ring_exposed"), 0.0)
    key_block, local = seq_len / (2 * ring), seq_len / ring
    short = hw.attn_half_block / key_block              # (a): a block of n runs at n / (n + half) of full speed
    out["block_efficiency"] = (fwd_runs + 2) * attn_fwd * short
    if ring == 1:
        return out
    in_flight = (ring - 1) / ring                       # the steps with a transfer in flight
    merge_pass = 4 * seq_len * h / (ulysses * ring) / (hw.hbm_gbps * 1e9)
    exposed = 0.0
    for runs, attn, transfer, passes in ((fwd_runs, attn_fwd, transfer_fwd, hw.merge_passes * MERGE_FORWARD_SHARE),
                                         (1, 2 * attn_fwd, transfer_bwd, hw.merge_passes * (1 - MERGE_FORWARD_SHARE))):
        attn *= 1 + short
        slow = attn * in_flight * hw.ring_overlap * min(
            OVERLAP_SLOWDOWN_CAP, hw.overlap_slowdown * (OVERLAP_SLOWDOWN_BLOCK / local) ** OVERLAP_SLOWDOWN_EXPONENT)
        merge = (ring - 1) * passes * merge_pass
        gpu = attn + slow + merge
        host = ring * max(0.0, hw.ring_step_host_us * 1e-6 - gpu / ring)
        hidden = transfer * hw.ring_overlap
        exposed += runs * (transfer - hidden + max(0.0, hidden - gpu * in_flight))
        out["overlap_slowdown"] += runs * slow
        out["merge"] += runs * merge
        out["host_floor"] += runs * host
    out["ring_exposed"] = exposed
    return out


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
    fwd_runs = 2 if recipe.checkpointing else 1                       # the forward runs again in the backward
    u_bytes = rows * (fwd_runs + 1) * layers * (2 * h + 2 * kv) * s * (ulysses - 1) // ulysses * b
    r_fwd_layer = 2 * seq_len * kv * (ring - 1) // sp * b
    r_bytes = rows * (fwd_runs + 1 + FP32 // b) * layers * r_fwd_layer   # K/V fwd + bwd, dK/dV in fp32
    synced = {0: 2 * FP32 * trained, 2: 2 * b * trained, 3: b * (2 * n_all + trained)}[recipe.zero]
    z_bytes = synced * (hw.gpus - 1) // hw.gpus
    flops_s = hw.tflops * 1e12 * hw.mfu
    vision_flops = 6 * v.params * recipe.frames * v.patches if v and recipe.frames else 0
    recompute = 4 / 3 if recipe.checkpointing else 1.0                # the forward runs twice: 4 units, not 3
    compute = rows * recompute * (seq_len * (6 * n + 6 * layers * seq_len * h) + vision_flops) / sp / flops_s
    ring_inter, zero_inter = sp > hw.gpus_per_node, hw.gpus > hw.gpus_per_node     # crossing nodes?
    ring_bw = hw.bandwidth(ring_inter, senders=ulysses) * hw.ring_link_efficiency   # (d): U senders per node
    ring_terms = _ring_time(hw, seq_len, ulysses, ring, h, fwd_runs, attn_fwd=2 * seq_len * seq_len * h / sp / flops_s,
                            transfer_fwd=r_fwd_layer / ring_bw, transfer_bwd=(1 + FP32 // b) * r_fwd_layer / ring_bw)
    terms = {k: rows * layers * t for k, t in ring_terms.items()}
    ring_latency = (hw.inter_latency_us if ring_inter else hw.intra_latency_us) * 1e-6
    terms["latency"] = rows * layers * ((fwd_runs + 2) * (ring - 1) * ring_latency
                                        + (4 * (fwd_runs + 1) * hw.intra_latency_us * 1e-6 if ulysses > 1 else 0))
    terms["ulysses"] = u_bytes / (hw.intra_gbps * 1e9)
    terms["zero"] = z_bytes / hw.bandwidth(zero_inter, senders=hw.gpus_per_node)
    overhead = sum(terms[k] for k in TERMS[:4])
    exposed = sum(terms[k] for k in TERMS[4:])
    fits = mem.total <= hw.gpu_mem_gib * GIB
    reason = None if fits else f"needs {mem.total / GIB:.1f} GiB per GPU > {hw.gpu_mem_gib:g} GiB"
    inter = (r_bytes if ring_inter else 0) + (z_bytes if zero_inter else 0)
    return SplitPlan(ulysses, ring, dp, reason, mem, u_bytes, r_bytes, z_bytes, compute, exposed, seq_len,
                     u_bytes + r_bytes + z_bytes - inter, inter, rows, overhead, terms)


def ring_vs_2d(plans: list[SplitPlan]) -> tuple[SplitPlan, SplitPlan, float] | None:
    """The paper's comparison (Table 8): the fastest fitting 2D split (U > 1, R > 1), the pure ring over the same
    GPUs (1 x U R, the same DP) and how many times the 2D split's step time the ring's is. None without a fitting
    2D split or without that ring among `plans` (the ring is returned even when it does not fit)."""
    two_d = max((p for p in plans if p.reason is None and p.ulysses > 1 and p.ring > 1 and p.step_s > 0),
                key=lambda p: p.tokens_per_s, default=None)
    if two_d is None:
        return None
    ring = next((p for p in plans if p.ulysses == 1 and p.ring == two_d.ulysses * two_d.ring and p.memory), None)
    return None if ring is None else (ring, two_d, ring.step_s / two_d.step_s)


def all_splits(shape: LLMShape, name: str, seq_len: int, hw: Hardware, recipe: Recipe = Recipe(),
               layout: str = "auto") -> list[SplitPlan]:
    """Every U x R dividing the GPU count: fitting splits first, highest throughput (tokens/s) first, then the
    rejected ones."""
    plans = [evaluate(shape, name, seq_len, u, sp // u, hw, recipe, layout)
             for sp in range(1, hw.gpus + 1) if hw.gpus % sp == 0
             for u in range(1, sp + 1) if sp % u == 0]
    return sorted(plans, key=lambda p: (p.reason is not None, -p.tokens_per_s if p.reason is None else 0,
                                        p.ulysses * p.ring, p.ulysses))
