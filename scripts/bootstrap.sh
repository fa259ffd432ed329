#!/usr/bin/env bash
# Installs everything binprune needs on a fresh machine, idempotently:
#   - a virtual environment in .venv with binprune (editable) and every extra the tests use
#     (robustbench, onnx, ...), plus torchattacks 3.5.1 without its requests pin (--no-deps),
#   - robustbench's own files restored if torchattacks' stale copy overwrote them,
#   - the Fashion-MNIST files (Debian package dataset-fashion-mnist) where apt and root exist.
# Re-running it is cheap: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "binprune needs Python >= 3.10; found: $("$PYTHON" --version 2>&1)" >&2
  exit 1
fi

stamp="$VENV/.binprune-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "== installing binprune and its dependencies into $VENV (the first time takes a few minutes)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
  # The tests compare binprune's attacks with torchattacks'; torchattacks 3.5.1 pins
  # requests~=2.25.1, which nothing here needs, so it comes without its dependencies.
  "$VENV/bin/python" -m pip install --quiet --no-deps "torchattacks==3.5.1"
  touch "$stamp"
fi

# torchattacks 3.5.1 ships an old copy of robustbench that overwrites the real one depending on
# install order; binprune.compat detects it and this restores robustbench 1.1.1's own files
# (binprune doctor prints the same command).
if ! "$VENV/bin/python" -c 'import sys, binprune.compat as c; sys.exit(1 if c.check_robustbench_files() else 0)' 2>/dev/null; then
  echo "== restoring robustbench 1.1.1's files (overwritten by torchattacks' bundled copy)"
  "$VENV/bin/python" -m pip install --quiet --force-reinstall --no-deps "robustbench==1.1.1"
fi

fmnist=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$fmnist" ] && [ -z "${BINPRUNE_FASHION_MNIST:-}" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "== installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
    if ! (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 ||
          (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)); then
      echo "!! could not install dataset-fashion-mnist with apt-get; tests and examples that need Fashion-MNIST will be skipped or fail." >&2
    fi
  else
    echo "!! Fashion-MNIST is not installed and apt-get/root are not available here." >&2
    echo "   Install the Debian package dataset-fashion-mnist, or put the four IDX .gz files in a folder" >&2
    echo "   and set BINPRUNE_FASHION_MNIST=/that/folder." >&2
  fi
fi
