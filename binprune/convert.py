"""Turning any ``nn.Module`` into a binary supermask network, and back into plain layers.

:func:`convert_to_binary_supermask` walks a copy of the model, replaces the weight of every
weight-bearing layer by a fixed random tensor masked by learnable scores
(:mod:`binprune.supermask`), decides how much each layer keeps (:mod:`binprune.sparsity`),
makes batch norms non-affine, and appends the last batch norm over the logits (LBN).
:func:`finalize` is the inverse step (like ``torch.ao.pruning``'s ``squash_mask``): plain layers
holding ``w * mask``.

The conversion settings travel with the model (its spec) into checkpoints and packed files, and
are read back from them. Excluded layer types are stored by name; reading one back resolves it
only among the classes of :data:`TYPE_PACKAGES` and those registered with :func:`allow_type`, so
a file can never make binprune import a module of its choosing.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import math
import numbers
import sys
import warnings
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from .config import SCORE_INITS
from .connectivity import connect_output_channels, signal_report
from .init import WEIGHT_INITS, fan_in, fixed_bias, fixed_weight
from .sparsity import ALLOCATIONS, check_sparsity, allocate_keep_counts
from .supermask import GlobalBudget, apply_mask, masked_tensors
from .spec import attach_spec, find_spec, register_transform
from .utils import check_seed, generator_for

__all__ = ["Subnetwork", "convert_to_binary_supermask", "DisconnectedMaskWarning", "finalize", "allow_type", "MASKABLE_LAYERS", "BN_MODES",
           "TYPE_PACKAGES"]

#: Layer types whose ``weight`` is masked (subclasses included).
MASKABLE_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d,
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.Linear,
)
BN_MODES = ("non_affine", "keep")


class DisconnectedMaskWarning(UserWarning):
    """The random mask leaves no path from the input to the output (see :mod:`binprune.connectivity`)."""


class Subnetwork(nn.Module):
    """A converted network followed by the optional last batch norm over its logits (LBN).

    Attributes:
        network: the converted copy of the user's model (its own classes, masked weights).
        last_bn: ``nn.BatchNorm1d(num_classes, affine=False)`` or ``None``.
        config: the conversion settings, plain types only (the model's
            :class:`binprune.spec.ModelSpec` holds them as its "supermask" transform, so a
            checkpoint can rebuild the model).
    """

    def __init__(self, network: nn.Module, last_bn: nn.Module | None, config: dict[str, Any]):
        super().__init__()
        self.network = network
        self.last_bn = last_bn
        self.config = dict(config)

    def forward(self, x: torch.Tensor) -> Any:
        out = self.network(x)
        if self.last_bn is None:
            return out
        if isinstance(out, torch.Tensor):
            return self._apply_last_bn(out)
        if hasattr(out, "_replace") and hasattr(out, "logits"):  # e.g. torchvision InceptionOutputs
            return out._replace(logits=self._apply_last_bn(out.logits))
        raise TypeError(
            f"the network returned {type(out).__name__}; the last batch norm needs a logits tensor "
            "of shape (N, num_classes): convert with last_bn=False for such models"
        )

    def _apply_last_bn(self, logits: torch.Tensor) -> torch.Tensor:
        expected = self.last_bn.num_features
        if logits.dim() != 2 or logits.shape[1] != expected:
            raise ValueError(
                f"the last batch norm expects logits of shape (N, {expected}) but the network returned "
                f"{tuple(logits.shape)}: pass num_classes= to convert_to_binary_supermask, or last_bn=False"
            )
        return self.last_bn(logits)


def _is_excluded(name: str, module: nn.Module, exclude: Sequence[Any]) -> bool:
    for item in exclude:
        if isinstance(item, type):
            if isinstance(module, item):
                return True
        elif name == item or name.startswith(f"{item}."):
            return True
    return False


#: Packages whose classes a file (checkpoint, packed file, config) may name in ``exclude`` as
#: ``"type:package.module.Class"``; looking such a class up imports that package's module, where
#: installed. Any other class must be registered in code with :func:`allow_type`.
TYPE_PACKAGES: tuple[str, ...] = ("torch.nn", "torchvision", "timm", "robustbench", "binprune")

_ALLOWED_TYPES: dict[str, type] = {}  # "type:module.Qualname" -> class registered in code


def _type_name(cls: type) -> str:
    return f"type:{cls.__module__}.{cls.__qualname__}"


def allow_type(cls: type) -> type:
    """Let files name ``cls`` (an ``nn.Module`` subclass) in ``exclude``; returns ``cls``, so it
    also works as a class decorator.

    A checkpoint or packed file stores excluded types by name (``"type:mypkg.blocks.Block"``).
    Loading resolves such a name only for classes of :data:`TYPE_PACKAGES` and classes registered
    here, and never imports a module because a file names it (a module on ``sys.path`` would run
    its code). A class passed itself in ``exclude=`` is registered automatically.

    Example:
        >>> from mypkg.blocks import Block
        >>> binprune.convert.allow_type(Block)
        >>> net = binprune.load_model("runs/x/best.pt")   # its spec excludes "type:mypkg.blocks.Block"
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"allow_type takes an nn.Module subclass, got {cls!r}")
    _ALLOWED_TYPES[_type_name(cls)] = cls
    return cls


