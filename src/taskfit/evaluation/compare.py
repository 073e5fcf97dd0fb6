"""Compare and decide: the scorecard, paired significance tests, thresholds, and a verdict.

Every candidate was scored on the same held-out rows, so each fine-tuned candidate is tested
against the best baseline *pairwise*: McNemar's exact test for right/wrong labels, a paired
bootstrap of the per-example score otherwise. A difference that the test cannot tell from noise is
reported as such, with about how many rows would be needed to tell.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

from taskfit import stats
from taskfit.errors import ConfigError, DataError
from taskfit.records import EvalResult, ForgettingResult
from taskfit.tasks import scoring
from taskfit.tasks.base import CLASSICAL, EMBEDDINGS, ENDPOINT, FEW_SHOT, PROMPT_ONLY, RAG
from taskfit.tasks.extract import shown_fields

FINETUNED = "fine-tuned"
SYNTHETIC_SUFFIX = "-synthetic"  # a fine-tuned candidate trained on synthetic rows too: fine-tuned-synthetic
ALPHA = 0.05
MOST_FIELDS = 30  # extract: rows in the per-field table (those with the most support)
RESAMPLES = 2000  # the bootstrap's resamples (intervals) and the permutation test's random swaps (p-values)
PERMUTATION = "paired permutation"  # a PairedTest's name for the swap test of stats.paired_difference(_f1)


# Baselines from the cheapest to run to the dearest: of candidates a paired test cannot tell
# apart, the verdict and `taskfit advise` keep the first.
CHEAPEST_FIRST = (CLASSICAL, EMBEDDINGS, PROMPT_ONLY, FEW_SHOT, RAG, ENDPOINT)


def is_finetuned(name: str) -> bool:
    return name.startswith(FINETUNED)


def curve_name(base: str, rows: int) -> str:
    """The candidate name of a learning-curve run of ``taskfit advise``: ``fine-tuned@48rows``."""
    return f"{base}@{rows}rows"


def is_curve_point(name: str) -> bool:
    """A learning-curve run of ``taskfit advise`` (a fine-tune on a sample of the rows)."""
    return is_finetuned(name) and "@" in name


def curve_rows(name: str) -> int:
    """The training rows of a learning-curve run's candidate (:func:`curve_name`): 48 for
    ``fine-tuned@48rows``, 0 for a name that holds none."""
    rows = name.rpartition("@")[2].removesuffix("rows")
    return int(rows) if rows.isdigit() else 0


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _cell(m: dict[str, float], key: str, share: bool) -> str:
    if key not in m:
        return "n/a"
    text = _pct(m[key]) if share else (f"{m[key]:.0f}" if m[key] == int(m[key]) else f"{m[key]:.3f}")
    if f"{key}_ci_low" in m:
        text += f" [{_pct(m[key + '_ci_low'])}, {_pct(m[key + '_ci_high'])}]"
    return text


def passes(metric: str, value: float, threshold: float, lower_is_better: frozenset[str] = frozenset()) -> bool:
    return value <= threshold if metric in lower_is_better else value >= threshold


def threshold_checks(result: EvalResult, thresholds: dict[str, float]) -> dict[str, bool | None]:
    """Pass/fail per threshold; None when the candidate has no such metric."""
    lower = scoring(result.kind).lower_is_better
    return {k: (passes(k, result.metrics[k], v, lower) if k in result.metrics else None)
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
    resamples: int | None = None  # for a resampling test; None for an exact one

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    @property
    def p_shown(self) -> str:
        """The p-value as a person reads it: "0.0312", or "< 0.001" where the test cannot say more.

        The permutation test's p-value is never 0 (the observed labelling counts among the
        swaps); a 0 with resamples is a paired bootstrap's from a scorecard saved before
        2026-12-03 (no resample beyond zero: below 2/B, B=2000: "< 0.001"). An exact test's
        p-value is printed as it is, except one that underflowed a float."""
        if self.p_value > 0:
            return f"{self.p_value:.3g}"
        if self.resamples:
            return f"< {2 / self.resamples:.2g}"
        return f"< {sys.float_info.min:.3g}"

    @property
    def p_text(self) -> str:
        shown = self.p_shown
        return f"p {shown}" if shown.startswith("<") else f"p={shown}"

    @property
    def p_method(self) -> str:
        """How ``p_value`` was computed, in words (scorecard.json keeps it beside the number)."""
        if self.resamples:
            return (f"two-sided paired permutation test: each row's two answers swapped at random, "
                    f"{self.resamples} times; the share of swaps whose difference is at least as far from zero as "
                    f"the one observed, counting the observed once more (so p >= 1/{self.resamples + 1})")
        if self.test == PERMUTATION:
            return (f"exact two-sided paired permutation test: all 2^n swaps of the rows' two answers (n <= "
                    f"{stats.EXACT_ROWS}); the share whose difference is at least as far from zero as the one observed")
        return "exact two-sided binomial test on the rows where exactly one candidate is right (McNemar)"


def paired_test(kind: str, a: EvalResult, b: EvalResult) -> PairedTest:
    if len(a.per_example) != len(b.per_example):
        raise DataError(f"{a.candidate} and {b.candidate} were scored on different rows "
                        f"({len(a.per_example)} and {len(b.per_example)}), so they cannot be compared pairwise",
                        hint="evaluate both again on the current held-out split (`taskfit baseline`, "
                             "`taskfit eval --run RUN`)")
    drawn = RESAMPLES if len(a.per_example) > stats.EXACT_ROWS else None  # else every swap: an exact test
    if a.per_example_counts and b.per_example_counts:  # a pooled F1 (extract's field F1), tested as pooled
        diff, ci, p = stats.paired_difference_f1(a.per_example_counts, b.per_example_counts, n_boot=RESAMPLES)
        needed = stats.rows_to_detect_f1(a.per_example_counts, b.per_example_counts)
        return PairedTest(a.candidate, b.candidate, PERMUTATION, diff, ci, p, needed, resamples=drawn)
    needed = stats.rows_to_detect(a.per_example, b.per_example)
    if scoring(kind).paired_test == "mcnemar":  # right/wrong per row
        p = stats.mcnemar(a.per_example, b.per_example)
        diff = sum(a.per_example) / len(a.per_example) - sum(b.per_example) / len(b.per_example)
        return PairedTest(a.candidate, b.candidate, "McNemar (exact)", diff, None, p, needed)
    diff, ci, p = stats.paired_difference(a.per_example, b.per_example, n_boot=RESAMPLES)
    return PairedTest(a.candidate, b.candidate, PERMUTATION, diff, ci, p, needed, resamples=drawn)


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
    keep: str | None = None  # the candidate the verdict keeps (None: none yet, or no baseline)
    versus: str = "best baseline"  # what :attr:`tests` test against, as the column's header names it
    warnings: list[str] = field(default_factory=list)
    reviews: list[str] = field(default_factory=list)  # blind human review results, in words
    notes: list[str] = field(default_factory=list)  # other findings in words (an export's agreement)
    # Each candidate trained with synthetic rows against the same candidate trained on real rows only.
    versus_real: list[PairedTest] = field(default_factory=list)
    # Each fine-tune of all the rows against the hosted endpoint, where that is not the best baseline
    # (a team moving off a hosted model asks this first; :attr:`tests` are against the best baseline).
    versus_endpoint: list[PairedTest] = field(default_factory=list)
    forgetting: list[ForgettingResult] = field(default_factory=list)  # what each fine-tune cost outside the task
    max_drop: float = 0.05  # eval.forgetting.max_drop

    @property
    def columns(self) -> Any:
        """The kind's own columns (its task module declares them)."""
        return scoring(self.kind).columns

    @property
    def header(self) -> list[str]:
        return (["candidate"] + [c.header for c in self.columns]
                + ["latency p50 / p95 (ms)", "prompt tokens", "cost / 1k queries", "size",
                   f"vs {self.versus} ({self.main})", "thresholds"])

    def rows(self) -> list[list[str]]:
        tests = {t.candidate: t for t in self.tests}
        out = []
        for r in self.results:
            m = r.metrics
            cost = cost_per_1k(m)
            t = tests.get(r.candidate)
            versus = (f"{100 * t.difference:+.1f} pts, {t.p_text}" if t else "-")
            checks = threshold_checks(r, self.thresholds)
            out.append([r.candidate]
                       + [_cell(m, c.metric, c.share) for c in self.columns]
                       + [f"{1000 * m['latency_p50_s']:.0f} / {1000 * m.get('latency_p95_s', 0):.0f}"
                          if "latency_p50_s" in m else "n/a",  # not timed (preference pairs are scored, not answered)
                          f"{m['prompt_tokens_mean']:.0f}" if "prompt_tokens_mean" in m else "n/a",
                          f"${cost:.4f}" if cost is not None else "n/a",
                          _size(m), versus,
                          ", ".join(f"{k} {'pass' if ok else 'FAIL' if ok is not None else 'n/a'}"
                                    for k, ok in checks.items()) or "-"])
        return out

    def markdown(self) -> list[str]:
        """The scorecard as Markdown lines, then each of :meth:`extra_tables` under its title."""
        lines = []
        for title, header, rows in [(None, self.header, self.rows()), *self.extra_tables()]:
            lines += ["", f"**{title}**", ""] if title else []
            lines += (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                      + ["| " + " | ".join(row) + " |" for row in rows])
        return lines

    def extra_tables(self) -> list[tuple[str, list[str], list[list[str]]]]:
        """Tables shown under the scorecard, as (title, header, rows). extract: accuracy / F1 per
        field for the best fine-tuned candidate and the best baseline, or for every version of a
        retrain's scorecard (every figure per field and candidate is in the HTML report); then the
        forgetting check (:meth:`forgetting_table`)."""
        forgetting = self.forgetting_table()
        return self._per_field_table() + ([forgetting] if forgetting else [])

    def _per_field_table(self) -> list[tuple[str, list[str], list[list[str]]]]:
        fielded = [r for r in self.results if r.per_class and not r.confusion]  # figures per field
        if self.versus != "best baseline":  # a retrained version against production: both, side by side
            shown = fielded
        else:
            tuned = [r for r in fielded if is_finetuned(r.candidate)]
            baselines = [r for r in fielded if not is_finetuned(r.candidate)]
            shown = [max(group, key=lambda r: r.metrics[self.main]) for group in (tuned, baselines) if group]
        names, every = shown_fields(shown, most=MOST_FIELDS), shown_fields(shown)
        if not names:
            return []
        title = "per field (accuracy / F1)" + (f", the {len(names)} of {len(every)} fields with the most "
                                               "support" if len(names) < len(every) else "")
        rows = [[k, str(max(r.per_class.get(k, {}).get("support", 0) for r in shown))]
                + [f"{_pct(r.per_class[k]['accuracy'])} / {_pct(r.per_class[k]['f1'])}" if k in r.per_class
                   else "n/a" for r in shown] for k in names]
        return [(title, ["field", "support"] + [r.candidate for r in shown], rows)]

    def forgetting_table(self) -> tuple[str, list[str], list[list[str]]] | None:
        """The forgetting check of each fine-tuned candidate measured, as (title, header, rows):
        the share of the general probe's questions the base and the fine-tuned model answer right
        (greedy, teacher-forced) and their log-probability per answer token, each change with its 95% paired-bootstrap interval over the
        items, and the mean KL(fine-tuned ‖ base) per token."""
        measured = [f for f in self.forgetting if not f.skipped]
        if not measured:
            return None
        first = measured[0]
        title = (f"outside the task: the general probe ({first.n} items from {first.probe}; "
                 f"{first.licence})")
        header = ["candidate", "answered right: base", "fine-tuned", "change [95% CI]",
                  "log-prob / answer token: base", "fine-tuned", "change [95% CI]",
                  "KL(fine-tuned ‖ base) / token", f"drop over max_drop ({100 * self.max_drop:.1f} pts)"]
        rows = []
        for f in measured:
            acc, acc_ci, _ = forgetting_change(f)
            ll, ll_ci, _ = stats.paired_difference(f.tuned_loglik, f.base_loglik, n_boot=RESAMPLES)
            rows.append([f.candidate, _pct(_mean(f.base_right)), _pct(_mean(f.tuned_right)),
                         f"{100 * acc:+.1f} pts [{100 * acc_ci[0]:+.1f}, {100 * acc_ci[1]:+.1f}]",
                         f"{_mean(f.base_loglik):.3f}", f"{_mean(f.tuned_loglik):.3f}",
                         f"{ll:+.3f} [{ll_ci[0]:+.3f}, {ll_ci[1]:+.3f}]", f"{_mean(f.kl):.4f} nats",
                         "yes" if -acc > self.max_drop else "no"])
        return title, header, rows

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "main_metric": self.main, "verdict": self.verdict, "keep": self.keep,
                "warnings": self.warnings, "reviews": self.reviews, "notes": self.notes, "thresholds": self.thresholds,
                "candidates": {r.candidate: {**r.metrics, "n": r.n,
                                             "thresholds": threshold_checks(r, self.thresholds)}
                               for r in self.results},
                "paired_tests": [{**t.__dict__, "p_value_shown": t.p_text, "p_value_method": t.p_method}
                                 for t in self.tests],
                "synthetic_vs_real_only": [{**t.__dict__, "p_value_shown": t.p_text, "p_value_method": t.p_method}
                                           for t in self.versus_real],
                "versus_endpoint": [{**t.__dict__, "p_value_shown": t.p_text, "p_value_method": t.p_method}
                                    for t in self.versus_endpoint],
                "forgetting": [_forgetting_json(f, self.max_drop) for f in self.forgetting]}

    def versus_endpoint_sentences(self) -> list[str]:
        """:attr:`versus_endpoint` in words, one sentence per fine-tune."""
        main = self.main.replace("_", "-")
        return [f"{t.candidate} against the hosted endpoint ({t.against}, not the best baseline): "
                f"{100 * t.difference:+.1f} points {main} ({t.test}, {t.p_text}"
                f"{'' if t.significant else ', within what chance gives'})." for t in self.versus_endpoint]

    def versus_real_sentences(self) -> list[str]:
        """:attr:`versus_real` in words, one sentence per pair."""
        main = self.main.replace("_", "-")
        return [f"{t.candidate} (real + synthetic training rows) against {t.against} (real rows only): "
                f"{100 * t.difference:+.1f} points {main} ({t.test}, {t.p_text}"
                f"{'' if t.significant else ', within what chance gives'})." for t in self.versus_real]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def forgetting_change(f: ForgettingResult) -> tuple[float, tuple[float, float], float]:
    """The share of the probe's questions the fine-tuned model answers right minus the base's: the
    difference, its 95% bootstrap interval and a two-sided p-value (paired permutation test over
    the items)."""
    return stats.paired_difference(f.tuned_right, f.base_right, n_boot=RESAMPLES)


