"""Which approach to pick, from what was measured: ``taskfit advise``'s decision, its evidence,
and what the pick costs in rows, time and money. Pure: results and figures in, words out.

The rules, in order:

1. Every candidate was scored on the same held-out rows: the cheap ones (classical, prompt-only,
   few-shot, RAG, a hosted endpoint) and the fine-tunes of the learning curve, of which the
   largest stands for the fine-tune. The best by the kind's main metric leads; each other is
   tested against it pairwise (:func:`taskfit.evaluation.compare.paired_test`: McNemar for
   right/wrong rows, a paired permutation test otherwise). Those it cannot tell from the best are tied
   with it, and the pick is the cheapest of the tied (:data:`taskfit.evaluation.compare.CHEAPEST_FIRST`, then fine-tunes).
2. The fine-tune of all the training rows was not measured, only projected by the learning
   curve. It replaces a cheaper pick only when the projection's 95% band lies wholly above the
   pick's 95% interval; when they overlap the two are tied and the cheaper stays. A curve whose
   largest run does not score above its smallest (paired, 5%) projects nothing at all.
3. A qa fine-tune with a folder of documents (the RAG baseline) needs retrieval to find its
   passage when it serves: the pick is then RAG plus fine-tune.

Nothing here claims more than that: a tie is called a tie, the projection is called a
projection, and a curve fitted to three points says so (:meth:`LearningCurve.caveats`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from taskfit.evaluation.compare import (ALPHA, cost_rank, is_finetuned, missed_thresholds, more_harm, paired_test,
                                        refusing_all)
from taskfit.evaluation.curve import LearningCurve
from taskfit.records import EvalResult
from taskfit.stats import bootstrap_mean_ci
from taskfit.tasks.base import CLASSICAL, EMBEDDINGS, ENDPOINT, FEW_SHOT, PROMPT_ONLY, RAG

# What it takes to build and run each approach, least first; every fine-tune comes after them.
APPROACHES = {CLASSICAL: "classical", EMBEDDINGS: "classical", PROMPT_ONLY: "prompt-only", FEW_SHOT: "few-shot",
              RAG: "RAG", ENDPOINT: "hosted endpoint"}
FINE_TUNE, RAG_FINE_TUNE = "fine-tune", "RAG plus fine-tune"


@dataclass(frozen=True)
class TrainingSpeed:
    """What one training run measured on this machine (its manifest's ``training`` figures)."""

    rows: int  # training rows given to the run
    fit_rows: int  # of them trained on (the rest validated during training)
    epochs: float
    trained_tokens: int
    tokens_per_second: float
    steady: bool = False  # the median step's speed after the first (else the whole run's, warm-up included)

    @property
    def tokens_per_row(self) -> float:
        """Tokens one training row costs per epoch."""
        return self.trained_tokens / max(1.0, self.fit_rows * self.epochs)

    def seconds_for(self, fit_rows: float, epochs: float) -> float:
        return self.tokens_per_row * fit_rows * epochs / self.tokens_per_second


@dataclass(frozen=True)
class Setting:
    """What the advice is for: the task, the data, the machine's price, the expected traffic."""

    kind: str
    main: str  # the kind's main metric (the curve and the ranking are by its per-row score)
    threshold: float | None  # eval.thresholds of the main metric
    train_rows: int  # training rows `taskfit run` trains on
    fit_share: float  # of them trained on, the rest validating (train.validation_share)
    epochs: float
    held_out_rows: int  # the project's held-out rows (what `taskfit run` scores)
    price_per_hour: float = 0.0
    queries_per_month: int | None = None
    documents: bool = False  # qa: a folder of documents (the RAG baseline) is configured
    size: dict[str, Any] = field(default_factory=dict)  # the data card's size verdict


@dataclass
class Section:
    title: str
    paragraphs: list[str]
    table: tuple[list[str], list[list[str]]] | None = None


@dataclass
class Advice:
    approach: str  # prompt-only | few-shot | RAG | classical | hosted endpoint | fine-tune | RAG plus fine-tune
    candidate: str  # the measured candidate behind it (the curve's largest run for a fine-tune)
    headline: str
    sections: list[Section]
    figures: dict[str, Any]  # the numbers behind the words, for advice.json

    def markdown(self, title: str, plot: str | None = None) -> str:
        lines = [f"# {title}", "", f"**{self.headline}**", ""]
        for s in self.sections:
            lines += [f"## {s.title}", ""]
            for p in s.paragraphs:
                lines += [p, ""]
            if s.table:
                header, rows = s.table
                lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
            if plot and s.title == CURVE_SECTION:
                lines += [f"![learning curve]({plot})", ""]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"approach": self.approach, "candidate": self.candidate, "headline": self.headline,
                "sections": [asdict(s) for s in self.sections], "figures": self.figures}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Advice":
        sections = [Section(s["title"], s["paragraphs"], tuple(s["table"]) if s.get("table") else None)
                    for s in data["sections"]]
        return cls(data["approach"], data["candidate"], data["headline"], sections, data.get("figures", {}))


