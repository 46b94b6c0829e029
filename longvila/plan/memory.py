"""Per-rank memory of a training step: parameters, gradients, optimizer state, activations, attention and
communication buffers, for a split (Ulysses U x ring R x data-parallel) and a ZeRO stage.

The model (bf16 training with fp32 master weights and Adam, as the DeepSpeed engine runs it; ZeRO shards
over the whole world, `longvila.train.ds_engine`; no gradient checkpointing; one packed row of `seq_len`
tokens per step; flash/zigzag attention, so nothing quadratic in the sequence is held):

- parameters: bf16 weights, 2 N bytes (ZeRO-3: 2 N / W, plus DeepSpeed's second partitioned bf16 copy,
  2 N / W more).
- optimizer: fp32 master weights and Adam's two moments, 12 N / W.
- gradients: bf16, 2 N / W (the reduce-scatter partition; the buckets in flight are in `comm_buffers`).
- activations: each rank holds s = seq_len / P tokens per layer (Ulysses moves heads, not the amount);
  per token and layer the tensors autograd saves: the two norms' inputs and outputs, q/k/v, attention
  output, residual (7 h + 2 d_kv) and the SwiGLU MLP's gate, up, act(gate), product (4 I), in bf16.
- logits: bf16 logits, their fp32 copy and fp32 gradient for s tokens x vocabulary (10 bytes each).
- attention buffers (ring): the current and next K/V block, 2 x 2 s d_kv in bf16, plus fp32 output/LSE
  accumulators of one layer, s (h + H) x 4 bytes.
- communication buffers: the Ulysses all-to-all send/receive of q, k, v, o (2 x (2 h + 2 d_kv) s bf16)
  and one ZeRO bucket (DeepSpeed's default 5e8 elements, bf16) when W > 1.

Checked against DeepSpeed on an H100 (docs/LOG.md 2026-11-26, session 6; tests/unit/test_plan_memory.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from longvila.shapes import LLMShape

GIB = 2**30
BF16, FP32 = 2, 4
ZERO_BUCKET_ELEMENTS = 500_000_000           # DeepSpeed's reduce_bucket_size / allgather_bucket_size default


def param_count(shape: LLMShape) -> int:
    """Parameters of the Qwen2 LLM: embeddings (and an untied LM head), per layer q/k/v with biases, o, the
    SwiGLU MLP and two RMSNorms, and the final norm."""
    kv = shape.kv_dim
    attention = shape.hidden * shape.hidden + shape.hidden + 2 * (shape.hidden * kv + kv) + shape.hidden ** 2
    layer = attention + 3 * shape.hidden * shape.intermediate + 2 * shape.hidden
    embeddings = shape.vocab * shape.hidden * (1 if shape.tied else 2)
    return embeddings + shape.layers * layer + shape.hidden


@dataclass(frozen=True)
class RankMemory:
    """Bytes one rank holds at the peak of a step, by kind (see the module docstring)."""

    parameters: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    attention_buffers: int
    comm_buffers: int

    @property
    def states(self) -> int:
        """Held between steps: parameters and optimizer state."""
        return self.parameters + self.optimizer

    @property
    def total(self) -> int:
        return sum(asdict(self).values())

    def gib(self) -> dict[str, float]:
        """The breakdown in GiB, with the total."""
        return {**{k: v / GIB for k, v in asdict(self).items()}, "total": self.total / GIB}


def rank_memory(shape: LLMShape, *, seq_len: int, ulysses: int, ring: int, world: int, zero: int,
                lora: bool = False) -> RankMemory:
    """Peak bytes per rank of one training step (bf16 + fp32 Adam, no checkpointing). `lora`: the base
    weights are frozen (stage 4): no gradients or optimizer state for them (the adapters' are < 0.1%)."""
    if zero not in (2, 3):
        raise ValueError(f"zero={zero}: the planner models the DeepSpeed engine, ZeRO stage 2 or 3")
    sp = ulysses * ring
    if sp < 1 or world % sp:
        raise ValueError(f"world {world} is not a multiple of ulysses x ring = {sp}")
    n, h, kv = param_count(shape), shape.hidden, shape.kv_dim
    s = -(-seq_len // sp)                                               # local tokens (ceil)
    parameters = BF16 * n if zero == 2 else 2 * BF16 * n // world
    per_token_layer = BF16 * (7 * h + 2 * kv + 4 * shape.intermediate)
    ring_buffers = (2 * 2 * s * kv * BF16 + s * (h + shape.heads) * FP32) if ring > 1 else 0
    ulysses_buffers = 2 * (2 * h + 2 * kv) * s * BF16 if ulysses > 1 else 0
    bucket = BF16 * min(ZERO_BUCKET_ELEMENTS, n) if world > 1 else 0
    trained = 0 if lora else n
    return RankMemory(parameters=parameters, gradients=BF16 * trained // world, optimizer=3 * FP32 * trained // world,
                      activations=s * shape.layers * per_token_layer, logits=s * shape.vocab * (BF16 + 2 * FP32),
                      attention_buffers=ring_buffers, comm_buffers=ulysses_buffers + bucket)
