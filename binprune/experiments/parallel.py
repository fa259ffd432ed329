"""The methods of one comparison in parallel processes, with the numbers of a serial run.

Each worker process runs one method at a time on one thread, through the same function a serial
run uses (:func:`binprune.experiments.compare.compare` restricted to that method, as a worker:
no table, no extra seeds). Every phase and every evaluation is seeded by the settings, not by
the order or the process, so the result files are those of a serial run on one thread. A phase
shared by several methods (the dense AT model that HYDRA and ATMC start from) is trained once:
:func:`phase_lock` makes a second worker wait until the first has finished it, then reuse it.
A phase holds its lock only while it trains (and while the phases it starts from do), and
phases start from other phases in one direction only, so two workers never wait on each other.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

try:  # POSIX; elsewhere comparisons run serially (workers=1) without locks
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["phase_lock", "run_parallel"]


@contextlib.contextmanager
def phase_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on phase folder ``folder`` (a ``.NAME.lock`` file next to it);
    blocks while another process holds it."""
    folder = Path(folder)
    if fcntl is None:  # pragma: no cover
        yield
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _one_thread() -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def _run_method(run: Callable[..., Any], arguments: dict, name: str) -> str:
    _one_thread()
    run(**arguments, methods=[name], workers=1, as_worker=True, progress=False,
        log=lambda line: print(f"[{name}] {line.strip()}", flush=True))
    return name


def run_parallel(run: Callable[..., Any], names: Sequence[str], workers: int, arguments: dict,
                 on_done: Callable[[str], None]) -> None:
    """``run(**arguments, methods=[name], ...)`` for every name, ``workers`` at a time, in fresh
    (spawned) processes; ``on_done(name)`` after each. A failed method does not stop the others;
    the failures are raised together at the end."""
    if workers > 1 and fcntl is None:  # pragma: no cover
        raise ValueError("parallel comparisons need POSIX file locks: run with workers=1 on this system")
    failures = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_one_thread) as pool:
        futures = {pool.submit(_run_method, run, arguments, name): name for name in names}
        for future in as_completed(futures):
            name = futures[future]
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - reported together below
                failures.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            on_done(name)
    if failures:
        raise RuntimeError(f"{len(failures)} method(s) failed (finished ones are saved; re-run to resume): "
                           + "; ".join(failures))
