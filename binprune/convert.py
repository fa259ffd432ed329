"""Turning any ``nn.Module`` into a binary supermask network, and back into plain layers.

:func:`convert_to_binary_supermask` walks a copy of the model, replaces the weight of every
weight-bearing layer by a fixed random tensor masked by learnable scores
(:mod:`binprune.supermask`), decides how much each layer keeps (:mod:`binprune.sparsity`),
makes batch norms non-affine, and appends the last batch norm over the logits (LBN).
:func:`finalize` is the inverse step (like ``torch.ao.pruning``'s ``squash_mask``): plain layers
holding ``w * mask``.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from .init import WEIGHT_INITS, fan_in, fixed_bias, fixed_weight
from .sparsity import ALLOCATIONS, check_sparsity, allocate_keep_counts
from .supermask import GlobalBudget, apply_mask, masked_tensors
from .spec import attach_spec, find_spec, register_transform
from .utils import generator_for

__all__ = ["Subnetwork", "convert_to_binary_supermask", "finalize", "MASKABLE_LAYERS", "BN_MODES"]

#: Layer types whose ``weight`` is masked (subclasses included).
MASKABLE_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d,
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.Linear,
)
BN_MODES = ("non_affine", "keep")


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


def _type_from_name(text: str) -> type:
    """Resolve ``"type:package.module.Class"`` (how configs store excluded types)."""
    import importlib

    path = text[len("type:"):]
    module_name, _, qualname = path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), qualname)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"exclude names type {path!r}, which cannot be imported") from exc
    return obj


def _type_name(cls: type) -> str:
    return f"type:{cls.__module__}.{cls.__qualname__}"


def _check_exclude(model: nn.Module, exclude: Iterable[Any]) -> tuple[Any, ...]:
    exclude = tuple(_type_from_name(e) if isinstance(e, str) and e.startswith("type:") else e for e in exclude)
    names = {n for n, _ in model.named_modules()}
    for item in exclude:
        if isinstance(item, type):
            if not issubclass(item, nn.Module):
                raise TypeError(f"exclude holds {item.__name__}, which is not an nn.Module type")
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
) -> Subnetwork:
    """Return a copy of ``model`` whose weight-bearing layers are supermask layers.

    Every ``nn.Conv1d/2d/3d``, ``nn.ConvTranspose*``, ``nn.Linear`` (and subclasses) and the
    input projection of ``nn.MultiheadAttention`` gets a fixed random weight (``init``, drawn
    from ``seed`` and the layer's name), a fixed bias (zero for binary weights), and a learnable
    score per weight; its effective weight is ``w * mask`` with the exact per-layer top-k of
    ``|score|``. Everything except the scores is frozen (``requires_grad=False``); other dense
    tensors (norm affine parameters, embeddings, excluded layers) are kept and listed by
    :func:`binprune.sparsity_report`.

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
        exclude: module names (a name excludes its submodules too) or module types to leave dense
            (a type can also be given as ``"type:torch.nn.Linear"``, which is how configs store it).
        seed: seed of the weights and initial scores.
        score_init_scale: scores start uniform in (-a, a) with this ``a``.
        num_classes: size of the logits for the last batch norm; by default the output size of
            the last Linear/Conv layer.

    Example:
        >>> net = binprune.convert_to_binary_supermask(torchvision.models.resnet18(), sparsity=0.99)
        >>> print(binprune.sparsity_report(net).table())
    """
    sparsity = check_sparsity(sparsity)
    if allocation not in ALLOCATIONS:
        raise ValueError(f"unknown allocation {allocation!r}: choose one of {', '.join(ALLOCATIONS)}")
    if init not in WEIGHT_INITS:
        raise ValueError(f"unknown init {init!r}: choose one of {', '.join(WEIGHT_INITS)}")
    if bn not in BN_MODES:
        raise ValueError(f"unknown bn mode {bn!r}: choose one of {', '.join(BN_MODES)}")
    if not (isinstance(score_init_scale, (int, float)) and score_init_scale > 0):
        raise ValueError(f"score_init_scale must be > 0, got {score_init_scale!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    if any(True for _ in masked_tensors(model)):
        raise ValueError("the model is already a supermask model: convert the original model instead")
    exclude = _check_exclude(model, exclude)

    network = copy.deepcopy(model)
    targets = _mask_targets(network, exclude)
    if not targets:
        raise ValueError("the model has no Conv, Linear or MultiheadAttention weight to convert (after exclude)")
    if last_bn and num_classes is None:
        num_classes = _infer_num_classes(network)

    sizes = [getattr(m, w).numel() for _, m, w, _ in targets]
    budget = None
    if allocation == "global":
        total_keep = max(1, round((1.0 - sparsity) * sum(sizes)))
        budget = GlobalBudget(total_keep)
        counts = [max(1, round((1.0 - sparsity) * n)) for n in sizes]  # replaced at first use
    else:
        counts = allocate_keep_counts(sizes, sparsity, p, allocation)

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
        scores = torch.empty(original.shape, dtype=torch.float32).uniform_(
            -score_init_scale, score_init_scale, generator=gen
        )
        apply_mask(module, weight_name, scores=scores, keep_count=count, budget=budget)
        if bias_name is not None:
            old = getattr(module, bias_name)
            bias_key = f"{module_name}.{bias_name}" if module_name else bias_name
            value = fixed_bias(old.shape, init=init, seed=seed, name=bias_key, fan_in_count=fan)
            delattr(module, bias_name)
            module.register_buffer(bias_name, value.to(device=old.device, dtype=old.dtype))

    if bn == "non_affine":
        _replace_batchnorms(network)
    for param_name, param in network.named_parameters():
        if not param_name.endswith(".scores"):
            param.requires_grad_(False)

    lbn = None
    if last_bn:
        device = next((t.device for t in network.buffers()), torch.device("cpu"))
        lbn = nn.BatchNorm1d(int(num_classes), affine=False).to(device)
    config = {
        "sparsity": sparsity,
        "allocation": allocation,
        "p": float(p),
        "init": init,
        "last_bn": bool(last_bn),
        "bn": bn,
        "exclude": [_type_name(e) if isinstance(e, type) else e for e in exclude],
        "seed": int(seed),
        "score_init_scale": float(score_init_scale),
        "num_classes": int(num_classes) if num_classes is not None else None,
    }
    sub = Subnetwork(network, lbn, config)
    sub.train(model.training)
    return attach_spec(sub, find_spec(model, nested=False).with_transform("supermask", config))


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