def _refuse_type(path: str, reason: str) -> ValueError:
    short = path.rpartition(".")[2] or path
    return ValueError(
        f"exclude names the type {path!r}, {reason} (types are looked up by name only in "
        f"{', '.join(TYPE_PACKAGES)}): import the class and call binprune.convert.allow_type({short}) first "
        "(or pass the class itself in exclude=)")


def _import_class(path: str, package: str) -> Any:
    """The object at dotted ``path`` inside ``package``: the longest importable module prefix
    (never shorter than the package), then attributes."""
    parts = path.split(".")
    if package == "robustbench" and "robustbench" not in sys.modules:
        from .compat import import_robustbench

        import_robustbench()  # robustbench imports only with binprune's packaging fixes
    for cut in range(len(parts) - 1, len(package.split(".")) - 1, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                continue  # not a module: the name goes on with attributes
            raise
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
        return obj
    return None


def _type_from_name(text: str) -> type:
    """Resolve ``"type:package.module.Class"`` (how specs and configs store excluded types)
    through the allow-list: registered types, then classes of :data:`TYPE_PACKAGES`."""
    path = text[len("type:"):]
    if text in _ALLOWED_TYPES:
        return _ALLOWED_TYPES[text]
    package = next((p for p in TYPE_PACKAGES if path.startswith(p + ".")), None)
    if package is None:
        raise _refuse_type(path, "which is not registered and nothing is imported because a file names it")
    parts = path.split(".")
    if not all(p.isidentifier() and not p.startswith("__") for p in parts):
        raise _refuse_type(path, "which is not a plain dotted class name")
    top = package.split(".")[0]
    if top not in sys.modules and importlib.util.find_spec(top) is None:
        raise _refuse_type(path, f"but {top} is not installed")
    try:
        obj = _import_class(path, package)
    except Exception as exc:  # an installed package that fails to import (missing dependency)
        raise _refuse_type(path, f"which cannot be imported ({type(exc).__name__}: {str(exc)[:120]})") from exc
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise _refuse_type(path, "which is not an nn.Module class")
    return obj


def _check_exclude(model: nn.Module, exclude: Iterable[Any]) -> tuple[Any, ...]:
    """Resolve ``exclude`` to module names and types; a type given in code is registered with
    :func:`allow_type`, so the spec that records it by name loads again in this process."""
    if isinstance(exclude, (str, bytes)) or not isinstance(exclude, Iterable):
        raise TypeError(f"exclude takes a list of module names or nn.Module types, got {exclude!r}")
    exclude = tuple(_type_from_name(e) if isinstance(e, str) and e.startswith("type:") else e for e in exclude)
    names = {n for n, _ in model.named_modules()}
    for item in exclude:
        if isinstance(item, type):
            if not issubclass(item, nn.Module):
                raise TypeError(f"exclude holds {item.__name__}, which is not an nn.Module type")
            allow_type(item)
        elif isinstance(item, str):
            if item not in names:
                close = sorted(n for n in names if item.split(".")[-1] in n)[:5]
                hint = f" (similar: {', '.join(close)})" if close else ""
                raise ValueError(f"exclude names module {item!r}, which the model does not have{hint}")
        else:
            raise TypeError(f"exclude takes module names (str) or nn.Module types, got {item!r}")
    return exclude


def _mask_targets(model: nn.Module, exclude: Sequence[Any]) -> list[tuple[str, nn.Module, str, str | None]]:
    """(module name, module, weight attribute, bias attribute) for every tensor to mask."""
    targets = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.lazy.LazyModuleMixin) and module.has_uninitialized_params():
            raise ValueError(
                f"module {name!r} is a lazy module that has not been initialized: run one forward pass "
                "with a sample input before converting"
            )
        if _is_excluded(name, module, exclude):
            continue
        if isinstance(module, MASKABLE_LAYERS) and module.weight is not None:
            targets.append((name, module, "weight", "bias" if module.bias is not None else None))
        elif isinstance(module, nn.MultiheadAttention):
            if module.in_proj_weight is not None:
                bias = "in_proj_bias" if module.in_proj_bias is not None else None
                targets.append((name, module, "in_proj_weight", bias))
            else:
                for proj in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                    targets.append((name, module, proj, None))
                # The separate projections share in_proj_bias; fix it once.
                if module.in_proj_bias is not None:
                    targets[-1] = (name, module, "v_proj_weight", "in_proj_bias")
    return targets