def _forgetting_json(f: ForgettingResult, max_drop: float) -> dict[str, Any]:
    if f.skipped:
        return {"candidate": f.candidate, "skipped": f.skipped}
    change, ci, p = forgetting_change(f)
    ll, ll_ci, ll_p = stats.paired_difference(f.tuned_loglik, f.base_loglik, n_boot=RESAMPLES)
    return {"candidate": f.candidate, "probe": f.probe, "licence": f.licence, "items": f.n,
            "base_answered_right": _mean(f.base_right), "fine_tuned_answered_right": _mean(f.tuned_right),
            "answered_right_change": change, "answered_right_change_ci": list(ci), "answered_right_change_p": p,
            "base_loglik_per_answer_token": _mean(f.base_loglik),
            "fine_tuned_loglik_per_answer_token": _mean(f.tuned_loglik),
            "loglik_change": ll, "loglik_change_ci": list(ll_ci), "loglik_change_p": ll_p,
            "kl_per_token_nats": _mean(f.kl), "max_drop": max_drop, "warning": -change > max_drop}


def forgetting_warnings(forgetting: Sequence[ForgettingResult], max_drop: float) -> list[str]:
    """A sentence for each fine-tune that answers a share of the general probe's questions right
    more than ``max_drop`` below the base's."""
    out = []
    for f in forgetting:
        if f.skipped:
            continue
        change, ci, p = forgetting_change(f)
        if -change > max_drop:
            out.append(f"Mind what it cost outside the task: {f.candidate} answers {100 * -change:.1f} points "
                       f"fewer of the general probe's questions right than the base model "
                       f"({_pct(_mean(f.base_right))} -> {_pct(_mean(f.tuned_right))}, 95% CI of the change "
                       f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}] points, {f.n} items), more than "
                       f"eval.forgetting.max_drop ({100 * max_drop:.1f} points): use it for this task "
                       "only, or train more gently (a lower learning rate, fewer epochs).")
    return out


