"""Evaluation in chunks of examples, each chunk's results saved as it finishes.

AutoAttack's standard evaluation of one robust model on 1,000 images takes about an hour of a
CPU core; run in one piece, a killed process loses all of it. :func:`binprune.evaluate` with
``chunk_examples`` runs the attacks on consecutive slices of the examples and, given a
``resume_dir``, writes each slice's per-attack results (with the per-example flags) there, so a
re-run computes only the slices that are missing.

The attacks see one chunk at a time: random starts (PGD's, AutoAttack's) are drawn per chunk, so
the chunk size is a setting of the result (recorded in the report), not only of the bookkeeping.
A saved chunk is used only when its fingerprint (model parameters and buffers, the evaluated
images and labels, the evaluation settings) is the one being computed; any other raises, so a
folder is never silently shared by two evaluations.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..results import AttackResult
from ..utils import write_json

__all__ = ["chunk_bounds", "evaluation_fingerprint", "ChunkStore", "merge_chunk_results", "run_in_chunks"]

CHUNK_FORMAT = 1


def chunk_bounds(n: int, chunk_examples: int | None) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` covering ``range(n)`` in slices of ``chunk_examples`` (one slice when ``None``)."""
    size = n if not chunk_examples else min(int(chunk_examples), n)
    return [(start, min(start + size, n)) for start in range(0, n, max(size, 1))]


def _update_tensor(digest: Any, tensor: torch.Tensor) -> None:
    t = tensor.detach().cpu().contiguous()
    digest.update(f"{t.dtype}:{tuple(t.shape)}:".encode())
    digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def evaluation_fingerprint(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: dict[str, Any]) -> str:
    """SHA-256 of the model's state (names, dtypes, shapes, values), the examples and the
    settings: what decides whether a saved chunk is this evaluation's."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        if isinstance(tensor, torch.Tensor):
            _update_tensor(digest, tensor)
    _update_tensor(digest, x)
    _update_tensor(digest, y)
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


class ChunkStore:
    """The saved chunks of one evaluation in ``folder`` (``chunk-START-END.json``)."""

    def __init__(self, folder: str | Path, fingerprint: str, attacks: Sequence[str]):
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.attacks = list(attacks)
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"resume_dir {self.folder} exists and is not a folder")

    def path(self, start: int, end: int) -> Path:
        return self.folder / f"chunk-{start:07d}-{end:07d}.json"

    def load(self, start: int, end: int) -> tuple[dict[str, AttackResult], float] | None:
        """The saved results of examples ``[start, end)`` and the seconds they took, or ``None``
        when not computed yet."""
        path = self.path(start, end)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not a readable chunk file ({exc}): remove it to recompute that chunk") from exc
        if record.get("format") != CHUNK_FORMAT or record.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"{path} holds results of another evaluation (a different model, examples or settings): "
                f"use an empty resume_dir for this one, or remove {self.folder} to start over")
        if record.get("attacks") is None or list(record["attacks"]) != self.attacks:
            raise ValueError(f"{path} has attacks {list(record.get('attacks') or [])}, expected {self.attacks}: "
                             f"remove it to recompute that chunk")
        results = {name: AttackResult.from_dict(name, value) for name, value in record["attacks"].items()}
        seconds = record.get("seconds")
        return results, float(seconds) if seconds is not None else _attack_seconds(results)

    def save(self, start: int, end: int, results: dict[str, AttackResult], seconds: float) -> None:
        write_json(self.path(start, end), {"format": CHUNK_FORMAT, "fingerprint": self.fingerprint,
                                           "examples": [start, end], "seconds": round(seconds, 3),
                                           "attacks": {name: r.to_dict() for name, r in results.items()}})


def _attack_seconds(results: dict[str, AttackResult]) -> float:
    """The attacks' time, for a chunk saved without its own: AutoAttack standard completed from
    APGD's flags includes their time, counted once."""
    total = sum(r.seconds for r in results.values())
    standard, apgd = results.get("autoattack"), results.get("autoattack-apgd")
    if standard is not None and apgd is not None and "apgd_from" in standard.details:
        total -= apgd.seconds
    return total


#: Detail fields that count examples: summed over chunks (other integers are settings).
_COUNTS = frozenset({"robust_examples", "correct_examples", "n_examples", "examples_attacked", "examples_broken",
                     "invalid_adversarial_examples", "broken_on_compact", "confirmed", "not_transferred",
                     "broken_only_on_model", "reattacked", "broken_by_reattack"})


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _merge_values(key: str, values: list[Any], weights: list[int]) -> tuple[bool, Any]:
    """``(merged?, value)`` of one detail field over the chunks (see :func:`merge_details`)."""
    if key == "per_attack" and all(isinstance(v, list) for v in values):
        return True, _merge_per_attack(values)
    if all(_is_number(v) for v in values):
        if key in _COUNTS:
            return True, sum(values)
        if key.endswith("accuracy"):
            return True, sum(v * w for v, w in zip(values, weights)) / sum(weights)
        if key.endswith("_s") or key.endswith("seconds"):
            return True, sum(values)
    first = values[0]
    if all(v == first for v in values):
        return True, first
    if all(isinstance(v, bool) for v in values):
        return True, all(values)
    if all(isinstance(v, list) for v in values):
        joined = [item for v in values for item in v]
        if key.endswith("warnings"):
            joined = list(dict.fromkeys(joined))
        return True, joined
    if all(isinstance(v, dict) for v in values):
        return True, merge_details(values, weights, keep_chunks=False)
    return False, None


