"""Moved to :mod:`taskfit.stats` (tasks/ scores with it too, and tasks/ sits below evaluation/);
these names stay importable from here."""

from taskfit.stats import bootstrap_mean_ci, mcnemar, paired_difference, percentile, rows_to_detect

__all__ = ["bootstrap_mean_ci", "mcnemar", "paired_difference", "percentile", "rows_to_detect"]