def _infer_num_classes(model: nn.Module) -> int:
    last = None
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            last = module
    if last is None:
        raise ValueError("cannot tell the number of classes (no Linear or Conv layer): pass num_classes=")
    return last.out_features if isinstance(last, nn.Linear) else last.out_channels


def _replace_batchnorms(model: nn.Module) -> None:
    """Swap every affine batch norm for a non-affine one with the same running statistics."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and child.affine:
                new = type(child)(
                    child.num_features, eps=child.eps, momentum=child.momentum,
                    affine=False, track_running_stats=child.track_running_stats,
                )
                if child.track_running_stats:
                    new.running_mean = child.running_mean.detach().clone()
                    new.running_var = child.running_var.detach().clone()
                    new.num_batches_tracked = child.num_batches_tracked.detach().clone()
                new.train(child.training)
                setattr(parent, child_name, new)


def _check_settings(sparsity: float, allocation: str, p: float, init: str, bn: str, score_init_scale: float,
                    seed: int, num_classes: int | None) -> tuple[float, int]:
    """Validate the plain settings; returns ``(sparsity, seed)`` as float and int."""
    sparsity = check_sparsity(sparsity)
    if allocation not in ALLOCATIONS:
        raise ValueError(f"unknown allocation {allocation!r}: choose one of {', '.join(ALLOCATIONS)}")
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not math.isfinite(p) or p < 0:
        raise ValueError(f"p must be a finite number >= 0, got {p!r}")
    if init not in WEIGHT_INITS:
        raise ValueError(f"unknown init {init!r}: choose one of {', '.join(WEIGHT_INITS)}")
    if bn not in BN_MODES:
        raise ValueError(f"unknown bn mode {bn!r}: choose one of {', '.join(BN_MODES)}")
    if not (isinstance(score_init_scale, (int, float)) and score_init_scale > 0):
        raise ValueError(f"score_init_scale must be > 0, got {score_init_scale!r}")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral)
                                    or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer (the size of the logits), got {num_classes!r}")
    return sparsity, check_seed(seed)


def _torch_pruned(model: nn.Module) -> list[str]:
    """``module.tensor`` names that torch.nn.utils.prune reparametrized (a forward pre-hook that
    recomputes ``tensor`` from ``tensor_orig * tensor_mask``)."""
    from torch.nn.utils import prune

    found = []
    for name, module in model.named_modules():
        for hook in module._forward_pre_hooks.values():  # noqa: SLF001 (torch's prune keeps its state there)
            methods = hook._pruning_methods if isinstance(hook, prune.PruningContainer) else [hook]  # noqa: SLF001
            for method in methods:
                if isinstance(method, prune.BasePruningMethod):
                    found.append(f"{name}.{method._tensor_name}" if name else method._tensor_name)  # noqa: SLF001
    return list(dict.fromkeys(found))


def _check_model(model: nn.Module) -> None:
    """Refuse what cannot be converted faithfully: not a module, already converted, or holding
    tensors without values (meta device)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    if any(True for _ in masked_tensors(model)):
        raise ValueError("the model is already a supermask model: convert the original model instead")
    pruned = _torch_pruned(model)
    if pruned:
        raise ValueError(
            f"the model was pruned with torch.nn.utils.prune ({', '.join(pruned[:3])}{' ...' if len(pruned) > 3 else ''}"
            " hold *_orig and *_mask): fold the pruning in first, e.g. for each: "
            "torch.nn.utils.prune.remove(module, 'weight')")
    meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if meta:
        raise ValueError(
            f"the model has tensors on the meta device ({', '.join(meta[:3])}{' ...' if len(meta) > 3 else ''}), "
            "which hold no values: materialize it first (e.g. model.to_empty(device='cpu') and load its weights)")


