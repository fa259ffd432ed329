"""Deprecated: the RobustBench protocol moved to :mod:`binprune.evaluation` (the top-level
``binprune.robustbench_benchmark`` and friends are unchanged). This alias is removed in the next
release."""

import warnings

from .evaluation import (
    STANDARD_EPS,
    leaderboard_entry,
    load_benchmark_data,
    load_robustbench_model,
    robustbench_architecture,
    robustbench_benchmark,
    run_robustbench_protocol,
)

warnings.warn("binprune.leaderboard is deprecated: import from binprune.evaluation", DeprecationWarning, stacklevel=2)

__all__ = ["STANDARD_EPS", "leaderboard_entry", "load_benchmark_data", "load_robustbench_model",
           "robustbench_architecture", "robustbench_benchmark", "run_robustbench_protocol"]
