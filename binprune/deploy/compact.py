"""Compact inference model: masks folded into weights, dead channels removed, batch norms folded.

A trained 99%-sparse supermask network often leaves whole output filters (or whole input
columns) empty. :func:`compact` turns such a network into plain layers that skip them:

1. masks are folded into the weights (:func:`binprune.finalize`);
2. every batch norm that directly follows a Conv/Linear is folded into it (eval statistics), and
   the last batch norm over the logits (LBN) into the classifier;
3. channels are removed where the graph is known: chains inside ``nn.Sequential`` (e.g.
   :class:`binprune.models.SmallCNN`, VGG-style features) and torchvision ResNets
   (``BasicBlock`` / ``Bottleneck``, the residual stream handled as one channel set).

Which channels can go. Consider the channels that flow between *producers* (layers writing them,
several for a residual stream) and *consumers* (layers reading them). Channel ``c`` is removed
when every consumer either ignores it (its weights on ``c`` are all zero) or can absorb it. A
channel whose producer filters are all zero is not zero: it is a constant (the folded bias,
e.g. ``-running_mean / sqrt(running_var + eps)`` for a non-affine batch norm, then the ReLU), the
same at every position. A consumer absorbs a constant exactly by adding ``const * sum(weights on
c)`` to its bias when it has no zero padding (a Linear after global pooling, a 1x1 conv); a
padded conv sees that constant replaced by zeros at the borders, so such a channel is kept
unless its constant is 0. Removal is repeated until nothing changes (removing a layer's output
can empty its input columns, and so on). The result is exact up to float rounding.

:func:`count_macs` and :func:`compact_report` give parameters and multiply-accumulates before and
after.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from ..convert import Subnetwork, finalize
from ..spec import attach_spec, find_spec
from ..supermask import masked_tensors
from .sparse import SparseRule, sparsify

__all__ = ["compact", "count_macs", "compact_report", "channel_groups"]

_WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# Modules that act on each value independently: a constant channel stays a (new) constant
# (a PReLU with one slope per channel is not one of them: its slopes would need pruning too).
_ELEMENTWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardtanh,
    nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.Softplus, nn.PReLU,
)
# Channel-wise modules that leave a constant channel unchanged (max-pools pad with -inf).
_PASSTHROUGH = (
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Flatten,
)
_AVGPOOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)


# --- graph ------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Node:
    """A Conv/Linear layer; ``weight``/``bias`` are float64 working copies once materialized."""

    name: str
    module: nn.Module
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None

    @property
    def pinned(self) -> bool:
        """Grouped or transposed layers keep all their channels."""
        return isinstance(self.module, nn.modules.conv._ConvNd) and (
            self.module.groups != 1 or self.module.transposed
        )

    @property
    def absorbs_constants(self) -> bool:
        """A constant input channel becomes a bias exactly only without zero padding."""
        m = self.module
        if isinstance(m, nn.Linear):
            return True
        if isinstance(m.padding, str):
            return m.padding == "valid" or all(k == 1 for k in m.kernel_size)
        return all(p == 0 for p in m.padding)

    @property
    def in_channels(self) -> int:
        m = self.module
        return m.in_features if isinstance(m, nn.Linear) else m.in_channels

    @property
    def out_channels(self) -> int:
        m = self.module
        return m.out_features if isinstance(m, nn.Linear) else m.out_channels


@dataclass(eq=False)
class _Group:
    """A set of channels: events in data-flow order.

    ``("set", nodes)``: the channels become the sum of these layers' outputs;
    ``("add", nodes)``: these outputs are added (a residual block);
    ``("fn", f)``: an element-wise map (``f`` maps per-channel constants);
    ``("use", node)``: a consumer reads the channels here.
    """

    events: list[tuple[str, Any]] = field(default_factory=list)
    frozen: bool = False

    @property
    def producers(self) -> list[_Node]:
        return [n for kind, arg in self.events if kind in ("set", "add") for n in arg]

    @property
    def consumers(self) -> list[_Node]:
        return [arg for kind, arg in self.events if kind == "use"]

    @property
    def width(self) -> int:
        return self.producers[0].out_channels


@dataclass
class _Graph:
    nodes: list[_Node] = field(default_factory=list)
    groups: list[_Group] = field(default_factory=list)
    bn_folds: list[tuple[_Node, nn.Module, nn.Module, str]] = field(default_factory=list)


def _is_plain_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _foldable_bn(bn: nn.Module, width: int) -> bool:
    return (
        isinstance(bn, _BATCHNORMS) and bn.track_running_stats and bn.running_mean is not None
        and bn.num_features == width
    )


def _supported_resnet(net: nn.Module) -> bool:
    """A torchvision ResNet whose forward and blocks are the stock ones (so the graph is known)."""
    if not isinstance(net, tv_resnet.ResNet) or type(net).forward is not tv_resnet.ResNet.forward:
        return False
    if getattr(type(net), "_forward_impl") is not tv_resnet.ResNet._forward_impl:
        return False
    if not (isinstance(net.conv1, nn.Conv2d) and _foldable_bn(net.bn1, net.conv1.out_channels)
            and type(net.relu) is nn.ReLU and isinstance(net.maxpool, (nn.MaxPool2d, nn.Identity))
            and isinstance(net.avgpool, nn.AdaptiveAvgPool2d) and isinstance(net.fc, nn.Linear)):
        return False
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        if not _is_plain_sequential(layer):
            return False
        for block in layer:
            if type(block) is tv_resnet.BasicBlock:
                pairs = [(block.conv1, block.bn1), (block.conv2, block.bn2)]
            elif type(block) is tv_resnet.Bottleneck:
                pairs = [(block.conv1, block.bn1), (block.conv2, block.bn2), (block.conv3, block.bn3)]
            else:
                return False
            ds = block.downsample
            if ds is not None:
                if not (_is_plain_sequential(ds) and len(ds) == 2):
                    return False
                pairs.append((ds[0], ds[1]))
            if type(block.relu) is not nn.ReLU:
                return False
            for conv, bn in pairs:
                if not (isinstance(conv, nn.Conv2d) and _foldable_bn(bn, conv.out_channels)):
                    return False
    return True


def _relu(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp_min(v, 0.0)


def _elementwise(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def apply(v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            p = next(module.parameters(), None)
            x = v.clone().to(p.dtype if p is not None else v.dtype)
            return module(x).reshape(-1).to(v.dtype)

    return apply


def _zero_only(v: torch.Tensor) -> torch.Tensor:
    """A map that keeps only zero constants known (e.g. an average pool with zero padding)."""
    return torch.where(v == 0, v, torch.full_like(v, float("nan")))


class _Tracer:
    """Builds the channel graph of the parts of a model whose data flow is known."""

    def __init__(self, root: nn.Module):
        self.names = {id(m): n for n, m in root.named_modules()}
        self.graph = _Graph()
        self.done: set[int] = set()

    def node(self, module: nn.Module) -> _Node:
        n = _Node(self.names.get(id(module), type(module).__name__), module)
        self.graph.nodes.append(n)
        return n

    def new_group(self, events: list[tuple[str, Any]]) -> _Group:
        g = _Group(events)
        self.graph.groups.append(g)
        return g

    def consume(self, group: _Group | None, node: _Node, spatial: bool = False) -> None:
        """Attach ``node`` as a reader of ``group``; ``spatial``: the input still has spatial axes
        (a Linear would then act on the last axis, not on the channels)."""
        if group is None:
            return
        if node.in_channels == group.width and not (spatial and isinstance(node.module, nn.Linear)):
            group.events.append(("use", node))
        else:  # e.g. a Linear reading a flattened feature map: channels do not map one to one
            group.frozen = True

    def fold_bn(self, node: _Node, bn: nn.Module, parent: nn.Module, attr: str) -> None:
        self.graph.bn_folds.append((node, bn, parent, attr))

    def visit(self, module: nn.Module) -> tuple[_Group | None, _Node | None]:
        """Trace ``module``; return the group it outputs and the layer whose output it is."""
        if id(module) in self.done:
            return None, None
        self.done.add(id(module))
        if _is_plain_sequential(module):
            group, last = self.chain(module, None)
            return group, last
        if _supported_resnet(module):
            return self.resnet(module, None)
        for child in module.children():
            group, _ = self.visit(child)
            if group is not None:
                group.frozen = True  # consumed by a forward we do not know
        return None, None

    def _leaves(self, seq: nn.Sequential):
        for attr, child in seq.named_children():
            if _is_plain_sequential(child):
                self.done.add(id(child))
                yield from self._leaves(child)
            else:
                yield seq, attr, child

    def chain(self, seq: nn.Sequential, group: _Group | None) -> tuple[_Group | None, _Node | None]:
        last: _Node | None = None  # the layer whose output flows unchanged (a BN can fold into it)
        spatial = False  # whether the flowing tensor has spatial axes after the channels
        for parent, attr, m in self._leaves(seq):
            if isinstance(m, _WEIGHT_LAYERS) and not isinstance(m, nn.modules.lazy.LazyModuleMixin):
                self.done.add(id(m))
                node = self.node(m)
                self.consume(group, node, spatial)
                group, last = self.new_group([("set", [node])]), node
                spatial = not isinstance(m, nn.Linear)
                if node.pinned:
                    group.frozen = True
            elif last is not None and _foldable_bn(m, last.out_channels):
                self.done.add(id(m))
                self.fold_bn(last, m, parent, attr)
            elif isinstance(m, _PASSTHROUGH) and not (isinstance(m, nn.Flatten) and m.start_dim != 1):
                if isinstance(m, nn.Flatten):
                    spatial = False
                if not isinstance(m, (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)):
                    last = None
            elif isinstance(m, _ELEMENTWISE) and not (isinstance(m, nn.PReLU) and m.num_parameters > 1):
                if group is not None:
                    group.events.append(("fn", _relu if type(m) is nn.ReLU else _elementwise(m)))
                last = None
            elif isinstance(m, _AVGPOOLS):
                pads = m.padding if isinstance(m.padding, tuple) else (m.padding,)
                if group is not None and any(p != 0 for p in pads) and m.count_include_pad:
                    group.events.append(("fn", _zero_only))
                last = None
            elif _supported_resnet(m):
                self.done.add(id(m))
                group, last = self.resnet(m, group)
                spatial = False
            else:  # unknown module: channels cannot be followed through it
                if group is not None:
                    group.frozen = True
                self.visit(m)
                group, last, spatial = None, None, False
        return group, last

    def resnet(self, net: tv_resnet.ResNet, group: _Group | None) -> tuple[_Group, _Node]:
        for m in net.modules():
            self.done.add(id(m))
        stem = self.node(net.conv1)
        self.consume(group, stem)
        self.fold_bn(stem, net.bn1, net, "bn1")
        stream = self.new_group([("set", [stem]), ("fn", _relu)])
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            for block in layer:
                convs = [block.conv1, block.conv2] + ([block.conv3] if isinstance(block, tv_resnet.Bottleneck) else [])
                bns = ["bn1", "bn2"] + (["bn3"] if isinstance(block, tv_resnet.Bottleneck) else [])
                inner = stream
                prev: _Node | None = None
                for conv, bn_name in zip(convs, bns):
                    node = self.node(conv)
                    self.fold_bn(node, getattr(block, bn_name), block, bn_name)
                    if prev is None:
                        self.consume(stream, node)
                    else:
                        inner = self.new_group([("set", [prev]), ("fn", _relu)])
                        inner.frozen = prev.pinned or node.pinned
                        self.consume(inner, node)
                    prev = node
                if block.downsample is not None:
                    ds = self.node(block.downsample[0])
                    self.fold_bn(ds, block.downsample[1], block.downsample, "1")
                    self.consume(stream, ds)
                    stream = self.new_group([("set", [prev, ds]), ("fn", _relu)])
                else:
                    stream.events += [("add", [prev]), ("fn", _relu)]
        fc = self.node(net.fc)
        self.consume(stream, fc)
        return self.new_group([("set", [fc])]), fc


# --- pruning ----------------------------------------------------------------------------------------


def _materialize(graph: _Graph) -> None:
    with torch.no_grad():
        for node in graph.nodes:
            node.weight = node.module.weight.detach().to(torch.float64).clone()
            b = node.module.bias
            node.bias = (b.detach().to(torch.float64).clone() if b is not None
                         else torch.zeros(node.out_channels, dtype=torch.float64, device=node.weight.device))


def _fold_bn_into(node: _Node, bn: nn.Module) -> None:
    """``bn(conv(x)) == conv'(x)`` in eval mode: scale the filters, shift the bias."""
    var = bn.running_var.detach().to(torch.float64)
    mean = bn.running_mean.detach().to(torch.float64)
    scale = 1.0 / torch.sqrt(var + bn.eps)
    shift = -mean * scale
    if bn.affine:
        gamma, beta = bn.weight.detach().to(torch.float64), bn.bias.detach().to(torch.float64)
        shift = shift * gamma + beta
        scale = scale * gamma
    shape = (-1,) + (1,) * (node.weight.dim() - 1)
    node.weight = node.weight * scale.view(shape)
    node.bias = node.bias * scale + shift


