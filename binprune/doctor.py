"""Environment checks (``binprune doctor``): for each problem, what is wrong and the one command
that fixes it.

Each check is a function returning :class:`Finding` values; :func:`run_checks` runs them all.
Nothing is changed and nothing is downloaded; the checks read package metadata, files, the data
folders and torch's view of the devices. ``"problem"`` means binprune (or an optional part the
user installed) does not work as it is; ``"warning"`` that something works in a reduced way;
``"ok"`` and ``"info"`` report what is there.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as metadata
import importlib.util
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

from .compat import ROBUSTBENCH_VERSIONS, RobustBenchInstallError, check_robustbench_files, repair_command, \
    robustbench_autoattack

__all__ = ["Finding", "run_checks", "CHECKS", "REQUIRED_PACKAGES", "cpu_features"]

#: The core's dependencies (pyproject.toml) and the import name of each.
REQUIRED_PACKAGES = {"torch": "torch", "torchvision": "torchvision", "pyautoattack": "pyautoattack",
                     "numpy": "numpy", "tqdm": "tqdm", "matplotlib": "matplotlib", "pillow": "PIL",
                     "pyyaml": "yaml"}
STATUSES = ("ok", "info", "warning", "problem")


@dataclass(frozen=True)
class Finding:
    """One result: ``status`` is ok, info, warning or problem; ``fix`` is a command, or ``None``."""

    check: str
    status: str
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check_python() -> Iterable[Finding]:
    v = sys.version_info
    if v < (3, 10):
        yield Finding("python", "problem", f"Python {v.major}.{v.minor}; binprune needs 3.10 or newer",
                      "python3.11 -m venv .venv && .venv/bin/pip install binprune")
    else:
        yield Finding("python", "ok", f"Python {v.major}.{v.minor}.{v.micro} at {sys.executable}")


def check_packages() -> Iterable[Finding]:
    for dist, module in REQUIRED_PACKAGES.items():
        version = _version(dist)
        if version is None:
            yield Finding(f"package {dist}", "problem", f"{dist} is not installed (binprune needs it)",
                          f"pip install {dist}")
        elif importlib.util.find_spec(module) is None:
            yield Finding(f"package {dist}", "problem", f"{dist} {version} is recorded but '{module}' is not importable",
                          f"pip install --force-reinstall --no-deps {dist}=={version}")
        else:
            yield Finding(f"package {dist}", "ok", f"{dist} {version}")


def _changed_files(dist_name: str, prefix: str) -> list[str]:
    dist = metadata.distribution(dist_name)
    changed = []
    for entry in dist.files or []:
        if not entry.hash or not str(entry).startswith(prefix):
            continue
        path = Path(dist.locate_file(entry))
        digest = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode() \
            if path.is_file() else None
        if digest != f"{entry.hash.mode}={entry.hash.value}":
            changed.append(str(entry))
    return changed


def check_binprune_files() -> Iterable[Finding]:
    """binprune's own files against its RECORD (an editable install records none)."""
    from . import __version__

    here = Path(__file__).resolve().parent
    version = _version("binprune")
    dist = metadata.distribution("binprune") if version is not None else None
    recorded = [f for f in (dist.files or []) if str(f) == "binprune/__init__.py"] if dist is not None else []
    if not recorded or Path(dist.locate_file(recorded[0])).resolve().parent != here:  # type: ignore[union-attr]
        yield Finding("binprune files", "info", f"binprune {__version__} runs from {here} (an editable install or a "
                      "source tree: no package record to compare its files with)", None)
        return
    changed = [f for f in _changed_files("binprune", "binprune/") if f.endswith((".py", ".yaml", ".cpp"))]
    missing = [p for p in ("presets/train/quickstart.yaml", "py.typed") if not (here / p).is_file()]
    if changed or missing:
        what = [f"{len(changed)} file(s) differ from what was installed: {', '.join(changed[:4])}"] if changed else []
        what += [f"package data missing: {', '.join(missing)}"] if missing else []
        yield Finding("binprune files", "problem", "; ".join(what),
                      f"pip install --force-reinstall --no-deps binprune=={version}")
    else:
        yield Finding("binprune files", "ok", f"binprune {version} at {here}, files as installed")


