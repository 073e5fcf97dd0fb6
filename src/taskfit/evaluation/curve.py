"""The learning curve: a saturating power law fitted to a fine-tune's held-out score at a few
training sizes, and what it projects (the score on more rows, the rows a threshold needs), each
with a bootstrap interval over the held-out rows.

    score(n) = a - b * n**(-c),   a in [0, 1], b >= 0, c in [0.05, 2]

``a`` is the score the model levels off at, ``c`` how fast it gets there (learning curves of
neural models follow such a power law in the data size, Hestness et al. 2017, "Deep learning
scaling is predictable, empirically"). Every run is scored on the same held-out rows, so one
bootstrap resample of those rows moves every point of the curve together; the curve is fitted
again on each resample (``scipy.optimize.curve_fit``) and the spread of what it projects is the
interval (each refit profiles the exponent on a grid, solving the other two exactly). That
interval covers the held-out sample only: not the training seed, and not whether
the power law is the right shape. With three points for three parameters the curve passes
through every point and nothing checks it (:attr:`LearningCurve.identifiable`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from taskfit.stats import paired_difference

PARAMETERS = 3
BOUNDS = ([0.0, 0.0, 0.05], [1.0, np.inf, 2.0])  # a, b, c: a share, rising, neither flat nor a step
# For a given exponent c the curve is linear in a and b; the fit profiles c over this grid (0.8%
# apart), solving a and b exactly at each, then polishes the best with curve_fit.
EXPONENTS = np.geomspace(BOUNDS[0][2], BOUNDS[1][2], 480)


def power_law(n: np.ndarray | float, a: float, b: float, c: float) -> np.ndarray | float:
    return a - b * np.power(n, -c)


def _profile(rows: Sequence[float], scores: np.ndarray) -> np.ndarray:
    """The least-squares (a, b, c) for each row of ``scores`` (runs along the last axis), with c
    on :data:`EXPONENTS` and a in [0, 1], b >= 0 solved exactly: shape (len(scores), 3)."""
    y = scores[:, None, :]  # (fits, 1, runs)
    x = np.power(np.asarray(rows, dtype=float)[None, :], -EXPONENTS[:, None])[None]  # (1, grid, runs)
    xm, ym = x.mean(-1, keepdims=True), y.mean(-1, keepdims=True)
    sxx = ((x - xm) ** 2).sum(-1)
    b_free = -((x - xm) * (y - ym)).sum(-1) / sxx
    a_free = ym[..., 0] + b_free * xm[..., 0]
    xx = (x * x).sum(-1)
    candidates = [  # the optimum inside the box, or on one of its edges
        (a_free, b_free),
        (np.ones_like(a_free), np.maximum(0.0, ((1.0 - y) * x).sum(-1) / xx)),  # a = 1
        (np.zeros_like(a_free), np.zeros_like(a_free)),  # a = 0 (then b = 0: scores are not negative)
        (np.broadcast_to(np.clip(ym[..., 0], 0.0, 1.0), a_free.shape), np.zeros_like(a_free)),  # b = 0
    ]
    best_sse = np.full(a_free.shape, np.inf)
    best_a, best_b = np.zeros(a_free.shape), np.zeros(a_free.shape)
    for a, b in candidates:
        a, b = np.broadcast_to(a, best_sse.shape), np.broadcast_to(b, best_sse.shape)
        ok = (a >= -1e-12) & (a <= 1 + 1e-12) & (b >= -1e-12)
        sse = np.where(ok, ((a[..., None] - b[..., None] * x - y) ** 2).sum(-1), np.inf)
        better = sse < best_sse - 1e-15
        best_sse, best_a, best_b = (np.where(better, sse, best_sse), np.where(better, a, best_a),
                                    np.where(better, b, best_b))
    g = best_sse.argmin(axis=1)
    pick = np.arange(len(g))
    return np.stack([best_a[pick, g], np.maximum(0.0, best_b[pick, g]), EXPONENTS[g]], axis=1)


def fit_power_law(rows: Sequence[float], scores: Sequence[float]) -> tuple[float, float, float]:
    """The (a, b, c) of :func:`power_law` closest to ``scores`` at ``rows`` (least squares within
    :data:`BOUNDS`); flat (b = 0, a = the mean) when the scores do not rise."""
    from scipy.optimize import OptimizeWarning, curve_fit

    n, y = np.asarray(rows, dtype=float), np.clip(np.asarray(scores, dtype=float), 0.0, 1.0)
    best = tuple(float(v) for v in _profile(n, y[None])[0])
    if best[1] <= 0:
        return best  # type: ignore[return-value]
    sse = float(((power_law(n, *best) - y) ** 2).sum())
    p0 = [float(np.clip(v, lo + 1e-9, hi - 1e-9)) for v, lo, hi in zip(best, BOUNDS[0], BOUNDS[1])]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(power_law, n, y, p0=p0, bounds=BOUNDS, maxfev=2000)
    except (RuntimeError, ValueError):  # the profile's answer stands
        return best  # type: ignore[return-value]
    if float(((power_law(n, *params) - y) ** 2).sum()) < sse:
        best = tuple(float(v) for v in params)
    return best  # type: ignore[return-value]


def rows_for(params: Sequence[float], threshold: float) -> float:
    """Training rows at which the curve reaches ``threshold``; ``inf`` when it levels off below."""
    a, b, c = params
    if a <= threshold:
        return math.inf
    if b <= 0:
        return 1.0
    return max(1.0, (b / (a - threshold)) ** (1.0 / c))


def _interval(values: np.ndarray) -> tuple[float, float]:
    """The 95% percentile interval, by order statistics (``inf`` stays ``inf``)."""
    ordered = np.sort(values)
    k = len(ordered)
    return float(ordered[int(0.025 * k)]), float(ordered[min(k - 1, math.ceil(0.975 * k) - 1)])


@dataclass(frozen=True)
class RowsNeeded:
    """Training rows the curve says the threshold needs: ``estimate`` from the fit on the rows as
    measured, ``low``/``high`` the 95% bootstrap interval; ``inf`` where the curve levels off below
    the threshold (at ``high`` only: reachable in some resamples, not in others)."""

    threshold: float
    estimate: float
    low: float
    high: float
    reachable_share: float  # of the resamples whose curve reaches the threshold

    @property
    def reachable(self) -> bool:
        return math.isfinite(self.estimate)


@dataclass
class LearningCurve:
    rows: list[int]  # training rows per run, rising
    scores: list[float]  # held-out score per run (the mean per-row score)
    params: tuple[float, float, float]  # a, b, c fitted on the rows as measured
    draws: np.ndarray = field(repr=False)  # (resamples, 3): the parameters refitted on each resample
    gain: float = 0.0  # the largest run's score minus the smallest's (the same rows)
    gain_p: float = 1.0  # the paired permutation test's two-sided p-value of that gain

    @property
    def rises(self) -> bool:
        """Whether the largest run scores above the smallest by more than chance (paired, 5%).
        A curve that does not rise cannot tell a score that has levelled off from one that has
        not started to climb (a small model often answers one label for its first steps): it
        projects nothing."""
        return self.gain > 0 and self.gain_p < 0.05

    @property
    def identifiable(self) -> bool:
        """More points than parameters: only then does the fit leave anything to check it by."""
        return len(self.rows) > PARAMETERS

    @property
    def levels_off(self) -> float:
        return self.params[0]

    def at(self, n: float) -> float:
        return float(power_law(n, *self.params))

    def band(self, n: float) -> tuple[float, float]:
        """The 95% bootstrap interval of the score the curve projects at ``n`` rows."""
        return _interval(power_law(float(n), self.draws[:, 0], self.draws[:, 1], self.draws[:, 2]))

    def levels_off_band(self) -> tuple[float, float]:
        return _interval(self.draws[:, 0])

    def rows_needed(self, threshold: float) -> RowsNeeded:
        needed = np.array([rows_for(p, threshold) for p in self.draws])
        low, high = _interval(needed)
        return RowsNeeded(threshold, rows_for(self.params, threshold), low, high,
                          float(np.isfinite(needed).mean()))

    def caveats(self) -> list[str]:
        """What the fit cannot tell, in words."""
        a, b, c = self.params
        notes = []
        if not self.identifiable:
            notes.append(f"{len(self.rows)} points for {PARAMETERS} parameters: the curve passes through every "
                         "point, so nothing checks its shape; its band covers only the resampled held-out rows "
                         "(not the training seed, not the choice of curve), and projections far beyond "
                         f"{self.rows[-1]} rows are guesses")
        if not self.rises:
            notes.append(f"no gain from {self.rows[0]} to {self.rows[-1]} rows ({100 * self.scores[0]:.1f}% to "
                         f"{100 * self.scores[-1]:.1f}%, paired permutation test p={self.gain_p:.3g}): the curve cannot tell "
                         "a score that has levelled off from one that has not started to climb, so it projects "
                         "nothing")
        elif a >= BOUNDS[1][0] - 1e-6:
            notes.append("the fit puts the level it rises to at the top of the scale (1.0): the points do not "
                         "show where it levels off")
        if b and (c <= BOUNDS[0][2] + 1e-6 or c >= BOUNDS[1][2] - 1e-6):
            notes.append(f"the exponent sits at its bound ({c:.2f}): the points do not pin down how fast the "
                         "score rises")
        return notes


def fit_curve(rows: Sequence[int], per_row: Sequence[Sequence[float]], resamples: int = 200,
              seed: int = 0) -> LearningCurve:
    """The learning curve through runs on ``rows`` training rows, each scored row by row
    (``per_row[i]``, the same held-out rows in the same order for every run), with ``resamples``
    bootstrap refits over the held-out rows."""
    if len(rows) < PARAMETERS:
        raise ValueError(f"a learning curve needs {PARAMETERS} runs or more, got {len(rows)}")
    scores = np.asarray(per_row, dtype=float)  # (runs, held-out rows)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError("every run needs a score on the same, non-empty, held-out rows")
    means = scores.mean(axis=1)
    params = fit_power_law(rows, means)
    idx = np.random.default_rng(seed).integers(0, scores.shape[1], (resamples, scores.shape[1]))
    draws = _profile(rows, np.clip(scores[:, idx].mean(axis=2).T, 0.0, 1.0))  # (resamples, 3)
    gain, _, gain_p = paired_difference(scores[-1], scores[0], seed=seed)
    return LearningCurve(rows=list(rows), scores=[float(m) for m in means], params=params, draws=draws,
                         gain=gain, gain_p=gain_p)
