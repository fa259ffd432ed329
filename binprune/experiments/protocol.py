"""The evaluation protocol of a comparison table: which attacks each row gets, their labels, and
the summary of the rows trained with several seeds.

AutoAttack standard is the headline number, and most of its cost on a CPU is FAB-T and Square,
which rarely break an example the two APGD attacks missed. A preset therefore names its
*headline* rows (``headline_methods``): those get AutoAttack standard, every row gets
AutoAttack's two APGD attacks (APGD-CE and APGD-T with the standard version's budgets and seed,
``"autoattack-apgd"``), so every pair of rows can be compared on the same attack. With no
headline rows named, every row gets AutoAttack standard (the protocol of earlier tables).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..config import CompareConfig
from ..stats import exact_mcnemar, holm

__all__ = ["ATTACK_LABELS", "evaluation_attacks", "table_attacks", "seed_summary", "seed_markdown", "protocol_note",
           "width_rows", "saved_robust_flags", "width_paired_tests", "holm_correct", "format_p", "ALPHA"]

#: Family-wise error rate of a table's paired tests (Holm).
ALPHA = 0.05

#: Column and legend labels of the attacks a table can hold.
ATTACK_LABELS = {"clean": "clean", "pgd": "PGD-20", "autoattack-apgd": "APGD-CE + APGD-T", "autoattack": "AutoAttack"}


def evaluation_attacks(config: CompareConfig, method: str) -> tuple[str, ...]:
    """The attacks method ``method``'s model is evaluated with under ``config``."""
    if config.standard_autoattack is False:
        return ("clean", "pgd", "autoattack-apgd")
    if not config.headline_methods:
        return ("clean", "pgd", "autoattack")
    if method in config.headline_methods:
        return ("clean", "pgd", "autoattack-apgd", "autoattack")
    return ("clean", "pgd", "autoattack-apgd")


