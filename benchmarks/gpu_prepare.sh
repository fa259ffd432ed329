#!/usr/bin/env bash
# Prepares what benchmarks/gpu_check.sh needs on a GPU machine without network, on a machine that
# has the CIFAR-10 images and access to PyPI: the packed data (.gpu-bundle/cifar10-u8.npz, 34 MB)
# and the Python packages as wheel files (.gpu-bundle/wheels). .gpu-bundle/ is not committed: copy
# the repository with it to the GPU machine.
#
#   benchmarks/gpu_prepare.sh [--src DIR] [--python-version 3.11] [--no-wheels]
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=../shared/data/cifar10-jpeg
PYVER=""
WHEELS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --src) SRC="$2"; shift 2 ;;
    --python-version) PYVER="$2"; shift 2 ;;
    --no-wheels) WHEELS=0; shift ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "gpu_prepare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
PYTHONPATH=$PWD "$PY" benchmarks/gpu_bundle.py data --src "$SRC" --out .gpu-bundle/cifar10-u8.npz
if [ "$WHEELS" = 1 ]; then
  PYTHONPATH=$PWD "$PY" benchmarks/gpu_bundle.py wheels --out .gpu-bundle/wheels ${PYVER:+--python-version "$PYVER"}
fi
du -sh .gpu-bundle/* 2>/dev/null || true