CURVE_SECTION = "Learning curve"


# ---- words for numbers --------------------------------------------------------------------------
def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def interval(r: EvalResult, main: str) -> tuple[float, float]:
    """The candidate's 95% interval of the main metric (the scorer's, else a bootstrap of its rows)."""
    m = r.metrics
    if f"{main}_ci_low" in m:
        return m[f"{main}_ci_low"], m[f"{main}_ci_high"]
    return bootstrap_mean_ci(r.per_example)


def _score(r: EvalResult, main: str) -> str:
    low, high = interval(r, main)
    return f"{_pct(r.metrics[main])} [{_pct(low)}, {_pct(high)}]"


def duration(seconds: float) -> str:
    """About how long, in words a person reads at a glance."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def _rows(n: float) -> str:
    return "not reachable" if not math.isfinite(n) else f"{n:,.0f}"


def _usd(v: float) -> str:
    return f"${v:,.4f}" if v < 1 else f"${v:,.2f}"


def approach_of(name: str) -> str:
    return FINE_TUNE if is_finetuned(name) else APPROACHES.get(name, name)


# ---- the decision ------------------------------------------------------------------------------
def decide(setting: Setting, baselines: Sequence[EvalResult], points: Sequence[tuple[int, EvalResult]],
           curve: LearningCurve | None, speed: TrainingSpeed | None) -> Advice:
    """The advice from the cheap candidates' results, the learning curve's runs (training rows,
    result; rising), the curve fitted to them, and the largest curve run's training speed."""
    main, kind = setting.main, setting.kind
    tuned = points[-1][1] if points else None
    measured = list(baselines) + ([tuned] if tuned is not None else [])
    best = max(measured, key=lambda r: r.metrics[main])
    tests = {r.candidate: paired_test(kind, r, best) for r in measured if r is not best}
    tied = [best] + [r for r in measured if r is not best and not tests[r.candidate].significant
                     and more_harm(kind, r, best) is None]  # not one that makes up answers more often
    # the task's bar before the cost, as the scorecard's verdict weighs it (compare.cheapest_tied)
    bar = {main: setting.threshold} if setting.threshold is not None else {}
    short = [r for r in tied if missed_thresholds(kind, r, bar)] if bar and not missed_thresholds(kind, best, bar) else []
    tied = [r for r in tied if r not in short]
    pick = min(tied, key=lambda r: cost_rank(r.candidate))
    short = [r for r in short if cost_rank(r.candidate) < cost_rank(pick.candidate)]
    figures: dict[str, Any] = {"main_metric": main, "rows": best.n, "best_measured": best.candidate,
                               "tied_with_best": [r.candidate for r in tied], "pick": pick.candidate,
                               "tied_below_threshold": [r.candidate for r in short]}

    # the headline: the measured pick, then whether the projected fine-tune displaces it
    words = f"{_score(pick, main)} {main.replace('_', '-')} on {pick.n} held-out rows"
    others = [r.candidate for r in tied if r is not pick]
    if pick is best and not others and short:
        why = ""  # the tie is said below
    elif pick is best and not others:
        runner = max((r for r in measured if r is not best), key=lambda r: r.metrics[main], default=None)
        why = (f", ahead of every other candidate (next: {runner.candidate}, {tests[runner.candidate].p_text})"
               if runner is not None else "")
    elif pick is best:
        why = (f"; {', '.join(others)} {'is' if len(others) == 1 else 'are'} tied with it (paired test "
               f"p >= {ALPHA}), and it is the cheaper")
    else:
        why = (f": tied with the best, {best.candidate} ({_pct(best.metrics[main])}, "
               f"{tests[pick.candidate].p_text}), and cheaper")
        if len(others) > 1:
            why += f"; also tied: {', '.join(o for o in others if o != best.candidate)}"
    if short:
        why += (f"; {', '.join(f'{r.candidate} ({_pct(r.metrics[main])})' for r in short)} "
                f"{'is' if len(short) == 1 else 'are'} tied with it and cheaper but below the task's threshold "
                f"({_pct(setting.threshold)} {main.replace('_', '-')}), so not picked for being cheaper")
    approach = approach_of(pick.candidate)
    headline = f"Pick {approach} ({pick.candidate}): {words}{why}."
    if approach == FINE_TUNE and curve is not None and curve.rises:
        headline += (f" That is the fine-tune on {points[-1][0]} rows; on all {setting.train_rows} the curve "
                     f"projects {_projection(curve, setting.train_rows)}.")

    projection, projected = None, False
    if curve is not None and not curve.rises:
        # the runs' scores as the candidates' table shows them (for extract, pooled field F1; the
        # curve itself is fitted to the mean per-row score the paired test uses)
        headline += (f" The learning curve shows no gain from {curve.rows[0]} to {curve.rows[-1]} training rows "
                     f"({_pct(points[0][1].metrics[main])} to {_pct(points[-1][1].metrics[main])}): it cannot "
                     f"tell what the fine-tune of "
                     f"all {setting.train_rows} rows would reach (a larger advise.curve_rows, or `taskfit run`, "
                     "would).")
    elif curve is not None and approach != FINE_TUNE:
        at = curve.at(setting.train_rows)
        low, high = curve.band(setting.train_rows)
        p_low, p_high = interval(pick, main)
        projection = {"rows": setting.train_rows, "estimate": at, "low": low, "high": high}
        if low > p_high:
            headline = (f"Fine-tune on all {setting.train_rows} training rows: the learning curve projects "
                        f"{_projection(curve, setting.train_rows)} {main.replace('_', '-')}, wholly above "
                        f"{pick.candidate}'s {_score(pick, main)} measured. A projection, not a measurement: "
                        "`taskfit run` trains it and measures it on the whole held-out split.")
            approach, pick, projected = FINE_TUNE, tuned, True  # type: ignore[assignment]
        elif high < p_low:
            headline += (f" The fine-tune of all {setting.train_rows} rows is projected below it "
                         f"({_projection(curve, setting.train_rows)})")
            # With as many runs as parameters the curve passes through every run: its shape, and so
            # the projection, is not checked by anything (a head on 48 rows that had not started to
            # learn projected 27% for 480 rows, which then scored 91%).
            headline += ("." if curve.identifiable else
                         f", by a curve fitted to {len(curve.rows)} runs for as many parameters, whose shape "
                         "nothing here checks: `taskfit run` measures it.")
        else:
            headline += (f" The fine-tune of all {setting.train_rows} rows is projected at "
                         f"{_projection(curve, setting.train_rows)}: tied with it, so the cheaper stays")
            # A band this wide can hide a fine-tune well above the pick (a head on 48 quickstart rows
            # projected 52.5% [35.8%, 88.9%] for 480; trained on them it scored 93.3%): say what
            # settles it and what that costs here.
            headline += (f" until a measurement says otherwise: training it on all rows takes about "
                         f"{duration(speed.seconds_for(setting.train_rows * setting.fit_share, setting.epochs))} "
                         "here, and `taskfit run` measures it." if speed is not None else ".")
    if approach == FINE_TUNE and kind == "qa" and setting.documents:
        approach = RAG_FINE_TUNE
        headline += (" With documents to search (baselines.documents), the fine-tune needs retrieval to find "
                     "its passage when it serves: RAG plus fine-tune. The curve scored it on the rows' own "
                     "passages, so retrieval misses come on top (the rag candidate's figures show how often).")
    # qa: a measured pick not shown to answer better than refusing every question would (the floor
    # a scorecard's verdict warns of too: a fine-tune that refused 59 of 60 questions was kept)
    floor = refusing_all(pick) if kind == "qa" and not projected else None
    if floor is not None:
        headline += f" Mind the floor: {floor}."
    figures.update(approach=approach, candidate=pick.candidate, projection_all_rows=projection,
                   below_refusing_all=floor is not None)

    sections = [_candidates(setting, measured, best, tests)]
    if curve is not None:
        sections.append(_curve(setting, points, curve, figures))
    if setting.threshold is not None:
        sections.append(_threshold(setting, measured, curve, speed, figures))
    sections.append(_time(setting, pick, tuned, speed, curve, figures))
    sections.append(_cost(setting, approach, pick, baselines, tuned, speed, figures))
    sections.append(_basis(setting, best, curve))
    return Advice(approach=approach, candidate=pick.candidate, headline=headline, sections=sections,
                  figures=figures)


