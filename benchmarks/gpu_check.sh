#!/usr/bin/env bash
# binprune on one GPU in under five minutes, from the repository alone (no network): training-step
# throughput of a CIFAR ResNet-18 (supermask vs dense, float32 vs bf16), a short CIFAR-10
# fast-attack run, and its PGD-20 and AutoAttack accuracy on 1,000 test images. Results:
# benchmarks/results/gpu/gpu_check.json. Needs .gpu-bundle/ from benchmarks/gpu_prepare.sh; when
# the Python in use lacks the packages, they are installed offline from .gpu-bundle/wheels into
# .gpu-bundle/venv first (not counted in the five minutes).
#
#   benchmarks/gpu_check.sh [options of benchmarks/gpu_check.py, e.g. --train-seconds 100]
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${GPU_BUNDLE:-.gpu-bundle}
LIMIT=${GPU_CHECK_SECONDS:-300}
PY=${PYTHON:-python3}
if [ ! -f "$BUNDLE/cifar10-u8.npz" ]; then
  echo "gpu_check.sh: $BUNDLE/cifar10-u8.npz is missing: run benchmarks/gpu_prepare.sh first" >&2
  exit 2
fi
[ -x "$BUNDLE/venv/bin/python" ] && PY="$BUNDLE/venv/bin/python"
if ! "$PY" -c "import torch, torchattacks, pyautoattack, yaml" 2>/dev/null; then
  if [ ! -f "$BUNDLE/wheels/requirements.txt" ]; then
    echo "gpu_check.sh: $PY lacks torch/torchattacks/pyautoattack and $BUNDLE/wheels is missing:" \
         "run benchmarks/gpu_prepare.sh on a machine with network first" >&2
    exit 2
  fi
  python3 -m venv "$BUNDLE/venv"
  PY="$BUNDLE/venv/bin/python"
  "$PY" -m pip install --no-index --find-links "$BUNDLE/wheels" -r "$BUNDLE/wheels/requirements.txt"
fi
mkdir -p benchmarks/results/gpu
PYTHONPATH=$PWD timeout "$LIMIT" "$PY" benchmarks/gpu_check.py --data "$BUNDLE/cifar10-u8.npz" "$@"