def _constants(group: _Group) -> dict[int, torch.Tensor]:
    """Per consumer: the value each channel has there if all its producer filters are zero."""
    v = None
    out: dict[int, torch.Tensor] = {}
    for kind, arg in group.events:
        if kind == "set":
            v = sum(n.bias for n in arg)
        elif kind == "add":
            v = v + sum(n.bias for n in arg)
        elif kind == "fn":
            v = arg(v)
        elif kind == "use":
            out[id(arg)] = v
    return out


def _input_columns(node: _Node) -> torch.Tensor:
    """Weights with the input channel first: ``(in, everything else)``."""
    return node.weight.transpose(0, 1).reshape(node.weight.shape[1], -1)


def _prune_group(group: _Group) -> bool:
    producers, consumers = group.producers, group.consumers
    if group.frozen or not producers or any(n.pinned for n in producers + consumers):
        return False
    zero = torch.stack([p.weight.reshape(p.weight.shape[0], -1).eq(0).all(1) for p in producers]).all(0)
    consts = _constants(group)
    removable = torch.ones_like(zero)
    plans = []
    for node in consumers:
        used = _input_columns(node).ne(0).any(1)
        v = consts[id(node)]
        absorbed = zero & torch.isfinite(v) & ((v == 0) | node.absorbs_constants)
        removable &= ~used | absorbed
        plans.append((node, used, v))
    if not removable.any():
        return False
    if removable.all():
        removable[0] = False  # keep one channel: empty layers are not worth a special case
        if not removable.any():  # that channel is all that is left: nothing changes
            return False
    keep = ~removable
    for node, used, v in plans:
        fold = removable & used & (v != 0)
        if fold.any():
            cols = node.weight[:, fold].reshape(node.weight.shape[0], int(fold.sum()), -1).sum(2)
            node.bias = node.bias + cols @ v[fold]
        node.weight = node.weight[:, keep]
    for node in producers:
        node.weight = node.weight[keep]
        node.bias = node.bias[keep]
    return True