def _projection(curve: LearningCurve, n: int) -> str:
    low, high = curve.band(n)
    return f"{_pct(curve.at(n))} [{_pct(low)}, {_pct(high)}]"


def _candidates(setting: Setting, measured: list[EvalResult], best: EvalResult, tests: dict) -> Section:
    rows = []
    for r in sorted(measured, key=lambda r: -r.metrics[setting.main]):
        t = tests.get(r.candidate)
        versus = "best" if t is None else (f"{100 * t.difference:+.1f} pts, {t.p_text}"
                                           + ("" if t.significant else " (tied)"))
        cost = r.metrics.get("cost_per_1k_usd")
        rows.append([r.candidate, approach_of(r.candidate), _score(r, setting.main), versus,
                     f"{1000 * r.metrics.get('latency_mean_s', 0):.0f} ms",
                     _usd(cost) if cost is not None else "n/a"])
    # the time a query costs at the evaluation's throughput (eval.batch_size), what the cost comes from
    header = ["candidate", "approach", f"{setting.main} [95% CI]", f"vs {best.candidate}", "time a query",
              "cost / 1k queries"]
    test = next(iter(tests.values())).test if tests else "paired test"
    return Section("Candidates", [f"Scored on the same {best.n} held-out rows; each against the best by a "
                                  f"paired test ({test}). Tied: the test cannot tell it from the best "
                                  f"(p >= {ALPHA})."], (header, rows))


