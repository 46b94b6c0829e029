"""The implementations `benchmarks/peers.py` compares, and what it needs to measure them alike.

Every implementation runs its attention on the same CPU kernel, `aten._scaled_dot_product_flash_attention_for_cpu`
(ours: the `torch_cpu` backend; DeepSpeed: as its local attention; yunchang: through the stand-in below), on
inputs in the layout it expects (`Impl.indices`: the global token index of each local row), and is compared with
one process's fp64 attention over the whole sequence after gathering back to the global order.

yunchang 0.6.4 on CPU: its `AttnType.TORCH_*` kernels have no backward ("Not implemented backward for PyTorch
attention types"), so `install_yunchang_standin` puts `yunchang_standin_fwd` / `_bwd` / `_attn` (the aten CPU op,
returning out and LSE as flash-attn does, filling the gradient buffers its ring code passes) in place of what its
`select_flash_attn_impl` returns for `AttnType.TORCH_FLASH`. Its ring backwards are wrong in fp32 as shipped
(`yunchang_fp32_fixes`): `dq = dq_buffer.to(torch.float32)` is no copy when the buffer is already fp32, so dq
(and dk, dv) alias buffers that the next ring step overwrites; the basic ring also returns dq in bfloat16.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import io
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist

HEADS, HEAD_DIM = 8, 64
KV_HEADS = {"MHA": 8, "GQA": 2}
PEERS = {"yunchang": "0.6.4", "deepspeed": "0.19.8"}     # pyproject.toml extra `peers`
_FWD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_BWD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


def peer_problems() -> dict[str, str]:
    """{peer: why it cannot run} for the peers that are missing; a different version only warns (see peers.py)."""
    return {name: f"{name} is not installed" for name in PEERS if importlib.util.find_spec(name) is None}


def peer_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in PEERS if importlib.util.find_spec(name) is not None}


def make_inputs(seq_len: int, kv_heads: int) -> list[torch.Tensor]:
    """q, k, v, dout over the whole sequence ([1, S, H(kv), D], fp32), the same in every process."""
    g = torch.Generator().manual_seed(seq_len * 10 + kv_heads)
    shapes = [(1, seq_len, HEADS, HEAD_DIM)] + [(1, seq_len, kv_heads, HEAD_DIM)] * 2 + [(1, seq_len, HEADS, HEAD_DIM)]
    return [torch.randn(s, generator=g) for s in shapes]


def reference(seq_len: int, kv_heads: int) -> dict[str, torch.Tensor]:
    """One process, fp64, causal, the whole sequence: out and the gradients of q, k, v for dout."""
    q, k, v, dout = (t.double().requires_grad_(i < 3) for i, t in enumerate(make_inputs(seq_len, kv_heads)))
    out = aten_cpu_attention(q, k, v, causal=True)
    out.backward(dout)
    return {"out": out.detach(), "dq": q.grad, "dk": k.grad, "dv": v.grad}


def aten_cpu_attention(q, k, v, causal=True, scale=None):
    """[B, S, H, D] attention on the aten CPU flash op (GQA native), with autograd: DeepSpeed's local attention."""
    out = _FWD(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), 0.0, causal, scale=scale)[0]
    return out.transpose(1, 2)


# ---------------------------------------------------------------- yunchang: stand-in kernel and fp32 fix
def yunchang_standin_fwd(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, *args, **kwargs):
    """yunchang's "fwd-only" contract on the aten CPU op: [B, S, H, D] in -> out [B, S, H, D], LSE [B, H, S]."""
    out, lse = _FWD(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p, causal,
                    scale=softmax_scale)[:2]
    return out.transpose(1, 2), lse


def yunchang_standin_bwd(dout, q, k, v, out, softmax_lse, dq, dk, dv, dropout_p=0.0, softmax_scale=None,
                         causal=False, *args, **kwargs):
    """yunchang's "bwd-only" contract: the gradients of one block, written into the buffers dq, dk, dv."""
    t = lambda x: x.transpose(1, 2)
    grads = _BWD(t(dout), t(q), t(k), t(v), t(out), softmax_lse, dropout_p, causal, scale=softmax_scale)
    for buf, g in zip((dq, dk, dv), grads):
        buf.copy_(t(g))


def yunchang_standin_attn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, *args, **kwargs):
    """yunchang's "fwd-bwd" contract (UlyssesAttention's local attention): out, differentiable."""
    return aten_cpu_attention(q, k, v, causal=causal, scale=softmax_scale)


