"""Per-rank memory of a training step: parameters, gradients, optimizer state, activations, logits,
attention and communication buffers, gradient buckets and the vision side, for a split (Ulysses U x ring R
x data-parallel), an engine and a precision (`Recipe`).

What each rank holds (N parameters, N_t of them trained; W ranks; s = seq_len / P local tokens; b = 2 bytes
in bf16, 4 in fp32; one packed row of `seq_len` tokens per micro-step; flash or
zigzag attention, so nothing quadratic in the sequence is held):

- engine `torch` (`zero=0`, longvila.train.engine.TorchEngine: every rank holds everything): fp32 parameters 4
  N (bf16 autocast adds its cached bf16 copies of the trained weights, 2 N_t), fp32 gradients 4 N_t, AdamW's
  two moments 8 N_t, one all-reduce bucket (`TORCH_BUCKET_ELEMENTS` fp32).
- DeepSpeed ZeRO-2 / ZeRO-3 (sharded over the whole world, longvila.train.ds_engine): parameters b N
  (ZeRO-3: b N / W and DeepSpeed's second partitioned copy, b N / W more), fp32 master weights and Adam's
  moments 12 N_t / W, gradients b N_t / W, one bucket (DeepSpeed's default 5e8 elements) when W > 1.
- activations: what autograd saves per token and layer, measured with saved-tensor hooks on the CPU
  (fp32: 8 h + 2 d_kv + 4 I + heads elements: norm inputs, normalised values and outputs, q, k, v, the
  attention output and its projection input, the SwiGLU gate, up, act(gate) and product, the LSE) and
  checked against DeepSpeed on an H100 (bf16: 7 h + 2 d_kv + 4 I); Ulysses keeps one more h (its
  all-to-all output).
- logits: s x vocabulary x (bf16: the logits, their fp32 copy and its gradient, 10 bytes; fp32: the
  log-softmax output, its gradient and the logits' gradient, 12 bytes). With the fused head (stage 4,
  `linear_cross_entropy`): one chunk of `HEAD_CHUNK_ELEMENTS` fp32 logits (+ its bf16 copy in bf16), and, when
  the head is trained, its fp32 weight gradient V x h, which the forward computes and the backward hands on.
- attention buffers (ring): the current and next K/V block, 2 x 2 s d_kv x b, and the fp32 output/LSE
  accumulators of one layer, s (h + heads) x 4.
- comm buffers: the Ulysses all-to-all send/receive of q, k, v, o, 2 (2 h + 2 d_kv) s x b.
- gradient checkpointing: each layer keeps its input, s h x b, and one layer's activations are recomputed
  at a time in the backward (the tower likewise, per patch).
- vision (stage 5, the tower trained): the tower's activations for this rank's ceil(F / P) frames (per patch
  and layer 8 C + 2 I elements, measured like the LLM's), the gathered frame embeddings of all F frames
  (F T D x b) and the spliced full-length input embeddings before sharding (2 seq_len D x b: spliced and
  padded).

- allocator slack: what PyTorch's CUDA caching allocator reserves beyond the tensors, `ALLOCATOR_SLACK`.
- runtime: the CUDA context and NCCL (GPU) or the process's own allocations (CPU), `RUNTIME_BYTES`.

The peak: DeepSpeed keeps its gradient partitions and buckets through the step, so `total` is the sum of
every kind. The torch engine frees the gradients after each optimizer step (`set_to_none`): with no
gradient accumulation they do not coexist with the activations, and the peak is parameters + optimizer +
the larger of the forward/backward (activations, logits, buffers, vision) and the step (gradients, bucket).

Checked against DeepSpeed on an H100 (docs/LOG.md 2026-11-26, tests/unit/test_plan.py) and against the CPU
training step at P = 1, 2, 4 (benchmarks/plan_calibration.py, tests/distributed/test_plan_calibration.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from longvila.shapes import LLMShape, VisionShape

GIB = 2**30
BF16, FP32 = 2, 4
ZERO_BUCKET_ELEMENTS = 500_000_000           # DeepSpeed's reduce_bucket_size / allgather_bucket_size default
HEAD_CHUNK_ELEMENTS = 1 << 25                # logits per chunk of longvila.parallel.loss.linear_cross_entropy
TORCH_BUCKET_ELEMENTS = 1 << 23              # TorchEngine's gradient all-reduce bucket (32 MiB of fp32)
PRECISIONS = ("bf16", "fp32")
RUNTIME_BYTES = {"gpu": 1_400 << 20, "cpu": 448 << 20}
"""Memory a rank's runtime holds besides its tensors. GPU: the CUDA context, cuBLAS workspaces and NCCL,
measured 1.28 GiB outside the caching allocator on an H100 (one rank; docs/LOG.md 2026-11-26, session 7),
rounded up. CPU: a rank process with Python, torch, Transformers and gloo imported and warmed up, measured
386-447 MiB resident (284 MiB of it private and dirty); benchmarks/plan_calibration.py prints it per run."""
ALLOCATOR_SLACK = {"gpu": 0.17, "cpu": 0.0}
"""What the allocator reserves beyond the tensors at the peak, as a share of them. GPU: PyTorch's caching
allocator, measured max_memory_reserved / max_memory_allocated - 1 = 15.8-17.6% at 16k-24k tokens (1.5B,
DeepSpeed ZeRO-2, checkpointing, H100); without it the planner called a 28k-token step that ran out of
memory a fit. CPU: glibc returns freed blocks (the calibration benchmark fixes its mmap threshold)."""


def param_count(shape: LLMShape) -> int:
    """Parameters of the Qwen2 LLM: embeddings (and an untied LM head), per layer q/k/v with biases, o, the
    SwiGLU MLP and two RMSNorms, and the final norm."""
    kv = shape.kv_dim
    attention = shape.hidden * shape.hidden + shape.hidden + 2 * (shape.hidden * kv + kv) + shape.hidden ** 2
    layer = attention + 3 * shape.hidden * shape.intermediate + 2 * shape.hidden
    embeddings = shape.vocab * shape.hidden * (1 if shape.tied else 2)
    return embeddings + shape.layers * layer + shape.hidden


@dataclass(frozen=True)
class Recipe:
    """How a run trains, beyond the model shape and the split."""

    zero: int = 3
    """0 = the torch engine (nothing sharded); 2 or 3 = DeepSpeed ZeRO stage."""
    precision: str = "bf16"
    """'bf16' (GPUs) or 'fp32' (the CPU engine)."""
    lora: bool = False
    """Stage 4: the base weights are frozen (no gradients or optimizer state; the adapters' are < 0.1%)."""
    grad_accum: int = 1
    """Micro-steps per optimizer step (the torch engine then holds gradients during the forward)."""
    vision: VisionShape | None = None
    """The VLM's vision tower + projector: their parameters are held (frozen unless `frames`)."""
    frames: int = 0
    """Frames per sample (stage 5): the tower is trained and each SP rank encodes ceil(frames / P)."""
    batch: int = 1
    """Samples per micro-step whose graphs coexist (stage 5's per_device_batch)."""
    checkpointing: bool = False
    """Gradient checkpointing: each layer keeps only its input; one layer's activations are recomputed."""
    logit_tokens: int | None = None
    """Tokens per sample whose logits are computed (stage 5: the supervised ones); None = every token."""
    fused_head: bool = False
    """The LM head and the loss run fused in chunks (stage 4's `lm_loss`, except under ZeRO-3)."""
    device: str = "gpu"
    """'gpu' or 'cpu': which runtime and allocator allowances apply (`RUNTIME_BYTES`, `ALLOCATOR_SLACK`)."""

    def __post_init__(self) -> None:
        if self.zero not in (0, 2, 3):
            raise ValueError(f"zero={self.zero}: the planner models the torch engine (0) or DeepSpeed ZeRO-2/3")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: use one of {PRECISIONS}")
        if self.frames and self.vision is None:
            raise ValueError("frames given without the vision tower's shape")
        if self.device not in RUNTIME_BYTES:
            raise ValueError(f"device {self.device!r}: use one of {tuple(RUNTIME_BYTES)}")
        if self.grad_accum < 1 or self.batch < 1 or self.frames < 0:
            raise ValueError("need grad_accum >= 1, batch >= 1, frames >= 0")

    @property
    def bytes(self) -> int:
        return BF16 if self.precision == "bf16" else FP32

    def param_counts(self, shape: LLMShape) -> tuple[int, int]:
        """(parameters held: the LLM and the vision side, trained: those with gradients and optimizer state)."""
        llm, vision = param_count(shape), self.vision.params if self.vision else 0
        return llm + vision, (0 if self.lora else llm) + (vision if self.frames else 0)


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
    grad_buckets: int
    vision: int
    allocator_slack: int
    runtime: int
    grads_at_activation_peak: bool = True

    @property
    def states(self) -> int:
        """Held between steps: parameters and optimizer state."""
        return self.parameters + self.optimizer

    @property
    def tensors(self) -> int:
        """The tensors at the peak (what torch.cuda.max_memory_allocated measures): every kind, or for the torch
        engine without accumulation the larger of the forward/backward and the optimizer step."""
        forward = self.activations + self.logits + self.attention_buffers + self.comm_buffers + self.vision
        step = self.gradients + self.grad_buckets
        return self.states + (forward + step if self.grads_at_activation_peak else max(forward, step))

    @property
    def total(self) -> int:
        """The device memory the step needs: the tensors, the allocator's slack and the runtime."""
        return self.tensors + self.allocator_slack + self.runtime

    def gib(self) -> dict[str, float]:
        """The breakdown in GiB, with the total."""
        kinds = {f.name: getattr(self, f.name) / GIB for f in fields(self) if f.name != "grads_at_activation_peak"}
        return {**kinds, "total": self.total / GIB}


def rank_memory(shape: LLMShape, *, seq_len: int, ulysses: int, ring: int, world: int,
                recipe: Recipe = Recipe()) -> RankMemory:
    """Peak bytes per rank of one training step; see the module docstring."""
    sp = ulysses * ring
    if sp < 1 or world % sp:
        raise ValueError(f"world {world} is not a multiple of ulysses x ring = {sp}")
    r, b, v = recipe, recipe.bytes, recipe.vision
    n, trained = r.param_counts(shape)
    h, kv = shape.hidden, shape.kv_dim
    s = -(-seq_len // sp)                                               # local tokens (ceil)
    if r.zero == 0:
        parameters = FP32 * n + (BF16 * trained if r.precision == "bf16" else 0)   # autocast caches trained weights
        gradients, optimizer = FP32 * trained, 2 * FP32 * trained
        bucket = FP32 * min(TORCH_BUCKET_ELEMENTS, trained) if world > 1 else 0
    else:
        parameters = b * n if r.zero == 2 else 2 * b * n // world
        gradients, optimizer = b * trained // world, 3 * FP32 * trained // world
        bucket = b * min(ZERO_BUCKET_ELEMENTS, n) if world > 1 else 0
    per_token_layer = (BF16 * (7 * h + 2 * kv + 4 * shape.intermediate) if r.precision == "bf16"
                       else FP32 * (8 * h + 2 * kv + 4 * shape.intermediate + shape.heads))
    if ulysses > 1:
        per_token_layer += b * h
    # checkpointing: every layer keeps its input, and one layer at a time is recomputed with all its tensors
    activations = (s * (shape.layers * h * b + per_token_layer) if r.checkpointing
                   else s * shape.layers * per_token_layer)
    logit_bytes = BF16 + 2 * FP32 if r.precision == "bf16" else 3 * FP32
    logit_tokens = s if r.logit_tokens is None else min(s, r.logit_tokens)   # worst case: all on one rank
    if r.fused_head:
        chunk = min(logit_tokens, max(1, HEAD_CHUNK_ELEMENTS // shape.vocab))
        logits = (chunk * shape.vocab * (FP32 + (BF16 if r.precision == "bf16" else 0))
                  + (0 if r.lora else FP32 * shape.vocab * h))
    else:
        logits = r.batch * logit_tokens * shape.vocab * logit_bytes
    ring_buffers = (2 * 2 * s * kv * b + s * (h + shape.heads) * FP32) if ring > 1 else 0
    ulysses_buffers = 2 * (2 * h + 2 * kv) * s * b if ulysses > 1 else 0
    vision = 0
    if v and r.frames:
        per_patch_layer = (8 * v.hidden + 2 * v.intermediate) * b
        per_patch = v.layers * v.hidden * b + per_patch_layer if r.checkpointing else v.layers * per_patch_layer
        tower = -(-r.frames // sp) * v.patches * per_patch
        vision = r.batch * tower + r.frames * v.tokens_per_frame * h * b + 2 * seq_len * h * b
    m = RankMemory(parameters=parameters, gradients=gradients, optimizer=optimizer,
                   activations=r.batch * activations, logits=logits,
                   attention_buffers=ring_buffers, comm_buffers=ulysses_buffers, grad_buckets=bucket, vision=vision,
                   allocator_slack=0, runtime=RUNTIME_BYTES[r.device],
                   grads_at_activation_peak=r.zero != 0 or r.grad_accum > 1)
    return replace(m, allocator_slack=int(ALLOCATOR_SLACK[r.device] * m.tensors))
