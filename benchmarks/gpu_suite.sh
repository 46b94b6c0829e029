#!/usr/bin/env bash
# GPU checks in one go, for a lent GPU machine whose python3 already has CUDA PyTorch and Transformers:
# the gpu-marked tests, the GPU attention benchmark, DeepSpeed ZeRO-3 training steps. Logs go to $OUT (or ./gpu-results).
#   bash benchmarks/gpu_suite.sh
set -uo pipefail
out="${OUT:-gpu-results}"; mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
} 2>&1 | tee "$out/env.txt"
# --noconftest: tests/conftest.py builds CPU data fixtures (zstandard, tokenizer) that the gpu tests do not use
python3 -m pytest --noconftest -p no:cacheprovider -m gpu tests/gpu -q -s -rA 2>&1 | tee "$out/gpu_tests.txt"
tests=${PIPESTATUS[0]}
python3 benchmarks/gpu_attention.py "$@" 2>&1 | tee "$out/gpu_attention.txt"
bench=${PIPESTATUS[0]}
# DeepSpeed ZeRO-3 training steps (needs deepspeed on that python: pip install --no-deps deepspeed==0.19.8 + its
# pure-Python deps from a carried wheelhouse when the machine has no index)
if python3 -c 'import deepspeed' 2>/dev/null; then
  python3 benchmarks/gpu_train_zero3.py 2>&1 | tee "$out/gpu_train_zero3.txt"
else
  echo "deepspeed not importable: gpu_train_zero3.py skipped" | tee "$out/gpu_train_zero3.txt"
fi
echo "gpu tests exit $tests, benchmark exit $bench"
exit $(( tests || bench ))