def _storage_key(tensor: torch.Tensor | None) -> tuple | None:
    """What identifies a tensor's memory (views and aliases share it); ``None`` when it has none."""
    if tensor is None or tensor.numel() == 0 or tensor.layout != torch.strided:
        return None
    return (tensor.device, tensor.untyped_storage().data_ptr())


def _tensor_places(model: nn.Module) -> dict[tuple, list[str]]:
    """The qualified names of every parameter and buffer, grouped by the memory they use (a
    module reused at several places counts once)."""
    places: dict[tuple, list[str]] = {}
    for module_name, module in model.named_modules():
        for attr, tensor in list(module._parameters.items()) + list(module._buffers.items()):
            key = _storage_key(tensor)
            if key is not None:
                places.setdefault(key, []).append(f"{module_name}.{attr}" if module_name else attr)
    return places


def _check_targets(model: nn.Module, targets: Sequence[tuple[str, nn.Module, str, str | None]]) -> torch.dtype:
    """Refuse tied tensors and mixed or non-float dtypes among the masked tensors; return their dtype.

    A tensor that a masked layer shares with another place (two layers holding one Parameter, a
    classifier tied to an embedding) would be overwritten by the fixed random weight and masked
    twice: binprune refuses it instead of silently breaking the tie. (A module reused at several
    places of the model is converted once and stays shared.)
    """
    places = _tensor_places(model)
    dtypes: dict[torch.dtype, str] = {}
    for module_name, module, weight_name, bias_name in targets:
        for attr in (weight_name, bias_name):
            shared = places.get(_storage_key(getattr(module, attr) if attr is not None else None), [])
            if len(shared) > 1:
                names = " and ".join(shared[:3])
                raise ValueError(
                    f"{names} are the same tensor (tied weights): binprune would overwrite it with a fixed random "
                    "weight and mask it twice; untie it (give each layer its own nn.Parameter, e.g. "
                    "layer.weight = nn.Parameter(layer.weight.detach().clone())) or leave the layers dense "
                    "with exclude=[...]")
        weight = getattr(module, weight_name)
        dtypes.setdefault(weight.dtype, f"{module_name}.{weight_name}" if module_name else weight_name)
    bad = [f"{n} ({d})" for d, n in dtypes.items() if not d.is_floating_point]
    if bad or len(dtypes) > 1:
        found = ", ".join(bad or [f"{n} ({d})" for d, n in dtypes.items()])
        raise ValueError(f"the weights to mask must share one floating dtype, got {found}: cast the model "
                         "(e.g. model.float()) before converting")
    return next(iter(dtypes))