def _size(m: dict[str, float]) -> str:
    if "params_m" not in m:
        return "n/a"
    params = f"{m['params_m']:.0f}M" if m["params_m"] >= 10 else f"{m['params_m']:.2g}M"
    return f"{params} params" + (f" + {m['adapter_mb']:.1f} MB adapter" if m.get("adapter_mb") else "")


BUSY_SHARE = 0.8  # a lone-request timing with less of its threads' CPU than this shared the cores


def build_scorecard(results: Sequence[EvalResult], thresholds: dict[str, float],
                    forgetting: Sequence[ForgettingResult] = (), max_drop: float = 0.05) -> Scorecard:
    """The scorecard with its paired tests and verdict, from results scored on the same rows.
    ``forgetting``: the forgetting check of fine-tuned candidates among ``results`` (others are
    left out); the verdict warns of each that answers a share of the general probe's questions
    right more than ``max_drop`` below the base's."""
    if not results:
        raise ConfigError("nothing to compare: no candidate has been evaluated",
                          hint="run `taskfit baseline` (and `taskfit eval --run RUN` for a fine-tune) first")
    kind = results[0].kind
    main = scoring(kind).main_metric
    names = {r.candidate for r in results}
    card = Scorecard(kind=kind, main=main, results=list(results), thresholds=dict(thresholds),
                     forgetting=[f for f in forgetting if f.candidate in names], max_drop=max_drop)
    card.notes = [f"{f.candidate}: {f.skipped}." for f in card.forgetting if f.skipped]
    alone = sorted({int(r.metrics["latency_rows"]) for r in results if r.metrics.get("latency_rows")})
    if alone:
        timed = [r.candidate for r in results if r.metrics.get("latency_rows")]
        whose = "every candidate" if len(timed) == len(results) else ", ".join(timed)
        card.notes.append(f"Latency p50 / p95 of {whose}: a lone request, timed on the first "
                          f"{'/'.join(map(str, alone))} held-out rows answered again one at a time "
                          "(eval.latency_rows); the cost per 1,000 queries is at the throughput of "
                          "the batched evaluation (eval.batch_size).")
    starved = [f"{r.candidate} ({100 * r.metrics['latency_cpu_share']:.0f}%)" for r in results
               if r.metrics.get("latency_cpu_share", 1.0) < BUSY_SHARE]
    if starved:
        # Alone on the 2-core machine a lone request's timing gets 99% of the cores it computes on;
        # beside one busy program 64%, and its median read 2.5x higher (few-shot, 294 -> 726 ms).
        card.warnings.append("Timed while other programs held the cores (the share of its threads' CPU time "
                             "each got): " + ", ".join(starved) + ". Their latencies read high; time them again "
                             "on a quiet machine (delete their results/NAME.json in this evaluation's folder, "
                             "then `taskfit baseline` or `taskfit eval`).")
    changed = [f"{r.candidate} ({100 * r.metrics['alone_same_answer']:.0f}%)" for r in results
               if r.metrics.get("alone_same_answer", 1.0) < 1.0]
    if changed:
        # Under bfloat16 autocast a row's rounding depends on the rows batched with it, and greedy
        # decoding takes another token where two are close (a 98-row extract project: 10 of 15
        # rows the same; in float32, 15 of 15): what the scorecard counts is not what a lone
        # served request gets, so it is a warning, with the two settings that make them one.
        card.warnings.append("Answered one at a time, some rows got another answer than in the batched "
                             "evaluation the scorecard counts (share the same): " + ", ".join(changed)
                             + ". A lone served request answers as those rows did; eval.batch_size: 1 evaluates "
                             "every row so (slower), and train.dtype: float32 answers alike in a batch and "
                             "alone (slower on a CPU that multiplies bfloat16 natively).")
    baselines = [r for r in results if not is_finetuned(r.candidate)]
    tuned = [r for r in results if is_finetuned(r.candidate)]
    if baselines:
        best = max(baselines, key=lambda r: r.metrics[main])
        card.tests = [paired_test(kind, r, best) for r in tuned]
    by_name = {r.candidate: r for r in tuned}
    real_only = {r.candidate: r.candidate.replace(SYNTHETIC_SUFFIX, "", 1) for r in tuned if SYNTHETIC_SUFFIX in r.candidate}
    card.versus_real = [paired_test(kind, by_name[name], by_name[real]) for name, real in real_only.items()
                        if real in by_name]
    # The verdict weighs what would be deployed: a fine-tune of all the training rows. A
    # learning-curve run (`taskfit advise`, a fine-tune on a sample) is a point of the curve, shown
    # in the table with its test, never kept: the best of several samples is not a model to serve.
    whole = [r for r in tuned if not is_curve_point(r.candidate)]
    curve = [r for r in tuned if is_curve_point(r.candidate)]
    endpoint = next((r for r in baselines if r.candidate == ENDPOINT), None)
    if endpoint is not None and endpoint is not best:
        card.versus_endpoint = [paired_test(kind, r, endpoint) for r in whole]
    card.verdict = " ".join([verdict(card, baselines, whole, curve), *refuse_all_warning(card),
                             *threshold_warning(card), *forgetting_warnings(card.forgetting, max_drop)])
    return card


