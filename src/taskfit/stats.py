"""Statistics the task scorers and the comparison share: percentiles, bootstrap intervals, paired
tests. Pure functions of numbers, below both tasks/ and evaluation/ (each imports it; it imports
neither)."""

from __future__ import annotations

from typing import Any, Sequence


def percentile(values: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if len(values) else 0.0


def bootstrap_mean_ci(values: Sequence[float], n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of per-example scores."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    if not len(v):
        return (0.0, 0.0)
    idx = np.random.default_rng(seed).integers(0, len(v), (n_boot, len(v)))
    means = v[idx].mean(axis=1)
    return percentile(means, 2.5), percentile(means, 97.5)


def mcnemar(a_right: Sequence[float], b_right: Sequence[float]) -> float:
    """Exact McNemar p-value (two-sided binomial test on the discordant pairs) for two
    classifiers judged on the same examples."""
    from scipy.stats import binomtest

    only_a = sum(1 for x, y in zip(a_right, b_right) if x >= 0.5 > y)
    only_b = sum(1 for x, y in zip(a_right, b_right) if y >= 0.5 > x)
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


EXACT_ROWS = 12  # up to this many rows, the swap test runs through every one of the 2^n swaps


def _swaps(n: int, n_perm: int, rng: Any) -> tuple[Any, bool]:
    """Which rows swap their two sides, one row of booleans a relabelling: all 2^n of them for
    a few rows (an exact test), else ``n_perm`` drawn at random; and whether they are all."""
    import numpy as np

    if n <= EXACT_ROWS:
        return ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1).astype(bool), True
    return rng.random((n_perm, n)) < 0.5, False


def _blocks(n: int, size: int = 250) -> list[int]:
    """``n`` resamples or swaps as blocks of at most ``size``: a few thousand held-out rows would
    otherwise hold n x rows floats at once."""
    return [min(size, n - start) for start in range(0, n, size)]


def _swap_p(observed: float, swapped: Any, exact: bool) -> float:
    """The two-sided p-value of a paired swap (permutation) test: the share of relabellings whose
    difference is at least as far from zero as the one observed (counting the observed labelling
    once more when they were drawn, so a p-value is never 0)."""
    import numpy as np

    far = int(np.count_nonzero(np.abs(swapped) >= abs(observed) - 1e-12))
    return float(far / len(swapped)) if exact else float((far + 1) / (len(swapped) + 1))


def paired_difference(a: Sequence[float], b: Sequence[float], n_boot: int = 2000,
                      seed: int = 0) -> tuple[float, tuple[float, float], float]:
    """Mean of ``a - b`` per example, its 95% bootstrap interval, and a two-sided p-value from
    the paired swap test (the sign of each row's difference flipped at random: every flip for up
    to EXACT_ROWS rows). A bootstrap's own p-value (the share of resampled differences beyond
    zero, doubled) is far too small on few rows: 0.002 on 4 rows that all differ one way, where
    no test of 4 pairs can go below 2/16."""
    import numpy as np

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if not len(d) or not d.any():
        return 0.0, (0.0, 0.0), 1.0
    rng = np.random.default_rng(seed)
    resampled = np.concatenate([d[rng.integers(0, len(d), (block, len(d)))].mean(axis=1)
                                for block in _blocks(n_boot)])  # a block at a time: memory stays small
    swapped, exact = [], True
    for block in _blocks(n_boot):
        signs, exact = _swaps(len(d), block, rng)
        swapped.append(np.where(signs, -d, d).mean(axis=1))
        if exact:  # every swap at once for a few rows
            break
    observed = float(d.mean())
    return (observed, (percentile(resampled, 2.5), percentile(resampled, 97.5)),
            _swap_p(observed, np.concatenate(swapped), exact))


def _pooled_f1(parts: Any) -> Any:
    """F1 from summed (right, answered, gold) on the last axis: 2·right / (answered + gold), which
    is 2PR / (P + R); 0 where nothing was due nor answered (as the scorecard's field F1 is)."""
    import numpy as np

    denom = parts[..., 1] + parts[..., 2]
    return np.where(denom > 0, 2 * parts[..., 0] / np.maximum(denom, 1), 0.0)


def paired_difference_f1(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]], n_boot: int = 2000,
                         seed: int = 0) -> tuple[float, tuple[float, float], float]:
    """The pooled F1 of ``a`` minus that of ``b`` (each row's [right, answered, gold] summed over
    the rows), its 95% interval from the same resampled rows for both, and a two-sided p-value
    from the paired swap test on the pooled figure (each row's two sides swapped at random, the
    approximate randomisation test of Noreen 1989 and Yeh 2000; every swap for a few rows)."""
    import numpy as np

    pa, pb = np.asarray(a, dtype=float).reshape(-1, 3), np.asarray(b, dtype=float).reshape(-1, 3)
    observed = float(_pooled_f1(pa.sum(axis=0)) - _pooled_f1(pb.sum(axis=0))) if len(pa) else 0.0
    if not len(pa) or (observed == 0 and np.array_equal(pa, pb)):
        return 0.0, (0.0, 0.0), 1.0
    rng = np.random.default_rng(seed)
    diffs = []
    for block in _blocks(n_boot):  # a block of resamples at a time: memory stays small
        idx = rng.integers(0, len(pa), (block, len(pa)))
        diffs.append(_pooled_f1(pa[idx].sum(axis=1)) - _pooled_f1(pb[idx].sum(axis=1)))
    d = np.concatenate(diffs)
    total_a, total_b, gap = pa.sum(axis=0), pb.sum(axis=0), pb - pa
    swapped, exact = [], True
    for block in _blocks(n_boot):  # in blocks too (every swap at once for a few rows)
        swaps, exact = _swaps(len(pa), block, rng)
        moved = swaps.astype(float) @ gap  # what the swapped rows move from b's side to a's
        swapped.append(_pooled_f1(total_a + moved) - _pooled_f1(total_b - moved))
        if exact:
            break
    return observed, (percentile(d, 2.5), percentile(d, 97.5)), _swap_p(observed, np.concatenate(swapped), exact)


