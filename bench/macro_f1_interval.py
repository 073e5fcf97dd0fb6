"""Benchmark: how often the scorecard's 95% macro-F1 interval covers the classifier's macro-F1 on
the whole population, and how wide it is, for many classes of a few held-out rows each.

A simulated classifier over 150 classes: class ``c`` is answered right with its own probability
(drawn once from Beta(6, 1.5), mean 0.8), otherwise as one of the next five classes. Its
population macro-F1 is taken from 2,000 rows a class. Each trial draws a held-out set of
``--per`` rows a class (1 and 3: a small held-out split of clinc150's 151 intents has one or a
few rows each), scores it, and builds both intervals with 500 resamples:

* ``rows``: this checkout's ``taskfit.tasks.classify.bootstrap_ci`` (rows resampled; a resample
  averages over the classes it has true rows of, plus those the held-out set only predicts);
* ``within-class``: the interval before it, rows resampled within each true class (every class
  keeps its support), with the same bias-corrected percentiles, written out here.

Declared before the comparison was run: 200 trials a setting; the new interval succeeds when on
one row a class its width is above 0 and its coverage above the within-class interval's, and on
three rows a class its coverage is within 5 points of the within-class interval's.

Added after: how often each interval covers the figure the held-out set estimates, the mean of
the held-out macro-F1 over 2,000 sets (``covers mean``). With few rows a class the held-out
figure itself runs below the population's, which no interval around it can mend; this column is
the interval's own coverage.

    PYTHONPATH=src .venv/bin/python bench/macro_f1_interval.py
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import norm

from taskfit.tasks.classify import _macro_f1_counts, bootstrap_ci

K = 150


def within_class(t: np.ndarray, p: np.ndarray, k: int, n_boot: int, seed: int) -> tuple[float, float]:
    """The interval taskfit gave before: rows resampled within each true class, BC percentiles."""
    rng = np.random.default_rng([seed, 1])
    order = np.argsort(t, kind="stable")
    _, first, size = np.unique(t[order], return_index=True, return_counts=True)
    start, span = np.repeat(first, size), np.repeat(size, size)
    f1 = np.array([_macro_f1_counts(t[w], p[w], k) for w in
                   (order[start + (rng.random(len(t)) * span).astype(np.int64)] for _ in range(n_boot))])
    estimate = _macro_f1_counts(t, p, k)
    below = (np.sum(f1 < estimate) + 0.5 * np.sum(f1 == estimate)) / len(f1)
    z0 = float(norm.ppf(np.clip(below, 1 / (n_boot + 1), n_boot / (n_boot + 1))))
    low, high = (100 * float(norm.cdf(2 * z0 + z)) for z in (norm.ppf(0.025), norm.ppf(0.975)))
    return float(np.percentile(f1, low)), float(np.percentile(f1, high))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--resamples", type=int, default=500)
    args = ap.parse_args()
    right = np.random.default_rng(42).beta(6, 1.5, K)

    def held_out(per: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        t = np.repeat(np.arange(K), per)
        wrong = rng.random(len(t)) >= right[t]
        return t, np.where(wrong, (t + rng.integers(1, 6, len(t))) % K, t)

    population = _macro_f1_counts(*held_out(2000, 1), K)
    labels = [str(i) for i in range(K)]
    print(f"population macro-F1 {population:.3f} ({K} classes)")
    print(f"{'rows a class':>12} | {'held-out mean (sd)':>18} | {'method':>12} | {'coverage':>8} | "
          f"{'covers mean':>11} | {'mean width':>10}")
    for per in (1, 3):
        expected = np.mean([_macro_f1_counts(*held_out(per, 10_000 + s), K) for s in range(2000)])
        estimates, covered, widths = [], {"rows": 0, "within-class": 0}, {"rows": [], "within-class": []}
        covers_mean = {"rows": 0, "within-class": 0}
        for trial in range(args.trials):
            t, p = held_out(per, 100 + trial)
            estimates.append(_macro_f1_counts(t, p, K))
            for name, (low, high) in (("rows", bootstrap_ci(labels, [str(x) for x in t], [str(x) for x in p],
                                                            n_boot=args.resamples, seed=trial)["macro_f1"]),
                                      ("within-class", within_class(t, p, K, args.resamples, trial))):
                covered[name] += low <= population <= high
                covers_mean[name] += low <= expected <= high
                widths[name].append(high - low)
        for name in covered:
            print(f"{per:>12} | {np.mean(estimates):>11.3f} ({np.std(estimates):.3f}) | {name:>12} | "
                  f"{covered[name] / args.trials:>8.2f} | {covers_mean[name] / args.trials:>11.2f} | "
                  f"{np.mean(widths[name]):>10.3f}")


if __name__ == "__main__":
    main()