def missed_thresholds(kind: str, result: EvalResult, thresholds: dict[str, float]) -> list[str]:
    """Each of the task's acceptance thresholds (eval.thresholds) ``result`` misses, in words
    ("f1 57.3% (below 60%)")."""
    lower = scoring(kind).lower_is_better
    return [f"{name.replace('_', '-')} {100 * result.metrics[name]:.1f}% ({'above' if name in lower else 'below'} "
            f"{100 * thresholds[name]:g}%)"
            for name, ok in threshold_checks(result, thresholds).items() if ok is False]


def threshold_warning(card: Scorecard) -> list[str]:
    """A sentence when the candidate the verdict keeps misses any of the task's acceptance
    thresholds (eval.thresholds): the best of the candidates is not yet good enough."""
    kept = next((r for r in card.results if r.candidate == card.keep), None)
    missed = missed_thresholds(card.kind, kept, card.thresholds) if kept is not None else []
    if not missed:
        return []
    return [f"But {kept.candidate} misses the task's thresholds: {', '.join(missed)}: the one to keep of these "
            "candidates, not yet good enough by eval.thresholds."]


def refusing_all(result: EvalResult, who: str | None = None) -> str | None:
    """qa: why ``result`` is not shown to score better than answering the refusal to every
    question would (the share of held-out questions their passage does not answer), in words, or
    None when it is: it is not above it, or above it within chance by the paired test of their
    rows (``refuse_all_p``). A model that has learnt to refuse everything looks as good as one that
    answers, and a partial answer or two lift it above that by chance. ``who``: its name in the
    sentence (default the candidate's)."""
    m = result.metrics
    if result.kind != "qa" or not m.get("refuse_all_f1"):  # not qa, or no unanswerable row
        return None
    p = m.get("refuse_all_p")  # absent from a result scored before 2026-12-04: above it counted as better
    if m["f1"] > m["refuse_all_f1"] and (p is None or p < ALPHA):
        return None
    chance = "" if m["f1"] <= m["refuse_all_f1"] else f", beyond chance (paired permutation test, p={p:.3g})"
    return (f"{who or result.candidate} scores no better than refusing every question would{chance} "
            f"({100 * m['f1']:.1f}% against {100 * m['refuse_all_f1']:.1f}% F1: that share of the held-out "
            f"questions has no answer in its passage): it refuses {100 * m['refusal_rate']:.0f}% of them, and "
            f"answers the answerable ones at {100 * m['answerable_f1']:.1f}% F1: it has not shown that it answers")