def _curve(setting: Setting, points: Sequence[tuple[int, EvalResult]], curve: LearningCurve,
           figures: dict[str, Any]) -> Section:
    a, b, c = curve.params
    a_low, a_high = curve.levels_off_band()
    n = setting.train_rows
    shape = (f"b = {b:.3g}, c = {c:.3f}" if b > 0 else "b = 0: flat, the same score at every size")
    text = [f"{setting.main.replace('_', '-')}(n) = a - b * n^-c fitted to {len(points)} fine-tunes on n "
            f"training rows: a = {a:.3f} (the level it rises to; 95% band {a_low:.3f} to {a_high:.3f}), "
            f"{shape}." + (f" Projected on all {n} training rows: {_projection(curve, n)}." if curve.rises else "")]
    if any(abs(score - r.metrics[setting.main]) > 1e-9 for score, (_, r) in zip(curve.scores, points)):
        text.append(f"The curve is fitted to each run's mean per-row score (the figure the paired tests use), which "
                    f"is not {setting.main} itself for this kind of task: the threshold is read against it.")
    text += [f"Caveat: {note}." for note in curve.caveats()]
    figures["curve"] = {"rows": curve.rows, "scores": curve.scores, "a": a, "b": b, "c": c,
                        "a_band": [a_low, a_high], "identifiable": curve.identifiable, "rises": curve.rises,
                        "gain": curve.gain, "gain_p": curve.gain_p,
                        "resamples": int(len(curve.draws))}
    table = (["training rows", "candidate", f"{setting.main} [95% CI]"],
             [[str(rows), r.candidate, _score(r, setting.main)] for rows, r in points])
    return Section(CURVE_SECTION, text, table)


