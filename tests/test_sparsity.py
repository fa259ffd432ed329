import math

import pytest
import torch
from torch import nn

import binprune
from binprune.sparsity import SparsitySchedule, allocate_keep_counts, allocate_keep_ratios, keep_counts_from_ratios

SIZES = [1728, 36864, 73728, 147456, 8192, 589824, 2359296, 5120]


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99, 0.999])
def test_budget_is_exact(p, sparsity):
    ratios = allocate_keep_ratios(SIZES, sparsity, p)
    assert all(0 < r <= 1 for r in ratios)
    assert math.isclose(sum(r * n for r, n in zip(ratios, SIZES)), (1 - sparsity) * sum(SIZES), rel_tol=1e-9)
    counts = keep_counts_from_ratios(SIZES, ratios)
    tiny = sum(1 for r, n in zip(ratios, SIZES) if r * n < 1)  # layers kept at one weight minimum
    assert round((1 - sparsity) * sum(SIZES)) <= sum(counts) <= round((1 - sparsity) * sum(SIZES)) + tiny
    assert all(abs(c - r * n) <= 1 for c, r, n in zip(counts, ratios, SIZES))


def test_p1_is_uniform():
    assert allocate_keep_ratios(SIZES, 0.9, 1.0) == pytest.approx([0.1] * len(SIZES))
    assert allocate_keep_counts(SIZES, 0.9, allocation="uniform") == allocate_keep_counts(SIZES, 0.9, 1.0)


def test_p0_gives_equal_counts():
    sizes = [10_000, 20_000, 40_000]
    counts = allocate_keep_counts(sizes, 0.97, 0.0)
    assert counts == [700, 700, 700]


def test_clamping_keeps_small_layers_whole_and_resplits():
    sizes = [100, 10_000, 1_000_000]
    ratios = allocate_keep_ratios(sizes, 0.99, 0.0)  # equal counts would be ~3367 > 100
    assert ratios[0] == 1.0
    kept_rest = (0.01 * sum(sizes) - 100) / 2
    assert ratios[1] * sizes[1] == pytest.approx(kept_rest)
    assert ratios[2] * sizes[2] == pytest.approx(kept_rest)


def test_adaptive_prunes_small_layers_less():
    ratios = allocate_keep_ratios(SIZES, 0.99, 0.1)
    order = sorted(range(len(SIZES)), key=lambda i: SIZES[i])
    assert [ratios[i] for i in order] == sorted(ratios, reverse=True)


@pytest.mark.parametrize(
    "args, message",
    [
        (([], 0.9, 0.1), "empty"),
        (([10, 0], 0.9, 0.1), "positive"),
        (([10], 1.0, 0.1), r"outside \[0, 1\)"),
        (([10], -0.1, 0.1), r"outside \[0, 1\)"),
        (([10], float("nan"), 0.1), "sparsity must be a number"),
        (([10], 0.5, -1.0), "p must be"),
    ],
)
def test_allocation_errors(args, message):
    with pytest.raises(ValueError, match=message):
        allocate_keep_ratios(*args)


def test_unknown_allocation():
    with pytest.raises(ValueError, match="unknown allocation"):
        allocate_keep_counts([10], 0.5, allocation="magic")


@pytest.mark.slow
def test_resnet34_first_conv_and_classifier_denser_than_last_stage():
    model = binprune.create_model("resnet34", num_classes=10)
    net = binprune.convert_to_binary_supermask(model, sparsity=0.99, p=0.1)
    report = binprune.sparsity_report(net)
    rows = {r.name: r for r in report.layers}
    ratios = allocate_keep_ratios([r.total for r in report.layers], 0.99, 0.1)
    for row, ratio in zip(report.layers, ratios):
        assert abs(row.kept - ratio * row.total) <= 1
    assert report.masked_kept == round(0.01 * report.masked_total)
    first, fc = rows["network.net.conv1.weight"], rows["network.net.fc.weight"]
    last_stage = [r for n, r in rows.items() if n.startswith("network.net.layer4") and len(r.shape) == 4
                  and r.shape[-1] == 3]
    assert last_stage and max(r.keep_ratio for r in last_stage) < 0.01
    assert first.keep_ratio > 50 * max(r.keep_ratio for r in last_stage)
    assert fc.keep_ratio > 50 * max(r.keep_ratio for r in last_stage)


def test_report_lists_unconverted_weights():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.LazyLinear(5))
    model(torch.rand(1, 3, 6, 6))
    net = binprune.convert_to_binary_supermask(model, sparsity=0.5, exclude=["3"])
    report = binprune.sparsity_report(net)
    assert [r.name for r in report.layers] == ["network.0.weight"]
    dense = {r.name: r.total for r in report.dense}
    assert dense == {"network.1.weight": 4, "network.1.bias": 4, "network.3.weight": 5 * 64, "network.3.bias": 5}
    assert report.total_params == 108 + 4 + 4 + 320 + 5
    assert report.kept_params == 54 + 4 + 4 + 320 + 5
    assert "(dense)" in report.table()
    assert report.as_dict()["kept_params"] == report.kept_params


def test_set_sparsity_reallocates():
    net = binprune.convert_to_binary_supermask(binprune.create_model("small_cnn", in_channels=1), sparsity=0.5)
    binprune.set_sparsity(net, 0.9, p=0.1)
    report = binprune.sparsity_report(net)
    assert report.masked_kept == round(0.1 * report.masked_total)


def test_schedule():
    sched = SparsitySchedule(final=0.99, ramp_steps=100, initial=0.0)
    assert sched(0) == 0.0 and sched(100) == 0.99 and sched(1000) == 0.99
    assert 0.0 < sched(50) < 0.99 and sched(50) > 0.99 / 2  # cubic prunes early
    lin = SparsitySchedule(final=0.5, ramp_steps=10, kind="linear")
    assert lin(5) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        SparsitySchedule(final=1.5, ramp_steps=3)
    with pytest.raises(ValueError):
        SparsitySchedule(final=0.5, ramp_steps=3, kind="exp")
