"""Making robustbench 1.1.1 importable next to pyautoattack 0.2.0 and torchattacks 3.5.1.

Three packaging problems, each handled here rather than by hand:

1. robustbench 1.1.1 does ``from autoattack import AutoAttack`` (and ``autoattack.state``), a
   module name only the git version of AutoAttack provides; PyPI's ``pyautoattack`` 0.2.0 ships
   the same code as ``pyautoattack``. :func:`import_robustbench` registers ``pyautoattack`` under
   the name ``autoattack`` when no real ``autoattack`` is installed.
2. robustbench imports ``pkg_resources``, which setuptools removed in version 81; the project
   depends on ``setuptools<81`` and a clear error says so if it is missing.
3. torchattacks 3.5.1 ships its own, older copy of a ``robustbench`` package in the same
   site-packages folder; installed after robustbench, it overwrites robustbench's files.
   :func:`check_robustbench_files` compares the installed files with the hashes in
   robustbench's own ``RECORD`` and names the overwritten ones, with the command that repairs
   them. The project's setup script runs that repair.

robustbench's ``benchmark()`` also calls an older AutoAttack API (``log_path=``, ``bs=``) than
pyautoattack 0.2.0 has; :func:`binprune.robustbench_benchmark` runs the same protocol itself.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.metadata as metadata
import importlib.util
import sys
import warnings
from pathlib import Path
from types import ModuleType

ROBUSTBENCH_VERSION = "1.1.1"
REPAIR_COMMAND = f"pip install --force-reinstall --no-deps robustbench=={ROBUSTBENCH_VERSION}"


class RobustBenchInstallError(ImportError):
    """robustbench is missing, the wrong version, or its files were overwritten."""


def _record_hash(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def check_robustbench_files() -> list[str]:
    """Return the robustbench source files whose content differs from robustbench's RECORD.

    An empty list means the installed package is exactly robustbench 1.1.1 as published.
    Raises :class:`RobustBenchInstallError` if robustbench is not installed or has another version.
    """
    try:
        dist = metadata.distribution("robustbench")
    except metadata.PackageNotFoundError as exc:
        raise RobustBenchInstallError(
            f"robustbench is not installed: pip install robustbench=={ROBUSTBENCH_VERSION}"
        ) from exc
    if dist.version != ROBUSTBENCH_VERSION:
        raise RobustBenchInstallError(
            f"robustbench {dist.version} is installed; binprune is tested with {ROBUSTBENCH_VERSION}: {REPAIR_COMMAND}"
        )
    changed = []
    for entry in dist.files or []:
        if not entry.hash or not str(entry).startswith("robustbench/") or not str(entry).endswith(".py"):
            continue
        path = Path(dist.locate_file(entry))
        if not path.is_file() or f"{entry.hash.mode}={entry.hash.value}" != _record_hash(path):
            changed.append(str(entry))
    return changed


def _alias_autoattack() -> None:
    """Make ``import autoattack`` resolve to pyautoattack if no real autoattack exists."""
    if "autoattack" in sys.modules or importlib.util.find_spec("autoattack") is not None:
        return
    try:
        pyautoattack = importlib.import_module("pyautoattack")
    except ImportError as exc:
        raise RobustBenchInstallError("pyautoattack is not installed: pip install pyautoattack==0.2.0") from exc
    sys.modules["autoattack"] = pyautoattack
    for sub in ("autoattack", "autopgd_base", "fab_pt", "square", "checks", "state", "other_utils",
                "fab_base", "fab_projections"):
        try:
            sys.modules[f"autoattack.{sub}"] = importlib.import_module(f"pyautoattack.{sub}")
        except ImportError:
            continue


def import_robustbench() -> ModuleType:
    """Import robustbench after checking its files and providing its ``autoattack`` import."""
    changed = check_robustbench_files()
    if changed:
        raise RobustBenchInstallError(
            f"robustbench's files were overwritten (probably by the stale copy inside torchattacks 3.5.1): "
            f"{', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}. Repair with: {REPAIR_COMMAND}"
        )
    if importlib.util.find_spec("pkg_resources") is None:
        raise RobustBenchInstallError(
            "robustbench needs pkg_resources, which setuptools 81 removed: pip install 'setuptools<81'"
        )
    _alias_autoattack()
    with warnings.catch_warnings():
        # Third-party deprecation notices (pkg_resources, timm.models.registry) on every import.
        warnings.filterwarnings("ignore", message=".*pkg_resources.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        return importlib.import_module("robustbench")