def rows_to_detect_f1(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]], alpha: float = 0.05,
                      power: float = 0.8) -> int | None:
    """:func:`rows_to_detect` for a pooled F1: the observed difference of the pooled figures, and
    the spread of each row's linearised contribution to it (the delta method for a ratio)."""
    import numpy as np

    pa, pb = np.asarray(a, dtype=float).reshape(-1, 3), np.asarray(b, dtype=float).reshape(-1, 3)
    if len(pa) < 2:
        return None

    def influence(p: Any) -> Any:
        x = p[:, 1] + p[:, 2]
        f1 = _pooled_f1(p.sum(axis=0))
        return (2 * p[:, 0] - f1 * x) / max(float(x.mean()), 1e-12)

    delta = abs(float(_pooled_f1(pa.sum(axis=0)) - _pooled_f1(pb.sum(axis=0))))
    return _rows_needed(delta, float((influence(pa) - influence(pb)).std(ddof=1)), alpha, power)


def _rows_needed(delta: float, sd: float, alpha: float, power: float) -> int | None:
    """Rows for a paired test to detect ``delta`` with per-row spread ``sd`` (normal approximation)."""
    import numpy as np
    from scipy.stats import norm

    if delta == 0 or sd == 0:
        return None
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    return int(np.ceil((z * sd / delta) ** 2))


def rows_to_detect(a: Sequence[float], b: Sequence[float], alpha: float = 0.05, power: float = 0.8) -> int | None:
    """About how many held-out rows a paired test needs to detect the observed mean difference
    with the given power (normal approximation on the per-example differences); None when there
    is no difference to detect."""
    import numpy as np

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    delta = abs(float(d.mean())) if len(d) else 0.0
    sd = float(d.std(ddof=1)) if len(d) > 1 else 0.0
    return _rows_needed(delta, sd, alpha, power)


# Their names before 2026-12-03, kept for code that imports them.
paired_bootstrap, paired_bootstrap_f1 = paired_difference, paired_difference_f1