def _keep_counts(sizes: list[int], sparsity: float, allocation: str, p: float) -> tuple[list[int], GlobalBudget | None]:
    if allocation == "global":
        total_keep = max(1, round((1.0 - sparsity) * sum(sizes)))
        counts = [max(1, round((1.0 - sparsity) * n)) for n in sizes]  # replaced at first use
        return counts, GlobalBudget(total_keep)
    return allocate_keep_counts(sizes, sparsity, p, allocation), None


def _convert_layers(targets: Sequence[tuple[str, nn.Module, str, str | None]], counts: Sequence[int], *,
                    budget: GlobalBudget | None, init: str, seed: int, score_init_scale: float,
                    kaiming_scores: bool = False) -> None:
    """Give every target its fixed weight (drawn from ``(seed, name)``), its scores and mask, and
    its fixed bias, in the targets' own dtype and device."""
    for (module_name, module, weight_name, bias_name), count in zip(targets, counts):
        name = f"{module_name}.{weight_name}" if module_name else weight_name
        original = getattr(module, weight_name)
        fan = fan_in(original)
        weight = fixed_weight(
            original.shape, init=init, seed=seed, name=name, keep_ratio=count / original.numel(), fan_in_count=fan
        ).to(device=original.device, dtype=original.dtype)
        with torch.no_grad():
            original.copy_(weight)
        gen = generator_for("scores", seed, name)
        bound = 1.0 / math.sqrt(max(fan, 1)) if kaiming_scores else score_init_scale
        scores = torch.empty(original.shape, dtype=torch.float32).uniform_(-bound, bound, generator=gen)
        apply_mask(module, weight_name, scores=scores, keep_count=count, budget=budget)
        if bias_name is not None:
            old = getattr(module, bias_name)
            bias_key = f"{module_name}.{bias_name}" if module_name else bias_name
            value = fixed_bias(old.shape, init=init, seed=seed, name=bias_key, fan_in_count=fan)
            delattr(module, bias_name)
            module.register_buffer(bias_name, value.to(device=old.device, dtype=old.dtype))


def _finish_network(network: nn.Module, *, bn: str, num_classes: int | None, dtype: torch.dtype) -> nn.Module | None:
    """Batch norms (``bn`` mode), everything but the scores frozen; returns the last batch norm
    over ``num_classes`` logits in the network's dtype and device (``None`` without LBN)."""
    if bn == "non_affine":
        _replace_batchnorms(network)
    for param_name, param in network.named_parameters():
        if not param_name.endswith(".scores"):
            param.requires_grad_(False)
    if num_classes is None:
        return None
    device = next((t.device for t in network.buffers()), torch.device("cpu"))
    return nn.BatchNorm1d(int(num_classes), affine=False).to(device=device, dtype=dtype)