def table_attacks(rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The accuracy columns of a table: clean, PGD-20, APGD-CE + APGD-T when a row has it, AutoAttack."""
    apgd = any(r["accuracy"].get("autoattack-apgd") is not None for r in rows)
    return ("clean", "pgd") + (("autoattack-apgd",) if apgd else ()) + ("autoattack",)


def protocol_note(config: CompareConfig) -> str | None:
    """The table note saying which rows got which AutoAttack (``None`` without headline rows)."""
    if not config.headline_methods:
        return None
    return (f"AutoAttack: the headline rows ({', '.join(config.headline_methods)}) are evaluated with AutoAttack "
            "standard (APGD-CE, APGD-T, FAB-T, Square); every row, headline or not, with AutoAttack's two APGD attacks "
            "alone (column 'APGD-CE + APGD-T': AutoAttack standard's budgets and seed, so a headline row's flags there "
            "are its AutoAttack flags before FAB-T and Square). An APGD-only accuracy is an upper bound of the "
            "AutoAttack one: compare rows on the same column.")


def _spread(values: list[float]) -> dict[str, Any]:
    mean = sum(values) / len(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"values": values, "mean": mean, "sd": sd, "min": min(values), "max": max(values)}


def seed_summary(seeds: Sequence[int], tables: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> dict:
    """Mean, sample standard deviation and range over training seeds of each method's accuracies.

    ``tables[i]`` is the ``table.json`` content of seed ``seeds[i]`` (the main table first). A
    method or attack missing from any seed's table is reported with the seeds it has.
    """
    out: dict[str, Any] = {"seeds": list(seeds), "methods": {}}
    for method in methods:
        per_attack: dict[str, Any] = {}
        found = [(s, next((r for r in t.get("rows", []) if r["method"] == method), None)) for s, t in zip(seeds, tables)]
        found = [(s, r) for s, r in found if r is not None]
        if not found:
            continue
        for attack in ATTACK_LABELS:
            pairs = [(s, r["accuracy"][attack]) for s, r in found if r["accuracy"].get(attack) is not None]
            if pairs:
                per_attack[attack] = {"seeds": [s for s, _ in pairs], **_spread([v for _, v in pairs])}
        out["methods"][method] = {"label": found[0][1]["label"], "accuracy": per_attack}
    return out


def seed_markdown(summary: Mapping[str, Any] | None) -> list[str]:
    """The table.md section of :func:`seed_summary` (empty without one)."""
    if not summary or not summary.get("methods"):
        return []
    # only the attacks every seed ran (the extra seeds skip AutoAttack standard: see seed_runs)
    every = len(summary["seeds"])
    attacks = [a for a in ATTACK_LABELS if all(len(m["accuracy"].get(a, {}).get("seeds", ())) == every
                                               for m in summary["methods"].values())]
    if not attacks:
        return []
    lines = ["", f"Training seeds {', '.join(map(str, summary['seeds']))} (headline rows): mean ± sample standard "
             "deviation [min-max]. The paired test above, on the first seed, alone decides significance.", "",
             "| method | seeds | " + " | ".join(ATTACK_LABELS[a] for a in attacks) + " |",
             "|---|---|" + "---|" * len(attacks)]
    for entry in summary["methods"].values():
        cells = []
        for attack in attacks:
            s = entry["accuracy"].get(attack)
            cells.append("n/a" if s is None else f"{s['mean']:.4f} ± {s['sd']:.4f} [{s['min']:.3f}-{s['max']:.3f}]")
        n = max((len(s["seeds"]) for s in entry["accuracy"].values()), default=0)
        lines.append(f"| {entry['label']} | {n} | " + " | ".join(cells) + " |")
    return lines


def width_rows(factors: Sequence[float], tables: Sequence[Mapping[str, Any]], attack: str) -> list[dict]:
    """One record per (method, width factor) of a width sweep: robust accuracy under ``attack``
    with its interval, parameters and kept weights."""
    rows = []
    for factor, table in zip(factors, tables):
        for r in table.get("rows", []):
            value = r["accuracy"].get(attack)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            rows.append({"method": r["method"], "label": r["label"], "width_factor": factor, "attack": attack,
                         "accuracy": value, "interval95": (r.get("interval95") or {}).get(attack),
                         "clean": r["accuracy"].get("clean"), "n_examples": r.get("n_examples"),
                         "nonzero_weights": r.get("nonzero_weights"), "total_weights": r.get("total_weights"),
                         "sparsity": r.get("sparsity")})
    return rows


def format_p(p: float) -> str:
    """A p-value as the tables print it: two significant digits below 0.01, else three decimals."""
    return f"{p:.2g}" if p < 0.01 else f"{p:.3f}"


def holm_correct(comparisons: Sequence[dict[str, Any]], alpha: float = ALPHA) -> int:
    """Fill ``p_holm`` and ``significant`` of the comparisons that have a ``p_value``, Holm-corrected
    together as one family (the others keep ``None``); returns how many were tested."""
    tested = [c for c in comparisons if c["p_value"] is not None]
    if tested:
        corrected = holm([c["p_value"] for c in tested], alpha)
        for entry, adjusted, reject in zip(tested, corrected["adjusted"], corrected["reject"]):
            entry["p_holm"], entry["significant"] = adjusted, reject
    return len(tested)


def saved_robust_flags(method_file: Path) -> dict[str, list[int]]:
    """``{attack: per-example robust flags}`` of a finished method's ``methods/NAME.json``
    (attacks without flags, as in files written before flags were recorded, are left out)."""
    attacks = json.loads(Path(method_file).read_text()).get("evaluation", {}).get("attacks", {})
    return {a: r["robust_flags"] for a, r in attacks.items() if r.get("robust_flags") is not None}


def width_paired_tests(rows: Sequence[Mapping[str, Any]], flags: Mapping[tuple[str, float], Sequence[int] | None],
                       alpha: float = ALPHA) -> dict:
    """Does width change a method's robustness? Each method at each width against the same
    method at its widest finished width, on the same test images.

    ``rows`` are :func:`width_rows` records, ``flags[(method, width_factor)]`` the robust flags
    under the rows' attack. The test is the exact McNemar test (as the comparison tables'), and
    the p-values of all the table's comparisons are Holm-corrected together; a pair without flags
    on both sides, or with flags of different lengths, is reported as ``p_value: None``.
    """
    comparisons: list[dict[str, Any]] = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["width_factor"])
        widest = mine[-1]["width_factor"]
        wide_flags = flags.get((method, widest))
        for r in mine[:-1]:
            entry: dict[str, Any] = {"method": method, "label": r["label"], "width_factor": r["width_factor"],
                                     "reference_width_factor": widest, "p_value": None, "p_holm": None,
                                     "significant": None}
            narrow_flags = flags.get((method, r["width_factor"]))
            if wide_flags is None or narrow_flags is None or len(wide_flags) != len(narrow_flags):
                entry["note"] = "no per-example flags on the same examples for both widths: n/a"
            else:
                test = exact_mcnemar(narrow_flags, wide_flags)
                entry.update(narrower_only_robust=test["b"], wider_only_robust=test["c"], n_examples=test["n"],
                             wider_minus_narrower=(test["c"] - test["b"]) / test["n"] if test["n"] else 0.0,
                             p_value=test["p_value"])
            comparisons.append(entry)
    n_tested = holm_correct(comparisons, alpha)
    return {"paired_test": "exact McNemar on the per-example robust flags of the same test images",
            "correction": "Holm (step-down) over all the comparisons of this table", "alpha": alpha,
            "reference": "each method at its widest finished width", "comparisons": comparisons,
            "n_tested": n_tested}
