"""Using robustbench and AutoAttack as the user installed them, without changing either.

binprune's core needs neither torchattacks nor robustbench (its attacks are its own, AutoAttack
comes from PyPI's ``pyautoattack``, whose module name clashes with nothing). robustbench is an
optional extra (``pip install "binprune[robustbench]"``) for its model zoo and its CIFAR loader.
Three facts about robustbench shape this module:

1. robustbench's package ``__init__`` imports ``robustbench.eval``, which does ``from autoattack
   import AutoAttack`` and ``from autoattack.state import EvaluationState``: names only the git
   version of AutoAttack (since Nov 2022 for ``state``) provides. Where that import works,
   robustbench is imported as usual. Where it does not (no git AutoAttack, or one without
   ``autoattack.state``), :func:`robustbench_modules` imports only the parts binprune uses (the
   model zoo, ``robustbench.data``) without running the package ``__init__``, and afterwards
   removes every ``robustbench`` entry it added to ``sys.modules``: nothing is aliased, so the
   user's own ``import robustbench`` behaves exactly as it would without binprune.
2. robustbench from PyPI is version 1.1.1, from its repository (its README's way) version 1.1;
   both are accepted (:data:`ROBUSTBENCH_VERSIONS`).
3. torchattacks 3.5.1 ships an older copy of a ``robustbench`` package that overwrites
   robustbench's files when installed after it. :func:`check_robustbench_files` compares the
   installed files with the hashes in robustbench's ``RECORD`` and names the overwritten ones,
   with the command that repairs them (``binprune doctor`` runs the same check).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib
import importlib.metadata as metadata
import importlib.util
import sys
import warnings
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

__all__ = ["ROBUSTBENCH_VERSIONS", "RobustBenchInstallError", "check_robustbench_files", "robustbench_modules",
           "robustbench_autoattack", "repair_command", "import_robustbench"]

ROBUSTBENCH_VERSIONS = ("1.1", "1.1.1")
ROBUSTBENCH_VERSION = "1.1.1"  # the PyPI release the repair command reinstalls
REPAIR_COMMAND = f"pip install --force-reinstall --no-deps robustbench=={ROBUSTBENCH_VERSION}"
_EXTRA_COMMAND = 'pip install "binprune[robustbench]"'


class RobustBenchInstallError(ImportError):
    """robustbench is missing, of another version, or its files were overwritten."""


def repair_command(version: str) -> str:
    """The command that restores robustbench ``version``'s own files."""
    if version == ROBUSTBENCH_VERSION:
        return REPAIR_COMMAND
    return "pip install --force-reinstall --no-deps git+https://github.com/RobustBench/robustbench.git"


