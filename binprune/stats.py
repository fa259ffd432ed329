"""Statistics for accuracies measured on a finite set of examples.

An accuracy on 200 test images is an estimate with an error of several points; two methods
evaluated on the same images differ by chance on the examples where they disagree. These
functions attach the uncertainty to every number binprune writes:

- :func:`wilson_interval`: the Wilson score interval of a binomial proportion (Wilson, 1927), used
  for every accuracy (it stays inside [0, 1] and is close to nominal coverage even at 0/n or n/n,
  where the normal approximation collapses to a point);
- :func:`exact_mcnemar`: the exact (binomial) McNemar test on paired per-example flags, the test
  for two models evaluated on the same examples;
- :func:`holm`: Holm's step-down correction, for the several comparisons of one table.

Pure Python (``math``, ``statistics``) and NumPy only: no SciPy dependency.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Sequence

import numpy as np

__all__ = ["wilson_interval", "exact_mcnemar", "holm", "INTERVAL_METHOD", "PAIRED_TEST"]

#: How the accuracy intervals are computed (written into every result that carries them).
INTERVAL_METHOD = "Wilson score, 95%"
#: How two methods evaluated on the same examples are compared.
PAIRED_TEST = ("exact McNemar test: two-sided binomial test (p = 1/2) on the examples where the two per-example "
               "robust flags disagree")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval ``(low, high)`` for ``successes`` out of ``n``.

    ``n == 0`` carries no information and gives ``(0.0, 1.0)``. The bounds are exact 0 and 1 at
    ``successes == 0`` and ``successes == n``.
    """
    if isinstance(successes, bool) or isinstance(n, bool) or int(successes) != successes or int(n) != n:
        raise ValueError(f"successes and n must be integers, got {successes!r} and {n!r}")
    successes, n = int(successes), int(n)
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p, z2 = successes / n, z * z
    denominator = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def _flags(values: Any, name: str) -> np.ndarray:
    """A 1-D boolean array from a list of 0/1 or bools, a NumPy array or a (CPU) tensor."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one flag per example (1-D), got shape {array.shape}")
    if array.size and not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must hold 0/1 or booleans")
    return array.astype(bool)


def exact_mcnemar(flags_a: Any, flags_b: Any) -> dict[str, Any]:
    """Exact McNemar test of two per-example flag vectors on the same examples.

    ``b`` counts examples where only ``a`` is 1, ``c`` where only ``b`` is 1; under the null
    hypothesis (both models equally accurate on these examples) each discordant example is a fair
    coin, so the two-sided p-value is ``min(1, 2 * P(Binomial(b + c, 1/2) <= min(b, c)))``, and 1
    when there is no discordant pair. The tail is summed exactly in integers and divided once
    (no overflow or underflow before the final, correctly rounded division). Returns ``{"b", "c", "n", "p_value"}``.
    """
    a, b_flags = _flags(flags_a, "flags_a"), _flags(flags_b, "flags_b")
    if a.shape != b_flags.shape:
        raise ValueError(f"paired flags need the same examples: got {a.size} and {b_flags.size} flags")
    b = int((a & ~b_flags).sum())
    c = int((~a & b_flags).sum())
    m = b + c
    if m == 0:
        p_value = 1.0
    else:
        term = tail = 1  # C(m, 0); then C(m, i + 1) = C(m, i) * (m - i) / (i + 1), exact in integers
        for i in range(min(b, c)):
            term = term * (m - i) // (i + 1)
            tail += term
        p_value = min(1.0, (2 * tail) / (1 << m))  # int / int: correctly rounded, no overflow
    return {"b": b, "c": c, "n": int(a.size), "p_value": p_value}


def holm(p_values: Sequence[float], alpha: float = 0.05) -> dict[str, Any]:
    """Holm's step-down correction of ``p_values`` (one family of comparisons).

    The i-th smallest p-value (i = 0, 1, ...) is multiplied by ``m - i``, then the running
    maximum is taken in that order and capped at 1, which gives the adjusted p-values;
    ``reject[i]`` is ``adjusted[i] <= alpha``. This controls the family-wise error rate at
    ``alpha`` for any dependence between the tests. Returns ``{"adjusted", "reject", "alpha"}``
    in the order given.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    values = [float(p) for p in p_values]
    if any(not 0 <= p <= 1 for p in values):
        raise ValueError(f"p-values must be in [0, 1], got {values}")
    m = len(values)
    order = sorted(range(m), key=lambda i: values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * values[i]))
        adjusted[i] = running
    return {"adjusted": adjusted, "reject": [p <= alpha for p in adjusted], "alpha": alpha}
