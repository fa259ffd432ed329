"""Small helpers shared by several modules: devices, seeded generators, safe atomic file writes."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import numbers
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"`` into CUDA when present, else CPU; validate anything else.

    Raises ``ValueError`` for a CUDA device on a machine without one, instead of failing later
    inside the first forward pass.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available: use 'cpu' or 'auto'")
    return dev


def check_seed(seed: Any, *, what: str = "seed", non_negative: bool = False) -> int:
    """``seed`` as a Python ``int``; ``ValueError`` for anything else.

    Seeds are hashed as text (:func:`stable_seed`), so ``1.7`` would draw other weights than the
    ``1`` a spec records: floats (even ``2.0``), bools and strings are refused, not truncated.
    NumPy integers are accepted (same text as the ``int``).
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"{what} must be an integer, got {seed!r} ({type(seed).__name__})")
    if non_negative and seed < 0:
        raise ValueError(f"{what} must be an integer >= 0, got {seed!r}")
    return int(seed)


def stable_seed(*parts: object) -> int:
    """A 63-bit integer derived from ``parts`` that is the same on every machine and Python run.

    Python's ``hash`` is salted per process, so it cannot be used to regenerate weights later.
    """
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator_for(*parts: object) -> torch.Generator:
    """A CPU generator seeded by :func:`stable_seed` of ``parts``.

    Random tensors are always drawn on the CPU and then moved, so the same seed gives the same
    values whichever device the model later runs on.
    """
    gen = torch.Generator(device="cpu")
    gen.manual_seed(stable_seed(*parts))
    return gen


# mkstemp creates files readable by the owner only; results and checkpoints are ordinary files.
_FILE_MODE = 0o644


class WriteError(OSError, ValueError):
    """A file could not be written, or must not be (a device, a folder, one of the inputs).

    One line: the path and the reason. It is an ``OSError`` (it keeps ``errno`` when there is one)
    and a ``ValueError`` (a bad output path is a bad input), so the CLI prints it without a
    traceback, like ``io.UnsupportedOperation``.
    """

    def __init__(self, path: str | os.PathLike, reason: str, code: int | None = None):
        super().__init__(code, reason)
        self.path = os.fspath(path)
        self.reason = reason
        self.filename = self.path

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.reason}"

    def __reduce__(self) -> tuple:
        return (type(self), (self.path, self.reason, self.errno))


# Paths under these folders are kernel interfaces (devices, /dev/stdout, /proc/self/fd/...), never
# result files; /dev/shm holds ordinary files.
_SPECIAL_ROOTS = ("/dev", "/proc", "/sys")
_ORDINARY_UNDER_SPECIAL = ("/dev/shm",)


def _is_special_path(text: str) -> bool:
    if any(text == r or text.startswith(r + "/") for r in _ORDINARY_UNDER_SPECIAL):
        return False
    return any(text == r or text.startswith(r + "/") for r in _SPECIAL_ROOTS)


def _os_reason(exc: OSError) -> str:
    """The human part of an ``OSError`` ("No space left on device"), without errno or path."""
    return exc.strerror or str(exc) or type(exc).__name__


def _write_target(path: str | os.PathLike) -> Path:
    """The regular file that writing ``path`` replaces.

    Symlinks are written through: the file they point to is replaced (atomically) and the link
    is kept, as ``open(path, "w")`` would do. Refused with :class:`WriteError`: an empty name, a
    name ending in a path separator, a folder, and device nodes, pipes, sockets or anything under
    /dev, /proc or /sys (also when reached through a link, e.g. ``/dev/stdout``), because an
    atomic rename onto them would replace the device entry or fail after the work is done.
    """
    text = os.fspath(path)
    if not text:
        raise WriteError(text, "the file name is empty")
    if text.endswith(os.sep) or (os.altsep and text.endswith(os.altsep)):
        raise WriteError(text, "the name ends with a path separator, so it names a folder: give a file name")
    hop = os.path.abspath(text)
    hops = [hop]
    for _ in range(40):  # the link chain, to see a /dev hop that realpath resolves past
        if not os.path.islink(hop):
            break
        hop = os.path.normpath(os.path.join(os.path.dirname(hop), os.readlink(hop)))
        hops.append(hop)
    else:
        raise WriteError(text, "too many levels of symbolic links")
    target = os.path.realpath(text)
    special = next((h for h in hops + [target] if _is_special_path(h)), None)
    if special is not None:
        raise WriteError(text, f"{special} is a device or system file, not a regular file: give a file path")
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return Path(target)
    except NotADirectoryError as exc:
        folder = _nearest_existing(Path(target).parent)
        raise WriteError(text, f"{folder} is a file, not a folder", exc.errno) from exc
    except OSError as exc:
        raise WriteError(text, _os_reason(exc), exc.errno) from exc
    if stat.S_ISDIR(mode):
        raise WriteError(text, "it is a folder: give a file name inside it")
    if not stat.S_ISREG(mode):
        raise WriteError(text, "it is a device, pipe or socket, not a regular file: give a file path")
    return Path(target)


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def _nearest_existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_output_path(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Check, before any long work, that ``path`` can be written; return it as a ``Path``.

    Raises :class:`WriteError` (one line) for: a device node or system file (``/dev/null``,
    ``/dev/stdout``), a folder, a parent that is missing and cannot be created (an ancestor is a
    file, or the nearest existing folder is not writable), a folder that is not writable (also on
    a read-only file system), and a path that is the same file as one of ``inputs`` (e.g.
    ``binprune export x.pt -o x.pt``, which would replace the input). Creates nothing. A symlink
    is fine: the writers replace the file it points to and keep the link.
    """
    text = os.fspath(path)
    target = _write_target(text)
    for source in inputs:
        if _same_file(text, os.fspath(source)):
            raise WriteError(text, f"it is the same file as the input {os.fspath(source)}: choose another output path")
    folder = _nearest_existing(target.parent)
    if not folder.is_dir():
        raise WriteError(text, f"{folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        missing = "" if folder == target.parent else f" (to create {target.parent})"
        raise WriteError(text, f"the folder {folder} is not writable{missing}", errno.EACCES)
    return Path(text)


def _os_error_in(exc: BaseException) -> OSError | None:
    """The ``OSError`` behind ``exc`` (torch.save reports a failed write as a RuntimeError)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def _atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A file handle whose content replaces ``path`` only once the block completes, so a crash
    leaves either the old file or the new one, never a partial file.

    A symlink is written through (its target is replaced, the link kept); devices and folders are
    refused; an ``OSError`` (no space left, read-only file system, permission) becomes a one-line
    :class:`WriteError` naming the path, and the temporary file is removed.
    """
    target = _write_target(path)
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)
        tmp = None
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        cause = _os_error_in(exc) if isinstance(exc, (OSError, RuntimeError)) and not isinstance(exc, WriteError) else None
        if cause is None:
            raise
        raise WriteError(path, _os_reason(cause), cause.errno) from exc


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + rename); :class:`WriteError` when
    it cannot be written."""
    with _atomic_file(path) as fh:
        fh.write(data)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` atomically (temporary file + rename); :class:`WriteError` when it cannot be
    written."""
    with _atomic_file(path) as fh:
        torch.save(obj, fh)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically, indented, keys in insertion order."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if isinstance(obj, (Path, torch.device, torch.dtype)):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, type):
        return obj.__name__
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")