def _threshold(setting: Setting, measured: list[EvalResult], curve: LearningCurve | None,
               speed: TrainingSpeed | None, figures: dict[str, Any]) -> Section:
    t, main = setting.threshold, setting.main
    assert t is not None
    meets = [r.candidate for r in measured if interval(r, main)[0] >= t]
    misses = [r.candidate for r in measured if interval(r, main)[1] < t]
    open_ = [r.candidate for r in measured if r.candidate not in meets + misses]
    text = [f"eval.thresholds.{main}: {_pct(t)}. Meets it (whole interval above): {', '.join(meets) or 'none'}; "
            f"interval straddles it: {', '.join(open_) or 'none'}; misses it: {', '.join(misses) or 'none'}."]
    if curve is not None and not curve.rises:
        text.append(f"Fine-tune: the rows it needs cannot be estimated: the learning curve shows no gain from "
                    f"{curve.rows[0]} to {curve.rows[-1]} rows.")
    elif curve is not None:
        need = curve.rows_needed(t)
        figures["rows_needed"] = {"threshold": t, "estimate": _finite(need.estimate), "low": _finite(need.low),
                                  "high": _finite(need.high), "reachable_share": need.reachable_share}
        a_low, a_high = curve.levels_off_band()
        if not need.reachable and a_high >= t:  # the fit levels off below, but its band does not
            text.append(f"Fine-tune: cannot tell whether this model reaches it. The curve fitted to the runs levels "
                        f"off at {_pct(curve.levels_off)}, below {_pct(t)}, but its 95% band runs from {_pct(a_low)} "
                        f"to {_pct(a_high)} and {100 * need.reachable_share:.0f}% of the {len(curve.draws)} "
                        "resamples reach the threshold: a larger advise.curve_rows, or `taskfit run`, would tell.")
        elif not need.reachable:
            text.append(f"Fine-tune: not reachable with this model. The curve levels off at {_pct(curve.levels_off)} "
                        f"(95% band {_pct(a_low)} to {_pct(a_high)}), below {_pct(t)}; it reaches the threshold in "
                        f"{100 * need.reachable_share:.0f}% of the {len(curve.draws)} resamples.")
        else:
            far = FAR_PAST * curve.rows[-1]  # past this a bound is digits of a fit's tail, not a figure
            upper = ("not reachable" if not math.isfinite(need.high)
                     else f"over {far:,} ({FAR_PAST:,}x the largest run)" if need.high > far else f"{need.high:,.0f}")
            line = (f"Fine-tune: about {need.estimate:,.0f} training rows reach it (95% interval {need.low:,.0f} "
                    f"to {upper}; reached in {100 * need.reachable_share:.0f}% of the {len(curve.draws)} resamples)")
            have = setting.train_rows
            line += (f"; you have {have}, so the rows are there." if need.estimate <= have
                     else f"; you have {have}: about {need.estimate - have:,.0f} more to label.")
            if need.estimate > 10 * curve.rows[-1]:
                line += (f" That is {need.estimate / curve.rows[-1]:,.0f}x the largest run's {curve.rows[-1]} rows: "
                         "an extrapolation far past what was measured.")
            if speed is not None and math.isfinite(need.estimate):
                line += (f" Training on them ({setting.epochs:g} epoch{'s' if setting.epochs != 1 else ''}) "
                         f"takes about {duration(speed.seconds_for(need.estimate * setting.fit_share, setting.epochs))} "
                         "here.")
            text.append(line)
    return Section("Rows to the threshold", text)


