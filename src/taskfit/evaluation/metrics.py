"""Scorers: pure functions from predictions to numbers."""

from __future__ import annotations

from typing import Sequence

from taskfit.records import EvalResult, Example, Prediction


def _percentile(values: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else 0.0


def _accuracy_f1(labels: list[str], y_true: list[str], y_pred: list[str]) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, f1_score

    present = [lab for lab in labels if lab in set(y_true) | set(y_pred)]
    return (float(accuracy_score(y_true, y_pred)),
            float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)))


def _macro_f1_counts(t, p, k):
    """Macro-F1 from integer-coded labels, over the classes present in ``t`` or ``p``."""
    import numpy as np

    tp = np.bincount(t[t == p], minlength=k)
    true_n = np.bincount(t, minlength=k)
    pred_n = np.bincount(p, minlength=k)
    present = (true_n + pred_n) > 0
    denom = true_n + pred_n
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    return float(f1[present].mean()) if present.any() else 0.0


def bootstrap_ci(labels: list[str], y_true: list[str], y_pred: list[str], n_boot: int = 1000,
                 seed: int = 0) -> dict[str, tuple[float, float]]:
    """95% percentile-bootstrap intervals for accuracy and macro-F1 (resampling examples)."""
    import numpy as np

    index = {lab: i for i, lab in enumerate(dict.fromkeys([*labels, *y_true, *y_pred]))}
    t = np.array([index[y] for y in y_true])
    p = np.array([index[y] for y in y_pred])
    rng = np.random.default_rng(seed)
    accs, f1s = [], []
    for _ in range(n_boot):
        idx = rng.integers(0, len(t), len(t))
        accs.append(float((t[idx] == p[idx]).mean()))
        f1s.append(_macro_f1_counts(t[idx], p[idx], len(index)))
    return {"accuracy": (_percentile(accs, 2.5), _percentile(accs, 97.5)),
            "macro_f1": (_percentile(f1s, 2.5), _percentile(f1s, 97.5))}


def score_classify(candidate: str, labels: list[str], examples: Sequence[Example],
                   predictions: Sequence[Prediction], valid_rate: float | None = None,
                   n_boot: int = 1000) -> EvalResult:
    """Accuracy, macro-F1 (with 95% CIs), per-class P/R/F1, confusion matrix, latency, tokens.

    ``valid_rate`` is the share of freely generated answers that were a label of the taxonomy,
    measured separately (label scoring is always valid by construction).
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    by_id = {p.example_id: p for p in predictions}
    missing = [ex.id for ex in examples if ex.id not in by_id]
    if missing:
        raise ValueError(f"{candidate}: no prediction for {len(missing)} examples, e.g. {missing[:3]}")
    preds = [by_id[ex.id] for ex in examples]
    y_true = [ex.target for ex in examples]
    y_pred = [p.output for p in preds]
    accuracy, macro_f1 = _accuracy_f1(labels, y_true, y_pred)
    ci = bootstrap_ci(labels, y_true, y_pred, n_boot=n_boot)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                       "support": int(s[i])} for i, lab in enumerate(labels)}
    latencies = [x.latency_s for x in preds]
    metrics = {
        "accuracy": accuracy, "accuracy_ci_low": ci["accuracy"][0], "accuracy_ci_high": ci["accuracy"][1],
        "macro_f1": macro_f1, "macro_f1_ci_low": ci["macro_f1"][0], "macro_f1_ci_high": ci["macro_f1"][1],
        "valid_rate_constrained": sum(x.valid for x in preds) / len(preds),
        "latency_p50_s": _percentile(latencies, 50), "latency_p95_s": _percentile(latencies, 95),
        "prompt_tokens_mean": sum(x.prompt_tokens for x in preds) / len(preds),
    }
    if valid_rate is not None:
        metrics["valid_rate"] = valid_rate
    confusion = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return EvalResult(candidate=candidate, metrics=metrics, per_class=per_class,
                      confusion=confusion, labels=list(labels), n=len(examples))