def _merge_per_attack(parts: list[list[dict]]) -> list[dict]:
    """AutoAttack's per-attack breakdown summed over chunks (the accuracy after each attack is
    recomputed by :func:`merge_chunk_results`, which knows the clean count)."""
    order: list[str] = []
    totals: dict[str, dict[str, Any]] = {}
    for part in parts:
        for step in part:
            name = step["attack"]
            if name not in totals:
                order.append(name)
                totals[name] = {"attack": name, "examples_attacked": 0, "examples_broken": 0, "elapsed_s": 0.0}
            for field in ("examples_attacked", "examples_broken"):
                totals[name][field] += int(step.get(field) or 0)
            totals[name]["elapsed_s"] += float(step.get("elapsed_s") or 0.0)
    return [totals[name] for name in order]


def merge_details(parts: list[dict[str, Any]], weights: list[int], *, keep_chunks: bool = True) -> dict[str, Any]:
    """One attack's details over the chunks: counts of examples and times are summed,
    accuracies averaged by chunk size, AutoAttack's per-attack breakdown added up; any other
    field equal in every chunk is kept, flags must all hold, lists are joined (warnings once
    each), dicts merged field by field, and what cannot be merged is left to the chunks;
    with ``keep_chunks`` every chunk's own details are kept under ``"chunks"``."""
    keys = list(dict.fromkeys(k for part in parts for k in part))
    merged: dict[str, Any] = {}
    for key in keys:
        present = [(p[key], w) for p, w in zip(parts, weights) if key in p]
        if len(present) != len(parts):
            continue
        ok, value = _merge_values(key, [v for v, _ in present], [w for _, w in present])
        if ok:
            merged[key] = value
    if keep_chunks:
        merged["chunks"] = parts
    return merged


def merge_chunk_results(chunks: list[tuple[tuple[int, int], dict[str, AttackResult]]],
                        attacks: Sequence[str], chunk_examples: int | None) -> dict[str, AttackResult]:
    """The per-attack results of the whole evaluation from its chunks (in example order)."""
    if len(chunks) == 1:
        return chunks[0][1]
    merged: dict[str, AttackResult] = {}
    n = sum(end - start for (start, end), _ in chunks)
    weights = [end - start for (start, end), _ in chunks]
    for name in attacks:
        results = [parts[name] for _, parts in chunks]
        flags = [r.robust for r in results]
        if all(f is not None for f in flags):
            robust = torch.cat(flags)
            accuracy = int(robust.sum()) / n
        else:
            robust = None
            accuracy = sum(r.accuracy * r.n_examples for r in results) / n
        parts = [{"examples": [start, end], **r.details} for ((start, end), _), r in zip(chunks, results)]
        details = merge_details(parts, weights)
        details.pop("examples", None)
        if details.get("per_attack") is not None and robust is not None:
            standing = int(sum(round(r.details.get("clean_accuracy", 0) * r.n_examples) for r in results))
            for step in details["per_attack"]:
                standing -= step["examples_broken"]
                step["robust_accuracy_after"] = standing / n
            details["per_attack_consistent"] = bool(details.get("per_attack_consistent", False)) \
                and standing == int(robust.sum())
        details["chunk_examples"] = chunk_examples
        merged[name] = AttackResult(name, accuracy, n, sum(r.seconds for r in results), details, robust=robust)
    return merged


def run_in_chunks(n: int, chunk_examples: int | None, run_chunk: Callable[[int, int], dict[str, AttackResult]],
                  store: ChunkStore | None, attacks: Sequence[str]
                  ) -> tuple[dict[str, AttackResult], list[list[int]], float]:
    """``run_chunk(start, end)`` for each chunk not found in ``store`` (saved there as it
    finishes). Returns the merged results, the ``[start, end]`` of the chunks read from
    ``store``, and the seconds those took when they were computed."""
    done, loaded, earlier = [], [], 0.0
    for start, end in chunk_bounds(n, chunk_examples):
        saved = store.load(start, end) if store is not None else None
        if saved is not None:
            results, seconds = saved
            loaded.append([start, end])
            earlier += seconds
        else:
            started = time.perf_counter()
            results = run_chunk(start, end)
            if store is not None:
                store.save(start, end, results, time.perf_counter() - started)
        done.append(((start, end), results))
    return merge_chunk_results(done, attacks, chunk_examples), loaded, earlier
