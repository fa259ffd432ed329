"""Architectures: CIFAR-sized variants of torchvision's ResNets and small reference networks.

Every model built here takes inputs in [0, 1] and normalizes them in its first module
(:class:`Normalize`), so attacks work in pixel space (the AutoAttack / RobustBench convention).
:func:`create_model` is the one factory; architectures register themselves by name.

CIFAR-sized ResNets are torchvision's own ``ResNet`` class (same blocks, same forward) with the
ImageNet stem (7x7 stride-2 conv + max-pool) replaced by a 3x3 stride-1 conv and no pooling, as
is standard for 32x32 inputs, and an optional width multiplier (``width_factor``) for wide or
reduced-width variants.
"""

from __future__ import annotations

import copy
import functools
import numbers
from collections import OrderedDict
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from . import zoo
from .spec import ModelSpec, attach_spec
from .utils import check_seed, stable_seed

__all__ = ["Normalize", "create_model", "list_models", "register_model", "register_factory", "check_architecture",
           "CifarResNet", "SmallCNN"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a builder ``fn(num_classes, in_channels, **kwargs) -> nn.Module``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def register_factory(name: str) -> None:
    """Import the user's factory ``package.module:callable`` named on the command line and register
    it under that name (done once; binprune never imports a factory a file names)."""
    if name not in _REGISTRY:
        _REGISTRY[name] = zoo.import_factory(name)


def check_architecture(name: str) -> None:
    """Refuse an unknown architecture name before any work (a user factory must be registered)."""
    if name in _REGISTRY:
        return
    if not zoo.is_external(name):
        raise ValueError(f"unknown architecture {name!r}: choose one of {', '.join(list_models())}, or "
                         "torchvision:NAME, timm:NAME, robustbench:NAME, package.module:callable")
    zoo.check_arch_name(name)
    if zoo.is_user_factory(name):
        raise ValueError(f"architecture {name!r} is a user factory that is not registered: name it with --arch "
                         f"{name} on the command line (binprune does not import code a file names)")


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, as the model's first layer.

    Keeping normalization inside the model means every attack and every evaluation tool sees
    inputs in [0, 1] and budgets (eps) are in pixel units.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {list(std)}")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"expected images of shape (N, {self.mean.shape[1]}, H, W), got {tuple(x.shape)}"
            )
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def create_model(
    name: str,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered architecture preceded by :class:`Normalize`.

    Args:
        name: one of :func:`list_models`, or another library's model: ``torchvision:NAME``,
            ``timm:NAME``, ``robustbench:NAME`` (:mod:`binprune.zoo`), or a user's factory
            ``package.module:callable`` registered with :func:`register_model`.
        num_classes: size of the logits.
        in_channels: image channels (1 for Fashion-MNIST, 3 for CIFAR).
        mean, std: per-channel normalization; default: the model's own (timm's pretrained_cfg,
            identity for RobustBench's zoo), else 0.5 / 0.5 (i.e. [-1, 1] inputs).
        seed: draw the initial weights from this seed (and the architecture's name) instead of
            torch's global random state, which differs between processes; the caller's random
            state is left untouched.
        kwargs: architecture options (e.g. ``width_factor`` for ResNets).

    The returned model carries a :class:`binprune.spec.ModelSpec` whose recipe holds the
    arguments that rebuild it (checkpoints and the packed format store it).
    """
    external = name not in _REGISTRY and zoo.is_external(name)
    if name not in _REGISTRY and not external:
        raise ValueError(f"unknown architecture {name!r}: choose one of {', '.join(list_models())}, or "
                         "torchvision:NAME, timm:NAME, robustbench:NAME, package.module:callable")
    for what, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{what} must be an integer >= 1, got {value!r}")
    num_classes, in_channels = int(num_classes), int(in_channels)
    if seed is not None:
        seed = check_seed(seed, non_negative=True)
    builder = _REGISTRY[name] if not external else functools.partial(zoo.build_external, name)
    if seed is None:
        net = builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stable_seed(seed, "init", name))
            net = builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
    own = zoo.own_normalization(name, net, in_channels) if mean is None and std is None else None
    mean = list(mean) if mean is not None else (list(own[0]) if own else [0.5] * in_channels)
    std = list(std) if std is not None else (list(own[1]) if own else [0.5] * in_channels)
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean/std need {in_channels} values (one per input channel), got {mean} / {std}")
    model = nn.Sequential(OrderedDict(normalize=Normalize(mean, std), net=net))
    recipe = {
        "arch": name,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "mean": mean,
        "std": std,
        "kwargs": copy.deepcopy(kwargs),
    }
    return attach_spec(model, ModelSpec(recipe=recipe))


def model_from_recipe(recipe: dict[str, Any]) -> nn.Module:
    """Rebuild the model that :func:`create_model` described in ``recipe``."""
    try:
        return create_model(
            recipe["arch"], num_classes=recipe["num_classes"], in_channels=recipe["in_channels"],
            mean=recipe["mean"], std=recipe["std"], **recipe.get("kwargs", {}),
        )
    except KeyError as exc:
        raise ValueError(f"model recipe is missing the field {exc.args[0]!r}: {recipe}") from exc


class CifarResNet(tv_resnet.ResNet):
    """torchvision's ``ResNet`` with a CIFAR stem (3x3 stride-1 conv, no max-pool).

    ``width_factor`` multiplies every stage's width (64, 128, 256, 512 for BasicBlock nets):
    2.0 gives a wide ResNet, 0.25 a reduced network for CPU work.
    """

    def __init__(
        self,
        block: type[tv_resnet.BasicBlock] | type[tv_resnet.Bottleneck],
        layers: Sequence[int],
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        width_factor: float = 1.0,
        bottleneck_width: int = 64,
    ):
        if width_factor <= 0:
            raise ValueError(f"width_factor must be > 0, got {width_factor}")
        widths = [max(1, int(round(w * width_factor))) for w in (64, 128, 256, 512)]
        super().__init__(block, list(layers), num_classes=num_classes, width_per_group=bottleneck_width)
        # Rebuild the stages at the requested width with torchvision's own _make_layer.
        self.inplanes = widths[0]
        self.dilation = 1
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.Identity()
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


_RESNETS = {
    "resnet18": (tv_resnet.BasicBlock, (2, 2, 2, 2), 64),
    "resnet34": (tv_resnet.BasicBlock, (3, 4, 6, 3), 64),
    "resnet50": (tv_resnet.Bottleneck, (3, 4, 6, 3), 64),
    "wide_resnet50_2": (tv_resnet.Bottleneck, (3, 4, 6, 3), 128),
}


def _resnet_builder(block: type[tv_resnet.BasicBlock] | type[tv_resnet.Bottleneck], layers: Sequence[int],
                    bottleneck_width: int) -> Callable[..., nn.Module]:
    """A registry builder for one CIFAR ResNet depth (binds the loop variables)."""
    def build(*, num_classes: int, in_channels: int, width_factor: float = 1.0) -> nn.Module:
        return CifarResNet(
            block, layers, num_classes=num_classes, in_channels=in_channels,
            width_factor=width_factor, bottleneck_width=bottleneck_width,
        )

    return build


for _name, (_block, _layers, _bw) in _RESNETS.items():
    register_model(_name)(_resnet_builder(_block, _layers, _bw))


class SmallCNN(nn.Sequential):
    """A small VGG-style network for CPU work: conv-BN-ReLU blocks, stride-2 downsampling,
    global average pooling and a linear classifier. Works for any input size >= 8 pixels.

    ``widths`` gives each stage's output channels; a stage is two convs, the second with stride 2.
    The default puts most parameters in the low-resolution stages, where each parameter costs
    few multiply-adds: a 99%-sparse mask then keeps ~12k weights at ~20M MACs per 28x28 image.
    """

    def __init__(self, *, num_classes: int, in_channels: int, widths: Sequence[int] = (32, 64, 128, 256),
                 hidden: int = 0):
        layers: list[tuple[str, nn.Module]] = []
        prev = in_channels
        for i, w in enumerate(widths):
            for j, stride in enumerate((1, 2)):
                layers.append((f"conv{i}_{j}", nn.Conv2d(prev, w, 3, stride=stride, padding=1, bias=False)))
                layers.append((f"bn{i}_{j}", nn.BatchNorm2d(w)))
                layers.append((f"relu{i}_{j}", nn.ReLU(inplace=True)))
                prev = w
        layers.append(("pool", nn.AdaptiveAvgPool2d(1)))
        layers.append(("flatten", nn.Flatten()))
        if hidden:
            layers += [("fc_hidden", nn.Linear(prev, hidden, bias=False)), ("bn_hidden", nn.BatchNorm1d(hidden)),
                       ("relu_hidden", nn.ReLU(inplace=True))]
            prev = hidden
        layers.append(("fc", nn.Linear(prev, num_classes)))
        super().__init__(OrderedDict(layers))


@register_model("small_cnn")
def _small_cnn(*, num_classes: int, in_channels: int, widths: Sequence[int] = (32, 64, 128, 256), hidden: int = 0,
               width_factor: float = 1.0) -> nn.Module:
    if width_factor <= 0:
        raise ValueError(f"width_factor must be > 0, got {width_factor}")
    scaled = tuple(max(1, int(round(w * width_factor))) for w in widths)
    return SmallCNN(num_classes=num_classes, in_channels=in_channels, widths=scaled, hidden=hidden)
