#!/usr/bin/env bash
# Regenerates the comparison tables (compare-fmnist-cpu, compare-cifar10-cpu, the width sweep) in
# the background, one preset after the other, each resuming method by method (and phase by phase)
# where an earlier run stopped. Re-running the script after a kill or a reboot continues the work.
#
#   scripts/regenerate_tables.sh [start|status|stop|publish] [PRESETS...]
#
#   publish: copy each preset's folder, without checkpoints, into the repository: a finished one to
#            PUBLISH_ROOT/compare-PRESET (replacing the old table), an unfinished one's finished
#            methods to PUBLISH_ROOT/in-progress/compare-PRESET, with the final models of the
#            finished phases no finished method used and the unfinished methods' saved evaluation
#            chunks. `start` on a machine without OUT_ROOT/compare-PRESET resumes from that
#            in-progress copy (finished methods are kept; unfinished ones resume at their first
#            phase not in the copy and their first unsaved evaluation chunk).
#
#   PRESETS: any of fmnist-cpu cifar10-cpu fmnist-width (default: all three, in that order)
#   WORKERS=2        parallel method processes per comparison (one thread each; same numbers as 1)
#   OUT_ROOT=runs/tables   where the comparison folders go (one per preset: compare-PRESET)
#   CIFAR10_DIR=../shared/data/cifar10-jpeg   the CIFAR-10 folder (train/ and test/)
#   PYTHON=python    the interpreter with binprune installed (PYTHONPATH is set to this checkout)
#   PUBLISH_ROOT=benchmarks/results   where publish copies to
#
# Progress: OUT_ROOT/regenerate.log (and each folder's table.md, rewritten after every method).
# Publishing a finished folder: see docs/EVALUATION.md, "Regenerating the tables".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python}
WORKERS=${WORKERS:-1}
OUT_ROOT=${OUT_ROOT:-runs/tables}
CIFAR10_DIR=${CIFAR10_DIR:-../shared/data/cifar10-jpeg}
PUBLISH_ROOT=${PUBLISH_ROOT:-benchmarks/results}
PIDFILE="$OUT_ROOT/regenerate.pid"
LOG="$OUT_ROOT/regenerate.log"
action=${1:-start}
[ $# -gt 0 ] && shift
presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(fmnist-cpu cifar10-cpu fmnist-width)
mkdir -p "$OUT_ROOT"

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

# finished: the width table is written, or the table was rewritten at the very end of `compare`
# (after its extra seeds) with no method pending
finished() {
  [ -f "$1/widths.json" ] && return 0
  [ -f "$1/table.json" ] || return 1
  "$PYTHON" -c 'import json, sys; t = json.load(open(sys.argv[1]))
sys.exit(0 if "run_seconds_this_invocation" in t and not t.get("pending_methods") else 1)' "$1/table.json"
}

# copy folder $1 to $2 (replaced) without checkpoints and locks ($3=resume: all of it);
# $3=partial: for every comparison folder inside (the table's, each extra seed's, each width's),
# the finished phases that no finished method used are kept with their final model (final.pt, so
# the next session resumes from them), and so are the unfinished methods' saved evaluation chunks;
# the other phase folders are left out (a phase without its checkpoint cannot be resumed), and so
# are the finished methods' chunks (their results are in methods/NAME.json)
copy_results() {
  local excludes=(--exclude='*.pt' --exclude='.*.lock' --exclude='binprune.lock' --exclude='curves.png')
  [ "${3:-}" = partial ] && excludes+=(--exclude='phases')
  [ "${3:-}" = resume ] && excludes=()  # back from a published partial copy: everything it holds
  rm -rf "$2.tmp" && mkdir -p "$2.tmp"
  tar -C "$1" "${excludes[@]}" -cf - . | tar -C "$2.tmp" -xf -
  [ "${3:-}" = partial ] && "$PYTHON" -c '
import json, pathlib, shutil, sys
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for settings in src.rglob("compare.json"):
    folder = settings.parent
    out = dst / folder.relative_to(src)
    used = set()
    for result in (folder / "methods").glob("*.json"):
        used.update(p["name"] for p in json.loads(result.read_text())["row"]["phases"])
        shutil.rmtree(out / "evaluations" / result.stem, ignore_errors=True)
    for final in (folder / "phases").glob("*/final.pt"):
        if final.parent.name not in used:
            shutil.copytree(final.parent, out / "phases" / final.parent.name,
                            ignore=lambda d, names: [n for n in names if n.endswith((".pt", ".lock", ".png"))
                                                     and n != "final.pt"])
' "$1" "$2.tmp"
  rm -rf "$2" && mv "$2.tmp" "$2"
}

publish() {
  for p in "${presets[@]}"; do
    local src="$OUT_ROOT/compare-$p"
    if [ ! -d "$src" ]; then echo "$p: no $src, nothing to publish"; continue; fi
    if finished "$src"; then
      copy_results "$src" "$PUBLISH_ROOT/compare-$p"
      rm -rf "$PUBLISH_ROOT/in-progress/compare-$p"
      echo "$p: finished, published to $PUBLISH_ROOT/compare-$p"
    else
      copy_results "$src" "$PUBLISH_ROOT/in-progress/compare-$p" partial
      echo "$p: not finished, its finished methods published to $PUBLISH_ROOT/in-progress/compare-$p"
    fi
  done
}

case "$action" in
  status)
    if running; then echo "running (pid $(cat "$PIDFILE")); log: $LOG"; else echo "not running"; fi
    # per comparison folder: finished methods, and the saved chunks of the evaluations under way
    for p in "${presets[@]}"; do
      [ -d "$OUT_ROOT/compare-$p" ] || continue
      "$PYTHON" -c '
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
for settings in sorted(root.rglob("compare.json")):
    folder = settings.parent
    protocol = json.loads(settings.read_text()).get("protocol", {})
    n, chunk = protocol.get("test_examples"), protocol.get("eval_chunk")
    done = sorted(p.stem for p in (folder / "methods").glob("*.json"))
    line = f"{folder.relative_to(root.parent)}: {len(done)} method(s) finished"
    busy = []
    for e in sorted((folder / "evaluations").glob("*")):
        if e.name not in done and n and chunk:
            busy.append("%s %d/%d chunks" % (e.name, len(list(e.glob("chunk-*.json"))), -(-n // chunk)))
    print(line + ("; evaluating: " + ", ".join(busy) if busy else ""))
' "$OUT_ROOT/compare-$p"
    done
    tail -n 5 "$LOG" 2>/dev/null || true
    exit 0 ;;
  stop)
    if running; then kill -- "-$(cat "$PIDFILE")" 2>/dev/null || kill "$(cat "$PIDFILE")"; echo "stopped"; else echo "not running"; fi
    exit 0 ;;
  publish) ;;
  start) ;;
  *) echo "usage: $0 [start|status|stop|publish] [fmnist-cpu|cifar10-cpu|fmnist-width ...]" >&2; exit 2 ;;
