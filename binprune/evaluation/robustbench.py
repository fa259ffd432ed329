"""The RobustBench protocol, leaderboard entries, and RobustBench model-zoo models from local files.

Protocol (as ``robustbench.eval.benchmark``): the model in eval mode; the first ``n_examples``
of the test set in order (10,000 for CIFAR); the dataset's standard budget (8/255 L-inf, 0.5 L2);
clean accuracy; AutoAttack version ``"standard"``; robust accuracy from the adversarial examples
AutoAttack returns; an entry with RobustBench's ``ModelInfo`` fields, accuracies as percentage
strings with two decimals.

Why binprune runs the protocol itself: robustbench's ``benchmark()`` imports the git AutoAttack
(``autoattack``, with ``autoattack.state``), which is not on PyPI, and calls
``AutoAttack(..., log_path=...)`` and ``run_standard_evaluation(..., bs=...)`` and expects one
tensor back, while pyautoattack 0.2.0 (the AutoAttack on PyPI) takes ``batch_size=``, has no
``log_path`` and returns ``(x_adv, y_adv)``; ``benchmark()`` fails with a ``TypeError`` before
evaluating anything. binprune keeps robustbench's pieces that do work, when robustbench is
installed (``binprune[robustbench]``): its CIFAR loader (for torchvision-format data) and its model
zoo architectures; an entry has ``ModelInfo``'s fields without needing robustbench. One
deliberate difference: AutoAttack gets ``seed`` (RobustBench leaves it unset, which makes
AutoAttack seed from the clock), so results are reproducible.

Data: torchvision's format (``cifar-10-batches-py``, verified by torchvision's checksums) goes
through ``robustbench.data.load_cifar10``/``load_cifar100``: the original test order. An image-folder
tree has no original order (files are grouped by class), so its examples are taken with classes
interleaved, and JPEG copies differ slightly in pixel values: numbers measured on them are close
to, not identical with, RobustBench's; the entry records which source was used.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import math
import os
import re
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..checkpoint import CheckpointError, load_state_dict_strict
from ..compat import robustbench_autoattack, robustbench_modules
from ..config import NORMS, EvalConfig
from ..convert import Subnetwork
from ..data import load_dataset
from ..sparsity import sparsity_report
from ..spec import find_spec
from ..utils import resolve_device, write_json
from ..views import evaluation_tensors
from .runner import evaluate
from .validation import check_eps, check_positive_int

__all__ = [
    "robustbench_benchmark", "run_robustbench_protocol", "load_benchmark_data", "leaderboard_entry",
    "load_robustbench_model", "robustbench_architecture", "STANDARD_EPS", "ROBUSTBENCH_N_EXAMPLES", "model_footprint",
    "architecture_name", "MODELINFO_FIELDS",
]

#: RobustBench evaluates the first 10,000 test examples (all of CIFAR's test set).
ROBUSTBENCH_N_EXAMPLES = 10000

#: RobustBench's budgets per (dataset, threat model).
STANDARD_EPS = {
    ("cifar10", "Linf"): 8 / 255, ("cifar10", "L2"): 0.5,
    ("cifar100", "Linf"): 8 / 255, ("cifar100", "L2"): 0.5,
}
_BENCHMARK_DATASETS = ("cifar10", "cifar100")
_TORCHVISION_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
# Checkpoints robustbench stores under the key 'last' (its own loader special-cases them).
_LAST_KEY_MODELS = ("Kireev2021Effectiveness", "Andriushchenko2020Understanding")
# Buffers an architecture sets in its constructor and some published checkpoints omit
# (RobustBench loads those models with strict=False for this reason).
_CONSTANT_BUFFERS = ("mu", "sigma", "mean", "std", "num_batches_tracked")


def _check_benchmark(dataset: str, threat_model: str) -> None:
    if dataset not in _BENCHMARK_DATASETS:
        raise ValueError(
            f"the RobustBench protocol runs on {', '.join(_BENCHMARK_DATASETS)} here, got {dataset!r} "
            "(ImageNet and corruptions are not supported by binprune's loaders)"
        )
    if threat_model not in NORMS:
        raise ValueError(f"unknown threat model {threat_model!r}: choose one of {', '.join(NORMS)}")


def _eps_text(eps: float) -> str:
    """RobustBench writes budgets as "8/255" (L-inf) or "0.5" (L2)."""
    k = eps * 255
    if eps > 0 and abs(k - round(k)) < 1e-6 and eps < 1:
        return f"{round(k)}/255"
    return f"{eps:g}"


def _percent(fraction: float) -> str:
    return str(round(fraction * 100, 2))


# --- data ----------------------------------------------------------------------------------------

def _torchvision_root(dataset: str, data_dir: Path) -> Path | None:
    folder = _TORCHVISION_FOLDERS[dataset]
    if (data_dir / folder).is_dir():
        return data_dir
    if data_dir.name == folder and data_dir.is_dir():
        return data_dir.parent
    return None


def load_benchmark_data(dataset: str, data_dir: str | os.PathLike, n_examples: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The first ``n_examples`` test images (floats in [0, 1]) and labels, and where they came from.

    torchvision-format data that passes torchvision's checksums is read by robustbench's own
    loader (the original order); anything else (an image-folder tree, or pickles that fail the
    checksums) by :func:`binprune.load_dataset`. Nothing is downloaded.
    """
    _check_benchmark(dataset, "Linf")
    check_positive_int(n_examples, "n_examples")
    if data_dir is None:
        raise FileNotFoundError(f"{dataset} needs a data directory (--data-dir): torchvision's "
                                f"'{_TORCHVISION_FOLDERS[dataset]}' folder or its parent, or an image-folder tree")
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise FileNotFoundError(f"data directory {data_dir} does not exist")
    root = _torchvision_root(dataset, data_dir)
    if root is not None:
        import torchvision

        cls = torchvision.datasets.CIFAR10 if dataset == "cifar10" else torchvision.datasets.CIFAR100
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                verified = cls(root=str(root), train=False, download=False)
        except RuntimeError:
            verified = None
        if verified is not None:
            if n_examples > len(verified):
                raise ValueError(f"n_examples={n_examples} but the {dataset} test set has {len(verified)} examples")
            x, y, loader = _first_test_examples(dataset, root, verified, n_examples)
            info = {"source": dataset, "path": str(root / _TORCHVISION_FOLDERS[dataset]),
                    "loader": loader, "n_examples": int(len(x)),
                    "selection": f"the first {len(x)} test examples in the original order"}
            return x.float().contiguous(), y.long(), info
    ds = load_dataset(dataset, data_dir, split="test")
    x, y, info = evaluation_tensors(ds, n_examples)
    info["loader"] = "binprune.data.load_dataset"
    if root is None:
        info["note"] = ("image-folder tree: not the original test order, and JPEG files differ slightly from the "
                        "original pixels, so numbers are close to, not identical with, RobustBench's")
    else:
        info["note"] = "torchvision-format files that failed torchvision's checksums, read without verification"
    return x, y, info


