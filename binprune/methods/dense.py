"""AT baselines: Madry PGD adversarial training of the dense network, full precision or binary.

What differs from binprune: nothing is pruned and there are no scores; the weights themselves
are trained (``binprune.train`` trains whatever requires gradients, here every parameter). The
network keeps its affine batch norms and no last batch norm is added.

Binary weights (``binarize_weights``): every conv / linear weight becomes a *latent*
full-precision tensor ``w`` and the layer computes with ``alpha * sign(w)``, where the per-layer
scale ``alpha`` is the mean ``|w|`` over the layer's non-zero entries (XNOR-Net's scale; the
non-zero rule lets the same parametrization binarize the kept weights of a pruned layer). The
gradient is straight-through, ``dL/dw = dL/dw_b * 1{|w| <= 1}`` (zero where the latent weight
left [-1, 1]; the scale is treated as a constant). :class:`LatentClip`, run after every optimizer
step, keeps the latent weights in [-1, 1], as BinaryConnect does. Biases and batch-norm
parameters stay in full precision.

The "small" dense network is the same architecture with every width multiplied by a factor
chosen so that it has about 1% of the parameters (:func:`width_factor_for_ratio`).

Methods registered here: ``at-fp``, ``at-binary``, ``at-fp-small``, ``at-binary-small``
(:class:`DenseAT`). The dense AT phase (``dense-fp``) is also the pre-training of HYDRA and ATMC
(:func:`pretraining_phase`, :func:`from_pretrained`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..spec import attach_spec, find_spec, register_transform
from .base import Method, MethodContext, Phase, register_method
from .measure import count_params, effective_weights, other_float_values, register_stored_size, size_summary, weight_layers

__all__ = [
    "BinaryWeight", "binarize_weights", "LatentClip", "binary_weight_tensors", "width_factor_for_ratio",
    "dense_size", "binary_dense_size", "count_params", "DenseAT", "dense_phase", "pretraining_phase",
    "from_pretrained", "ConnectSign", "ConnectClip", "LastBatchNorm", "at_model", "at_dense_size",
]


class _SignSTE(torch.autograd.Function):
    """``alpha * sign(w)`` forward; ``g * 1{|w| <= 1}`` backward (straight-through)."""

    @staticmethod
    def forward(ctx, latent):  # type: ignore[override]
        nonzero = latent != 0
        alpha = latent.abs().sum() / nonzero.sum().clamp_min(1)
        ctx.save_for_backward(latent)
        return torch.sign(latent) * alpha

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (latent,) = ctx.saved_tensors
        return grad * (latent.abs() <= 1).to(grad.dtype)


class BinaryWeight(nn.Module):
    """Parametrization ``w -> alpha * sign(w)`` with ``alpha = mean |w|`` over the non-zero
    entries and a straight-through gradient that is zero where ``|w| > 1``.

    Zero entries stay zero (``sign(0) = 0``), so placed after a :class:`binprune.TopKMask` it
    binarizes only the kept weights.
    """

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return _SignSTE.apply(latent)

    @staticmethod
    def scale(latent: torch.Tensor) -> torch.Tensor:
        """The per-layer scale ``alpha`` the forward uses for ``latent``."""
        nonzero = latent != 0
        return latent.abs().sum() / nonzero.sum().clamp_min(1)


def binary_weight_tensors(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(layer name, module)`` of every layer whose weight carries a :class:`BinaryWeight`."""
    found = []
    for name, module in weight_layers(model):
        if parametrize.is_parametrized(module, "weight") and any(
                isinstance(p, BinaryWeight) for p in module.parametrizations["weight"]):
            found.append((name, module))
    return found


def _clip_latents(model: nn.Module) -> None:
    with torch.no_grad():
        for _, module in binary_weight_tensors(model):
            module.parametrizations["weight"].original.clamp_(-1.0, 1.0)


