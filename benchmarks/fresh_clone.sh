#!/usr/bin/env bash
# Time the README's main command from a fresh clone: clone the repository into a temporary
# folder, run `make quickstart` (or `make quickstart-long`) there (virtual environment, packages,
# data, training, evaluation), and write the wall-clock seconds, the quickstart's metrics, the
# training's images/s per epoch, the machine's CPU and the load average to a JSON file.
#
#   [TARGET=quickstart-long] [ARGS="--amp bf16"] bash benchmarks/fresh_clone.sh [REPO [OUT]]
#
# TARGET is the make target (quickstart or quickstart-long; default quickstart), ARGS its extra
# `binprune train` options. REPO defaults to this repository, OUT to
# benchmarks/results/fresh_clone_quickstart.json; an existing OUT is not replaced (another
# machine's measurement): name a new file instead.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
repo=${1:-$here}
target=${TARGET:-quickstart}
case $target in quickstart|quickstart-long) ;; *)
    echo "fresh_clone.sh: TARGET must be quickstart or quickstart-long, got '$target'" >&2; exit 2 ;;
esac
out=${2:-$here/benchmarks/results/fresh_clone_quickstart.json}
case $out in /*) ;; *) out=$PWD/$out ;; esac
if [ -e "$out" ]; then
    echo "fresh_clone.sh: $out exists (an earlier measurement); pass another output file as the second argument" >&2
    exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone --quiet "$repo" "$work/binprune"
cd "$work/binprune"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date +%s.%N)
make "$target" ARGS="${ARGS:-}"
end=$(date +%s.%N)
# The clone's own environment, so the result is written by binprune's (atomic) write_json.
.venv/bin/python - "$start" "$end" "$out" "$load_before" "$target" "${ARGS:-}" <<'EOF'
import json, os, subprocess, sys
import torch
from binprune.doctor import cpu_features
from binprune.utils import write_json
start, end, out = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
target, args = sys.argv[5], sys.argv[6]
metrics = json.load(open(f"runs/{target}/metrics.json"))
history = [json.loads(line) for line in open(f"runs/{target}/metrics.jsonl") if line.strip()]
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
result = {
    "description": f"git clone + `make {target}` (install, train, evaluate) on a fresh checkout",
    "make_target": target,
    "train_args": args,
    "commit": commit,
    "wall_seconds": end - start,
    "train_seconds": metrics["seconds"],
    "kept_params": metrics.get("kept_params"),
    "eval_seconds": metrics.get("eval_seconds"),
    "accuracy": metrics["accuracy"],
    "test_attack": metrics["test_attack"],
    "n_examples": metrics["n_examples"],
    "images_per_second_per_epoch": [h.get("images_per_second") for h in history],
    "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                **cpu_features()},
    "load_average_before": [float(v) for v in sys.argv[4].split()],
    "load_average_after": list(os.getloadavg()),
}
write_json(out, result)
print(json.dumps(result, indent=2))
EOF