def _write_back(node: _Node) -> None:
    m = node.module
    dtype = m.weight.dtype
    m.weight = nn.Parameter(node.weight.to(dtype), requires_grad=False)
    m.bias = nn.Parameter(node.bias.to(dtype), requires_grad=False)
    if isinstance(m, nn.Linear):
        m.out_features, m.in_features = node.weight.shape[0], node.weight.shape[1]
    else:
        m.out_channels, m.in_channels = node.weight.shape[0], node.weight.shape[1] * m.groups


ENGINES = ("dense", "sparse")


def compact(model: nn.Module, engine: str = "dense", rule: SparseRule | None = None) -> nn.Module:
    """A plain, smaller copy of ``model`` with the same eval outputs (up to float rounding).

    Works on a supermask model (:class:`binprune.Subnetwork` or any model with binprune masks)
    and on a finalized one. Masks are folded into weights; batch norms that directly follow a
    Conv/Linear are folded into it, and the last batch norm into the classifier; channels that
    no consumer needs (see the module docstring) are removed in ``nn.Sequential`` chains and
    torchvision ResNets. Other parts of the model are kept as they are (finalized).

    ``engine="dense"`` runs every layer with PyTorch's dense kernels. ``engine="sparse"`` swaps
    the Conv/Linear layers for :mod:`binprune.deploy.sparse` subclasses that run a direct sparse
    kernel (cost proportional to the kept weights) where ``rule`` (default
    :data:`binprune.deploy.sparse.DEFAULT_RULE`) predicts it to be faster; the kernel is compiled
    on first use, and where it cannot be, the model keeps the dense kernels (one-line warning).

    The returned model is in eval mode (batch norms are folded with their running statistics);
    Its spec's ``"compact"`` transform (``binprune.spec.find_spec(result)``) lists the channels
    of each layer before and after.

    Example:
        >>> small = binprune.compact(net)
        >>> print(binprune.compact_report(net, small, torch.rand(1, 3, 32, 32)))
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    plain = finalize(model) if any(True for _ in masked_tensors(model)) else copy.deepcopy(model)
    plain.eval()
    network, last_bn = (plain.network, plain.last_bn) if isinstance(plain, Subnetwork) else (plain, None)

    tracer = _Tracer(network)
    out_group, out_node = tracer.visit(network)
    graph = tracer.graph
    before = {n.name: (n.in_channels, n.out_channels) for n in graph.nodes}
    _materialize(graph)
    for node, bn, parent, attr in graph.bn_folds:
        _fold_bn_into(node, bn)
        setattr(parent, attr, nn.Identity())
    lbn_folded = last_bn is not None and out_node is not None and _foldable_bn(last_bn, out_node.out_channels)
    if lbn_folded:
        _fold_bn_into(out_node, last_bn)
        last_bn = None
    if out_group is not None:
        out_group.frozen = True  # the network's output
    while any([_prune_group(g) for g in graph.groups]):
        pass
    for node in graph.nodes:
        _write_back(node)

    result = network if last_bn is None else nn.Sequential(OrderedDict(network=network, last_bn=last_bn))
    for p in result.parameters():
        p.requires_grad_(False)
    result.eval()
    info = {
        "layers": [
            {"name": n.name, "in_before": before[n.name][0], "out_before": before[n.name][1],
             "in_after": n.in_channels, "out_after": n.out_channels}
            for n in graph.nodes
        ],
        "folded_batchnorms": len(graph.bn_folds) + int(lbn_folded),
        "engine": engine,
    }
    if engine == "sparse":
        result = sparsify(result, rule, inplace=True)
    # The compact model cannot be rebuilt from a recipe (its layers are narrower); its spec
    # records the base recipe and what the compaction did.
    return attach_spec(result, find_spec(model).with_transform("compact", info))


def channel_groups(model: nn.Module) -> list[dict[str, Any]]:
    """The producer and consumer layers of each channel set the compaction can follow (names
    relative to ``model``), in data-flow order. Used to measure how pruned channels align."""
    tracer = _Tracer(model)
    tracer.visit(model)
    out = []
    for g in tracer.graph.groups:
        consumers = g.consumers
        if not consumers:
            continue
        pairs = []
        seen: list[_Node] = []
        for kind, arg in g.events:
            if kind in ("set", "add"):
                seen.extend(arg)
            elif kind == "use":
                pairs.extend((p.name, arg.name) for p in seen)
        out.append({
            "producers": [p.name for p in g.producers],
            "consumers": [c.name for c in consumers],
            "pairs": pairs,
            "channels": g.width,
        })
    return out


# --- size accounting --------------------------------------------------------------------------------


def count_macs(model: nn.Module, example_input: torch.Tensor) -> dict[str, Any]:
    """Parameters and multiply-accumulates per example of every Conv/Linear, measured with
    forward hooks on one forward pass of ``example_input``.

    ``macs`` counts every weight as executed by a dense kernel; ``nonzero_macs`` only the
    non-zero ones (what an ideal sparse kernel would do). ``params`` counts weight and bias
    entries of those layers, ``nonzero_params`` the non-zero ones.
    """
    rows: list[dict[str, Any]] = []
    names = {id(m): n for n, m in model.named_modules()}
    handles = []

    def hook(module, inputs, output):
        weight = module.weight.detach()
        batch = output.shape[0] if output.dim() > 1 else 1
        if isinstance(module, nn.Linear):
            positions = output.numel() // (batch * module.out_features)
            per_out = module.in_features
        else:
            positions = output.numel() // (batch * module.out_channels)
            per_out = weight[0].numel()
        bias = module.bias.detach() if module.bias is not None else None
        rows.append({
            "name": names.get(id(module), type(module).__name__),
            "macs": positions * weight.shape[0] * per_out,
            "nonzero_macs": positions * int(torch.count_nonzero(weight)),
            "params": weight.numel() + (bias.numel() if bias is not None else 0),
            "nonzero_params": int(torch.count_nonzero(weight)) + (int(torch.count_nonzero(bias)) if bias is not None else 0),
        })

    for m in model.modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            handles.append(m.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    batch = example_input.shape[0]
    totals = {key: sum(r[key] for r in rows) for key in ("macs", "nonzero_macs", "params", "nonzero_params")}
    return {**totals, "batch_size_measured": batch, "layers": rows}


def compact_report(model: nn.Module, compacted: nn.Module, example_input: torch.Tensor) -> dict[str, Any]:
    """Parameters, MACs and channels of ``model`` and its :func:`compact` version, and the largest
    output difference on ``example_input`` (eval mode) next to the largest output."""
    before = count_macs(model, example_input)
    after = count_macs(compacted, example_input)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        reference = model(example_input)
        diff = float((reference - compacted(example_input)).abs().max())
        scale = float(reference.abs().max())
    model.train(was_training)
    spec = find_spec(compacted)
    info = spec.transform["kwargs"] if spec.transform_name == "compact" else {"layers": []}
    ch_before = sum(layer["out_before"] for layer in info["layers"])
    ch_after = sum(layer["out_after"] for layer in info["layers"])
    summary = {k: before[k] for k in ("macs", "nonzero_macs", "params", "nonzero_params")}
    summary_after = {k: after[k] for k in ("macs", "nonzero_macs", "params", "nonzero_params")}
    return {
        "before": summary,
        "after": summary_after,
        "mac_ratio": after["macs"] / before["macs"] if before["macs"] else math.nan,
        "param_ratio": after["params"] / before["params"] if before["params"] else math.nan,
        "output_channels_before": ch_before,
        "output_channels_after": ch_after,
        "max_abs_output_difference": diff,
        "max_abs_output": scale,  # float32 rounding makes differences scale with the outputs
        "layers": info["layers"],
    }