def check_autoattack() -> Iterable[Finding]:
    aa = _version("pyautoattack")
    yield Finding("autoattack", "ok" if aa else "problem",
                  f"binprune's evaluation uses pyautoattack {aa}" if aa else "pyautoattack is not installed",
                  None if aa else "pip install 'pyautoattack>=0.2.0,<0.3'")
    info = robustbench_autoattack()
    if info["package"] is None:
        yield Finding("autoattack (robustbench)", "info", "no git AutoAttack ('autoattack'): robustbench's own "
                      "benchmark() cannot run; binprune runs the RobustBench protocol itself", None)
    elif not info["has_state"]:
        yield Finding("autoattack (robustbench)", "warning",
                      f"the git AutoAttack at {info['location']} has no autoattack.state (older than Nov 2022): "
                      "robustbench's package import fails; binprune imports only robustbench's model zoo and loaders",
                      "pip install --force-reinstall --no-deps git+https://github.com/fra31/auto-attack")
    else:
        yield Finding("autoattack (robustbench)", "info",
                      f"robustbench's benchmark() uses the git AutoAttack {info['version'] or ''} at "
                      f"{info['location']}; binprune's evaluation uses pyautoattack", None)


def check_robustbench() -> Iterable[Finding]:
    version = _version("robustbench")
    spec = importlib.util.find_spec("robustbench")
    if version is None:
        if spec is not None:
            where = list(spec.submodule_search_locations or [spec.origin])[0]
            yield Finding("robustbench", "problem", f"a 'robustbench' package without install record at {where} "
                          "(torchattacks 3.5.1's stale copy): 'import robustbench' gets that copy",
                          f"pip install --force-reinstall --no-deps robustbench=={ROBUSTBENCH_VERSIONS[-1]}")
        else:
            yield Finding("robustbench", "info", "robustbench is not installed (optional: model zoo, "
                          "--arch robustbench:NAME)", None)
        return
    try:
        changed = check_robustbench_files()
    except RobustBenchInstallError as exc:
        yield Finding("robustbench", "problem", str(exc).split(": pip")[0],
                      f"pip install --force-reinstall --no-deps robustbench=={ROBUSTBENCH_VERSIONS[-1]}")
        return
    if changed:
        yield Finding("robustbench", "problem", f"{len(changed)} of robustbench {version}'s files were overwritten "
                      f"(torchattacks 3.5.1's stale copy): {', '.join(changed[:3])}", repair_command(version))
    else:
        yield Finding("robustbench", "ok", f"robustbench {version}, files as installed")
    if importlib.util.find_spec("pkg_resources") is None:
        yield Finding("robustbench loaders", "warning", "robustbench's data loaders import pkg_resources, which "
                      "setuptools 81 removed: binprune reads CIFAR with torchvision instead (same examples, same "
                      "order)", "pip install 'setuptools<81'")
    timm = _version("timm")
    if version == "1.1.1" and timm not in (None, "1.0.9"):
        yield Finding("timm", "info", f"timm {timm} with robustbench 1.1.1, which declares timm==1.0.9 ('pip check' "
                      "reports it); binprune uses either", None)


def check_optional() -> Iterable[Finding]:
    for name, use in (("timm", "--arch timm:NAME"), ("torchattacks", "torchattacks attack instances"),
                      ("onnx", "export --format onnx"), ("ninja", "the sparse C++ kernel")):
        version = _version(name)
        yield Finding(f"optional {name}", "info",
                      f"{name} {version} ({use})" if version else f"{name} not installed ({use} unavailable)", None)


def check_data(data_dir: str | os.PathLike | None = None) -> Iterable[Finding]:
    """Fashion-MNIST in its default places; with ``data_dir``, which data sets that folder holds."""
    from .data import DEFAULT_FASHION_MNIST_DIR

    env = os.environ.get("BINPRUNE_FASHION_MNIST")
    folders = ([Path(env)] if env else []) + [DEFAULT_FASHION_MNIST_DIR]
    found = [d for d in folders if any(d.glob("train-images-idx3-ubyte*"))]
    if env and Path(env) not in found:
        yield Finding("data fashion-mnist", "problem", f"BINPRUNE_FASHION_MNIST={env} holds no train-images-idx3-ubyte",
                      "unset BINPRUNE_FASHION_MNIST  # or point it at the folder with the four IDX files")
    elif found:
        yield Finding("data fashion-mnist", "ok", f"Fashion-MNIST in {found[0]}")
    else:
        yield Finding("data fashion-mnist", "info", f"Fashion-MNIST not found in {DEFAULT_FASHION_MNIST_DIR} (the "
                      "quickstart needs it)", "apt-get install dataset-fashion-mnist")
    if data_dir is None:
        return
    root = Path(data_dir)
    if not root.is_dir():
        yield Finding("data folder", "problem", f"{root} does not exist or is not a folder", f"mkdir -p {root}")
        return
    kinds = {"cifar10 (torchvision files)": root / "cifar-10-batches-py" / "test_batch",
             "cifar100 (torchvision files)": root / "cifar-100-python" / "test",
             "imagefolder (train/ and test/)": root / "test"}
    present = [name for name, path in kinds.items() if path.exists()] + (
        ["fashion-mnist"] if any(root.glob("t*-images-idx3-ubyte*")) else [])
    if present:
        yield Finding("data folder", "ok", f"{root}: {', '.join(present)}")
    else:
        yield Finding("data folder", "problem", f"{root} holds no data set binprune reads (cifar-10-batches-py/, "
                      "cifar-100-python/, train/ + test/ class folders, or Fashion-MNIST's IDX files)",
                      f"python -c \"import torchvision; torchvision.datasets.CIFAR10('{root}', download=True)\"")