def _record_hash(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def check_robustbench_files() -> list[str]:
    """Return the robustbench source files whose content differs from robustbench's RECORD.

    An empty list means the installed files are robustbench's own (an editable install records
    no files and is taken as it is). Raises :class:`RobustBenchInstallError` if robustbench is
    not installed or has a version binprune does not know.
    """
    try:
        dist = metadata.distribution("robustbench")
    except metadata.PackageNotFoundError as exc:
        raise RobustBenchInstallError(f"robustbench is not installed: {_EXTRA_COMMAND}") from exc
    if dist.version not in ROBUSTBENCH_VERSIONS:
        raise RobustBenchInstallError(
            f"robustbench {dist.version} is installed; binprune knows {' and '.join(ROBUSTBENCH_VERSIONS)} "
            f"(PyPI, or its repository): {REPAIR_COMMAND}")
    changed = []
    for entry in dist.files or []:
        if not entry.hash or not str(entry).startswith("robustbench/") or not str(entry).endswith(".py"):
            continue
        path = Path(dist.locate_file(entry))
        if not path.is_file() or f"{entry.hash.mode}={entry.hash.value}" != _record_hash(path):
            changed.append(str(entry))
    return changed


def robustbench_autoattack() -> dict[str, Any]:
    """Which AutoAttack ``robustbench.eval`` would import: the git ``autoattack`` package (with or
    without ``autoattack.state``) or none. binprune's own evaluation always uses ``pyautoattack``.

    Found without importing anything (``importlib.util.find_spec``).
    """
    spec = importlib.util.find_spec("autoattack") if "autoattack" not in sys.modules else sys.modules["autoattack"].__spec__
    if spec is None or not spec.submodule_search_locations:
        return {"package": None, "has_state": False, "version": None, "location": None,
                "robustbench_eval_imports": False}
    folder = Path(list(spec.submodule_search_locations)[0])
    try:
        version: str | None = metadata.version("autoattack")
    except metadata.PackageNotFoundError:
        version = None
    has_state = (folder / "state.py").is_file()
    return {"package": "autoattack", "has_state": has_state, "version": version, "location": str(folder),
            "robustbench_eval_imports": has_state}


def _quiet_import(name: str) -> ModuleType:
    with warnings.catch_warnings():
        # Third-party deprecation notices (pkg_resources, timm.models.registry) on every import.
        warnings.filterwarnings("ignore", message=".*pkg_resources.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        return importlib.import_module(name)


def _check_installed() -> None:
    changed = check_robustbench_files()
    if changed:
        version = metadata.version("robustbench")
        raise RobustBenchInstallError(
            f"robustbench's files were overwritten (probably by the stale copy inside torchattacks 3.5.1): "
            f"{', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}. Repair with: {repair_command(version)}")


def _import_parts() -> SimpleNamespace:
    """The parts binprune uses; ``data`` is ``None`` where robustbench's loaders cannot import
    (they need ``pkg_resources``, which setuptools 81 removed)."""
    zoo = _quiet_import("robustbench.model_zoo")
    enums = _quiet_import("robustbench.model_zoo.enums")
    try:
        data: ModuleType | None = _quiet_import("robustbench.data")
    except ImportError as exc:
        if "pkg_resources" not in str(exc):
            raise
        data = None
    return SimpleNamespace(model_zoo=zoo, enums=enums, data=data)


@functools.lru_cache(maxsize=None)
def _isolated_parts() -> SimpleNamespace:
    """Import robustbench's parts under a package object whose ``__init__`` does not run, then
    remove every ``robustbench`` entry added to ``sys.modules`` (cached: imported once)."""
    spec = importlib.util.find_spec("robustbench")
    if spec is None:
        raise RobustBenchInstallError(f"robustbench is not installed: {_EXTRA_COMMAND}")
    package = importlib.util.module_from_spec(spec)  # the package, its __init__ not executed
    sys.modules["robustbench"] = package
    try:
        return _import_parts()
    finally:
        for key in [k for k in sys.modules if k == "robustbench" or k.startswith("robustbench.")]:
            del sys.modules[key]


def robustbench_modules() -> SimpleNamespace:
    """robustbench's ``model_zoo``, ``model_zoo.enums`` and ``data`` modules (``data`` may be
    ``None``, see :func:`_import_parts`), after checking the installed files.

    Imported as usual where robustbench's package imports (a git AutoAttack with
    ``autoattack.state`` is installed, or the user imported robustbench already); otherwise
    without running robustbench's ``__init__`` and without leaving anything in ``sys.modules``.
    """
    _check_installed()
    if "robustbench" in sys.modules or robustbench_autoattack()["robustbench_eval_imports"]:
        _quiet_import("robustbench")
        return _import_parts()
    return _isolated_parts()


def import_robustbench() -> ModuleType:
    """The ``robustbench`` package itself, imported as usual (needs the git AutoAttack with
    ``autoattack.state``; binprune's own code uses :func:`robustbench_modules` instead)."""
    _check_installed()
    info = robustbench_autoattack()
    if not info["robustbench_eval_imports"] and "robustbench" not in sys.modules:
        missing = "has no autoattack.state (older than Nov 2022)" if info["package"] else "is not installed"
        raise RobustBenchInstallError(
            f"robustbench's package imports the git AutoAttack, which {missing}: "
            "pip install git+https://github.com/fra31/auto-attack (binprune itself works without it)")
    return _quiet_import("robustbench")
