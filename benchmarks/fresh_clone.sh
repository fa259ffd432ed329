#!/usr/bin/env bash
# Time the README's main command from a fresh clone: clone the repository into a temporary
# folder, run `make quickstart` there (virtual environment, packages, data, training, evaluation),
# and write the wall-clock seconds and the quickstart's metrics to
# benchmarks/results/fresh_clone_quickstart.json.
#
#   bash benchmarks/fresh_clone.sh [REPO]     (default: this repository)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
repo=${1:-$here}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone --quiet "$repo" "$work/binprune"
cd "$work/binprune"
start=$(date +%s.%N)
make quickstart
end=$(date +%s.%N)
# The clone's own environment, so the result is written by binprune's (atomic) write_json.
.venv/bin/python - "$start" "$end" "$here/benchmarks/results/fresh_clone_quickstart.json" <<'EOF'
import json, subprocess, sys
from binprune.utils import write_json
start, end, out = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
metrics = json.load(open("runs/quickstart/metrics.json"))
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
result = {
    "description": "git clone + `make quickstart` (install, train, evaluate) on a fresh checkout",
    "commit": commit,
    "wall_seconds": end - start,
    "train_seconds": metrics["seconds"],
    "eval_seconds": metrics.get("eval_seconds"),
    "accuracy": metrics["accuracy"],
    "test_attack": metrics["test_attack"],
    "n_examples": metrics["n_examples"],
}
write_json(out, result)
print(json.dumps(result, indent=2))
EOF