def refuse_all_warning(card: Scorecard) -> list[str]:
    """qa: a sentence when the candidate the verdict keeps is not shown to answer better than
    refusing every question (:func:`refusing_all`)."""
    kept = next((r for r in card.results if r.candidate == card.keep), None)
    why = refusing_all(kept) if kept is not None else None
    if why is None:
        return []
    return [f"But {why}. Read those two figures before serving it; more answerable training rows (or fewer "
            "refusals among them) are the next step."]


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


def cost_rank(name: str) -> int:
    """Where a baseline stands in :data:`CHEAPEST_FIRST` (fine-tunes and others after them)."""
    return CHEAPEST_FIRST.index(name) if name in CHEAPEST_FIRST else len(CHEAPEST_FIRST)


def more_harm(kind: str, a: EvalResult, b: EvalResult) -> tuple[str, float] | None:
    """(metric, p) of a harm (:attr:`~taskfit.tasks.base.Scoring.harms`, qa's unsupported answers)
    of which ``a`` has significantly more than ``b`` (Fisher's exact test, one-sided, 5%; unpaired,
    so cautious), or None."""
    from scipy.stats import fisher_exact

    for metric in sorted(scoring(kind).harms):
        if metric in a.metrics and metric in b.metrics and a.n and b.n:
            ka, kb = round(a.metrics[metric] * a.n), round(b.metrics[metric] * b.n)
            p = float(fisher_exact([[ka, a.n - ka], [kb, b.n - kb]], alternative="greater")[1])
            if p < 0.05:
                return metric, p
    return None


