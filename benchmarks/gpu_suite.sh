#!/usr/bin/env bash
# GPU checks in one go, for a lent GPU machine whose python3 already has CUDA PyTorch and Transformers:
# the gpu-marked tests, the GPU attention benchmark, DeepSpeed ZeRO-3 training steps, the capacity planner
# against DeepSpeed with and without gradient checkpointing, the longest single-GPU prefill (MM-SP inference
# path). GPU_STEPS="gpu_tests gpu_plan_ckpt" runs only the named steps. Logs go to $OUT (or ./gpu-results); each step has its own
# time limit so one hang cannot eat the others.
#   bash benchmarks/gpu_suite.sh
# A machine without an index: put wheels (deepspeed==0.19.8 and its pure-Python deps) in .whl/ first;
# they are installed into /tmp/site and put on PYTHONPATH.
set -uo pipefail
out="${OUT:-gpu-results}"; mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
  python3 -c 'import deepspeed; print("deepspeed", deepspeed.__version__)'
} 2>&1 | tee "$out/env.txt"
step() {  # step NAME SECONDS CMD...: run with a limit, log to $out/NAME.txt, remember the exit status
  local name=$1 limit=$2; shift 2
  if [[ -n "${GPU_STEPS:-}" && " $GPU_STEPS " != *" $name "* ]]; then echo "== $name skipped (GPU_STEPS)"; return 0; fi
  echo "== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt"
  local rc=${PIPESTATUS[0]}
  echo "== $name exit $rc after $((SECONDS - t0)) s" | tee -a "$out/summary.txt"
  return "$rc"
}
# --noconftest: tests/conftest.py builds CPU data fixtures (zstandard, tokenizer) that the gpu tests do not use
step gpu_tests "${GPU_TESTS_S:-150}" python3 -m pytest --noconftest -p no:cacheprovider -m gpu tests/gpu -q -s -rA
tests=$?
step gpu_attention "${GPU_ATTN_S:-60}" python3 benchmarks/gpu_attention.py
bench=$?
# DeepSpeed ZeRO-3 training steps (needs deepspeed on that python)
if python3 -c 'import deepspeed' 2>/dev/null; then
  step gpu_train_zero3 "${GPU_ZERO3_S:-120}" python3 benchmarks/gpu_train_zero3.py --seq-lens 2048 4096 8192 --steps 2 --zero 2 3
else
  echo "deepspeed not importable: gpu_train_zero3.py skipped" | tee "$out/gpu_train_zero3.txt"
fi
# the capacity planner against DeepSpeed with and without gradient checkpointing (issue 9)
if python3 -c 'import deepspeed' 2>/dev/null; then
  step gpu_plan_plain "${GPU_PLAN_S:-120}" python3 benchmarks/gpu_train_zero3.py --seq-lens 4096 8192 --steps 1 --zero 2
  step gpu_plan_ckpt "${GPU_PLAN_S:-180}" python3 benchmarks/gpu_train_zero3.py --seq-lens 8192 16384 32768 --steps 1 \
    --zero 2 --checkpointing
fi
step sp_prefill "${GPU_PREFILL_S:-120}" python3 benchmarks/sp_prefill.py --gpu --size qwen2-1.5b-384 --cases 1x1 \
  --tokens 65536 --find-max --max-tokens 1048576 --repeat 1 --no-frames
echo "gpu tests exit $tests, attention benchmark exit $bench"
exit $(( tests || bench ))
