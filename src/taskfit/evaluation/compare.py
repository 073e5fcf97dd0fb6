"""Compare and decide: the scorecard, paired significance tests, thresholds, and a verdict.

Every candidate was scored on the same held-out rows, so each fine-tuned candidate is tested
against the best baseline *pairwise*: McNemar's exact test for right/wrong labels, a paired
bootstrap of the per-example score otherwise. A difference that the test cannot tell from noise is
reported as such, with about how many rows would be needed to tell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from taskfit import stats
from taskfit.config import LOWER_IS_BETTER
from taskfit.records import EvalResult
from taskfit.tasks import MAIN_METRIC

FINETUNED = "fine-tuned"
ALPHA = 0.05

# Columns per task kind: (metric, header, shown as a share?)
COLUMNS: dict[str, list[tuple[str, str, bool]]] = {
    "classify": [("accuracy", "accuracy [95% CI]", True), ("macro_f1", "macro-F1 [95% CI]", True),
                 ("free_valid_rate", "valid labels, free decoding", True), ("coverage", "coverage", True),
                 ("accuracy_raw", "accuracy, no fallback", True),
                 ("ece", "ECE", False)],
    "extract": [("field_f1", "field F1 [95% CI]", True), ("exact_match", "exact record", True),
                ("valid_rate", "schema-valid", True), ("free_valid_rate", "schema-valid, unconstrained", True),
                ("missing_fields", "missing fields", False), ("invented_fields", "invented fields", False)],
    "qa": [("f1", "F1 [95% CI]", True), ("answerable_exact_match", "EM (answerable)", True),
           ("refusal_precision", "refusal P", True), ("refusal_recall", "refusal R", True),
           ("unsupported_rate", "unsupported answers", True)],
    "generate": [("rouge_l", "ROUGE-L [95% CI]", True), ("chrf", "chrF", True),
                 ("style_match", "style match", True), ("length_compliance", "length OK", True),
                 ("format_compliance", "house rules OK", True), ("words_mean", "words", False)],
    # dpo: held-out pairs where the chosen answer has the higher mean log-probability per token
    "preference": [("preference_accuracy", "prefers chosen (per token)", True),
                   ("summed_preference_accuracy", "prefers chosen (summed)", True)],
}


def is_finetuned(name: str) -> bool:
    return name.startswith(FINETUNED)


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _cell(m: dict[str, float], key: str, share: bool) -> str:
    if key not in m:
        return "n/a"
    text = _pct(m[key]) if share else (f"{m[key]:.0f}" if m[key] == int(m[key]) else f"{m[key]:.3f}")
    if f"{key}_ci_low" in m:
        text += f" [{_pct(m[key + '_ci_low'])}, {_pct(m[key + '_ci_high'])}]"
    return text


def passes(metric: str, value: float, threshold: float) -> bool:
    return value <= threshold if metric in LOWER_IS_BETTER else value >= threshold


def threshold_checks(result: EvalResult, thresholds: dict[str, float]) -> dict[str, bool | None]:
    """Pass/fail per threshold; None when the candidate has no such metric."""
    return {k: (passes(k, result.metrics[k], v) if k in result.metrics else None)
            for k, v in thresholds.items()}


@dataclass
class PairedTest:
    candidate: str
    against: str
    test: str
    difference: float  # mean per-example difference (candidate - against), in the main metric's units
    ci: tuple[float, float] | None
    p_value: float
    rows_needed: int | None

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def paired_test(kind: str, a: EvalResult, b: EvalResult) -> PairedTest:
    if len(a.per_example) != len(b.per_example):
        raise ValueError(f"{a.candidate} and {b.candidate} were scored on different rows "
                         f"({len(a.per_example)} and {len(b.per_example)})")
    needed = stats.rows_to_detect(a.per_example, b.per_example)
    if kind in ("classify", "preference"):  # right/wrong per row
        p = stats.mcnemar(a.per_example, b.per_example)
        diff = sum(a.per_example) / len(a.per_example) - sum(b.per_example) / len(b.per_example)
        return PairedTest(a.candidate, b.candidate, "McNemar (exact)", diff, None, p, needed)
    diff, ci, p = stats.paired_bootstrap(a.per_example, b.per_example)
    return PairedTest(a.candidate, b.candidate, "paired bootstrap", diff, ci, p, needed)


def cost_per_1k(m: dict[str, float]) -> float | None:
    return m.get("cost_per_1k_usd")


@dataclass
class Scorecard:
    kind: str
    main: str
    results: list[EvalResult]
    thresholds: dict[str, float]
    tests: list[PairedTest] = field(default_factory=list)
    verdict: str = ""
    warnings: list[str] = field(default_factory=list)
    reviews: list[str] = field(default_factory=list)  # blind human review results, in words
    notes: list[str] = field(default_factory=list)  # other findings in words (an export's agreement)

    @property
    def header(self) -> list[str]:
        return (["candidate"] + [h for _, h, _ in COLUMNS[self.kind]]
                + ["latency p50 / p95 (ms)", "prompt tokens", "cost / 1k queries", "size",
                   f"vs best baseline ({self.main})", "thresholds"])

    def rows(self) -> list[list[str]]:
        tests = {t.candidate: t for t in self.tests}
        out = []
        for r in self.results:
            m = r.metrics
            cost = cost_per_1k(m)
            t = tests.get(r.candidate)
            versus = (f"{100 * t.difference:+.1f} pts, p={t.p_value:.3g}" if t else "-")
            checks = threshold_checks(r, self.thresholds)
            out.append([r.candidate]
                       + [_cell(m, key, share) for key, _, share in COLUMNS[self.kind]]
                       + [f"{1000 * m.get('latency_p50_s', 0):.0f} / {1000 * m.get('latency_p95_s', 0):.0f}",
                          f"{m.get('prompt_tokens_mean', 0):.0f}",
                          f"${cost:.4f}" if cost is not None else "n/a",
                          _size(m), versus,
                          ", ".join(f"{k} {'pass' if ok else 'FAIL' if ok is not None else 'n/a'}"
                                    for k, ok in checks.items()) or "-"])
        return out

    def markdown(self) -> list[str]:
        return (["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
                + ["| " + " | ".join(row) + " |" for row in self.rows()])

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "main_metric": self.main, "verdict": self.verdict,
                "warnings": self.warnings, "reviews": self.reviews, "notes": self.notes, "thresholds": self.thresholds,
                "candidates": {r.candidate: {**r.metrics, "n": r.n,
                                             "thresholds": threshold_checks(r, self.thresholds)}
                               for r in self.results},
                "paired_tests": [t.__dict__ for t in self.tests]}


def _size(m: dict[str, float]) -> str:
    if "params_m" not in m:
        return "n/a"
    params = f"{m['params_m']:.0f}M" if m["params_m"] >= 10 else f"{m['params_m']:.2g}M"
    return f"{params} params" + (f" + {m['adapter_mb']:.1f} MB adapter" if m.get("adapter_mb") else "")


def build_scorecard(results: Sequence[EvalResult], thresholds: dict[str, float]) -> Scorecard:
    """The scorecard with its paired tests and verdict, from results scored on the same rows."""
    if not results:
        raise ValueError("nothing to compare: no candidate has been evaluated")
    kind = results[0].kind
    main = MAIN_METRIC[kind]
    card = Scorecard(kind=kind, main=main, results=list(results), thresholds=dict(thresholds))
    baselines = [r for r in results if not is_finetuned(r.candidate)]
    tuned = [r for r in results if is_finetuned(r.candidate)]
    if baselines:
        best = max(baselines, key=lambda r: r.metrics[main])
        card.tests = [paired_test(kind, r, best) for r in tuned]
    card.verdict = verdict(card, baselines, tuned)
    return card


def _cheaper(a: EvalResult, b: EvalResult) -> str:
    """How ``a`` compares with ``b`` on what it costs to run, in words (empty when alike)."""
    pa, pb = a.metrics.get("prompt_tokens_mean", 0), b.metrics.get("prompt_tokens_mean", 0)
    la, lb = a.metrics.get("latency_p50_s", 0), b.metrics.get("latency_p50_s", 0)
    def times(r: float) -> str:
        return f"{r:.1f}x" if r < 10 else f"{r:,.0f}x"

    words = []
    if pa and pb and pb / pa >= 1.5:
        words.append(f"{times(pb / pa)} fewer prompt tokens")
    if la and lb and lb / la >= 1.5:
        words.append(f"{times(lb / la)} faster")
    return ", ".join(words)


def verdict(card: Scorecard, baselines: list[EvalResult], tuned: list[EvalResult]) -> str:
    main = card.main.replace("_", "-")
    if not baselines:
        return "No baseline was evaluated: run `taskfit baseline` so the fine-tune has something to beat."
    best = max(baselines, key=lambda r: r.metrics[card.main])
    score = f"{100 * best.metrics[card.main]:.1f}% {main}"
    if not tuned:
        return (f"Best baseline so far: {best.candidate} ({score}). Fine-tune with `taskfit train`, "
                "then `taskfit eval --run RUN` and `taskfit compare` to see whether it beats it.")
    top = max(tuned, key=lambda r: r.metrics[card.main])
    test = next(t for t in card.tests if t.candidate == top.candidate)
    gain = 100 * test.difference
    where = f"({test.test}, p={test.p_value:.3g}, {top.n} held-out rows)"
    if test.significant and gain > 0:
        extra = _cheaper(top, best)
        return (f"Keep the fine-tuned adapter: {gain:+.1f} points {main} over {best.candidate} "
                f"{where}{', and ' + extra if extra else ''}.")
    if test.significant:
        extra = _cheaper(best, top)
        return (f"Fine-tuning is not worth it here: {best.candidate} scores {-gain:.1f} points {main} "
                f"more than the fine-tuned model {where}{', with ' + extra if extra else ''}. "
                f"Keep {best.candidate}.")
    if test.rows_needed and test.rows_needed > top.n:
        card.warnings.append(f"The eval set is too small to detect a difference of {abs(gain):.1f} "
                             f"points: about {test.rows_needed} held-out rows would be needed "
                             f"(80% power, 5% level), and there are {top.n}.")
    cheap, dear = _cheaper(best, top), _cheaper(top, best)
    if cheap:
        advice = f"{best.candidate} costs less ({cheap}): keep it unless more held-out data shows a gain."
    elif dear:
        advice = (f"At the same measured quality the fine-tuned model is cheaper to run ({dear}); keep it "
                  f"if that matters more than not maintaining a fine-tune, or evaluate on more rows.")
    else:
        advice = "Evaluate on more held-out rows before paying for the fine-tune."
    return (f"Not proven: the fine-tuned model is {gain:+.1f} points {main} from {best.candidate}, "
            f"within what chance gives {where}. {advice}")