def cheapest_tied(kind: str, baselines: Sequence[EvalResult], best: EvalResult,
                  thresholds: dict[str, float] | None = None) -> tuple[EvalResult, PairedTest | None,
                                                                      list[tuple[EvalResult, PairedTest, Any]],
                                                                      list[tuple[EvalResult, PairedTest, list[str]]]]:
    """The cheapest baseline the paired test cannot tell from ``best`` (``best`` itself when none
    is cheaper), with that test (None for ``best``). One with significantly more of a harm than
    ``best`` (qa: unsupported answers) is not tied with it, whatever the main metric says: those
    come third, each with its test and its harm (:func:`more_harm`), for the scorecard to say why.
    Nor, when ``best`` meets the task's ``thresholds`` (eval.thresholds, the user's bar), is one
    that misses them: those come last, each with its test and the thresholds it misses."""
    cheaper = [(r, paired_test(kind, r, best)) for r in baselines
               if r is not best and cost_rank(r.candidate) < cost_rank(best.candidate)]
    even = [(r, t, more_harm(kind, r, best)) for r, t in cheaper if not t.significant]
    tied = [(r, t) for r, t, harm in even if harm is None]
    harmed = [(r, t, harm) for r, t, harm in even if harm is not None]
    short: list[tuple[EvalResult, PairedTest, list[str]]] = []
    if thresholds and not missed_thresholds(kind, best, thresholds):
        checked = [(r, t, missed_thresholds(kind, r, thresholds)) for r, t in tied]
        short = [(r, t, missed) for r, t, missed in checked if missed]
        tied = [(r, t) for r, t, missed in checked if not missed]
    if not tied:
        return best, None, harmed, short
    pick, test = min(tied, key=lambda rt: (cost_rank(rt[0].candidate), -rt[0].metrics[scoring(kind).main_metric]))
    return pick, test, harmed, short


