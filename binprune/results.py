"""Typed results shared by training, evaluation, the leaderboard and ``compare``.

One naming scheme everywhere (documented in ``docs/RESULTS.md``):

- accuracies are fractions in [0, 1], keyed by the attack that produced them: ``"clean"``,
  ``"pgd"``, ``"autoattack"`` (or another registered attack's name);
- ``n_examples`` is the number of evaluated examples; ``pgd_steps`` the steps of the evaluation
  PGD; times are seconds (``*_seconds`` / ``time_s`` for the evaluation's own records);
- every result has ``to_dict()`` giving the plain-JSON form written to files.

The results also behave as read-only mappings of their ``to_dict()`` form (``report["accuracy"]``)
so code written against the earlier plain dicts keeps working.
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .stats import INTERVAL_METHOD, wilson_interval

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["AttackResult", "EvalReport", "TrainResult", "ComparisonRow", "RESULT_UNITS", "git_commit",
           "accuracy_interval", "code_versions"]

RESULT_UNITS = {
    "accuracy": "fraction of the evaluated examples, in [0, 1]",
    "interval95": "[low, high]: 95% Wilson score interval of the accuracy",
    "time": "seconds",
    "eps": "input units (images in [0, 1])",
    "bytes": "bytes",
}


@functools.lru_cache(maxsize=1)
def git_commit() -> dict[str, Any]:
    """``{"git_commit": sha or None, "git_dirty": bool or None}`` of the checkout binprune runs from.

    ``None`` when the package is not a tracked part of a git checkout (an installed wheel) or git
    is missing; never raises. ``git_dirty`` says whether tracked files differ from the commit,
    i.e. whether the commit alone reproduces the code. Read-only git calls
    (``--no-optional-locks``: the index is not refreshed).
    """
    package = Path(__file__).resolve().parent

    def run(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "--no-optional-locks", "-C", str(package), *args], capture_output=True,
                                  text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    sha = run("rev-parse", "HEAD")
    if not sha or run("ls-files", "--error-unmatch", "results.py") is None:
        return {"git_commit": None, "git_dirty": None}
    status = run("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": sha, "git_dirty": None if status is None else bool(status)}


def code_versions() -> dict[str, Any]:
    """binprune's and torch's versions and :func:`git_commit`: what produced a result."""
    import torch

    from . import __version__

    return {"binprune": __version__, "torch": torch.__version__, **git_commit()}


def accuracy_interval(successes: int, n: int) -> list[float] | None:
    """The 95% Wilson interval of an accuracy as ``[low, high]`` (rounded to 6 digits), ``None``
    without examples."""
    if not n:
        return None
    low, high = wilson_interval(successes, n)
    return [round(low, 6), round(high, 6)]


class _DictView(Mapping):
    """Read-only mapping access to ``to_dict()`` (for code written against plain dicts)."""

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


@dataclass
class AttackResult(_DictView):
    """One attack's outcome on one set of examples.

    ``robust`` holds the per-example flags (``True``: classified correctly and not broken), so
    paired statistics can be computed later; ``details`` holds the attack's own record (steps,
    AutoAttack's per-attack breakdown, warnings, ...), in plain JSON types.
    """

    name: str
    accuracy: float
    n_examples: int
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    robust: Any = None  # torch.BoolTensor of shape (n_examples,), kept out of to_dict()

    def to_dict(self) -> dict[str, Any]:
        flags = None
        if self.robust is not None:
            flags = [int(v) for v in self.robust.tolist()]
        successes = sum(flags) if flags is not None else round(self.accuracy * self.n_examples)
        return {"accuracy": self.accuracy, "interval95": accuracy_interval(successes, self.n_examples),
                "n_examples": self.n_examples, "time_s": round(self.seconds, 3),
                **self.details, **({"robust_flags": flags} if flags is not None else {})}

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> "AttackResult":
        """The result :meth:`to_dict` wrote (the interval is recomputed from the flags, not read)."""
        import torch

        details = {k: v for k, v in data.items()
                   if k not in ("accuracy", "interval95", "n_examples", "time_s", "robust_flags")}
        flags = data.get("robust_flags")
        return cls(name, float(data["accuracy"]), int(data["n_examples"]), float(data["time_s"]), details,
                   robust=torch.tensor(flags, dtype=torch.bool) if flags is not None else None)


@dataclass
class EvalReport(_DictView):
    """The result of :func:`binprune.evaluate`: one :class:`AttackResult` per attack, and what
    produced them (settings, data selection, model form, package versions and the git commit of
    the code, so a number can be traced to what computed it)."""

    attacks: dict[str, AttackResult]
    settings: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if "git_commit" not in self.versions:
            self.versions = {**self.versions, **git_commit()}

    @property
    def accuracy(self) -> dict[str, float]:
        """``{attack name: accuracy}`` in the order the attacks ran."""
        return {name: result.accuracy for name, result in self.attacks.items()}

    @property
    def n_examples(self) -> int:
        return int(self.settings.get("n_examples", 0))

    def merged(self, other: "EvalReport") -> "EvalReport":
        """This report plus the attacks of ``other``, an evaluation of the same examples (e.g.
        PGD added to a RobustBench protocol run); settings of ``other`` fill in missing keys."""
        if other.n_examples != self.n_examples:
            raise ValueError(f"cannot merge evaluations of {other.n_examples} and {self.n_examples} examples")
        attacks = dict(self.attacks)
        attacks.update({k: v for k, v in other.attacks.items() if k not in attacks})
        settings = {**other.settings, **self.settings,
                    "attacks": list(dict.fromkeys([*self.settings.get("attacks", []), *other.settings.get("attacks", [])]))}
        return EvalReport(attacks, settings, dict(self.data), dict(self.model), dict(self.versions),
                          self.seconds + other.seconds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "attacks": {name: result.to_dict() for name, result in self.attacks.items()},
            "settings": dict(self.settings),
            "data": dict(self.data),
            "model": dict(self.model),
            "units": {"accuracy": RESULT_UNITS["accuracy"], "interval95": RESULT_UNITS["interval95"],
                      "interval_method": INTERVAL_METHOD, "time": RESULT_UNITS["time"], "eps": RESULT_UNITS["eps"]},
            "versions": dict(self.versions),
            "time_s": round(self.seconds, 3),
        }


@dataclass
class TrainResult(_DictView):
    """What :func:`binprune.train` returns: the trained model (the best validation epoch, else the
    last), its test evaluation (when test data was given), the per-epoch history and the run's
    facts (sparsity, times, selected epoch)."""

    model: "nn.Module"
    test: EvalReport | None
    history: list[dict[str, Any]]
    facts: dict[str, Any]
    out_dir: Path | None = None

    @property
    def accuracy(self) -> dict[str, float]:
        """Test accuracies (``{"clean": ..., "pgd": ...}``); empty without test data."""
        return self.test.accuracy if self.test is not None else {}

    @property
    def metrics(self) -> dict[str, Any]:
        """The content of ``metrics.json`` (same as :meth:`to_dict`)."""
        return self.to_dict()

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.facts)
        out["accuracy"] = dict(self.accuracy)
        out["n_examples"] = self.test.n_examples if self.test is not None else None
        if self.test is not None:
            out["test_selection"] = self.test.data.get("selection")
            out["eval_seconds"] = self.test.seconds
        out["versions"] = dict(self.test.versions) if self.test is not None else code_versions()
        return out


@dataclass
class ComparisonRow(_DictView):
    """One row of a ``binprune compare`` table: a method, its model's sparsity and size, and its
    evaluation. ``n_examples`` (``None`` in rows written before it was recorded) gives each
    accuracy its 95% Wilson interval, ``interval95`` in :meth:`to_dict` (derived, not stored)."""

    method: str
    label: str
    strategy: str
    precision: str
    sparsity: float
    nonzero_weights: int
    total_weights: int
    stored_bytes: int
    accuracy: dict[str, float]
    train_seconds: float
    eval_seconds: float
    phases: list[dict[str, Any]] = field(default_factory=list)
    params_ratio: float | None = None
    autoattack_warnings: list[str] = field(default_factory=list)
    n_examples: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if self.n_examples:
            out["interval95"] = {k: accuracy_interval(round(v * self.n_examples), self.n_examples)
                                 for k, v in self.accuracy.items() if v is not None}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ComparisonRow":
        names = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k != "interval95"}  # derived from accuracy and n_examples
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown comparison-row fields {sorted(unknown)}")
        return cls(**dict(data))