esac
for p in "${presets[@]}"; do
  case "$p" in fmnist-cpu|cifar10-cpu|fmnist-width) ;; *) echo "unknown preset $p" >&2; exit 2 ;; esac
done
if [ "$action" = publish ]; then publish; exit 0; fi  # also while running: finished methods are final
if running; then echo "already running (pid $(cat "$PIDFILE")); $0 status" >&2; exit 1; fi
for p in "${presets[@]}"; do
  if [ ! -e "$OUT_ROOT/compare-$p" ] && [ -d "$PUBLISH_ROOT/in-progress/compare-$p" ]; then
    copy_results "$PUBLISH_ROOT/in-progress/compare-$p" "$OUT_ROOT/compare-$p" resume
    echo "== $p: resuming from the published partial results in $PUBLISH_ROOT/in-progress/compare-$p" | tee -a "$LOG"
  fi
done

work() {
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
  for p in "${presets[@]}"; do
    extra=()
    [ "$p" = cifar10-cpu ] && extra=(--data-dir "$CIFAR10_DIR")
    # the width sweep's x1 column is the fmnist-cpu network: its finished rows are copied, not re-run
    [ "$p" = fmnist-width ] && [ -f "$OUT_ROOT/compare-fmnist-cpu/compare.json" ] && \
      extra=(--reuse-from "$OUT_ROOT/compare-fmnist-cpu")
    echo "== $(date -u +%FT%TZ) $p -> $OUT_ROOT/compare-$p (workers $WORKERS)"
    "$PYTHON" -m binprune compare --preset "$p" --out "$OUT_ROOT/compare-$p" --workers "$WORKERS" --no-progress \
      "${extra[@]}" || { echo "== $(date -u +%FT%TZ) $p FAILED (exit $?): re-run to resume"; exit 1; }
  done
  echo "== $(date -u +%FT%TZ) all done"
}
setsid bash -c "$(declare -f work); presets=(${presets[*]}); ROOT='$ROOT' PYTHON='$PYTHON' WORKERS='$WORKERS' \
  OUT_ROOT='$OUT_ROOT' CIFAR10_DIR='$CIFAR10_DIR' work" >> "$LOG" 2>&1 < /dev/null &
echo $! > "$PIDFILE"
echo "started (pid $!): ${presets[*]}; log: $LOG; $0 status"