FAR_PAST = 1000  # a bound on the rows needed beyond this many times the largest run's is printed as "over"


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


LONG_TRAINING_S = 2 * 3600  # beyond this, the advice names the training rows that take about HOUR_S
HOUR_S = 3600


def rows_in_an_hour(speed: TrainingSpeed, fit_share: float, epochs: float) -> int:
    """The training rows (``data.max_train_examples``: a stratified sample, of which ``fit_share``
    is trained on and the rest validates) that train in about :data:`HOUR_S` at ``speed``."""
    return int(speed.tokens_per_second * HOUR_S / (speed.tokens_per_row * epochs) / fit_share)


def measured_how(speed: TrainingSpeed) -> str:
    """How ``speed`` was measured, in words."""
    return "its median step after the first, which warms up" if speed.steady else "the whole run, warm-up included"


def _time(setting: Setting, pick: EvalResult, tuned: EvalResult | None, speed: TrainingSpeed | None,
          curve: LearningCurve | None, figures: dict[str, Any]) -> Section:
    text = []
    timing: dict[str, Any] = {}
    if speed is not None:
        fit = setting.train_rows * setting.fit_share
        train_s = speed.seconds_for(fit, setting.epochs)
        timing.update(train_seconds=train_s, tokens_per_second=speed.tokens_per_second,
                      tokens_per_row=speed.tokens_per_row)
        how = measured_how(speed)
        text.append(f"Fine-tune on all {setting.train_rows} training rows ({fit:.0f} trained on, the rest validating), "
                    f"{setting.epochs:g} epoch{'s' if setting.epochs != 1 else ''}: about {duration(train_s)} "
                    f"({speed.tokens_per_row:.0f} tokens a row at {speed.tokens_per_second:.1f} tokens/s, as the "
                    f"{speed.rows}-row curve run trained here, {how}; validation during training comes on top).")
        if train_s > LONG_TRAINING_S:
            rows = rows_in_an_hour(speed, setting.fit_share, setting.epochs)
            timing.update(rows_in_an_hour=rows)
            text.append(f"That is long for this machine: `data.max_train_examples: {rows}` (with the data's "
                        f"classes kept in proportion) trains in about an hour; the learning curve above says what "
                        f"fewer rows cost in {setting.main.replace('_', '-')}.")
    if tuned is not None:
        per_row = tuned.metrics.get("latency_mean_s", 0.0)
        timing.update(eval_seconds_per_row=per_row, eval_seconds=per_row * setting.held_out_rows)
        text.append(f"Scoring it on the {setting.held_out_rows} held-out rows `taskfit run` uses: about "
                    f"{duration(per_row * setting.held_out_rows)} ({1 / per_row if per_row else 0:.2f} rows/s measured "
                    f"on {tuned.candidate}).")
    if not is_finetuned(pick.candidate):
        per_row = pick.metrics.get("latency_mean_s", 0.0)
        text.append(f"{pick.candidate} answers in {1000 * per_row:.0f} ms a row on average here "
                    f"({duration(per_row * setting.held_out_rows)} for the held-out split).")
    figures["time"] = timing
    return Section("Time on this machine", text or ["No training run was measured."])


