"""Drift statistics: is a window of traffic still like the training data?

Three kinds of signal, each compared between a reference (the training rows) and one window:

* a number per request (input length, the share of out-of-vocabulary words): the two-sample
  Kolmogorov-Smirnov test on a small reference, the Wasserstein distance in reference standard
  deviations on a large one (Evidently's defaults: above 1,000 reference rows every difference is
  significant, so a distance with a threshold decides);
* a category per answer (the label mix, refusals, empty fields): the chi-square test on a small
  reference, the Jensen-Shannon distance on a large one, *and* the population stability index
  reaching its alert band, so that a significant but immaterial change does not alert. PSI's
  bands are the credit-scoring practice: below 0.1 stable, 0.1 to 0.2 moderate, above 0.2 a
  significant shift;
* the text itself: a domain classifier (TF-IDF words and word pairs, logistic regression) learns
  to tell the window's requests from training rows; its cross-validated ROC AUC is compared with
  a high percentile of the AUCs it reaches when the labels are shuffled (chance, for these sizes),
  and the words and requests most typical of the window are the reason shown.

Pure functions of texts and numbers: nothing here reads files or the config file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

PSI_FLOOR = 1e-4  # a category absent on one side counts as this share, so PSI stays finite
CV_FOLDS = 5
TOP_WORDS = 10
TOP_REQUESTS = 5


@dataclass(frozen=True)
class Signal:
    """One signal of one window against the reference.

    ``statistic`` is what ``threshold`` is compared with (a p-value for the tests, which drift
    below it; a distance or an AUC, which drift above it). ``reference`` and ``current`` summarise
    each side (mean and percentiles, or each category's share); ``detail`` holds what explains a
    content drift (words, requests, the shuffled AUCs)."""

    name: str
    kind: str  # numeric | categorical | content
    test: str
    statistic: float
    threshold: float
    drift: bool
    reference: dict[str, Any]
    current: dict[str, Any]
    p_value: float | None = None
    psi: float | None = None
    band: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    psi_alert: float | None = None  # a category mix drifts only with PSI at this or above, too

    @property
    def rule(self) -> str:
        """When the statistic drifts: "below 0.01" (a p-value) or "above 0.586", and for a
        category mix the PSI it needs as well ("above 0.1 with PSI at least 0.2")."""
        return (f"{'below' if self.p_value is not None else 'above'} {self.threshold:.3g}"
                + (f" with PSI at least {self.psi_alert:g}" if self.psi_alert is not None else ""))

    def reason(self) -> str:
        """Why the signal drifted (or how far it is from drifting), in one sentence."""
        if self.kind == "numeric":
            r, c = self.reference, self.current
            how = (f"p={self.p_value:.2g} (below {self.threshold:g})" if self.p_value is not None
                   else f"{self.statistic:.3f} (above {self.threshold:g})")
            against = self.detail.get("against", "training")
            return (f"{self.name}: {self.test} {how}; mean {r['mean']:.3g} in {against}, {c['mean']:.3g} here "
                    f"(median {r['p50']:.3g} -> {c['p50']:.3g})")
        if self.kind == "categorical":
            moved = sorted(self.reference["shares"], key=lambda k: -abs(self.current["shares"].get(k, 0.0)
                                                                        - self.reference["shares"].get(k, 0.0)))
            shown = ", ".join(f"{k} {100 * self.reference['shares'].get(k, 0):.0f}% -> "
                              f"{100 * self.current['shares'].get(k, 0):.0f}%" for k in moved[:3])
            test = (f"chi-square p={self.p_value:.2g}" if self.p_value is not None
                    else f"Jensen-Shannon distance {self.statistic:.3f}")
            return f"{self.name}: PSI {self.psi:.2f} ({self.band}), {test}; most changed: {shown}"
        words = ", ".join(f"'{w['word']}' ({100 * w['current_share']:.0f}% of these requests, "
                          f"{100 * w['reference_share']:.0f}% of training rows)"
                          for w in self.detail.get("words", [])[:3])
        example = self.detail.get("requests", [{}])[0].get("text", "")
        one_line = " ".join(example.split())
        return (f"{self.name}: a classifier tells these requests from training rows with ROC AUC "
                f"{self.statistic:.3f} (drift above {self.threshold:.3f}: the {self.detail['percentile']:g}th "
                f"percentile of chance, {self.detail['chance_auc']:.3f} from {len(self.detail['null_aucs'])} "
                f"shuffles, and at least {self.detail['min_auc']:g}); words most typical of them: "
                f"{words or 'none'}; most typical request: {one_line[:160]!r}")


def summary(values: Sequence[float]) -> dict[str, Any]:
    import numpy as np

    v = np.asarray(values, dtype=float)
    if not len(v):
        return {"n": 0, "mean": 0.0, "p10": 0.0, "p50": 0.0, "p90": 0.0}
    p10, p50, p90 = np.percentile(v, [10, 50, 90])
    return {"n": int(len(v)), "mean": float(v.mean()), "p10": float(p10), "p50": float(p50), "p90": float(p90)}


def psi(reference: Sequence[float], current: Sequence[float]) -> float:
    """Population stability index of two category distributions (counts or shares, same order):
    sum over categories of (current - reference) * ln(current / reference), shares floored at
    ``PSI_FLOOR``. 0 for identical mixes; symmetric in its two arguments."""
    import numpy as np

    r = np.asarray(reference, dtype=float)
    c = np.asarray(current, dtype=float)
    r = np.maximum(r / r.sum(), PSI_FLOOR)
    c = np.maximum(c / c.sum(), PSI_FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


def psi_band(value: float, warn: float, alert: float) -> str:
    return "significant" if value >= alert else "moderate" if value >= warn else "stable"


def compare_numeric(name: str, reference: Sequence[float], current: Sequence[float], spec: Any,
                    against: str = "training") -> Signal:
    """KS test (``spec.p_value``) up to ``spec.large_reference`` reference values, else the
    Wasserstein distance divided by the reference's standard deviation (``spec.distance_threshold``).
    ``against``: what the reference values are measured on, as the reason names it."""
    import numpy as np
    from scipy.stats import ks_2samp, wasserstein_distance

    ref, cur = summary(reference), summary(current)
    if len(reference) <= spec.large_reference:
        result = ks_2samp(reference, current)
        p = float(result.pvalue)
        return Signal(name, "numeric", "Kolmogorov-Smirnov", p, spec.p_value, p < spec.p_value, ref, cur,
                      p_value=p, detail={"ks_statistic": float(result.statistic), "against": against})
    scale = float(np.std(reference)) or 1.0  # a constant reference: the distance in its own units
    distance = float(wasserstein_distance(reference, current)) / scale
    return Signal(name, "numeric", "Wasserstein distance (reference SDs)", distance, spec.distance_threshold,
                  distance > spec.distance_threshold, ref, cur, detail={"against": against})


def compare_categorical(name: str, reference: Sequence[str], current: Sequence[str], spec: Any) -> Signal:
    """A category mix: chi-square (``spec.p_value``) up to ``spec.large_reference`` reference rows,
    else the Jensen-Shannon distance (``spec.distance_threshold``); drift needs that *and* PSI at
    ``spec.psi_alert`` or above."""
    from collections import Counter

    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency

    r_counts, c_counts = Counter(reference), Counter(current)
    categories = sorted(set(r_counts) | set(c_counts), key=lambda k: (-r_counts[k], -c_counts[k], k))
    r = [r_counts[k] for k in categories]
    c = [c_counts[k] for k in categories]
    value = psi(r, c)
    band = psi_band(value, spec.psi_warn, spec.psi_alert)
    shares = lambda counts, n: {k: v / n for k, v in zip(categories, counts)}  # noqa: E731
    ref = {"n": len(reference), "shares": shares(r, max(1, len(reference)))}
    cur = {"n": len(current), "shares": shares(c, max(1, len(current)))}
    material = value >= spec.psi_alert
    if len(reference) <= spec.large_reference:
        p = 1.0
        if len(categories) > 1:
            p = float(chi2_contingency([r, c], correction=False).pvalue)
        return Signal(name, "categorical", "chi-square", p, spec.p_value, p < spec.p_value and material,
                      ref, cur, p_value=p, psi=value, band=band, psi_alert=spec.psi_alert)
    distance = float(jensenshannon([x / len(reference) for x in r], [x / max(1, len(current)) for x in c]))
    return Signal(name, "categorical", "Jensen-Shannon distance", distance, spec.distance_threshold,
                  distance > spec.distance_threshold and material, ref, cur, psi=value, band=band,
                  psi_alert=spec.psi_alert)


def _sample(items: Sequence[str], most: int, rng: Any) -> list[str]:
    if len(items) <= most:
        return list(items)
    return [items[i] for i in sorted(rng.choice(len(items), most, replace=False))]


# English function words: never the reason shown for a drift (sklearn's stop-word list would also
# hide words a helpdesk drifts towards: bill, call, amount, system, back).
FUNCTION_WORDS = frozenset("""
a an the this that these those my your his her its our their me you him us them i we he she it they
to of in on at by for with from about into over under after before between through during without
and or but if so as than then because while though
is are was were be been being am do does did done have has had having can could will would shall
should may might must
not no there here what which who whom whose when where why how
""".split())


_PLACEHOLDER = re.compile(r"<[A-Z][A-Z_]*>")  # the request log's redactions: <EMAIL>, <PHONE>, <IBAN>


def _unredacted_words(text: str) -> str:
    """A request's text for the domain classifier: lower-cased, without the request log's
    redaction placeholders, whose kind names ("email", "iban", "phone") were shown as the words
    typical of a drifted window, though no customer wrote them."""
    return _PLACEHOLDER.sub(" ", text).lower()


def _typical_words(X: Any, n_reference: int, weights: Any, names: Sequence[str]) -> list[dict[str, Any]]:
    """The words and pairs weighing most towards the window, among those more common there than
    in training. Terms found in exactly the same requests ("aurora", "x2", "aurora x2") are one
    entry, its words joined by " / " (pairs shown only where no single word stands for them).
    Terms made of English function words alone ("the", "for an") are left out: they weigh in the
    classifier, and tell a reader nothing."""
    import numpy as np

    present = (X > 0).tocsc().astype(float)
    cur_share = np.asarray(present[n_reference:].mean(axis=0)).ravel()
    ref_share = np.asarray(present[:n_reference].mean(axis=0)).ravel()
    groups: dict[tuple[int, ...], dict[str, Any]] = {}
    for i in np.argsort(-weights)[: 20 * TOP_WORDS]:
        if weights[i] <= 0 or cur_share[i] <= ref_share[i] or set(str(names[i]).split()) <= FUNCTION_WORDS:
            continue
        key = tuple(present[:, i].indices)
        group = groups.setdefault(key, {"terms": [], "weight": float(weights[i]), "current_share": float(cur_share[i]),
                                        "reference_share": float(ref_share[i])})
        group["terms"].append(str(names[i]))
        if len(groups) > TOP_WORDS:
            break
    out = []
    for group in list(groups.values())[:TOP_WORDS]:
        terms = group.pop("terms")
        shown = sorted(t for t in terms if " " not in t) or sorted(terms)
        out.append({"word": " / ".join(shown), **group})
    return out


def content_drift(reference: Sequence[str], current: Sequence[str], spec: Any,
                  name: str = "request content") -> Signal | None:
    """The domain classifier (see the module docstring). Returns None when the texts hold no
    word to learn from (min_df: a word or pair must occur in two requests to count)."""
    import numpy as np
    from scipy.stats import norm
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    rng = np.random.default_rng(spec.seed)
    ref = _sample(reference, spec.domain_max_rows, rng)
    cur = _sample(current, spec.domain_max_rows, rng)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, preprocessor=_unredacted_words)
    try:
        X = vectorizer.fit_transform(ref + cur)  # no labels seen: fitting on both sides leaks nothing
    except ValueError:  # empty vocabulary
        return None
    y = np.array([0] * len(ref) + [1] * len(cur))
    folds = StratifiedKFold(n_splits=min(CV_FOLDS, len(cur), len(ref)), shuffle=True, random_state=spec.seed)

    def model() -> LogisticRegression:
        return LogisticRegression(solver="liblinear", class_weight="balanced")

    def out_of_fold(labels: np.ndarray) -> np.ndarray:
        return cross_val_predict(model(), X, labels, cv=folds, method="predict_proba")[:, 1]

    proba = out_of_fold(y)
    auc = float(roc_auc_score(y, proba))
    null = [float(roc_auc_score(s, out_of_fold(s))) for s in (rng.permutation(y) for _ in range(spec.domain_permutations))]
    # The percentile of chance from a normal fitted to the shuffled AUCs: with a few dozen
    # shuffles, their own top order statistic is too noisy an estimate of a high percentile.
    chance = float(np.mean(null) + norm.ppf(spec.domain_percentile / 100) * np.std(null, ddof=1))
    threshold = max(chance, spec.domain_min_auc)
    # The reason: the words (and pairs) weighing most towards the window, among those more common
    # there than in training, and the window's requests the held-out folds found most typical.
    weights = model().fit(X, y).coef_[0]
    words = _typical_words(X, len(ref), weights, vectorizer.get_feature_names_out())
    typical = np.argsort(-proba[len(ref):])[:TOP_REQUESTS]
    requests = [{"text": cur[i], "probability": float(proba[len(ref) + i])} for i in typical]
    detail = {"words": words, "requests": requests, "null_aucs": null, "chance_auc": chance,
              "percentile": spec.domain_percentile, "min_auc": spec.domain_min_auc, "reference_rows": len(ref),
              "current_rows": len(cur)}
    return Signal(name, "content", "domain classifier ROC AUC", auc, threshold, auc > threshold,
                  {"n": len(ref)}, {"n": len(cur)}, detail=detail)