def convert_to_binary_supermask(
    model: nn.Module,
    *,
    sparsity: float = 0.99,
    allocation: str = "adaptive",
    p: float = 0.1,
    init: str = "binary",
    last_bn: bool = True,
    bn: str = "non_affine",
    exclude: Iterable[Any] = (),
    seed: int = 0,
    score_init_scale: float = 0.01,
    num_classes: int | None = None,
    score_init: str = "uniform",
    connect_channels: bool = False,
    example_input: torch.Tensor | None = None,
) -> Subnetwork:
    """Return a copy of ``model`` whose weight-bearing layers are supermask layers.

    Every ``nn.Conv1d/2d/3d``, ``nn.ConvTranspose*``, ``nn.Linear`` (and subclasses) and the
    input projection of ``nn.MultiheadAttention`` gets a fixed random weight (``init``, drawn
    from ``seed`` and the layer's name), a fixed bias (zero for binary weights), and a learnable
    score per weight; its effective weight is ``w * mask`` with the exact per-layer top-k of
    ``|score|``. Everything except the scores is frozen (``requires_grad=False``); other dense
    tensors (norm affine parameters, embeddings, excluded layers) are kept and listed by
    :func:`binprune.sparsity_report`. Weights, scores, biases and the last batch norm take the
    dtype of the model's weights (float32, float64, float16 or bfloat16; one dtype for all).

    Refused with a one-line ``ValueError``: tied weights (one tensor used by a masked layer and
    another place: untie them or exclude the layers), models on the meta device, masked weights
    of mixed or non-float dtypes, and invalid settings (``seed`` must be an integer,
    ``num_classes`` a positive integer).

    Args:
        model: any ``nn.Module``; it is not modified.
        sparsity: fraction of the masked weights removed, in [0, 1).
        allocation: ``"adaptive"`` (kept counts proportional to ``n_l ** p``), ``"uniform"`` (same
            ratio per layer) or ``"global"`` (one score threshold across all layers).
        p: exponent of the adaptive allocation (ignored otherwise).
        init: ``"binary"`` (±1), ``"signed_constant"`` or ``"kaiming"`` (see :mod:`binprune.init`).
        last_bn: append a non-affine ``BatchNorm1d`` over the logits (LBN).
        bn: ``"non_affine"`` replaces affine batch norms by non-affine ones (running statistics
            kept); ``"keep"`` leaves them (their affine parameters frozen).
        exclude: module names (a name excludes its submodules too) or module types to leave dense.
            Types are stored by name (``"type:torch.nn.Linear"``, also accepted here); a file
            naming a type outside torch.nn, torchvision, timm, robustbench and binprune loads only
            once the class is registered with :func:`allow_type` (nothing is imported because a
            file names it).
        seed: integer seed of the weights and initial scores.
        score_init_scale: scores start uniform in (-a, a) with this ``a`` (``score_init="uniform"``).
        score_init: ``"uniform"`` (binprune's, above) or ``"kaiming_uniform"``: uniform in
            ``(-1/sqrt(fan_in), 1/sqrt(fan_in))``, PyTorch's ``kaiming_uniform_(a=sqrt(5))`` that
            edge-popup and RST use for their scores.
        num_classes: size of the logits for the last batch norm; by default the output size of
            the last Linear/Conv layer.
        connect_channels: start from a mask that keeps at least one weight in every output
            channel of every layer (:func:`binprune.connectivity.connect_output_channels`), for
            networks a random 99% mask disconnects.
        example_input: a batch of at least two inputs; with it, the converted network is run on
            them and a warning names the layers where a random mask cut every path from the
            input to the output (:func:`binprune.connectivity.signal_report`), with the remedy.

    Example:
        >>> net = binprune.convert_to_binary_supermask(torchvision.models.resnet18(), sparsity=0.99)
        >>> print(binprune.sparsity_report(net).table())
    """
    sparsity, seed = _check_settings(sparsity, allocation, p, init, bn, score_init_scale, seed, num_classes)
    if score_init not in SCORE_INITS:
        raise ValueError(f"unknown score_init {score_init!r}: choose one of {', '.join(SCORE_INITS)}")
    _check_model(model)
    exclude = _check_exclude(model, exclude)

    network = copy.deepcopy(model)
    targets = _mask_targets(network, exclude)
    if not targets:
        raise ValueError("the model has no Conv, Linear or MultiheadAttention weight to convert (after exclude)")
    dtype = _check_targets(network, targets)
    if last_bn and num_classes is None:
        num_classes = _infer_num_classes(network)

    counts, budget = _keep_counts([getattr(m, w).numel() for _, m, w, _ in targets], sparsity, allocation, p)
    if connect_channels:
        if budget is not None:
            raise ValueError("connect_channels needs per-layer keep counts: use allocation 'adaptive' or 'uniform'")
        # at least one kept weight per output channel (slightly fewer removed weights than asked)
        counts = [max(int(k), int(getattr(m, w).shape[0])) for k, (_, m, w, _) in zip(counts, targets)]
    _convert_layers(targets, counts, budget=budget, init=init, seed=seed, score_init_scale=score_init_scale,
                    kaiming_scores=score_init == "kaiming_uniform")

    lbn = _finish_network(network, bn=bn, num_classes=num_classes if last_bn else None, dtype=dtype)
    config = {
        "sparsity": sparsity,
        "allocation": allocation,
        "p": float(p),
        "init": init,
        "last_bn": bool(last_bn),
        "bn": bn,
        "exclude": [_type_name(e) if isinstance(e, type) else e for e in exclude],
        "seed": seed,
        "score_init_scale": float(score_init_scale),
        "num_classes": int(num_classes) if num_classes is not None else None,
    }
    if score_init != "uniform":  # recorded only when set, so earlier specs stay unchanged
        config["score_init"] = score_init
    if connect_channels:
        config["connect_channels"] = True
        connect_output_channels(network)
    sub = Subnetwork(network, lbn, config)
    sub.train(model.training)
    if example_input is not None:
        _warn_if_disconnected(sub, example_input)
    return attach_spec(sub, find_spec(model, nested=False).with_transform("supermask", config))