def _keep_baseline(card: Scorecard, baselines: list[EvalResult], best: EvalResult) -> tuple[EvalResult, str]:
    """The baseline to keep (the cheapest tied with the best) and, when it is not the best, the
    tie in words ("tied with few-shot (77.8% against 79.0% accuracy, McNemar (exact), p=1)")."""
    pick, test, harmed, short = cheapest_tied(card.kind, baselines, best, card.thresholds)

    def tied(r: EvalResult, t: PairedTest) -> str:
        return (f"{r.candidate} is tied with {best.candidate} on {card.main.replace('_', '-')} "
                f"({100 * r.metrics[card.main]:.1f}% against {100 * best.metrics[card.main]:.1f}%, {t.p_text})")

    for r, t, (metric, p) in harmed:  # cheaper and tied on the main metric, but not kept: say why
        if cost_rank(r.candidate) < cost_rank(pick.candidate):
            card.warnings.append(
                f"{tied(r, t)} but gives significantly more {metric.replace('_rate', '').replace('_', ' ')} answers "
                f"({100 * r.metrics[metric]:.1f}% against {100 * best.metrics[metric]:.1f}%, Fisher's exact test, "
                f"p={p:.3g}): not kept for being cheaper.")
    for r, t, missed in short:
        if cost_rank(r.candidate) < cost_rank(pick.candidate):
            card.warnings.append(f"{tied(r, t)} but misses the task's thresholds ({', '.join(missed)}), which "
                                 f"{pick.candidate} meets: not kept for being cheaper.")
    if test is None:
        return best, ""
    main = card.main.replace("_", "-")
    return pick, (f"tied with {best.candidate} ({100 * pick.metrics[card.main]:.1f}% against "
                  f"{100 * best.metrics[card.main]:.1f}% {main}, {test.test}, {test.p_text})")


def _in_words(cheaper: str) -> str:
    return f" ({cheaper})" if cheaper else ""


