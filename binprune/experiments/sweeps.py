"""Comparisons made of comparisons: the headline rows trained with more seeds, and the methods
trained at several widths of the same architecture.

Both run :func:`binprune.experiments.compare.compare` (passed in as ``run``) on derived settings,
each in its own sub-folder, so they resume method by method like any comparison:

- :func:`seed_runs`: for every extra seed of ``config.seeds``, the headline rows with that
  training seed (initialization, random weights, batch order, attack starts) on the same data
  (``data_seed`` fixed to the main table's), in ``DIR/seeds/seed-S``; the main table then
  reports mean and spread (:func:`binprune.experiments.protocol.seed_summary`). Significance is
  decided by the paired test on the main table's single seed only.
- :func:`width_sweep`: every method at each of ``config.width_factors`` times the widths of
  ``arch_kwargs["widths"]``, in ``DIR/width-xF``; then ``DIR/widths.json``, ``widths.md`` and
  ``widths.png`` (robust accuracy with its 95% interval against width; each width tested against
  the widest on the same test images).
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..config import CompareConfig
from ..results import code_versions
from ..utils import atomic_write_bytes, write_json
from .protocol import ATTACK_LABELS, format_p, saved_robust_flags, seed_summary, width_paired_tests, width_rows

__all__ = ["seed_runs", "width_sweep", "scaled_widths", "write_width_table"]


def seed_runs(config: CompareConfig, out: Path, names: Sequence[str], main_table: Mapping[str, Any],
              run: Callable[..., dict], arguments: dict) -> dict:
    """Train and evaluate the headline rows (all rows when none are named) with each seed of
    ``config.seeds``; returns the :func:`seed_summary` over the main seed and those.

    The extra seeds are evaluated with clean, PGD-20 and AutoAttack's APGD-CE + APGD-T, not
    AutoAttack standard: their purpose is the spread over training seeds, which the cheaper
    attacks measure as well (FAB-T and Square broke no example the APGD attacks had missed in
    docs/EVALUATION.md's measurement) at a quarter of the cost. The main seed keeps AutoAttack
    standard and alone decides the paired tests."""
    headline = [m for m in (config.headline_methods or names) if m in names]
    tables = [main_table]
    for seed in config.seeds:
        sub = dataclasses.replace(config, seed=seed, data_seed=config.effective_data_seed, seeds=(),
                                  name=f"{config.name}-seed{seed}", standard_autoattack=False)
        tables.append(run(sub, out / "seeds" / f"seed-{seed}", methods=headline, **arguments))
    return seed_summary([config.seed, *config.seeds], tables, headline)


def scaled_widths(config: CompareConfig, factor: float) -> list[int]:
    """``arch_kwargs["widths"]`` times ``factor`` (rounded, at least 1)."""
    widths = config.arch_kwargs.get("widths")
    if not widths:
        raise ValueError("width_factors needs the architecture's widths in arch_kwargs (e.g. {widths: [32, 64, 128]} "
                         "for small_cnn)")
    return [max(1, int(round(w * factor))) for w in widths]


def width_sweep(config: CompareConfig, out: Path, names: Sequence[str], run: Callable[..., dict],
                arguments: dict, log: Callable[[str], None]) -> dict:
    """Every method at each width factor (one sub-comparison per width); returns the width table."""
    tables = []
    for factor in config.width_factors:
        widths = scaled_widths(config, factor)
        log(f"== width x{factor:g}: {widths}")
        sub = dataclasses.replace(config, arch_kwargs={**config.arch_kwargs, "widths": widths}, width_factors=(),
                                  name=f"{config.name}-x{factor:g}")
        tables.append(run(sub, out / f"width-x{factor:g}", methods=names, **arguments))
    return write_width_table(out, config, tables)


def _width_flags(out: Path, rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, float], list[int] | None]:
    """Each width row's robust flags under its attack, from ``DIR/width-xF/methods/NAME.json``."""
    flags: dict[tuple[str, float], list[int] | None] = {}
    for r in rows:
        path = out / f"width-x{r['width_factor']:g}" / "methods" / f"{r['method']}.json"
        flags[(r["method"], r["width_factor"])] = saved_robust_flags(path).get(r["attack"]) if path.is_file() else None
    return flags


def _width_verdicts(paired: Mapping[str, Any], attack_label: str) -> list[str]:
    """The widths.md lines of :func:`width_paired_tests`."""
    comparisons = paired["comparisons"]
    if not comparisons:
        return []
    lines = ["", f"Paired tests, each width against the same method at its widest width ({attack_label}, exact "
             f"McNemar on the same test images, Holm-corrected over the table's {paired['n_tested']} comparisons; "
             "a difference without * is not a finding):", ""]
    for c in comparisons:
        head = f"- {c['label']}, x{c['width_factor']:g} vs x{c['reference_width_factor']:g}: "
        if c["p_value"] is None:
            lines.append(head + "n/a (" + c.get("note", "no flags") + ")")
            continue
        diff = f"{100 * c['wider_minus_narrower']:+.1f} points at x{c['reference_width_factor']:g}"
        mark = "*" if c["significant"] else ""
        verdict = ("wider more robust" if c["wider_minus_narrower"] > 0 else "narrower more robust") \
            if c["significant"] else "no significant difference"
        lines.append(head + f"{verdict} ({diff}, p = {format_p(c['p_holm'])}{mark}); robust only at x"
                     f"{c['width_factor']:g} {c['narrower_only_robust']}, only at x{c['reference_width_factor']:g} "
                     f"{c['wider_only_robust']} images")
    return lines


def write_width_table(out: Path, config: CompareConfig, tables: Sequence[Mapping[str, Any]]) -> dict:
    """``widths.json``, ``widths.md`` and ``widths.png`` from the sub-comparisons' tables, with a
    paired test of each width against the widest (:func:`width_paired_tests`)."""
    from ..analysis import width_sweep_figure

    factors = list(config.width_factors)
    attack = "autoattack" if all(r["accuracy"].get("autoattack") is not None for t in tables for r in t["rows"]) \
        else "autoattack-apgd"
    rows = width_rows(factors, tables, attack)
    paired = width_paired_tests(rows, _width_flags(out, rows))
    table = {"preset": config.name, "description": config.description, "attack": attack,
             "attack_label": ATTACK_LABELS[attack], "width_factors": factors,
             "widths": {f"{f:g}": scaled_widths(config, f) for f in factors}, "rows": rows, "paired": paired,
             "pending": sorted({m for t in tables for m in t.get("pending_methods") or []}),
             "versions": {**(tables[-1].get("versions") or {}), **code_versions()},
             "units": {"accuracy": "fraction of the evaluated examples, in [0, 1]",
                       "interval95": "[low, high]: 95% Wilson score interval",
                       "wider_minus_narrower": "robust accuracy at the widest width minus at this width, on the "
                                               "same examples (fraction)"}}
    write_json(out / "widths.json", table)
    by_row = {(c["method"], c["width_factor"]): c for c in paired["comparisons"]}
    lines = [f"# binprune compare: {config.name} (robust accuracy against width)", "",
             f"{ATTACK_LABELS[attack]} accuracy with its 95% Wilson interval, at {config.sparsity:g} sparsity; widths "
             "are multiples of " + f"{config.arch_kwargs.get('widths')}.", "",
             "| method | width factor | widths | weights | nonzero weights | clean | robust [95% interval] "
             "| vs widest: Holm p |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        iv = r["interval95"]
        c = by_row.get((r["method"], r["width_factor"]))
        versus = "reference" if c is None else ("n/a" if c["p_holm"] is None
                                                else format_p(c["p_holm"]) + ("*" if c["significant"] else ""))
        lines.append(f"| {r['label']} | {r['width_factor']:g} | {table['widths'][format(r['width_factor'], 'g')]} | "
                     f"{r['total_weights']:,} | {r['nonzero_weights']:,} | {r['clean']:.4f} | {r['accuracy']:.4f}"
                     + (f" [{iv[0]:.3f}-{iv[1]:.3f}]" if iv else "") + f" | {versus} |")
    lines += _width_verdicts(paired, ATTACK_LABELS[attack])
    atomic_write_bytes(out / "widths.md", ("\n".join(lines) + "\n").encode())
    figure = width_sweep_figure(rows, title=f"{config.name}: {ATTACK_LABELS[attack]} vs width")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(out / "widths.png", buffer.getvalue())
    return table
