"""Sparse inference: Conv/Linear layers whose cost follows their kept weights.

A 99%-sparse binprune layer keeps ~1% of its weights, each +1 or -1 (times a per-channel scale
once batch norms are folded). :func:`sparsify` swaps each ``nn.Conv1d``, ``nn.Conv2d`` and
``nn.Linear`` of a model for a subclass (:class:`SparseConv1d`, :class:`SparseConv2d`,
:class:`SparseLinear`) with the same parameters and ``state_dict`` whose forward runs the
direct sparse kernel of :mod:`binprune.deploy.kernels` (one fused multiply-add per kept weight
over all output positions of the batch) where the :class:`SparseRule` predicts it to be faster,
and PyTorch's dense kernel otherwise. The choice is made per layer and per input shape, from the
layer's kept-weight count and shape alone (deterministic, no timing at run time), and cached.

The dense kernel also runs when the kernel is unavailable (see :mod:`binprune.deploy.kernels`),
for inputs that are not float32 on the CPU, when autograd needs the graph, and under tracing or
``torch.compile`` (so ONNX export and compilation see standard ``Conv``/``Gemm`` layers).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import torch
from torch import nn

from .kernels import load_sparse_kernels, sparse_kernels_status

__all__ = [
    "SparseRule", "DEFAULT_RULE", "ALWAYS_SPARSE", "LayerShape", "SparseConv1d", "SparseConv2d", "SparseLinear",
    "sparsify", "densify", "sparse_plan", "sparse_layer_inputs", "SPARSE_LAYERS",
]


@dataclass(frozen=True)
class LayerShape:
    """What the cost of a layer depends on: its shape and its number of kept weights."""

    in_channels: int
    out_channels: int
    groups: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, bottom, left, right
    dilation: tuple[int, int]
    kept: int  # non-zero weights

    @property
    def weights(self) -> int:
        return self.out_channels * (self.in_channels // self.groups) * self.kernel[0] * self.kernel[1]

    @property
    def density(self) -> float:
        return self.kept / self.weights if self.weights else 0.0

    def work(self, n: int, h: int, w: int) -> dict[str, int]:
        """Per call on ``n`` images of ``h x w``: ``dense_macs`` (what the dense kernel computes),
        ``sparse_macs`` (kept weights times the positions the sparse kernel computes, padding
        included), ``packed`` (values the sparse kernel copies into its padded buffer),
        ``inputs`` and ``outputs`` (values read and written)."""
        (kh, kw), (sh, sw), (pt, pb, pl, pr), (dh, dw) = self.kernel, self.stride, self.padding, self.dilation
        hp, wp = h + pt + pb, w + pl + pr
        ho, wo = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
        phases = len({((ky * dh) % sh, (kx * dw) % sw) for ky in range(kh) for kx in range(kw)})
        positions = n * math.ceil(hp / sh) * math.ceil(wp / sw)
        outputs = n * self.out_channels * max(ho, 0) * max(wo, 0)
        return {"dense_macs": outputs * (self.in_channels // self.groups) * kh * kw,
                "sparse_macs": self.kept * positions, "packed": self.in_channels * phases * positions,
                "inputs": n * self.in_channels * h * w, "outputs": outputs}


@dataclass(frozen=True)
class SparseRule:
    """Use the sparse kernel where its predicted time is below ``margin`` times the dense one's.

    The predicted ratio (sparse kernel time / dense kernel time) of a layer on ``n`` images is

        ``exp(intercept) * rho ** density_exponent * c ** channels_exponent * p ** positions_exponent``

    with ``rho`` the multiply-adds the sparse kernel does over those the dense kernel does (the
    kept fraction times the padding it computes, :meth:`LayerShape.work`), ``c`` the input
    channels per group and ``p`` the output positions (``n * height * width``). The cost does
    not simply follow the density: the sparse kernel also copies its input and writes every
    output (so ``rho`` enters with an exponent below 1), and PyTorch's dense kernel is efficient
    with many input channels and poor with few (a network's first convolution, where the sparse
    kernel wins even at density 1). The rule depends only on the layer's kept-weight count and
    shape and on the input size: deterministic, nothing is timed at run time. The constants of
    :data:`DEFAULT_RULE` are fitted by ``benchmarks/inference.py`` (``calibration`` in its JSON).
    """

    intercept: float
    density_exponent: float
    channels_exponent: float
    positions_exponent: float
    margin: float = 0.9

    def predict(self, layer: LayerShape, n: int, h: int, w: int) -> float:
        """Predicted sparse / dense time ratio of one call."""
        work = layer.work(n, h, w)
        if work["dense_macs"] == 0:
            return math.inf
        rho = max(work["sparse_macs"] / work["dense_macs"], 1e-6)  # an empty layer still copies its input
        positions = work["outputs"] / layer.out_channels
        return math.exp(self.intercept + self.density_exponent * math.log(rho)
                        + self.channels_exponent * math.log(layer.in_channels // layer.groups)
                        + self.positions_exponent * math.log(positions))

    def use_sparse(self, layer: LayerShape, n: int, h: int, w: int) -> bool:
        return self.predict(layer, n, h, w) < self.margin

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# The one place the rule's constants live: fitted by `python benchmarks/inference.py` (its JSON,
# "calibration") on the 2-core x86-64 machine of the README (AVX-512, PyTorch 2.15, one thread).
DEFAULT_RULE = SparseRule(intercept=-0.009, density_exponent=0.438, channels_exponent=0.157, positions_exponent=-0.04,
                          margin=0.9)
ALWAYS_SPARSE = SparseRule(intercept=-math.inf, density_exponent=0.0, channels_exponent=0.0, positions_exponent=0.0)
"""A rule that always picks the sparse kernel (tests, benchmarks)."""


def _compiling() -> bool:
    """Under ``torch.compile`` (``torch.compiler.is_compiling`` is missing before PyTorch 2.3)."""
    check = getattr(torch.compiler, "is_compiling", None)
    return bool(check and check())


def _version(t: torch.Tensor) -> int:
    """The version counter (bumped by in-place writes); inference tensors have none (0)."""
    return 0 if t.is_inference() else t._version


_MAX_PLANS = 16  # input shapes remembered per layer (a plan is a few KB to a few MB)


class _SparseKernel:
    """Mixin: the kept weights in the kernel's layout, rebuilt when the weight changes."""

    rule: SparseRule

    def _setup_sparse(self, rule: SparseRule) -> None:
        self.rule = rule
        self._decisions: dict[tuple[int, ...], bool] = {}
        self._plans: dict[tuple[int, ...], torch.Tensor] = {}
        self._csr_version = -1
        self._refresh()

    def _refresh(self) -> None:
        weight = self.weight.detach()
        w4 = weight.reshape(weight.shape[0], weight.shape[1], *self._kernel_hw())
        nz = w4.nonzero()  # row-major: sorted by output channel, then input channel, then tap
        counts = torch.bincount(nz[:, 0], minlength=w4.shape[0]) if len(nz) else torch.zeros(w4.shape[0], dtype=torch.long)
        rowptr = torch.zeros(w4.shape[0] + 1, dtype=torch.int64, device=weight.device)
        rowptr[1:] = counts.cumsum(0)
        groups = getattr(self, "groups", 1)
        channel = (nz[:, 0] // (w4.shape[0] // groups)) * w4.shape[1] + nz[:, 1]
        for name, value in (("sparse_rowptr", rowptr), ("sparse_channel", channel.to(torch.int32)),
                            ("sparse_ky", nz[:, 2].to(torch.int32)), ("sparse_kx", nz[:, 3].to(torch.int32)),
                            ("sparse_values", w4[tuple(nz.T)].to(torch.float32).contiguous())):
            self.register_buffer(name, value, persistent=False)
        self.layer_shape = ls = self._layer_shape(len(nz))
        self._geometry_args = (list(ls.kernel), list(ls.stride), list(ls.padding), list(ls.dilation))
        self._decisions.clear()
        self._plans.clear()
        self._csr_version = _version(self.weight)

    def refresh(self) -> None:
        """Rebuild the kernel's copy of the weights: needed only after writing to ``weight.data``
        or to a weight created under ``torch.inference_mode``, which PyTorch's version counter does
        not see (in-place writes to ``weight`` are seen)."""
        self._refresh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        geometry = self._geometry(x)
        if geometry is not None and self._wants_sparse(x, *geometry):
            return self._sparse(x)
        return self.run_dense(x)

    def run_dense(self, x: torch.Tensor) -> torch.Tensor:
        """PyTorch's dense kernel, whatever the rule says (benchmarks, checks)."""
        return super().forward(x)

    def run_sparse(self, x: torch.Tensor) -> torch.Tensor:
        """The sparse kernel, whatever the rule says (benchmarks, checks); it must be loaded."""
        if not load_sparse_kernels(warn=False):
            raise RuntimeError(f"the sparse kernel is unavailable ({sparse_kernels_status()})")
        if self._csr_version != _version(self.weight):
            self._refresh()
        return self._sparse(x)

    def geometry(self, x: torch.Tensor) -> tuple[int, int, int] | None:
        """``(images, height, width)`` of ``x`` as the kernel sees it (``None``: not a valid input)."""
        return self._geometry(x)

    def _geometry(self, x: torch.Tensor) -> tuple[int, int, int] | None:
        raise NotImplementedError

    def _sparse(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _kernel_hw(self) -> tuple[int, int]:
        raise NotImplementedError

    def _layer_shape(self, kept: int) -> LayerShape:
        raise NotImplementedError

    def _wants_sparse(self, x: torch.Tensor, n: int, h: int, w: int) -> bool:
        if x.dtype != torch.float32 or x.device.type != "cpu" or (
                torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return False
        if torch.jit.is_tracing() or torch.jit.is_scripting() or _compiling():
            return False
        if self._csr_version != _version(self.weight):
            self._refresh()
        key = (n, h, w)
        choice = self._decisions.get(key)
        if choice is None:
            choice = self._decisions[key] = (self.rule.use_sparse(self.layer_shape, n, h, w)
                                             and self.weight.device.type == "cpu" and load_sparse_kernels())
        return choice

    def _run(self, x4: torch.Tensor) -> torch.Tensor:
        """The kernel on ``x4`` (N, C, H, W), with the plan for this input shape (built once:
        validated tap offsets, channel blocks, where each tile's outputs go)."""
        key = tuple(x4.shape)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            plan = self._plans[key] = torch.ops.binprune_sparse.plan(
                self.sparse_rowptr, self.sparse_channel, self.sparse_ky, self.sparse_kx, list(key), *self._geometry_args)
        bias = self.bias
        if bias is not None and (bias.dtype != torch.float32 or bias.requires_grad):
            bias = bias.detach().to(torch.float32)
        return torch.ops.binprune_sparse.run(x4, plan, self.sparse_values, bias)


def _padding_1d(conv: nn.modules.conv._ConvNd, dim: int) -> tuple[int, int]:
    """Explicit (before, after) zero padding of ``conv`` along spatial axis ``dim``."""
    if conv.padding == "valid":
        return 0, 0
    if conv.padding == "same":
        total = conv.dilation[dim] * (conv.kernel_size[dim] - 1)
        return total // 2, total - total // 2  # PyTorch puts the odd pixel after
    return conv.padding[dim], conv.padding[dim]


class SparseConv2d(_SparseKernel, nn.Conv2d):
    """``nn.Conv2d`` whose forward runs the sparse kernel where :attr:`rule` says it is faster."""

    def _kernel_hw(self) -> tuple[int, int]:
        return self.kernel_size[0], self.kernel_size[1]

    def _layer_shape(self, kept: int) -> LayerShape:
        (pt, pb), (pl, pr) = _padding_1d(self, 0), _padding_1d(self, 1)
        return LayerShape(self.in_channels, self.out_channels, self.groups, tuple(self.kernel_size),
                          tuple(self.stride), (pt, pb, pl, pr), tuple(self.dilation), kept)

    def _geometry(self, x: torch.Tensor) -> tuple[int, int, int] | None:
        return (x.shape[0], x.shape[2], x.shape[3]) if x.dim() == 4 else None

    def _sparse(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)


class SparseConv1d(_SparseKernel, nn.Conv1d):
    """``nn.Conv1d`` on the sparse kernel (as a convolution over images of height 1)."""

    def _kernel_hw(self) -> tuple[int, int]:
        return 1, self.kernel_size[0]

    def _layer_shape(self, kept: int) -> LayerShape:
        pl, pr = _padding_1d(self, 0)
        return LayerShape(self.in_channels, self.out_channels, self.groups, (1, self.kernel_size[0]),
                          (1, self.stride[0]), (0, 0, pl, pr), (1, self.dilation[0]), kept)

    def _geometry(self, x: torch.Tensor) -> tuple[int, int, int] | None:
        return (x.shape[0], 1, x.shape[2]) if x.dim() == 3 else None

    def _sparse(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x.unsqueeze(2)).squeeze(2)


class SparseLinear(_SparseKernel, nn.Linear):
    """``nn.Linear`` on the sparse kernel (a 1x1 convolution whose positions are the rows)."""

    def _kernel_hw(self) -> tuple[int, int]:
        return 1, 1

    def _layer_shape(self, kept: int) -> LayerShape:
        return LayerShape(self.in_features, self.out_features, 1, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), kept)

    def _geometry(self, x: torch.Tensor) -> tuple[int, int, int] | None:
        rows = x.numel() // x.shape[-1] if x.dim() >= 1 and x.shape[-1] else 0
        return (rows, 1, 1) if rows > 0 else None

    def _sparse(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        return self._run(x.reshape(rows, x.shape[-1], 1, 1)).reshape(*x.shape[:-1], self.out_features)


_SPARSE_ATTRIBUTES = ("rule", "_decisions", "_plans", "_csr_version", "layer_shape", "_geometry_args")
SPARSE_LAYERS: dict[type, type] = {nn.Conv2d: SparseConv2d, nn.Conv1d: SparseConv1d, nn.Linear: SparseLinear}


def _swap(module: nn.Module, cls: type, rule: SparseRule) -> nn.Module:
    """A ``cls`` instance sharing ``module``'s parameters and settings (no re-initialization)."""
    new = cls.__new__(cls)
    new.__dict__ = dict(module.__dict__)
    new._parameters = dict(module._parameters)
    new._buffers = dict(module._buffers)
    new._non_persistent_buffers_set = set(module._non_persistent_buffers_set)
    new._modules = dict(module._modules)
    new._setup_sparse(rule)
    return new


def _eligible(module: nn.Module) -> bool:
    if type(module) not in SPARSE_LAYERS:  # exact types: subclasses may change the forward
        return False
    if isinstance(module, nn.modules.conv._ConvNd) and module.padding_mode != "zeros":
        return False
    return module.weight is not None and module.weight.dtype == torch.float32


def _children(model: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Module]]:
    for parent in model.modules():
        if isinstance(parent, nn.MultiheadAttention):  # reads its projections' weights directly
            continue
        for name, child in list(parent.named_children()):
            yield parent, name, child


def sparsify(model: nn.Module, rule: SparseRule | None = None, *, inplace: bool = False) -> nn.Module:
    """``model`` with every ``nn.Conv1d``/``nn.Conv2d``/``nn.Linear`` (zero padding, float32)
    replaced by its sparse subclass, which runs the sparse kernel where ``rule`` (default
    :data:`DEFAULT_RULE`) predicts it to be faster. Same parameters, same ``state_dict``, same
    outputs up to float rounding. Meant for inference on a compact model
    (``binprune.compact(model, engine="sparse")``). Builds the kernel if needed (first use);
    where it cannot be built, warns once and the layers keep PyTorch's dense kernels."""
    rule = rule or DEFAULT_RULE
    with torch.inference_mode(False):  # a copy made in inference mode would hold inference tensors
        model = model if inplace else copy.deepcopy(model)
    load_sparse_kernels()
    if type(model) in SPARSE_LAYERS and _eligible(model):
        return _swap(model, SPARSE_LAYERS[type(model)], rule)
    for parent, name, child in _children(model):
        if _eligible(child):
            setattr(parent, name, _swap(child, SPARSE_LAYERS[type(child)], rule))
    return model


def densify(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with the sparse layers turned back into plain ``nn`` layers."""
    model = copy.deepcopy(model)
    plain = {cls: base for base, cls in SPARSE_LAYERS.items()}

    def convert(m: nn.Module) -> nn.Module:
        new = plain[type(m)].__new__(plain[type(m)])
        new.__dict__ = {k: v for k, v in m.__dict__.items() if k not in _SPARSE_ATTRIBUTES}
        new._buffers = {k: v for k, v in m._buffers.items() if not k.startswith("sparse_")}
        new._non_persistent_buffers_set = {k for k in m._non_persistent_buffers_set if not k.startswith("sparse_")}
        return new

    if type(model) in plain:
        return convert(model)
    for parent, name, child in _children(model):
        if type(child) in plain:
            setattr(parent, name, convert(child))
    return model


def sparse_layer_inputs(model: nn.Module, example_input: torch.Tensor) -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """``{name: (layer, its input)}`` for every sparse-kernel layer of ``model`` on
    ``example_input`` (one forward pass with pre-hooks): what plans and benchmarks are made from."""
    found: dict[str, tuple[nn.Module, torch.Tensor]] = {}
    handles = [m.register_forward_pre_hook(lambda mod, inputs, name=name: found.__setitem__(name, (mod, inputs[0].detach())))
               for name, m in model.named_modules() if isinstance(m, _SparseKernel)]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    return found


def sparse_plan(model: nn.Module, example_input: torch.Tensor) -> list[dict[str, Any]]:
    """Per sparse layer of ``model``, for ``example_input``: shape, kept weights, density, the
    rule's predictions and its choice (one forward pass with hooks)."""
    rows: list[dict[str, Any]] = []
    for name, (module, x) in sparse_layer_inputs(model, example_input).items():
        n, h, w = module.geometry(x)
        ls = module.layer_shape
        rows.append({"name": name, "type": type(module).__name__,
                     "input_shape": list(x.shape), "kept": ls.kept, "weights": ls.weights, "density": ls.density,
                     **ls.work(n, h, w), "predicted_ratio": module.rule.predict(ls, n, h, w),
                     "sparse": module.rule.use_sparse(ls, n, h, w)})
    return rows

