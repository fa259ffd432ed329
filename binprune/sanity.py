"""Deprecated: the sanity checks moved to :mod:`binprune.evaluation` (``binprune.sanity_checks``
is unchanged). This alias is removed in the next release."""

import warnings

from .evaluation import SANITY_CHECKS, sanity_checks

warnings.warn("binprune.sanity is deprecated: import from binprune.evaluation", DeprecationWarning, stacklevel=2)

__all__ = ["SANITY_CHECKS", "sanity_checks"]
