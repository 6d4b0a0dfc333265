#!/usr/bin/env bash
# GPU checks, under 8 minutes on one H200: run from the repository root (uses .venv/bin/python).
#   bash benchmarks/gpu_check.sh
# 1. the CUDA agreement tests (the tests that skip without CUDA: same picks on CPU and CUDA, and as before),
# 2. embedding throughput with and without AMP (benchmarks/bench_embedding.py --device cuda --amp both),
# 3. selection at N = 1,000,000 x 512, B = 1000 on the GPU (goal: coreset < 5 s), then at 100,000.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
status=0
step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }

step "device"
$PY -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))" || exit 1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true

step "CUDA agreement tests"
timeout 150 $PY -m pytest -q -rs -k cuda tests/test_selection_kernels.py tests/test_strategies_diversity.py \
  tests/test_learners_strategies.py tests/test_strategies_sequential.py || status=1

step "embedding throughput, fp32 / bf16 / fp16"
timeout 120 $PY benchmarks/bench_embedding.py --device cuda --amp both --skip-selection || status=1

step "selection on the GPU: N = 1,000,000 x 512, B = 1000 (coreset goal < 5 s)"
timeout 170 $PY benchmarks/bench_selection_peers.py --device cuda --sizes 100000 --full --budgets 1000 \
  --no-memory || status=1

step "done (status $status)"
exit $status
