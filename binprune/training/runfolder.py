"""A run's output folder: whose it is, who holds it, and what may be overwritten.

Two runs must never write into one folder, and a run must never overwrite files it did not write:

- a folder is a *binprune run* when it holds the marker file ``binprune-run.json`` (or, for runs of
  binprune 0.1, a ``last.pt``); a non-empty folder that is not a run is refused;
- an existing run is continued only with ``resume=True`` and replaced only with ``overwrite=True``
  (which deletes the run's own files, nothing else); a run folder without a checkpoint (killed
  before its first one) holds nothing to lose and is started again;
- while a run writes, it holds ``binprune.lock`` (created exclusively, holding the pid, host and
  start time). A second run on the same folder is refused; a lock whose process is gone (same
  host, pid not alive) is stale and is taken over, with a notice.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)

__all__ = ["RunFolder", "RunFolderError", "RUN_FILES", "MARKER", "LOCK"]

MARKER = "binprune-run.json"
LOCK = "binprune.lock"
#: Files a run writes (and ``overwrite=True`` deletes).
RUN_FILES = (MARKER, "last.pt", "best.pt", "metrics.json", "metrics.jsonl", "metrics.csv", "config.json", "config.yaml",
             "curves.png")


class RunFolderError(ValueError):
    """The output folder is held by another run, is not a binprune run, or holds a run that
    would be overwritten."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunFolder:
    """Claims ``path`` for one run (use as a context manager around the run's writes)."""

    def __init__(self, path: str | os.PathLike, *, resume: bool = False, overwrite: bool = False):
        if resume and overwrite:
            raise ValueError("pass resume=True or overwrite=True, not both")
        self.path = Path(path)
        self.resume, self.overwrite = resume, overwrite
        self._locked = False

    # -- checks before anything is written --

    def is_run(self) -> bool:
        return (self.path / MARKER).is_file() or (self.path / "last.pt").is_file()

    def check(self) -> None:
        """Refuse a folder this run may not write into (called before any work)."""
        p = self.path
        if p.exists() and not p.is_dir():
            raise RunFolderError(f"{p} exists and is not a folder: choose a folder for the run's outputs")
        if not p.exists():
            if self.resume:
                raise FileNotFoundError(f"nothing to resume: {p} does not exist (run without resume to start)")
            return
        if not self.is_run():
            others = sorted(x.name for x in p.iterdir())
            if others:
                raise RunFolderError(f"{p} is not a binprune run folder (it holds {', '.join(others[:5])}"
                                     f"{' ...' if len(others) > 5 else ''}): choose an empty or new folder")
            if self.resume:
                raise FileNotFoundError(f"nothing to resume: {p} is empty (run without resume to start)")
            return
        has_checkpoint = (p / "last.pt").is_file() or (p / "best.pt").is_file()
        if self.resume and not (p / "last.pt").is_file():
            raise FileNotFoundError(f"nothing to resume: {p / 'last.pt'} does not exist (run without resume to start)")
        if has_checkpoint and not (self.resume or self.overwrite):
            raise RunFolderError(f"{p} already holds a run: resume it (resume=True / --resume), replace it "
                                 "(overwrite=True / --overwrite), or choose another folder")

    # -- the lock --

    def _read_lock(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / LOCK).read_text())
        except (OSError, ValueError):
            return {}

    def _take_lock(self) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        lock = self.path / LOCK
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read_lock()
                stale = holder.get("host") == info["host"] and isinstance(holder.get("pid"), int) \
                    and not _pid_alive(holder["pid"])
                if not stale:
                    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
                    raise RunFolderError(
                        f"{self.path} is in use by another run (pid {holder.get('pid', '?')} on "
                        f"{holder.get('host', '?')} since {since}): wait for it, or delete {lock} if that "
                        "process is gone") from None
                _log.warning("taking over the stale lock %s of pid %s (no longer running)", lock, holder["pid"])
                lock.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(info, fh)
            self._locked = True
            return
        raise RunFolderError(f"could not take the lock {lock}: another run took it first")

    def __enter__(self) -> "RunFolder":
        self.check()
        self.path.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            if self.overwrite:
                for name in RUN_FILES:
                    (self.path / name).unlink(missing_ok=True)
            if not (self.path / MARKER).is_file():
                from ..utils import write_json

                write_json(self.path / MARKER, {"format": "binprune-run", "version": 1, "created": time.time()})
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        if self._locked:
            (self.path / LOCK).unlink(missing_ok=True)
            self._locked = False

    def __exit__(self, *exc: Any) -> None:
        self.release()