def _cost(setting: Setting, approach: str, pick: EvalResult, baselines: Sequence[EvalResult],
          tuned: EvalResult | None, speed: TrainingSpeed | None, figures: dict[str, Any]) -> Section:
    endpoint = next((r for r in baselines if r.candidate == ENDPOINT), None)
    ours = tuned if approach in (FINE_TUNE, RAG_FINE_TUNE) and tuned is not None else pick
    text, cost = [], {}
    per_1k = ours.metrics.get("cost_per_1k_usd")
    if not setting.price_per_hour and ours.candidate != ENDPOINT:
        text.append("eval.price_per_hour is 0: this machine's time is not priced, so a local candidate costs "
                    "nothing per query here. Set it to the hourly price of the machine that will serve.")
        per_1k = 0.0
    elif per_1k is not None:
        text.append(f"{ours.candidate}: {_usd(per_1k)} per 1,000 queries "
                    + (f"({1000 * ours.metrics.get('latency_mean_s', 0):.0f} ms a query at "
                       f"${setting.price_per_hour:g}/hour)." if ours.candidate != ENDPOINT else "(measured tokens)."))
    one_off = 0.0
    if approach in (FINE_TUNE, RAG_FINE_TUNE) and speed is not None and setting.price_per_hour:
        one_off = speed.seconds_for(setting.train_rows * setting.fit_share, setting.epochs) / 3600 \
            * setting.price_per_hour
        text.append(f"Training it once: about {_usd(one_off)}.")
    cost.update(candidate=ours.candidate, per_1k_usd=per_1k, one_off_usd=one_off)
    if endpoint is None:
        text.append("No hosted endpoint is configured (baselines.endpoint): no break-even to compute.")
    elif ours.candidate != ENDPOINT and per_1k is not None:
        hosted = endpoint.metrics.get("cost_per_1k_usd", 0.0)
        cost["endpoint_per_1k_usd"] = hosted
        saving = (hosted - per_1k) / 1000
        if saving <= 0:
            text.append(f"The endpoint costs {_usd(hosted)} per 1,000 queries, no more than {ours.candidate}: "
                        "it never pays to switch on price alone.")
        else:
            volume = one_off / saving
            cost["break_even_queries"] = volume
            text.append(f"The endpoint costs {_usd(hosted)} per 1,000 queries (its measured tokens at "
                        f"baselines.endpoint's prices): {ours.candidate} "
                        + (f"pays for its training after about {volume:,.0f} queries." if volume
                           else "is cheaper from the first query."))
            if setting.queries_per_month and volume:
                cost["break_even_months"] = volume / setting.queries_per_month
                text.append(f"At {setting.queries_per_month:,} queries a month (eval.queries_per_month) that is "
                            f"{volume / setting.queries_per_month:.1f} months.")
    if setting.queries_per_month and per_1k is not None:
        q = setting.queries_per_month
        monthly = f"{ours.candidate} {_usd(per_1k * q / 1000)} a month"
        if endpoint is not None and ours.candidate != ENDPOINT:
            monthly += f", the endpoint {_usd(endpoint.metrics.get('cost_per_1k_usd', 0.0) * q / 1000)}"
        text.append(f"At {q:,} queries a month: {monthly}.")
    figures["cost"] = cost
    return Section("Cost", text)


def _basis(setting: Setting, best: EvalResult, curve: LearningCurve | None) -> Section:
    size = setting.size
    text = [f"Every figure above comes from {best.n} held-out rows (advise.eval_rows; `taskfit run` scores "
            f"{setting.held_out_rows}), so intervals are wider than the full scorecard's."]
    if curve is not None:
        text.append(f"The learning curve's band: {len(curve.draws)} bootstrap resamples of those rows "
                    "(advise.resamples), each refitted.")
    if size:
        fixed = size.get("fixed_eval_rows")
        rows = f"{size.get('rows')} usable training rows and {fixed} fixed eval rows" if fixed is not None else \
            f"{size.get('rows')} usable rows"
        text.append(f"Data: {rows}, {size.get('verdict')} (minimum {size.get('minimum')}, "
                    f"recommended {size.get('recommended')}+ for this kind of task).")
    return Section("What this rests on", text)