def install_yunchang_standin() -> None:
    """Make yunchang's `select_flash_attn_impl` return the stand-ins for `AttnType.TORCH_FLASH` (idempotent)."""
    from yunchang.kernels import AttnType
    standin = {"fwd-only": yunchang_standin_fwd, "bwd-only": yunchang_standin_bwd, "fwd-bwd": yunchang_standin_attn}
    for name in ("yunchang.ring.ring_flash_attn", "yunchang.ring.zigzag_ring_flash_attn", "yunchang.ulysses.attn_layer"):
        module = importlib.import_module(name)
        original = getattr(module.select_flash_attn_impl, "original", module.select_flash_attn_impl)

        def select(impl_type, stage="fwd-bwd", attn_processor=None, _original=original):
            if impl_type is AttnType.TORCH_FLASH:
                return standin[stage]
            return _original(impl_type, stage=stage, attn_processor=attn_processor)

        select.original = original
        module.select_flash_attn_impl = select


# (module, function, [(as shipped, fixed)]): `.to(torch.float32)` of an fp32 buffer is the buffer itself
_FP32_FIXES = [
    ("yunchang.ring.zigzag_ring_flash_attn", "zigzag_ring_flash_attn_backward",
     [("_buffer.to(torch.float32)", "_buffer.to(torch.float32, copy=True)")]),
    ("yunchang.ring.ring_flash_attn", "ring_flash_attn_backward",
     [("_buffer.to(torch.float32)", "_buffer.to(torch.float32, copy=True)"),
      ("return dq.to(torch.bfloat16)", "return dq.to(q.dtype)")]),
]
_VERSIONS: dict[tuple[str, str], tuple[Callable, Callable]] = {}     # (as shipped, fixed)
FP32_FIX_EDITS: list[str] = []


def yunchang_fp32_fixes(enable: bool) -> None:
    """Put yunchang's ring backwards with the fp32 fixes applied (or as shipped) in place. The ring autograd
    Functions look the backward up by its module-level name, so the swap takes effect at the next backward."""
    for mod_name, fn_name, subs in _FP32_FIXES:
        module = importlib.import_module(mod_name)
        if (mod_name, fn_name) not in _VERSIONS:
            shipped = getattr(module, fn_name)
            source = inspect.getsource(shipped)
            for old, new in subs:
                count = source.count(old)
                if count == 0:
                    raise RuntimeError(f"{mod_name}.{fn_name} no longer contains {old!r}: check the fix against "
                                       f"this yunchang version (pinned: {PEERS['yunchang']})")
                source = source.replace(old, new)
                FP32_FIX_EDITS.append(f"{fn_name}: {old!r} -> {new!r} ({count}x)")
            namespace = dict(vars(module))
            exec(compile(source, f"<{mod_name}.{fn_name}, fp32 fix>", "exec"), namespace)
            _VERSIONS[mod_name, fn_name] = (shipped, namespace[fn_name])
        setattr(module, fn_name, _VERSIONS[mod_name, fn_name][enable])


# ---------------------------------------------------------------- bytes sent, counted in the benchmark process
class ByteCounter:
    """Wraps torch.distributed's collectives and p2p (module attributes, so every caller that looks them up at
    call time is seen: ours, yunchang, deepspeed.comm) and adds up the bytes this rank sends while `active`.
    Payload per op: all_to_all(_single) what goes to the other ranks; batch_isend_irecv / send the isend ops;
    all_gather(_into_tensor) the input x (n - 1); reduce_scatter_tensor the input x (n - 1) / n; all_reduce the
    input x 2 (n - 1) / n (a ring all-reduce). dist.isend itself is not wrapped (P2POp checks its identity)."""

    OPS = ("all_to_all_single", "all_to_all", "batch_isend_irecv", "send", "all_gather", "all_gather_into_tensor",
           "all_reduce", "reduce_scatter_tensor")

    def __init__(self) -> None:
        self.active, self.bytes, self.calls = False, 0, Counter()

    def install(self) -> "ByteCounter":
        for name in self.OPS:
            original = getattr(dist, name)
            if not hasattr(original, "counted_original"):
                setattr(dist, name, self._wrap(name, original))
        return self

    def _wrap(self, name, original):
        signature = inspect.signature(original)

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            if self.active:
                a = signature.bind(*args, **kwargs).arguments
                self.bytes += int(self._sent(name, a))
                self.calls[name] += 1
            return original(*args, **kwargs)

        wrapper.counted_original = original
        return wrapper

    @staticmethod
    def _sent(name, a) -> float:
        group = a.get("group")
        n, me = dist.get_world_size(group), dist.get_rank(group)
        nbytes = lambda t: t.numel() * t.element_size()
        if name == "all_to_all_single":
            x, splits = a["input"], a.get("input_split_sizes")
            if not splits:
                return nbytes(x) * (n - 1) / n
            return (x.shape[0] - splits[me]) * nbytes(x) / max(x.shape[0], 1)
        if name == "all_to_all":
            return sum(nbytes(t) for i, t in enumerate(a["input_tensor_list"]) if i != me)
        if name == "batch_isend_irecv":
            return sum(nbytes(op.tensor) for op in a["p2p_op_list"] if getattr(op.op, "__name__", "") == "isend")
        if name == "send":
            return nbytes(a["tensor"])
        if name in ("all_gather", "all_gather_into_tensor"):
            return nbytes(a.get("tensor", a.get("input_tensor"))) * (n - 1)
        if name == "reduce_scatter_tensor":
            return nbytes(a["input"]) * (n - 1) / n
        return nbytes(a["tensor"]) * 2 * (n - 1) / n                       # all_reduce


