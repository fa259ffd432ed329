"""Training curves as a matplotlib ``Figure`` (no backend switch, no pyplot state)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["curves_figure", "write_curves", "history_csv"]


def curves_figure(history: Sequence[dict[str, Any]]) -> "Figure":
    """Training loss, and adversarial training / validation accuracies, per epoch."""
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(9, 3.2))
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["train_loss"] for r in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss")
    ax_acc.plot(epochs, [r["train_accuracy"]["adversarial"] for r in history], marker="o", label="train (adversarial)")
    if history[0].get("val_accuracy") is not None:
        ax_acc.plot(epochs, [r["val_accuracy"]["pgd"] for r in history], marker="o", label="validation (PGD)")
        ax_acc.plot(epochs, [r["val_accuracy"]["clean"] for r in history], marker="o", label="validation (clean)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
    ax_acc.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
    """Write the curves as PNG atomically (skipped quietly when matplotlib is unavailable)."""
    if not history:
        return
    try:
        fig = curves_figure(history)
    except ImportError:
        return
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def history_csv(history: list[dict]) -> str:
    """The per-epoch records of ``metrics.jsonl`` as CSV: nested values flattened to
    ``outer.inner`` columns, in order of first appearance."""
    import csv
    import io

    def flat(record: dict, prefix: str = "") -> dict:
        out: dict = {}
        for key, value in record.items():
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            elif not isinstance(value, (list, tuple)):
                out[f"{prefix}{key}"] = value
        return out

    rows = [flat(r) for r in history]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