def cpu_features() -> dict[str, object]:
    """The CPU's vector and bfloat16 units as PyTorch sees them.

    ``amp="bf16"`` pays off on a CPU only where it has native bfloat16 instructions, AVX512-BF16
    or the AMX matrix units: the quickstart's training step ran 1.87x faster on an Intel CPU with
    both and 1.91x on an AMD CPU with AVX512-BF16 alone, but 0.74x on a CPU of the earlier speed
    run (``benchmarks/results/speed-amx.json``, ``speed-zen5.json``, ``speed.json``). The probes
    are private to PyTorch, so a version without them gives ``None`` (unknown), not an error.
    """
    import torch

    features: dict[str, object] = {"cpu_capability": torch.backends.cpu.get_cpu_capability()}
    for name, probe in (("avx512_bf16", "_is_avx512_bf16_supported"), ("amx_tile", "_is_amx_tile_supported")):
        check = getattr(torch.cpu, probe, None)
        features[name] = bool(check()) if callable(check) else None
    return features


def check_bf16() -> Iterable[Finding]:
    features = cpu_features()
    units = [name for name, key in (("AVX512-BF16", "avx512_bf16"), ("AMX", "amx_tile")) if features[key]]
    if units:
        yield Finding("cpu bf16", "info", f"the CPU has native bfloat16 instructions ({', '.join(units)}): --amp "
                      "bf16 trains faster on it (1.87-1.91x for the quickstart's step on such CPUs) at a small "
                      "change in results", None)
    elif features["avx512_bf16"] is None or features["amx_tile"] is None:
        yield Finding("cpu bf16", "info", "this PyTorch cannot tell whether the CPU has native bfloat16 "
                      "instructions (AVX512-BF16, AMX); time a few steps with and without --amp bf16 before "
                      "choosing", None)
    else:  # says nothing about a GPU, where bf16 is the intended use
        yield Finding("cpu bf16", "info", "the CPU has no native bfloat16 instructions (AVX512-BF16, AMX): --amp "
                      "bf16 would train slower on this CPU (0.74x for the quickstart's step on such a CPU); keep "
                      "float32 for CPU runs", None)


def check_devices() -> Iterable[Finding]:
    import torch

    cores = os.cpu_count() or 1
    threads = torch.get_num_threads()
    if threads > cores:
        yield Finding("threads", "warning", f"torch uses {threads} threads on {cores} CPU cores (slower than "
                      f"{cores})", f"export OMP_NUM_THREADS={cores}")
    else:
        yield Finding("threads", "ok", f"torch uses {threads} of {cores} CPU cores"
                      + (f" (OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']})" if "OMP_NUM_THREADS" in os.environ else ""))
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        yield Finding("devices", "ok", f"CUDA {torch.version.cuda}: {names} (device 'auto' uses cuda)")
    elif torch.version.cuda:
        yield Finding("devices", "info", f"torch is built for CUDA {torch.version.cuda} but sees no GPU: runs use the CPU",
                      None)
    else:
        yield Finding("devices", "info", "CPU only (torch without CUDA)", None)


CHECKS: tuple[Callable[..., Iterable[Finding]], ...] = (
    check_python, check_packages, check_binprune_files, check_autoattack, check_robustbench, check_optional,
    check_data, check_devices, check_bf16,
)


def run_checks(checks: Iterable[Callable[..., Iterable[Finding]]] = CHECKS, *,
               data_dir: str | os.PathLike | None = None) -> list[Finding]:
    """Run every check (``data_dir``: a data folder to look into as well); a check that itself
    fails is reported as a problem, not raised."""
    findings: list[Finding] = []
    for check in checks:
        try:
            findings.extend(check(data_dir) if check is check_data else check())
        except Exception as exc:  # a broken package can make a check raise: that is a finding too
            findings.append(Finding(check.__name__.removeprefix("check_"), "problem",
                                    f"the check failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                                    None))
    return findings
