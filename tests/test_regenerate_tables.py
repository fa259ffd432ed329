"""scripts/regenerate_tables.sh: publishing finished and unfinished comparison folders, and resuming
from a published unfinished one on a machine that has no local copy."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "regenerate_tables.sh"


def _script(*args: str, out_root: Path, publish_root: Path, python: str = sys.executable) -> str:
    env = dict(os.environ, OUT_ROOT=str(out_root), PUBLISH_ROOT=str(publish_root), PYTHON=python)
    run = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    return run.stdout


def _folder(root: Path, table: dict) -> Path:
    folder = root / "compare-fmnist-cpu"
    done = json.dumps({"row": {"phases": [{"name": "dense"}]}})
    protocol = json.dumps({"protocol": {"test_examples": 1000, "eval_chunk": 200}})
    for name, text in {"compare.json": protocol, "table.json": json.dumps(table), "table.md": "# t\n",
                       "methods/at-fp.json": done, "phases/dense/config.json": "{}", "phases/dense/last.pt": "x",
                       "phases/dense/final.pt": "x", "phases/.dense.lock": "", "evaluations/at-fp/chunk-0.json": "{}",
                       # hydra is unfinished: its trained phase and its saved chunk travel, not its last.pt
                       "phases/hydra-pre/final.pt": "x", "phases/hydra-pre/last.pt": "x",
                       "phases/hydra-pre/config.json": "{}", "phases/hydra-pre/binprune.lock": "",
                       "phases/hydra-ft/last.pt": "x", "evaluations/hydra/chunk-0.json": "{}",
                       "seeds/seed-1/compare.json": "{}", "seeds/seed-1/methods/at-fp.json": done,
                       "seeds/seed-1/phases/dense/final.pt": "x"}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_publish_copies_results_without_checkpoints_and_start_resumes_from_them(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    _folder(runs, {"pending_methods": ["hydra"]})
    assert "not finished" in _script("publish", "fmnist-cpu", out_root=runs, publish_root=results)
    partial = results / "in-progress" / "compare-fmnist-cpu"
    assert _files(partial) == {"compare.json", "table.json", "table.md", "methods/at-fp.json",
                               "phases/hydra-pre/final.pt", "phases/hydra-pre/config.json",
                               "evaluations/hydra/chunk-0.json", "seeds/seed-1/compare.json",
                               "seeds/seed-1/methods/at-fp.json"}  # no finished method's phases, no last.pt or locks
    assert not (results / "compare-fmnist-cpu").exists()

    # a machine without the local folder resumes from the published one
    fresh = tmp_path / "fresh"
    out = _script("start", "fmnist-cpu", out_root=fresh, publish_root=results, python="true")
    assert "resuming from the published partial results" in out
    assert _files(fresh / "compare-fmnist-cpu") == _files(partial)
    for _ in range(100):  # the background job (here `true`) ends at once
        if "all done" in (fresh / "regenerate.log").read_text():
            break
        time.sleep(0.1)
    assert "all done" in (fresh / "regenerate.log").read_text()

    # once finished: the table replaces the committed one, phase records kept, checkpoints not
    _folder(runs, {"pending_methods": [], "run_seconds_this_invocation": 1.0})
    assert "finished, published" in _script("publish", "fmnist-cpu", out_root=runs, publish_root=results)
    final = results / "compare-fmnist-cpu"
    assert "phases/dense/config.json" in _files(final) and not any(f.endswith((".pt", ".lock")) for f in _files(final))
    assert not partial.exists()


def test_status_counts_finished_methods_and_saved_chunks(tmp_path):
    runs = tmp_path / "runs"
    _folder(runs, {"pending_methods": ["hydra"]})
    out = _script("status", "fmnist-cpu", out_root=runs, publish_root=tmp_path / "results")
    assert "not running" in out
    assert "compare-fmnist-cpu: 1 method(s) finished; evaluating: hydra 1/5 chunks" in out
    assert "compare-fmnist-cpu/seeds/seed-1: 1 method(s) finished" in out
