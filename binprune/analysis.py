"""Mask structure: empty channels and kernels, compared with random masks of the same counts.

A trained supermask is not a random subset of the weights: whole output filters, input columns
and kernels end up empty, and the channels one layer stops producing tend to be those the next
layer stops reading. :func:`analyze_masks` counts this per layer and puts every count next to
its expectation for a *random* mask keeping the same number of weights in the same layer
(exact hypergeometric formulas, computed with log-gamma), so "structured" is a measured ratio,
not an impression. :func:`write_inspection` adds the plots behind ``binprune inspect``.

Expectations for a layer of ``n`` weights keeping ``k`` uniformly at random: a set of ``f``
given positions is entirely pruned with probability ``C(n - f, k) / C(n, k)``; the number kept
in it is hypergeometric, ``P(j) = C(f, j) C(n - f, k - j) / C(n, k)``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .supermask import MaskedTensor, masked_tensors

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "analyze_masks",
    "write_inspection",
    "randomize_scores",
    "prob_all_pruned",
    "hypergeometric_pmf",
    "keep_ratio_figure",
    "channel_occupancy_figure",
    "kernel_histogram_figure",
    "masks_figure",
    "alignment_figure",
    "width_sweep_figure",
    "save_figure",
]


def _log_comb(n: float, k: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def prob_all_pruned(n: int, k: int, f: int) -> float:
    """Probability that ``f`` given positions are all pruned when ``k`` of ``n`` are kept at random:
    ``C(n - f, k) / C(n, k)``."""
    if not (0 <= k <= n and 0 <= f <= n):
        raise ValueError(f"need 0 <= k, f <= n, got n={n}, k={k}, f={f}")
    if k > n - f:
        return 0.0
    return math.exp(_log_comb(n - f, k) - _log_comb(n, k))


def hypergeometric_pmf(n: int, k: int, f: int) -> list[float]:
    """``P(j kept among f given positions)`` for ``j = 0..f`` when ``k`` of ``n`` are kept at random."""
    if not (0 <= k <= n and 0 <= f <= n):
        raise ValueError(f"need 0 <= k, f <= n, got n={n}, k={k}, f={f}")
    total = _log_comb(n, k)
    out = []
    for j in range(f + 1):
        if j > k or k - j > n - f:
            out.append(0.0)
        else:
            out.append(math.exp(_log_comb(f, j) + _log_comb(n - f, k - j) - total))
    return out


def _hypergeometric_std(n: int, k: int, f: int) -> float:
    if n <= 1:
        return 0.0
    p = k / n
    return math.sqrt(f * p * (1 - p) * (n - f) / (n - 1))


def _layer_stats(mt: MaskedTensor) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]:
    mask = mt.mask.mask().detach().to("cpu")
    shape = tuple(mask.shape)
    n, k = mask.numel(), int(mask.sum())
    row: dict[str, Any] = {
        "name": mt.name, "shape": list(shape), "total": n, "kept": k, "keep_ratio": k / n if n else 0.0,
    }
    if mask.dim() < 2:
        return row, None, None
    m = mask.numpy().reshape(shape[0], shape[1], -1).astype(np.int32)
    out_ch, in_ch, kernel = m.shape
    per_kernel = m.sum(axis=2)
    per_out = per_kernel.sum(axis=1)
    per_in = per_kernel.sum(axis=0)
    fan_out_filter, fan_in_column = in_ch * kernel, out_ch * kernel
    row["output_channels"] = {
        "count": out_ch,
        "empty": int((per_out == 0).sum()),
        "expected_empty_random": out_ch * prob_all_pruned(n, k, fan_out_filter),
        "kept_std": float(per_out.std()),
        "expected_kept_std_random": _hypergeometric_std(n, k, fan_out_filter),
    }
    row["input_channels"] = {
        "count": in_ch,
        "empty": int((per_in == 0).sum()),
        "expected_empty_random": in_ch * prob_all_pruned(n, k, fan_in_column),
        "kept_std": float(per_in.std()),
        "expected_kept_std_random": _hypergeometric_std(n, k, fan_in_column),
    }
    if kernel > 1:
        hist = np.bincount(per_kernel.reshape(-1), minlength=kernel + 1)
        pmf = hypergeometric_pmf(n, k, kernel)
        kernels = out_ch * in_ch
        row["kernels"] = {
            "count": kernels,
            "size": kernel,
            "empty": int(hist[0]),
            "expected_empty_random": kernels * pmf[0],
            "kept_histogram": [int(h) for h in hist],
            "expected_histogram_random": [kernels * p for p in pmf],
        }
    return row, per_out == 0, per_in == 0


def _ratio(observed: float, expected: float) -> float | None:
    return observed / expected if expected > 0 else None


def _consecutive_pairs(masks: list[MaskedTensor]) -> list[tuple[str, str]]:
    """Without a known graph: neighbouring masked layers whose channel counts line up."""
    pairs = []
    for a, b in zip(masks, masks[1:]):
        sa, sb = a.original.shape, b.original.shape
        if len(sa) >= 2 and len(sb) >= 2 and sa[0] == sb[1]:
            pairs.append((a.module_name, b.module_name))
    return pairs


def analyze_masks(model: nn.Module) -> dict[str, Any]:
    """Per-layer structure of the masks of a supermask ``model``, as plain (JSON-able) dicts.

    For each masked layer: kept count and ratio; empty output channels (filters with nothing
    kept), empty input channels, empty kernels and the histogram of kept weights per kernel, each
    next to its expectation for a random mask with the same ``n`` and ``k``; the spread of kept
    weights per channel against the random spread. ``alignment`` lists each pair of layers
    connected by a channel set (producer -> consumer, found as in :func:`binprune.compact`; for
    other models, neighbouring layers whose sizes match): how many channels the producer leaves
    empty, how many the consumer ignores, how many both, and the expected overlap if the two sets
    were placed independently (``|A| |B| / C``).
    """
    from .deploy.compact import channel_groups

    masks = list(masked_tensors(model))
    if not masks:
        raise ValueError("the model has no masked tensors: analyze a supermask model (see convert_to_binary_supermask)")
    layers, empty_out, empty_in = [], {}, {}
    for mt in masks:
        row, eo, ei = _layer_stats(mt)
        layers.append(row)
        if eo is not None:
            empty_out[mt.module_name], empty_in[mt.module_name] = eo, ei

    groups = [g for g in channel_groups(model) if g["pairs"]]
    pairs = [p for g in groups for p in g["pairs"]] if groups else _consecutive_pairs(masks)
    alignment = []
    for producer, consumer in pairs:
        if producer not in empty_out or consumer not in empty_in:
            continue
        a, b = empty_out[producer], empty_in[consumer]
        if a.size != b.size:
            continue
        both = int((a & b).sum())
        expected = float(a.sum()) * float(b.sum()) / a.size
        union = int((a | b).sum())
        alignment.append({
            "producer": producer, "consumer": consumer, "channels": int(a.size),
            "producer_empty_outputs": int(a.sum()), "consumer_empty_inputs": int(b.sum()),
            "both": both, "expected_both_independent": expected,
            "jaccard": both / union if union else None,
        })

    def total(section: str, key: str) -> float:
        return sum(r[section][key] for r in layers if section in r)

    summary = {
        "layers": len(layers),
        "total": sum(r["total"] for r in layers),
        "kept": sum(r["kept"] for r in layers),
    }
    for section in ("output_channels", "input_channels", "kernels"):
        observed, expected = total(section, "empty"), total(section, "expected_empty_random")
        summary[f"empty_{section}"] = int(observed)
        summary[f"empty_{section}_expected_random"] = expected
        summary[f"empty_{section}_ratio_to_random"] = _ratio(observed, expected)
    both = sum(a["both"] for a in alignment)
    expected_both = sum(a["expected_both_independent"] for a in alignment)
    summary["aligned_channels"] = both
    summary["aligned_channels_expected_independent"] = expected_both
    summary["aligned_channels_ratio_to_independent"] = _ratio(both, expected_both)
    return {"summary": summary, "layers": layers, "alignment": alignment}


# --- synthetic masks --------------------------------------------------------------------------------


def randomize_scores(model: nn.Module, *, channel_structure: float = 0.0, seed: int = 0) -> None:
    """Replace the scores of a supermask model (in place) by random ones, to exercise tools on
    masks without training.

    ``channel_structure = 0`` gives uniformly random masks. A positive value multiplies the
    scores by ``exp(channel_structure * z_c)`` with one standard normal ``z_c`` per channel,
    shared by the layers that produce channel ``c`` and the layers that read it (see
    :func:`binprune.deploy.channel_groups`), so masks get empty, aligned channels the way
    trained ones do.
    """
    from .deploy.compact import channel_groups

    if channel_structure < 0:
        raise ValueError(f"channel_structure must be >= 0, got {channel_structure}")
    gen = torch.Generator().manual_seed(int(seed))
    masks = list(masked_tensors(model))
    if not masks:
        raise ValueError("the model has no masked tensors")
    log_scale = {mt.module_name: torch.zeros(mt.mask.scores.shape) for mt in masks if mt.tensor_name == "weight"}
    if channel_structure > 0:
        for group in channel_groups(model):
            z = torch.randn(group["channels"], generator=gen) * channel_structure
            for name in group["producers"]:
                s = log_scale.get(name)
                if s is not None and s.shape[0] == z.numel():
                    s += z.view(-1, *([1] * (s.dim() - 1)))
            for name in group["consumers"]:
                s = log_scale.get(name)
                if s is not None and s.dim() >= 2 and s.shape[1] == z.numel():  # not grouped convs
                    s += z.view(1, -1, *([1] * (s.dim() - 2)))
    with torch.no_grad():
        for mt in masks:
            noise = torch.randn(mt.mask.scores.shape, generator=gen)
            scale = log_scale.get(mt.module_name) if mt.tensor_name == "weight" else None
            if scale is not None:
                noise = noise * scale.exp()
            mt.mask.scores.copy_(noise.to(mt.mask.scores))


# --- plots ------------------------------------------------------------------------------------------


def _short(name: str) -> str:
    for prefix in ("network.net.", "network.", "net."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name[: -len(".weight")] if name.endswith(".weight") else name


def keep_ratio_figure(analysis: dict[str, Any]) -> "Figure":
    """Bar chart of the per-layer keep ratio (log scale)."""
    from matplotlib.figure import Figure

    layers = analysis["layers"]
    x = np.arange(len(layers))
    fig = Figure(figsize=(max(6.0, 0.35 * len(layers) + 2), 4.0))
    ax = fig.subplots()
    ax.bar(x, [r["keep_ratio"] for r in layers], color="tab:blue")
    ax.set_yscale("log")
    ax.set_ylabel("keep ratio (kept / total)")
    ax.set_xticks(x, [_short(r["name"]) for r in layers], rotation=90, fontsize=7)
    ax.set_title(f"Per-layer keep ratio ({analysis['summary']['kept']:,} of {analysis['summary']['total']:,} kept)")
    fig.tight_layout()
    return fig


def channel_occupancy_figure(analysis: dict[str, Any]) -> "Figure | None":
    """Empty output / input channels per conv layer against a random mask with the same counts."""
    from matplotlib.figure import Figure

    conv = [r for r in analysis["layers"] if "output_channels" in r]
    if not conv:
        return None
    width = max(6.0, 0.35 * len(analysis["layers"]) + 2)
    fig = Figure(figsize=(2 * width, 4.0))
    axes = fig.subplots(1, 2, sharey=True)
    cx = np.arange(len(conv))
    for ax, section, title in zip(axes, ("output_channels", "input_channels"),
                                  ("empty output channels (filters)", "empty input channels")):
        observed = [r[section]["empty"] / r[section]["count"] for r in conv]
        expected = [r[section]["expected_empty_random"] / r[section]["count"] for r in conv]
        ax.bar(cx - 0.2, observed, width=0.4, label="this mask")
        ax.bar(cx + 0.2, expected, width=0.4, label="random mask, same counts")
        ax.set_xticks(cx, [_short(r["name"]) for r in conv], rotation=90, fontsize=7)
        ax.set_title(title)
        ax.set_ylabel("fraction of channels")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def kernel_histogram_figure(analysis: dict[str, Any]) -> "Figure | None":
    """Kept weights per kernel against the random histogram, for up to six layers."""
    from matplotlib.figure import Figure

    kern = [r for r in analysis["layers"] if "kernels" in r]
    if not kern:
        return None
    chosen = [kern[i] for i in sorted({round(j * (len(kern) - 1) / 5) for j in range(6)})] if len(kern) > 6 else kern
    cols = min(3, len(chosen))
    rows = math.ceil(len(chosen) / cols)
    fig = Figure(figsize=(4 * cols, 3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, r in zip(axes.flat, chosen):
        h = np.array(r["kernels"]["kept_histogram"], dtype=float)
        e = np.array(r["kernels"]["expected_histogram_random"])
        j = np.arange(h.size)
        # Counts below 0.5 (zeros, tiny expectations) fall under the axis of the log plot.
        ax.bar(j - 0.2, np.maximum(h, 1e-3), width=0.4, label="this mask")
        ax.bar(j + 0.2, np.maximum(e, 1e-3), width=0.4, label="random")
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.5)
        ax.set_title(_short(r["name"]), fontsize=9)
        ax.set_xlabel("kept weights per kernel")
    for ax in list(axes.flat)[len(chosen):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def masks_figure(model: nn.Module, mask_images: int = 4) -> "Figure | None":
    """Kernel occupancy (output x input channels) of ``mask_images`` layers spread over the depth."""
    from matplotlib.figure import Figure

    images = [mt for mt in masked_tensors(model) if mt.original.dim() >= 2]
    if not images or mask_images <= 0:
        return None
    picks = sorted({round(j * (len(images) - 1) / max(mask_images - 1, 1)) for j in range(mask_images)})
    fig = Figure(figsize=(3.2 * len(picks), 3.4))
    axes = fig.subplots(1, len(picks), squeeze=False)
    for ax, i in zip(axes.flat, picks):
        mt = images[i]
        m = mt.mask.mask().detach().to("cpu").numpy()
        occ = m.reshape(m.shape[0], m.shape[1], -1).sum(axis=2, dtype=np.int32)
        ax.imshow(occ, cmap="viridis", interpolation="nearest", aspect="auto")
        ax.set_title(f"{_short(mt.name)}\nkept per kernel", fontsize=8)
        ax.set_xlabel("input channel")
        ax.set_ylabel("output channel")
    fig.tight_layout()
    return fig


def alignment_figure(analysis: dict[str, Any]) -> "Figure | None":
    """Share of a producer's empty outputs that the consumer also ignores, against independence."""
    from matplotlib.figure import Figure

    align = analysis["alignment"]
    if not align:
        return None
    fig = Figure(figsize=(max(6.0, 0.3 * len(align) + 2), 4.0))
    ax = fig.subplots()
    ax_x = np.arange(len(align))
    ax.bar(ax_x - 0.2, [a["both"] / a["channels"] for a in align], width=0.4, label="pruned in both")
    ax.bar(ax_x + 0.2, [a["expected_both_independent"] / a["channels"] for a in align], width=0.4,
           label="expected if independent")
    ax.set_xticks(ax_x, [f"{_short(a['producer'])}>{_short(a['consumer'])}" for a in align], rotation=90, fontsize=6)
    ax.set_ylabel("fraction of channels")
    ax.set_title("Producer's empty outputs that the consumer also ignores")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def width_sweep_figure(rows: list[dict[str, Any]], title: str = "robust accuracy vs width") -> "Figure":
    """Robust accuracy against width, one line per method, with 95% interval error bars.

    ``rows`` are records with ``method``, ``label``, ``width_factor``, ``accuracy`` and
    ``interval95`` (``[low, high]`` or ``None``), e.g. ``widths.json``'s rows of a width sweep;
    the points of a method are offset slightly along x so that the intervals do not overlap.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.subplots()
    methods = list(dict.fromkeys(r["method"] for r in rows))
    factors = sorted({r["width_factor"] for r in rows})
    for i, method in enumerate(methods):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["width_factor"])
        shift = 1 + 0.02 * (i - (len(methods) - 1) / 2)
        xs = [r["width_factor"] * shift for r in mine]
        ys = [r["accuracy"] for r in mine]
        low = [y - r["interval95"][0] if r.get("interval95") else 0.0 for y, r in zip(ys, mine)]
        high = [r["interval95"][1] - y if r.get("interval95") else 0.0 for y, r in zip(ys, mine)]
        ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label=mine[0]["label"])
    ax.set_xscale("log", base=2)
    ax.set_xticks(factors)
    ax.set_xticklabels([f"x{f:g}" for f in factors])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("width (multiple of the base widths)")
    ax.set_ylabel("robust accuracy (bars: 95% Wilson intervals)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig: "Figure", path: str | os.PathLike, dpi: int = 120) -> None:
    """Write a figure as PNG atomically (temporary file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    os.replace(tmp, path)


def write_inspection(model: nn.Module, out_dir: str | os.PathLike, *, mask_images: int = 4) -> dict[str, Any]:
    """Write ``analysis.json`` and PNG plots of the mask structure of ``model`` into ``out_dir``.

    Plots (each also available as a matplotlib ``Figure`` from its ``*_figure`` function):
    per-layer keep ratio; empty output/input channels against random masks; kept weights per
    kernel against the random histogram (up to six layers); images of the kernel occupancy of
    ``mask_images`` layers spread over the depth; pruned-channel alignment between connected
    layers. Returns ``{"files": written paths by kind, "summary": the analysis summary}``.
    """
    from .utils import write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    analysis = analyze_masks(model)
    paths = {"analysis": str(out / "analysis.json")}
    write_json(out / "analysis.json", analysis)
    figures = {
        "keep_ratio": keep_ratio_figure(analysis),
        "channel_occupancy": channel_occupancy_figure(analysis),
        "kernel_histograms": kernel_histogram_figure(analysis),
        "masks": masks_figure(model, mask_images),
        "alignment": alignment_figure(analysis),
    }
    for kind, fig in figures.items():
        if fig is not None:
            save_figure(fig, out / f"{kind}.png")
            paths[kind] = str(out / f"{kind}.png")
    return {"files": paths, "summary": analysis["summary"]}
