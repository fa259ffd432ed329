"""Evaluation: clean, PGD and AutoAttack accuracy, sanity checks, and the RobustBench protocol.

- :func:`evaluate` (:mod:`.runner`): the attacks of the registry in :mod:`.attacks`
  (:func:`register_attack` adds one), each returning per-example robust flags, collected in a
  :class:`binprune.results.EvalReport`;
- :func:`run_autoattack` (:mod:`.autoattack`): AutoAttack with robust accuracy recomputed from the
  adversarial examples it returns;
- :mod:`.confirm`: attacks run on the compact copy of the model, every adversarial example
  confirmed on the model itself (:func:`equivalent_model`);
- :func:`sanity_checks` (:mod:`.sanity`): checks against gradient masking
  (:func:`register_check` adds one);
- :mod:`.robustbench`: RobustBench's protocol, leaderboard entries, model-zoo models from local files.

Defaults live in :class:`binprune.config.EvalConfig` and :class:`binprune.config.SanityConfig`.
"""

from ..config import NORMS, EvalConfig, SanityConfig
from ..views import evaluation_tensors
from .attacks import ATTACKS, AttackContext, check_attacks, pgd_robust_flags, register_attack
from .autoattack import AUTOATTACK_ATTACKS, robust_accuracy_from_autoattack, run_autoattack
from .confirm import AttackForm, equivalent_model
from .model import correct_flags, frozen_parameters, prepare_model
from .robustbench import (
    STANDARD_EPS,
    leaderboard_entry,
    load_benchmark_data,
    load_robustbench_model,
    model_footprint,
    robustbench_architecture,
    robustbench_benchmark,
    run_robustbench_protocol,
)
from .runner import eval_config, evaluate
from .sanity import SANITY_CHECKS, SanityContext, check_result, register_check, sanity_checks

__all__ = [
    "evaluate", "eval_config", "EvalConfig", "SanityConfig", "ATTACKS", "AttackContext", "register_attack",
    "check_attacks", "pgd_robust_flags", "correct_flags", "frozen_parameters", "prepare_model",
    "evaluation_tensors", "NORMS", "AUTOATTACK_ATTACKS", "run_autoattack", "robust_accuracy_from_autoattack",
    "sanity_checks", "SANITY_CHECKS", "SanityContext", "register_check", "check_result",
    "STANDARD_EPS", "leaderboard_entry", "load_benchmark_data", "load_robustbench_model", "model_footprint",
    "robustbench_architecture", "robustbench_benchmark", "run_robustbench_protocol", "AttackForm", "equivalent_model",
]
