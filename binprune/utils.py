"""Small helpers shared by several modules: devices, seeded generators, atomic files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

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


@contextlib.contextmanager
def _atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A file handle whose content replaces ``path`` only once the block completes, so a crash
    leaves either the old file or the new one, never a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + rename)."""
    with _atomic_file(path) as fh:
        fh.write(data)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` atomically (temporary file + rename)."""
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