def binarize_weights(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose conv / linear weights are binary (see the module docstring), with
    the latent weights clipped into [-1, 1]. Layers already masked keep their mask: the
    binarization is appended after it. ``model`` is not modified."""
    layers = list(weight_layers(model))
    if not layers:
        raise ValueError("the model has no Conv or Linear weight to binarize")
    kind = find_spec(model).transform_name
    if kind is not None:
        raise ValueError(f"the model is already a {kind!r} model: binarize the dense model "
                         "(HYDRA's binary fine-tuning uses hydra_model(..., binary=True))")
    already = binary_weight_tensors(model)
    if already:
        raise ValueError(f"layer {already[0][0]!r} is already binary")
    out = copy.deepcopy(model)
    for _, module in weight_layers(out):
        parametrize.register_parametrization(module, "weight", BinaryWeight(), unsafe=True)
    _clip_latents(out)
    return attach_spec(out, find_spec(model, nested=False).with_transform("binary_weights", {}))


@register_transform("binary_weights")
def _binary_weights_transform(base: nn.Module, **kwargs: Any) -> nn.Module:
    if kwargs:
        raise ValueError(f"binary_weights takes no options, got {sorted(kwargs)}")
    return binarize_weights(base)


class LatentClip:
    """Step hook keeping the latent weights of binary layers in [-1, 1] (stateless)."""

    def __call__(self, model: nn.Module, step: int) -> None:
        _clip_latents(model)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


def width_factor_for_ratio(build: Callable[[float], nn.Module], ratio: float, reference: int,
                           *, low: float = 1e-3, high: float = 1.0) -> tuple[float, float]:
    """The width factor whose model has ``ratio * reference`` parameters, closest on a log scale
    (bisection over ``build(width_factor)``; widths are rounded, so the ratio is approximate).

    Returns ``(width_factor, actual_ratio)``.
    """
    target = ratio * reference
    best = None
    lo, hi = math.log(low), math.log(high)
    for _ in range(40):
        mid = (lo + hi) / 2
        n = count_params(build(math.exp(mid)))
        if best is None or abs(math.log(n / target)) < abs(math.log(best[1] / target)):
            best = (math.exp(mid), n)
        if n < target:
            lo = mid
        else:
            hi = mid
    factor = round(best[0], 4)
    return factor, count_params(build(factor)) / reference


@register_stored_size(None)
def dense_size(model: nn.Module) -> dict:
    """Stored size of a dense full-precision model: 32 bits per weight and per other value."""
    weights = sum(w.numel() for _, w in effective_weights(model))
    return size_summary({"weights": 4 * weights, "other": 4 * other_float_values(model)},
                        "4 B x weights + 4 B x other values (biases, BN, normalization)")


@register_stored_size("binary_weights")
def binary_dense_size(model: nn.Module) -> dict:
    """Stored size of a dense binary model: 1 bit per weight (rounded up per layer), a 32-bit scale
    per layer, and 32 bits per other value."""
    layers = effective_weights(model)
    bits = sum(math.ceil(w.numel() / 8) for _, w in layers)
    return size_summary({"weights": bits, "scales": 4 * len(layers), "other": 4 * other_float_values(model)},
                        "1 bit x weights (per layer, rounded up to bytes) + 4 B scale per layer + 4 B x other values")


# --- BinaryConnect (the paper's binary AT) -------------------------------------------------------


class _ConnectSign(torch.autograd.Function):
    """``sign(w)`` with ``sign(0) = +1`` forward; the gradient passed straight through."""

    @staticmethod
    def forward(ctx, latent):  # type: ignore[override]
        return torch.where(latent >= 0, torch.ones_like(latent), -torch.ones_like(latent))

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad


class ConnectSign(nn.Module):
    """BinaryConnect's weight binarization (Courbariaux et al., 2015), as Liu et al.'s ``BinConv``
    (``code/arch/conv_type.py``): the layer computes with the unscaled ``sign(w)`` (+1 at zero),
    the gradient reaches the latent weight unchanged (straight-through), and the latent weight is
    clipped into [-1, 1] (there before every forward; here after every optimizer step,
    :class:`LatentClip`), so the identity gradient is the clipped straight-through estimator."""

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return _ConnectSign.apply(latent)


class LastBatchNorm(nn.Module):
    """``net`` followed by an affine batch norm over its logits: the LBN of the AT baselines
    (Liu et al. build it with the network's own batch norm, ``LearnedBatchNorm``, under
    ``--end-with-bn``; the supermask models use a non-affine one)."""

    def __init__(self, net: nn.Module, num_classes: int):
        super().__init__()
        self.net = net
        self.last_bn = nn.BatchNorm1d(int(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_bn(self.net(x))


def _clip_connect(model: nn.Module) -> None:
    with torch.no_grad():
        for _, module in weight_layers(model):
            if parametrize.is_parametrized(module, "weight") and any(
                    isinstance(p, ConnectSign) for p in module.parametrizations["weight"]):
                module.parametrizations["weight"].original.clamp_(-1.0, 1.0)


def at_model(model: nn.Module, *, binary: bool = False, last_bn: bool = False) -> nn.Module:
    """A copy of a dense model for the paper's AT rows: BinaryConnect weights (``binary``; every
    conv / linear layer, first and last included, as in Liu et al.'s BNN configs) and / or an
    affine batch norm over the logits (``last_bn``). ``model`` is not modified."""
    layers = list(weight_layers(model))
    if not layers:
        raise ValueError("the model has no Conv or Linear weight")
    kind = find_spec(model).transform_name
    if kind is not None:
        raise ValueError(f"the model is already a {kind!r} model: start from the dense model")
    out = copy.deepcopy(model)
    if binary:
        for _, module in weight_layers(out):
            parametrize.register_parametrization(module, "weight", ConnectSign(), unsafe=True)
        _clip_connect(out)
    if last_bn:
        out = LastBatchNorm(out, layers[-1][1].weight.shape[0])
    kwargs = {"binary": bool(binary), "last_bn": bool(last_bn)}
    return attach_spec(out, find_spec(model, nested=False).with_transform("at_dense", kwargs))


@register_transform("at_dense")
def _at_dense_transform(base: nn.Module, **kwargs: Any) -> nn.Module:
    return at_model(base, **kwargs)


class ConnectClip:
    """Step hook keeping BinaryConnect's latent weights in [-1, 1] (stateless)."""

    def __call__(self, model: nn.Module, step: int) -> None:
        _clip_connect(model)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


@register_stored_size("at_dense")
def at_dense_size(model: nn.Module) -> dict:
    """Stored size of an AT model: 1 bit per BinaryConnect weight (rounded up per layer; no
    scale) or 32 bits per full-precision weight, plus 32 bits per other value (LBN included)."""
    if not find_spec(model).transform["kwargs"]["binary"]:
        return dense_size(model)
    layers = effective_weights(model)
    bits = sum(math.ceil(w.numel() / 8) for _, w in layers)
    return size_summary({"weights": bits, "other": 4 * other_float_values(model)},
                        "1 bit x weights (per layer, rounded up to bytes) + 4 B x other values")


# --- the methods ---------------------------------------------------------------------------------


def dense_phase(ctx: MethodContext, *, binary: bool, small: bool) -> Phase:
    """AT of the dense network (full-size or small, FP or binary): phase ``dense-fp``,
    ``dense-binary``, ``small-fp`` or ``small-binary``."""
    factor = ctx.small_width()[0] if small else 1.0
    return Phase(
        name=f"{'small' if small else 'dense'}-{'binary' if binary else 'fp'}",
        start=lambda: ctx.base_model(factor),
        build=binarize_weights if binary else copy.deepcopy,
        lr=ctx.config.lr,
        hook=(lambda model: LatentClip()) if binary else None,
    )


def pretraining_phase(ctx: MethodContext) -> Phase:
    """The pre-training of HYDRA and ATMC: the AT (FP) phase itself (one shared run)."""
    return dense_phase(ctx, binary=False, small=False)


def from_pretrained(ctx: MethodContext) -> nn.Module:
    """A fresh dense model holding the pre-trained (AT FP) weights."""
    pre, _ = ctx.run_phase(pretraining_phase(ctx))
    model = ctx.base_model()
    model.load_state_dict(pre.state_dict())
    return model


class DenseAT(Method):
    """AT of the dense network: full precision or binary weights, full-size or small.

    ``binary="binaryconnect"`` (the paper's binary AT, default of the ``at-binary*`` rows):
    :class:`ConnectSign` weights trained with Adam, cosine schedule (Liu et al.,
    ``code/configs/bnn/resnet34-biconnect-cifar10.yaml``: Adam, lr 5e-4, cosine, weight decay
    5e-4; ``bash_scripts/baseline_rn34_bnn_at_cifar10_bn.sh`` sets lr 1e-4). ``binary="xnor"``:
    binprune 0.2's row (scaled sign, SGD). ``last_bn``: an affine batch norm over the logits
    (``--end-with-bn``). Full precision: SGD lr 0.1, step schedule (x0.1 at 50% and 75%), as
    ``resnet34-fp-at.yaml`` (200/300 of 400 epochs).
    """

    #: published epochs of the paper's AT runs (``epochs: 400`` in its AT configs and scripts)
    EPOCHS = 400.0

    def __init__(self, *, binary: bool | str, small: bool, last_bn: bool = False, binary_lr: float = 5e-4,
                 **names: str | None):
        super().__init__(**names)
        kind = {True: "binaryconnect", False: None}.get(binary, binary) if isinstance(binary, bool) else binary
        if kind not in (None, "binaryconnect", "xnor"):
            raise ValueError(f"binary must be False, True, 'binaryconnect' or 'xnor', got {binary!r}")
        self.kind, self.small, self.last_bn, self.binary_lr = kind, bool(small), bool(last_bn), float(binary_lr)
        self.binary = kind is not None
        self.uses_small_network = self.small

    def phases(self, ctx: MethodContext) -> list[Phase]:
        if self.kind == "xnor":
            return [dense_phase(ctx, binary=True, small=self.small)]
        factor = ctx.small_width()[0] if self.small else 1.0
        size = "small" if self.small else "dense"
        lbn = "-lbn" if self.last_bn else ""
        epochs = {"epochs": self.EPOCHS, "of_epochs": self.EPOCHS}
        if self.kind is None:
            if not self.last_bn:
                base = dense_phase(ctx, binary=False, small=self.small)
                return [dataclasses.replace(base, train={"schedule": "step"}, **epochs)]
            return [Phase(f"{size}-fp{lbn}", start=lambda: ctx.base_model(factor),
                          build=lambda m: at_model(m, last_bn=True), lr=ctx.config.lr, train={"schedule": "step"},
                          **epochs)]
        lr = self.binary_lr
        return [Phase(f"{size}-bc{lbn}-lr{lr:g}", start=lambda: ctx.base_model(factor),
                      build=lambda m: at_model(m, binary=True, last_bn=self.last_bn), lr=lr,
                      hook=lambda model: ConnectClip(), train={"optimizer": "adam", "schedule": "cosine"}, **epochs)]

    def extra(self, ctx: MethodContext, model: nn.Module) -> dict[str, Any]:
        if not self.small:
            return {}
        factor, ratio = ctx.small_width()
        # Built afresh (not taken from the comparison's header) so that a run draws the same
        # random numbers as earlier releases: later dense phases start from the same weights.
        return {"width_factor": factor, "params": count_params(ctx.base_model(factor)),
                "params_full": count_params(ctx.base_model()), "params_ratio": ratio}


register_method("at-fp")(DenseAT(binary=False, small=False, label="AT (FP)", strategy="none (dense)", precision="FP"))
register_method("at-fp-lbn")(DenseAT(binary=False, small=False, last_bn=True, label="AT (FP), LBN",
                                     strategy="none (dense)", precision="FP"))
register_method("at-binary")(DenseAT(binary=True, small=False, label="AT (binary, BinaryConnect)",
                                     strategy="none (dense)", precision="binary"))
register_method("at-binary-lbn")(DenseAT(binary=True, small=False, last_bn=True,
                                         label="AT (binary, BinaryConnect), LBN", strategy="none (dense)",
                                         precision="binary"))
register_method("at-binary-xnor")(DenseAT(binary="xnor", small=False, label="AT (binary, XNOR scale, SGD)",
                                          strategy="none (dense)", precision="binary"))
register_method("at-fp-small")(DenseAT(binary=False, small=True, label="AT (FP), small", strategy="none (small dense)",
                                       precision="FP"))
register_method("at-binary-small")(DenseAT(binary=True, small=True, label="AT (binary, BinaryConnect), small",
                                           strategy="none (small dense)", precision="binary"))
