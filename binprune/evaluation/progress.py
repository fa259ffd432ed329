"""Progress display of the evaluation: bars on stderr, a callback receiving events, or nothing."""

from __future__ import annotations

import sys
from typing import Callable

__all__ = ["ProgressReporter", "ProgressCallback", "n_batches"]

#: Receives ``{"stage", "done", "total"}`` as work advances and ``{"stage", "message"}`` for notes.
ProgressCallback = Callable[[dict], None]


def n_batches(n: int, batch_size: int) -> int:
    """Batches needed for ``n`` examples."""
    return -(-n // batch_size)


class ProgressReporter:
    """Progress bars on stderr (``True``), a callback receiving event dicts, or nothing."""

    def __init__(self, progress: "bool | ProgressCallback | None"):
        self._callback = progress if callable(progress) else None
        self._bars = progress is True
        self._bar = None
        self._stage = ""
        self._done = 0
        self._total: int | None = None

    def start(self, stage: str, total: int | None, unit: str = "batch") -> None:
        self.close()
        self._stage, self._done, self._total = stage, 0, total
        if self._bars:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=stage, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=True)
        self._emit()

    def set_total(self, total: int) -> None:
        if self._total != total:
            self._total = total
            if self._bar is not None:
                self._bar.total = total
                self._bar.refresh()

    def advance(self, n: int = 1) -> None:
        self._done += n
        if self._bar is not None:
            self._bar.update(n)
        self._emit()

    def note(self, text: str) -> None:
        if self._bars:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)
        if self._callback is not None:
            self._callback({"stage": self._stage, "message": text})

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _emit(self) -> None:
        if self._callback is not None:
            self._callback({"stage": self._stage, "done": self._done, "total": self._total})
