"""Moved to :mod:`taskfit.stats` (tasks/ scores with it too, and tasks/ sits below evaluation/);
these names stay importable from here. ``paired_bootstrap`` is ``paired_difference``'s name
before 2026-12-03 (its p-value is a paired permutation test's, its interval a bootstrap's)."""

from taskfit.stats import bootstrap_mean_ci, mcnemar, paired_bootstrap, paired_difference, percentile, rows_to_detect

__all__ = ["bootstrap_mean_ci", "mcnemar", "paired_bootstrap", "paired_difference", "percentile", "rows_to_detect"]