def _warn_if_disconnected(model: nn.Module, example_input: torch.Tensor) -> None:
    report = signal_report(model, example_input)
    if not report["connected"]:
        layers = ", ".join(report["cut_layers"][:4]) or "(no single layer: the signal fades)"
        warnings.warn(
            f"the random mask cuts every path from the input to the output at {layers}: the network gives the "
            "same output for every input, and no gradient reaches the masks before that point. Convert with "
            "connect_channels=True (binprune train --connect-channels): the initial mask then keeps a weight in "
            "every output channel", DisconnectedMaskWarning, stacklevel=3)


def finalize(model: nn.Module) -> nn.Module:
    """Return a copy in which every masked tensor is a plain tensor holding ``w * mask``.

    The layers get their own classes back (``nn.Conv2d``, ...), with weights and fixed biases as
    frozen ``nn.Parameter``; the last batch norm is kept. Eval outputs equal the supermask
    model's, so tools that expect standard modules (export, fusion, other libraries) can use it.
    """
    plain = copy.deepcopy(model)
    by_module: dict[int, list] = {}
    for mt in masked_tensors(plain):
        by_module.setdefault(id(mt.module), []).append(mt)
    for tensors in by_module.values():
        module = tensors[0].module
        if len(module.parametrizations) != len(tensors) or any(len(p) != 1 for p in module.parametrizations.values()):
            raise ValueError(
                f"{type(module).__name__} has parametrizations other than binprune masks; remove them first"
            )
        values = {}
        with torch.no_grad():
            for mt in tensors:
                values[mt.tensor_name] = mt.mask.masked_weight(mt.original).detach().clone()
        # A deep copy shares the injected Parametrized* class with the original model, so
        # torch's remove_parametrizations (which deletes the class's properties) would break the
        # original. Restoring the base class on this instance only leaves the original intact.
        module.__class__ = type(module).__bases__[0]
        del module._modules["parametrizations"]
        for name, value in values.items():
            module.register_parameter(name, nn.Parameter(value, requires_grad=False))
        for bias_name in ("bias", "in_proj_bias"):
            if module._buffers.get(bias_name) is not None:
                bias = module._buffers.pop(bias_name)
                module.register_parameter(bias_name, nn.Parameter(bias, requires_grad=False))
    if isinstance(plain, Subnetwork):
        plain.config = dict(plain.config, finalized=True)
    return plain


@register_transform("supermask")
def _rebuild_supermask(base: nn.Module, **kwargs: Any) -> nn.Module:
    """Rebuild a supermask model from its spec (checkpoints and packed files)."""
    return convert_to_binary_supermask(base, **kwargs)