# ---------------------------------------------------------------- the implementations
@dataclass
class Impl:
    name: str
    indices: torch.Tensor               # global token index of each local row
    fn: Callable                        # (q, k, v) local -> out local, differentiable
    check_only: bool = False            # correctness only (the unpatched yunchang ring)
    setup: Callable = lambda: None      # before every fwd + bwd (yunchang: the fp32 fix on or off)


def contiguous_indices(seq_len: int, world: int, rank: int) -> torch.Tensor:
    return torch.arange(seq_len).chunk(world)[rank]


def build_impls(rank: int, world: int, ulysses: int, ring: int, seq_len: int, unpatched: bool,
                problems: dict[str, str]) -> list:
    """[(name, Impl | None, why not)] for this case, in the order they run (every rank, the same order: they
    create process groups); `problems`: the peers to leave out, and why (`peer_problems()` in the parent)."""
    from longvila.parallel import ParallelDims, local_indices, sp_attention

    out = []
    for layout in ("zigzag", "contiguous"):
        dims = ParallelDims(ulysses=ulysses, ring=ring, world_size=world, layout=layout).build()
        fn = functools.partial(lambda q, k, v, d: sp_attention(q, k, v, d, causal=True, backend="torch_cpu",
                                                                 seq_len=seq_len), d=dims)
        out.append((f"ours ({layout})", Impl(f"ours ({layout})", local_indices(seq_len, world, rank, layout), fn), ""))
    ulysses_group = dims.group("ulysses")
    flat = contiguous_indices(seq_len, world, rank)
    if ring == 1:
        if "deepspeed" in problems:
            out.append(("DeepSpeed Ulysses", None, problems["deepspeed"]))
        else:
            import deepspeed.comm
            from deepspeed.sequence.layer import DistributedAttention

            with contextlib.redirect_stdout(io.StringIO()):             # its "... built successfully"
                deepspeed.comm.init_distributed(dist_backend="gloo", auto_mpi_discovery=False, verbose=False)
            ds = DistributedAttention(aten_cpu_attention, ulysses_group, scatter_idx=2, gather_idx=1)
            out.append(("DeepSpeed Ulysses", Impl("DeepSpeed Ulysses", flat, lambda q, k, v: ds(q, k, v, 0)), ""))
    names = (["yunchang Ulysses"] if ring == 1 else []) + ["yunchang USP zigzag", "yunchang USP basic"]
    if unpatched:
        names += ["yunchang USP zigzag, as shipped", "yunchang USP basic, as shipped"]
    if "yunchang" in problems:
        return out + [(name, None, problems["yunchang"]) for name in names]
    from yunchang import LongContextAttention, UlyssesAttention, set_seq_parallel_pg, zigzag_extract_local
    from yunchang.kernels import AttnType

    install_yunchang_standin()
    set_seq_parallel_pg(ulysses, ring, rank, world, use_ulysses_low=True)   # Ulysses groups: contiguous ranks
    zigzag = zigzag_extract_local(torch.arange(seq_len).view(1, seq_len, 1), rank, world, ring, ulysses).view(-1)
    for name in names:
        if name == "yunchang Ulysses":
            attn = UlyssesAttention(ulysses_group, attn_type=AttnType.TORCH_FLASH)
        else:
            attn = LongContextAttention(ring_impl_type=name.split()[2].rstrip(","), attn_type=AttnType.TORCH_FLASH)
        fn = functools.partial(lambda q, k, v, a: a(q, k, v, causal=True), a=attn)
        shipped = "as shipped" in name
        impl = Impl(name, zigzag if "zigzag" in name else flat, fn, check_only=shipped,
                    setup=functools.partial(yunchang_fp32_fixes, not shipped))
        out.append((name, impl, ""))
    return out