def verdict(card: Scorecard, baselines: list[EvalResult], tuned: list[EvalResult],
            curve: Sequence[EvalResult] = ()) -> str:
    """The verdict in words; sets ``card.keep`` to the candidate it keeps. Of baselines the
    paired test cannot tell apart, the cheaper is kept (:data:`CHEAPEST_FIRST`), unless it misses
    the task's thresholds and the other meets them (:func:`cheapest_tied`); a fine-tune within
    chance of the best baseline is kept when it meets the thresholds the baseline misses. ``tuned``: the
    fine-tunes of all the training rows it weighs; ``curve``: learning-curve runs, which it names
    as the curve and never keeps."""
    main = card.main.replace("_", "-")
    if not baselines:
        return "No baseline was evaluated: run `taskfit baseline` so the fine-tune has something to beat."
    best = max(baselines, key=lambda r: r.metrics[card.main])
    pick, tie = _keep_baseline(card, baselines, best)
    score = f"{100 * best.metrics[card.main]:.1f}% {main}"
    if not tuned:
        card.keep = pick.candidate
        also = f" {pick.candidate} is {tie} and cheaper to run{_in_words(_cheaper(pick, best))}: the one to keep." \
            if tie else ""
        if curve:
            names = ", ".join(r.candidate for r in sorted(curve, key=lambda r: curve_rows(r.candidate)))
            return (f"Best baseline so far: {best.candidate} ({score}).{also} The learning curve's runs "
                    f"({names}: fine-tunes on samples of the training rows, `taskfit advise`) show the curve, "
                    "not a model to deploy, and the verdict keeps none of them: the fine-tune of all the "
                    "training rows has not answered these rows; `taskfit run` trains and scores it, and this "
                    "scorecard then weighs it.")
        return (f"Best baseline so far: {best.candidate} ({score}).{also} Fine-tune with `taskfit train`, "
                "then `taskfit eval --run RUN` and `taskfit compare` to see whether it beats it.")
    top = max(tuned, key=lambda r: r.metrics[card.main])
    test = next(t for t in card.tests if t.candidate == top.candidate)
    which = "" if top.candidate == FINETUNED else f" ({top.candidate})"  # e.g. fine-tuned-head
    gain = 100 * test.difference
    where = f"({test.test}, {test.p_text}, {top.n} held-out rows)"
    if test.significant and gain > 0:
        card.keep = top.candidate
        extra, against = _cheaper(top, best), _cheaper(best, top)
        return (f"Keep the fine-tuned adapter{which}: {gain:+.1f} points {main} over {best.candidate} "
                f"{where}{', and ' + extra if extra else ''}"
                f"{f'; {best.candidate} is cheaper to run ({against})' if against else ''}.")
    card.keep = pick.candidate
    if test.significant:
        extra = _cheaper(best, top)
        return (f"Fine-tuning is not worth it here: {best.candidate} scores {-gain:.1f} points {main} "
                f"more than the fine-tuned model{which} {where}{', and it is cheaper to run: ' + extra if extra else ''}. "
                f"Keep {pick.candidate}" + (f": {tie}, and cheaper to run{_in_words(_cheaper(pick, best))}."
                                            if tie else "."))
    if test.rows_needed and test.rows_needed > top.n:
        card.warnings.append(f"The eval set is too small to detect a difference of {abs(gain):.1f} "
                             f"points: about {test.rows_needed} held-out rows would be needed "
                             f"(80% power, 5% level), and there are {top.n}.")
    cheap, dear = _cheaper(pick, top), _cheaper(top, pick)
    missed = missed_thresholds(card.kind, pick, card.thresholds) if card.thresholds else []
    if missed and not missed_thresholds(card.kind, top, card.thresholds):  # the user's bar decides
        card.keep = top.candidate
        advice = (f"The fine-tuned model meets the task's thresholds and {pick.candidate} does not "
                  f"({', '.join(missed)}){f', though it costs less ({cheap})' if cheap else ''}: keep the "
                  "fine-tune, and evaluate on more held-out rows to tell whether the difference is real.")
    elif cheap or tie:  # what the kept baseline is cheaper than, each named: the baseline it ties, the fine-tune
        than_best = f"is {tie}, and cheaper to run{_in_words(_cheaper(pick, best))}" if tie else ""
        than_tuned = f"costs less than the fine-tuned model{_in_words(cheap)}" if cheap else ""
        advice = (f"{pick.candidate} {than_best}{'; it ' if than_best and than_tuned else ''}{than_tuned}: "
                  "keep it unless more held-out data shows a gain.")
    elif dear:
        card.keep = top.candidate
        advice = (f"At the same measured quality the fine-tuned model is cheaper to run ({dear}); keep it "
                  f"if that matters more than not maintaining a fine-tune, or evaluate on more rows.")
    else:
        advice = "Evaluate on more held-out rows before paying for the fine-tune."
    return (f"Not proven: the fine-tuned model{which} is {gain:+.1f} points {main} from {best.candidate}, "
            f"within what chance gives {where}. {advice}")