def _robustbench_data() -> Any:
    """robustbench's data module, or ``None`` where robustbench (an optional extra) or its
    loaders (which need ``pkg_resources``) are not importable."""
    try:
        return robustbench_modules().data
    except ImportError:
        return None


def _first_test_examples(dataset: str, root: Path, verified: Any, n_examples: int
                         ) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first ``n_examples`` test images in the original order, through robustbench's own
    loader where robustbench is installed, else straight from the verified torchvision dataset
    (the same tensors: robustbench's loader is that dataset with ``ToTensor``, in order); the
    name of the loader used goes into the entry."""
    rb_data = _robustbench_data()
    if rb_data is not None:
        loader = rb_data.load_cifar10 if dataset == "cifar10" else rb_data.load_cifar100
        # The files are verified, so the loader's download=True only re-checks them.
        with contextlib.redirect_stdout(io.StringIO()):
            x, y = loader(n_examples=n_examples, data_dir=str(root))
        return x, y, f"robustbench.data.{loader.__name__}"
    import torchvision.transforms.functional as TF

    items = [verified[i] for i in range(n_examples)]
    x = torch.stack([TF.to_tensor(img) for img, _ in items])
    y = torch.tensor([label for _, label in items])
    return x, y, f"torchvision.datasets.{type(verified).__name__} (robustbench's loader not installed)"


# --- model footprint -----------------------------------------------------------------------------

def model_footprint(model: nn.Module) -> dict:
    """Storage size in bytes, with field names saying what was measured.

    Uses ``binprune.export.footprint`` (``packed_file_bytes``: the packed format, seed + coded
    masks; ``footprint_bytes``: every encoding it measures) when it applies to the model,
    otherwise the size of the ``state_dict`` tensors (``state_dict_bytes``) and the reason.
    """
    reason = "binprune.export.footprint is not available"
    try:
        from ..export import footprint
    except ImportError:
        footprint = None
    if footprint is not None:
        try:
            value = footprint(model)
        except (ValueError, TypeError, RuntimeError, KeyError, AttributeError) as exc:
            reason = f"binprune.export.footprint does not apply: {str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}"
        else:
            sizes = value.get("bytes") if isinstance(value, dict) else None
            if isinstance(sizes, dict):
                out: dict[str, Any] = {"footprint_method": "binprune.export.footprint"}
                if isinstance(sizes.get("packed_file"), (int, float)):
                    out["packed_file_bytes"] = int(sizes["packed_file"])
                out["footprint_bytes"] = {k: v for k, v in sizes.items() if isinstance(v, (int, float))}
                return out
            reason = "binprune.export.footprint returned no 'bytes' table"
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values() if isinstance(t, torch.Tensor))
    return {"state_dict_bytes": int(size), "footprint_method": f"size of the state_dict tensors ({reason})"}


def _model_summary(model: nn.Module) -> dict:
    report = sparsity_report(model)
    return {"sparsity": report.sparsity, "kept_params": report.kept_params, "total_params": report.total_params,
            **model_footprint(model)}


def _size(module: nn.Module) -> int:
    return sum(t.numel() for t in module.state_dict().values())


def _core_network(module: nn.Module) -> nn.Module:
    """The network inside wrappers (``nn.Sequential`` of a normalization and the network,
    ``torch.compile``, DDP): descend into the child holding most of the state while the module
    itself is only a container."""
    while isinstance(module, (nn.Sequential, nn.ModuleList, nn.parallel.DistributedDataParallel)) or \
            type(module).__name__ == "OptimizedModule":
        children = list(module.children())
        if not children:
            break
        heavy = max(children, key=_size)
        if _size(heavy) * 2 < _size(module):
            break
        module = heavy
    return module


def architecture_name(model: nn.Module) -> str:
    """The recipe's architecture name when binprune built the model, else the class of the
    network inside its wrappers (not "Sequential")."""
    inner = model.network if isinstance(model, Subnetwork) else model
    recipe = find_spec(model).recipe
    base = recipe["arch"] if isinstance(recipe, Mapping) and "arch" in recipe else type(_core_network(inner)).__name__
    return f"{base} (binary supermask)" if isinstance(model, Subnetwork) else base


# --- leaderboard entry ---------------------------------------------------------------------------

#: The fields of ``robustbench.utils.ModelInfo`` (robustbench 1.1 / 1.1.1), in its order: an entry
#: needs no robustbench installed (tests/test_leaderboard.py compares them where it is).
MODELINFO_FIELDS = ("link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                    "architecture", "eps", "clean_acc", "reported", "corruptions_acc", "corruptions_acc_3d",
                    "corruptions_mce", "corruptions_mce_3d", "autoattack_acc", "footnote")


def _protocol_note() -> str:
    """Why binprune runs the protocol, true for the AutoAttack robustbench would use here."""
    info = robustbench_autoattack()
    if info["robustbench_eval_imports"]:
        return ("RobustBench protocol run by binprune with pyautoattack 0.2.0 (robustbench's benchmark() would use "
                f"the git AutoAttack installed at {info['location']}): first n test examples, AutoAttack standard, "
                "robust accuracy from its adversarial examples")
    return ("RobustBench protocol run by binprune (robustbench's benchmark() does not run here: it needs the git "
            "AutoAttack with autoattack.state, and pyautoattack 0.2.0 takes other arguments): first n test "
            "examples, AutoAttack standard, robust accuracy from its adversarial examples")

def leaderboard_entry(*, dataset: str, threat_model: str, eps: float, clean_accuracy: float,
                      robust_accuracy: float, name: str, architecture: str, additional_data: bool = False,
                      number_forward_passes: int = 1, link: str | None = None, authors: str | None = None,
                      venue: str | None = None, reported: float | None = None, footnote: str | None = None,
                      binprune: dict | None = None) -> dict:
    """A leaderboard entry: every field of robustbench's ``ModelInfo`` (accuracies as percentage
    strings with two decimals, eps as RobustBench writes it), then binprune's own fields under
    ``"binprune"`` (fractions, bytes, the evaluation's settings)."""
    values = dict(
        link=link, name=name, authors=authors, additional_data=bool(additional_data),
        number_forward_passes=int(number_forward_passes), dataset=dataset, venue=venue, architecture=architecture,
        eps=_eps_text(eps), clean_acc=_percent(clean_accuracy),
        reported=_percent(reported) if reported is not None else None,
        autoattack_acc=_percent(robust_accuracy), footnote=footnote,
    )
    entry = {field: values.get(field) for field in MODELINFO_FIELDS}
    entry["binprune"] = {"threat_model": threat_model, **(binprune or {})}
    return entry


def run_robustbench_protocol(
    model: nn.Module,
    *,
    dataset: str = "cifar10",
    threat_model: str = "Linf",
    n_examples: int = ROBUSTBENCH_N_EXAMPLES,
    data_dir: str | os.PathLike | None = None,
    eps: float | None = None,
    batch_size: int = EvalConfig.batch_size,
    device: str | torch.device = "auto",
    model_name: str,
    out_dir: str | os.PathLike | None = "model_info",
    seed: int = EvalConfig.seed,
    name: str | None = None,
    architecture: str | None = None,
    additional_data: bool = False,
    number_forward_passes: int = 1,
    link: str | None = None,
    authors: str | None = None,
    venue: str | None = None,
    reported: float | None = None,
    footnote: str | None = None,
    fast: bool = EvalConfig.fast,
    progress: Any = True,
) -> dict:
    """Run the protocol of the module docstring and write the entry to
    ``out_dir/<dataset>/<threat_model>/<model_name>.json`` (robustbench's layout; ``None``
    writes nothing). Returns ``{"clean_accuracy", "robust_accuracy", "entry", "entry_path",
    "evaluation"}``."""
    _check_benchmark(dataset, threat_model)
    if not isinstance(model_name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", model_name):
        raise ValueError(f"model_name must be a file-name-safe name like 'Binprune2024_WRN-28-10', got {model_name!r}")
    standard = STANDARD_EPS[(dataset, threat_model)]
    eps = standard if eps is None else check_eps(eps, user_linf=threat_model == "Linf")
    check_positive_int(number_forward_passes, "number_forward_passes")
    dev = resolve_device(device)
    summary = _model_summary(model)
    x, y, data_info = load_benchmark_data(dataset, data_dir, n_examples)
    if len(x) < n_examples:
        raise ValueError(f"n_examples={n_examples} but the {dataset} test set has {len(x)} examples")
    # RobustBench's protocol attacks the model itself: no compact copy (EvalConfig.attack_compact).
    evaluation = evaluate(model, (x, y), eps=eps, norm=threat_model, attacks=("clean", "autoattack"),
                          batch_size=batch_size, device=dev, seed=seed, fast=fast, progress=progress,
                          attack_compact=False)
    evaluation.data = data_info
    clean, robust = evaluation.accuracy["clean"], evaluation.accuracy["autoattack"]
    aa = evaluation.attacks["autoattack"].to_dict()
    own = {
        "clean_accuracy": clean,
        "robust_accuracy": robust,
        "eps_value": eps,
        "eps_is_standard": math.isclose(eps, standard),
        "n_examples": len(x),
        "seed": seed,
        "protocol": _protocol_note(),
        "data": data_info,
        **summary,
        "autoattack": {"settings": aa["settings"], "per_attack": aa["per_attack"],
                       "autoattack_warnings": aa["autoattack_warnings"],
                       "invalid_adversarial_examples": aa["invalid_adversarial_examples"], "time_s": aa["time_s"]},
        "model_form": evaluation.model.get("form"),
        "units": {"clean_accuracy": "fraction", "robust_accuracy": "fraction", "clean_acc": "percent (string)",
                  "autoattack_acc": "percent (string)", "bytes": "bytes", "time_s": "seconds"},
        "versions": evaluation.versions,
    }
    entry = leaderboard_entry(
        dataset=dataset, threat_model=threat_model, eps=eps, clean_accuracy=clean, robust_accuracy=robust,
        name=name or model_name, architecture=architecture or architecture_name(model),
        additional_data=additional_data, number_forward_passes=number_forward_passes, link=link, authors=authors,
        venue=venue, reported=reported, footnote=footnote, binprune=own,
    )
    path = None
    if out_dir is not None:
        path = Path(out_dir) / dataset / threat_model / f"{model_name}.json"
        write_json(path, entry)
    return {"clean_accuracy": clean, "robust_accuracy": robust, "entry": entry,
            "entry_path": str(path) if path is not None else None, "evaluation": evaluation}


def robustbench_benchmark(
    model: nn.Module,
    *,
    dataset: str = "cifar10",
    threat_model: str = "Linf",
    n_examples: int = ROBUSTBENCH_N_EXAMPLES,
    data_dir: str | os.PathLike | None = None,
    eps: float | None = None,
    batch_size: int = EvalConfig.batch_size,
    device: str | torch.device = "auto",
    model_name: str,
    out_dir: str | os.PathLike | None = "model_info",
    **kwargs: Any,
) -> tuple[float, float]:
    """RobustBench's ``benchmark()``, run by binprune: returns ``(clean_acc, robust_acc)`` as
    fractions and writes the leaderboard entry (see :func:`run_robustbench_protocol` for the
    other keyword arguments: ``seed``, ``name``, ``architecture``, ``additional_data``, ...).

    Example:
        >>> clean, robust = binprune.robustbench_benchmark(model, data_dir="data/", model_name="Mine_R18")
    """
    out = run_robustbench_protocol(model, dataset=dataset, threat_model=threat_model, n_examples=n_examples,
                                   data_dir=data_dir, eps=eps, batch_size=batch_size, device=device,
                                   model_name=model_name, out_dir=out_dir, **kwargs)
    return out["clean_accuracy"], out["robust_accuracy"]


# --- RobustBench model zoo from local files ------------------------------------------------------

def _zoo_entry(name: str, dataset: str, threat_model: str) -> dict:
    parts = robustbench_modules()
    model_dicts, BenchmarkDataset, ThreatModel = (parts.model_zoo.model_dicts, parts.enums.BenchmarkDataset,
                                                  parts.enums.ThreatModel)

    try:
        ds = BenchmarkDataset(dataset)
    except ValueError:
        raise ValueError(f"unknown RobustBench dataset {dataset!r}: choose one of "
                         f"{', '.join(d.value for d in BenchmarkDataset)}") from None
    try:
        tm = ThreatModel(threat_model.replace("_3d", ""))
    except ValueError:
        raise ValueError(f"unknown RobustBench threat model {threat_model!r}: choose one of "
                         f"{', '.join(t.value for t in ThreatModel)}") from None
    zoo = model_dicts[ds].get(tm)
    if not zoo:
        raise ValueError(f"RobustBench has no {threat_model} models for {dataset}")
    if name not in zoo:
        close = difflib.get_close_matches(name, list(zoo), n=5)
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise ValueError(f"{name!r} is not in RobustBench's {dataset} {threat_model} model zoo{hint}")
    return zoo[name]


def robustbench_architecture(name: str, dataset: str = "cifar10", threat_model: str = "Linf") -> nn.Module:
    """The untrained architecture of a RobustBench model-zoo entry (its own class; nothing is
    downloaded), e.g. as ``base_model`` for a checkpoint of a converted zoo model."""
    entry = _zoo_entry(name, dataset, threat_model)
    if isinstance(entry.get("gdrive_id"), list):
        raise ValueError(f"{name!r} is an ensemble of several checkpoints, which binprune does not load")
    return entry["model"]()


def _strip_prefix(state: dict, prefix: str) -> dict:
    return OrderedDict((k[len(prefix):] if k.startswith(prefix) else k, v) for k, v in state.items())


def _extract_state_dict(payload: Any, name: str) -> dict:
    if isinstance(payload, dict) and any(name.startswith(m) for m in _LAST_KEY_MODELS) and "last" in payload:
        payload = payload["last"]
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError("the checkpoint holds neither a state_dict nor {'state_dict': ...} of tensors")
    return payload


def _fill_constant_buffers(model: nn.Module, state: dict) -> tuple[dict, list[str]]:
    buffers = dict(model.named_buffers())
    filled = [k for k in model.state_dict() if k not in state and k in buffers
              and k.rsplit(".", 1)[-1] in _CONSTANT_BUFFERS]
    if not filled:
        return state, []
    state = OrderedDict(state)
    for k in filled:
        state[k] = buffers[k].detach().clone()
    return state, filled


def load_robustbench_model(
    name: str,
    dataset: str = "cifar10",
    threat_model: str = "Linf",
    *,
    checkpoint: str | os.PathLike,
    device: str | torch.device = "cpu",
    weights_only: bool = True,
) -> nn.Module:
    """A RobustBench model-zoo model with weights from a local checkpoint file, in eval mode.

    The architecture comes from ``robustbench.model_zoo`` (nothing is downloaded). The file can
    be a state_dict or ``{"state_dict": ...}`` as RobustBench publishes them; ``module.`` and
    ``model.`` key prefixes are resolved as RobustBench does. Keys must then match exactly: a
    mismatch raises :class:`binprune.checkpoint.CheckpointError` naming the keys (RobustBench's
    loader would drop them for some models). Only constant buffers the architecture sets itself
    (normalization ``mu``/``sigma``/``mean``/``std``, batch-norm ``num_batches_tracked``) may be
    absent from the file; a warning names them.

    ``weights_only=False`` reads checkpoints that pickle other objects; only use it for files
    you trust (unpickling can run code).

    Example:
        >>> model = binprune.load_robustbench_model("Standard", "cifar10", "Linf", checkpoint="Standard.pt")
        >>> supermask = binprune.convert_to_binary_supermask(model, sparsity=0.99)
    """
    entry = _zoo_entry(name, dataset, threat_model)
    if isinstance(entry.get("gdrive_id"), list):
        raise ValueError(f"{name!r} is an ensemble of several checkpoints, which binprune does not load")
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # torch raises several types for foreign or truncated files
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        hint = " (it pickles other objects: pass weights_only=False if you trust the file)" if weights_only and \
            "weights_only" in str(exc) else ""
        raise CheckpointError(f"cannot read checkpoint {path}{hint}: {exc.__class__.__name__}: {first}") from exc
    state = _extract_state_dict(payload, name)
    model = entry["model"]()
    own = set(model.state_dict())
    candidates = []
    for strip in ((), ("module.",), ("module.", "model.")):
        s = state
        for prefix in strip:
            s = _strip_prefix(s, prefix)
        candidates += [s, OrderedDict((f"model.{k}", v) for k, v in s.items())]
    best, best_cost, best_filled = None, None, []
    for cand in candidates:
        filled_state, filled = _fill_constant_buffers(model, cand)
        cost = len(own.symmetric_difference(filled_state))
        if best_cost is None or cost < best_cost:
            best, best_cost, best_filled = filled_state, cost, filled
        if cost == 0:
            break
    load_state_dict_strict(model, best, source=f"checkpoint {path}")
    if best_filled:
        warnings.warn(f"{path.name} has no {', '.join(best_filled[:6])}{' ...' if len(best_filled) > 6 else ''}: "
                      f"kept the values {type(model).__name__} sets itself", stacklevel=2)
    return model.to(resolve_device(device)).eval()
