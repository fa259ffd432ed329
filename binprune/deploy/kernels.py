"""Build and load the optional sparse-inference kernel (``_csrc/sparse_conv.cpp``), lazily.

The kernel is a small C++ library compiled with :func:`torch.utils.cpp_extension.load` on its
first use (never at import), into torch's extension cache (``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``); later processes load the cached build in well under a second.
It registers ``torch.ops.binprune_sparse.conv2d`` with the dispatcher, so it needs only ATen
headers (about a minute to compile once) and no Python binding.

Installing binprune never requires it. Where it cannot be built (no C++ compiler, no ``ninja``,
``BINPRUNE_SPARSE_KERNELS=0`` in the environment), :func:`load_sparse_kernels` returns ``False``
and warns once, in one line; the sparse modules then run PyTorch's dense kernels.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import threading
import time
import warnings
from pathlib import Path

import torch

__all__ = ["load_sparse_kernels", "sparse_kernels_status", "release_sparse_memory", "SOURCE", "ENV_SWITCH"]

SOURCE = Path(__file__).resolve().parent / "_csrc" / "sparse_conv.cpp"
ENV_SWITCH = "BINPRUNE_SPARSE_KERNELS"  # "0" turns the kernel off (tests of the fallback, debugging)
_LIBRARY = "binprune_sparse"
# -fopenmp: ATen's header-only parallel_for is serial without it; the library then uses the OpenMP
# runtime torch already loaded (same soname), so torch.set_num_threads governs it.
_FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp"]
_log = logging.getLogger("binprune")
_lock = threading.Lock()
_state: dict[str, object] = {"tried": False, "ok": False, "reason": "not built yet", "warned": False}


def _build_name() -> str:
    """The library's name in the cache, distinct per CPU feature set: ``-march=native`` code must
    not be loaded on another CPU (a home directory shared between machines)."""
    flags = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            flags += next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags += platform.processor()
    return f"{_LIBRARY}_{hashlib.sha256(flags.encode()).hexdigest()[:10]}"


def _registered() -> bool:
    try:
        getattr(torch.ops, _LIBRARY).run  # noqa: B018 (raises when the op is not registered)
    except (AttributeError, RuntimeError):
        return False
    return True


def _build() -> tuple[bool, str]:
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return False, f"disabled by {ENV_SWITCH}=0"
    if _registered():  # loaded by another copy of this module (e.g. a reloaded package)
        return True, "loaded"
    if not SOURCE.is_file():
        return False, f"source {SOURCE.name} is not installed"
    try:
        from torch.utils import cpp_extension

        t0 = time.perf_counter()
        _log.info("building the sparse inference kernel (once per machine, about a minute)")
        cpp_extension.load(name=_build_name(), sources=[str(SOURCE)], extra_cflags=_FLAGS, extra_ldflags=["-fopenmp"],
                           is_python_module=False, verbose=False)
        _log.info("sparse inference kernel ready in %.1f s", time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 (any build failure means: use the dense kernels)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return False, f"cannot build it: {type(exc).__name__}: {first[:160]}"
    return (True, "loaded") if _registered() else (False, "built, but the op did not register")


def load_sparse_kernels(*, warn: bool = True) -> bool:
    """Whether ``torch.ops.binprune_sparse.conv2d`` is usable; builds it on the first call.

    On failure warns once per process (``RuntimeWarning``, one line) unless ``warn=False``; the
    reason is in :func:`sparse_kernels_status`.
    """
    if not _state["tried"]:
        with _lock:
            if not _state["tried"]:
                ok, reason = _build()
                _state.update(ok=ok, reason=reason, tried=True)
    if not _state["ok"] and warn and not _state["warned"]:
        _state["warned"] = True
        warnings.warn(f"binprune: sparse kernels unavailable ({_state['reason']}); using dense kernels",
                      RuntimeWarning, stacklevel=2)
    return bool(_state["ok"])


def sparse_kernels_status() -> str:
    """``"loaded"``, ``"not built yet"`` or why the kernel is unavailable."""
    return str(_state["reason"])


def release_sparse_memory() -> None:
    """Free the memory the kernel keeps between calls: recycled output buffers (up to 512 MB)
    and this thread's packed-input buffer (as large as the largest layer input seen)."""
    if _state["ok"]:
        getattr(torch.ops, _LIBRARY).empty_cache()


def reset_for_tests() -> None:
    """Forget the outcome of the last attempt (tests switch the kernel off and on)."""
    with _lock:
        _state.update(tried=False, ok=False, reason="not built yet", warned=False)
