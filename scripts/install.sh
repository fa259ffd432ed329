#!/usr/bin/env bash
# Installs binprune (and the extras asked for) into the current Python environment without
# changing any package it already holds: every installed distribution is passed to pip as a
# constraint at its current version, so where an extra cannot coexist with what is installed
# (robustbench 1.1.1 pins timm==1.0.9), pip stops with the conflict instead of downgrading.
#
#   scripts/install.sh .                 # binprune from this clone
#   scripts/install.sh ".[robustbench]"  # with an extra
#   PYTHON=/path/to/python scripts/install.sh dist/binprune-0.2.0-py3-none-any.whl
#   PIP="pip --python /path/to/env/bin/python" scripts/install.sh .   (an environment without pip)
set -euo pipefail
PYTHON=${PYTHON:-python3}
read -r -a pip <<< "${PIP:-$PYTHON -m pip}"
if [ $# -eq 0 ]; then
  echo "usage: scripts/install.sh TARGET [pip options]   (TARGET: '.', '.[robustbench]', a wheel, ...)" >&2
  exit 2
fi
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
# Everything installed, except binprune itself (the package being installed may replace it).
"${pip[@]}" list --format=freeze --disable-pip-version-check 2>/dev/null \
  | grep -v -i '^binprune==' > "$constraints" || true
if ! "${pip[@]}" install --disable-pip-version-check --constraint "$constraints" "$@"; then
  echo "binprune: not installed: it (or an extra asked for) needs a version of a package you already have" >&2
  echo "  that differs from yours (see pip's conflict above); nothing was changed. Install without that extra," >&2
  echo "  or in a separate environment (python -m venv)." >&2
  exit 1
fi
