"""`taskfit advise`'s reasoning on numbers alone: the learning curve recovers where a known curve
reaches a threshold (and says when it never does, and when three points cannot say much), and the
decision calls ties ties, prefers the cheaper, lets a projection win only when its band clears the
measured pick, and prices the pick against a hosted endpoint."""

from __future__ import annotations

import math

import numpy as np
import pytest

from taskfit.errors import DataError
from taskfit.evaluation.advice import FINE_TUNE, RAG_FINE_TUNE, Setting, TrainingSpeed, decide
from taskfit.evaluation.curve import fit_curve, power_law
from taskfit.records import EvalResult
from taskfit.stats import bootstrap_mean_ci
from taskfit.workflows.advise import curve_sizes

FIVE = [12, 24, 48, 96, 192]
THREE = [12, 24, 48]


def _runs(rng, a, b, c, rows, held_out):
    """Right/wrong per held-out row for a fine-tune on each of ``rows``, whose true accuracy
    follows a - b * n^-c."""
    return [list((rng.random(held_out) < power_law(n, a, b, c)).astype(float)) for n in rows]


# ---- the curve ---------------------------------------------------------------------------------
def test_a_reachable_threshold_is_found_near_where_the_true_curve_reaches_it():
    rng = np.random.default_rng(0)
    a, b, c = 0.95, 1.5, 0.5  # 0.8 is reached at (b / (a - 0.8)) ** (1 / c) = 100 rows
    curve = fit_curve(FIVE, _runs(rng, a, b, c, FIVE, 4000))
    need = curve.rows_needed(0.8)
    truth = (b / (a - 0.8)) ** (1 / c)
    assert need.reachable and need.reachable_share > 0.95
    assert need.low <= truth <= need.high and need.low <= need.estimate <= need.high
    assert abs(need.estimate - truth) / truth < 0.15
    assert curve.identifiable and not any("points for 3 parameters" in n for n in curve.caveats())


def test_a_curve_that_levels_off_below_the_threshold_says_not_reachable():
    rng = np.random.default_rng(1)
    curve = fit_curve(FIVE, _runs(rng, 0.6, 2.0, 1.0, FIVE, 4000))
    need = curve.rows_needed(0.8)
    assert not need.reachable and math.isinf(need.estimate) and math.isinf(need.high)
    assert need.reachable_share < 0.05
    low, high = curve.levels_off_band()
    assert low <= 0.6 + 0.03 and high < 0.8


def test_three_points_are_flagged_as_not_identifiable_and_get_a_wide_band():
    rng = np.random.default_rng(2)
    few = fit_curve(THREE, _runs(rng, 0.95, 1.5, 0.5, THREE, 40))
    many = fit_curve(FIVE, _runs(rng, 0.95, 1.5, 0.5, FIVE, 4000))
    assert not few.identifiable
    assert any("3 points for 3 parameters" in note for note in few.caveats())
    (f_low, f_high), (m_low, m_high) = few.band(480), many.band(480)
    assert f_high - f_low > 0.2 and f_high - f_low > 5 * (m_high - m_low)


def test_scores_that_do_not_rise_give_a_flat_curve_that_says_so():
    flat = [[1.0] * 10 + [0.0] * 30] * 3  # 25% at every size
    curve = fit_curve(THREE, flat)
    assert curve.params[1] == 0 and curve.at(10_000) == pytest.approx(0.25)
    assert not curve.rises and any("projects nothing" in note for note in curve.caveats())


def test_a_curve_that_falls_projects_nothing_and_the_advice_says_why():
    # a small model that answers one label for its first steps: 22% on 12 rows, 10% on 24 and 48
    points, curve = _curve_points([9, 4, 4])
    assert not curve.rises
    advice = decide(_setting(threshold=0.85), [_result("tfidf-logreg", 32)], points, curve, _speed())
    assert advice.approach == "classical" and "shows no gain from 12 to 48 training rows" in advice.headline
    assert "projected" not in advice.headline
    assert "cannot be estimated" in advice.markdown("advice") and "rows_needed" not in advice.figures


def test_curve_sizes_need_three_runs_of_eight_rows():
    assert curve_sizes(1000, 48, [0.25, 0.5, 1.0]) == [12, 24, 48]
    assert curve_sizes(40, 48, [0.25, 0.5, 1.0]) == [10, 20, 40]  # the split is smaller than the budget
    with pytest.raises(DataError, match="needs three"):
        curve_sizes(24, 48, [0.25, 0.5, 1.0])  # 6 rows is below the smallest run


# ---- the decision ------------------------------------------------------------------------------
def _result(name, right, n=40, kind="classify", latency=0.5, **metrics):
    per = [1.0] * right + [0.0] * (n - right)
    low, high = bootstrap_mean_ci(per)
    main = {"classify": "accuracy", "qa": "f1"}[kind]
    return EvalResult(candidate=name, n=n, kind=kind, per_example=per,
                      metrics={main: right / n, f"{main}_ci_low": low, f"{main}_ci_high": high,
                               "latency_p50_s": latency, "latency_mean_s": latency, **metrics})


def _setting(**kw):
    base = dict(kind="classify", main="accuracy", threshold=None, train_rows=480, fit_share=0.9, epochs=1.0,
                held_out_rows=150)
    return Setting(**{**base, **kw})


def _curve_points(rights, rows=THREE, n=40, kind="classify"):
    points = [(r, _result(f"fine-tuned@{r}rows", k, n=n, kind=kind)) for r, k in zip(rows, rights)]
    return points, fit_curve(rows, [p.per_example for _, p in points], resamples=200)


def _speed():
    return TrainingSpeed(rows=48, fit_rows=43, epochs=1.0, trained_tokens=43 * 100, tokens_per_second=100.0)


def test_the_cheaper_of_two_tied_candidates_is_picked_and_called_tied():
    points, curve = _curve_points([4, 5, 6])
    # few-shot is 2 rows ahead of tfidf-logreg on 40: no paired test can tell them apart
    advice = decide(_setting(), [_result("tfidf-logreg", 30, latency=0.005), _result("few-shot", 32, latency=1.0),
                                 _result("prompt-only", 6)], points, curve, _speed())
    assert advice.approach == "classical" and advice.candidate == "tfidf-logreg"
    assert "tied with the best, few-shot" in advice.headline and "cheaper" in advice.headline
    assert advice.figures["tied_with_best"] == ["few-shot", "tfidf-logreg"]


def test_a_cheaper_tied_candidate_below_the_tasks_threshold_is_not_picked_over_one_that_meets_it():
    """As the scorecard's verdict: tfidf-logreg (75%) tied with few-shot (80%) is not picked for
    being cheaper when the task's bar is 78%, which few-shot meets; the headline says why."""
    points, curve = _curve_points([4, 5, 6])
    baselines = [_result("tfidf-logreg", 30, latency=0.005), _result("few-shot", 32, latency=1.0), _result("prompt-only", 6)]
    advice = decide(_setting(threshold=0.78), baselines, points, curve, _speed())
    assert advice.candidate == "few-shot" and advice.figures["tied_below_threshold"] == ["tfidf-logreg"]
    assert "tfidf-logreg (75.0%) is tied with it and cheaper but below the task's threshold (78.0% accuracy)" \
        in advice.headline
    assert decide(_setting(threshold=0.9), baselines, points, curve, _speed()).candidate == "tfidf-logreg"  # neither


def test_a_clear_winner_is_named_with_the_test_that_separates_it():
    points, curve = _curve_points([20, 50, 60], n=200)  # 10%, 25%, 30%: rising, levelling off
    advice = decide(_setting(), [_result("tfidf-logreg", 160, n=200), _result("prompt-only", 20, n=200)],
                    points, curve, _speed())
    assert curve.rises
    assert advice.approach == "classical"
    assert "ahead of every other candidate" in advice.headline and "projected below it" in advice.headline
    # three runs for three parameters: the projection is said to be unchecked, and how to measure it
    assert not curve.identifiable and "whose shape nothing here checks: `taskfit run`" in advice.headline
    five, curve5 = _curve_points([20, 35, 50, 55, 60], rows=FIVE, n=200)
    checked = decide(_setting(), [_result("tfidf-logreg", 160, n=200)], five, curve5, _speed())
    assert curve5.identifiable and "projected below it" in checked.headline
    assert "nothing here checks" not in checked.headline


def test_a_projection_wins_only_when_its_band_clears_the_measured_pick():
    # the fine-tune climbs steeply on 5,000 held-out rows (77% on 48 rows); the best cheap
    # candidate measures 80%, above every fine-tune measured
    rows, held_out = [12, 24, 48], 5000
    rights = [int(held_out * power_law(n, 0.97, 2.0, 0.6)) for n in rows]
    points, curve = _curve_points(rights, rows, n=held_out)
    cheap = _result("few-shot", int(held_out * 0.8), n=held_out)
    assert cheap.metrics["accuracy"] > max(p.metrics["accuracy"] for _, p in points)
    advice = decide(_setting(train_rows=2000), [cheap], points, curve, _speed())
    assert curve.band(2000)[0] > cheap.metrics["accuracy_ci_high"]
    assert advice.approach == FINE_TUNE and "A projection, not a measurement" in advice.headline
    # the same fine-tune, with a cheap candidate inside the projected band: tied, the cheaper stays
    low, high = curve.band(2000)
    inside = _result("few-shot", int(held_out * (low + high) / 2), n=held_out)
    tied = decide(_setting(train_rows=2000), [inside], points, curve, _speed())
    assert tied.approach == "few-shot" and "tied with it, so the cheaper stays" in tied.headline
    # ... and the advice says what would settle it and what that costs here: 1,800 rows trained on
    # (the rest validate) at 100 tokens a row and 100 tokens/s is 30 minutes
    assert "training it on all rows takes about 30 min here, and `taskfit run` measures it" in tied.headline


def test_a_qa_fine_tune_with_documents_is_rag_plus_fine_tune():
    points, curve = _curve_points([30, 34, 38], kind="qa")
    baselines = [_result("rag", 8, kind="qa"), _result("prompt-only", 4, kind="qa")]
    advice = decide(_setting(kind="qa", main="f1", documents=True), baselines, points, curve, _speed())
    assert advice.approach == RAG_FINE_TUNE and "retrieval" in advice.headline
    without = decide(_setting(kind="qa", main="f1"), baselines, points, curve, _speed())
    assert without.approach == FINE_TUNE


def test_a_threshold_the_curve_cannot_reach_is_not_reachable_with_this_model():
    points, curve = _curve_points([20, 70, 80], n=200)  # 10%, 35%, 40%: rising, levelling off well below 85%
    advice = decide(_setting(threshold=0.85), [_result("tfidf-logreg", 170, n=200)], points, curve, _speed())
    assert curve.rises
    text = "\n".join(advice.markdown("advice").splitlines())
    assert "not reachable with this model" in text
    assert advice.figures["rows_needed"]["estimate"] is None


def test_a_curve_whose_band_reaches_the_threshold_does_not_call_it_unreachable():
    # as on the quickstart at seed 1, where the fit to three heads on 12-48 rows levelled off at
    # 25% with a band up to 100%, and the head on all 480 rows then scored 90.7%: a fit below the
    # threshold whose band is not
    points, curve = _curve_points([1, 6, 9])
    advice = decide(_setting(threshold=0.85), [_result("tfidf-logreg", 34)], points, curve, _speed())
    text = advice.markdown("advice")
    assert curve.levels_off < 0.85 <= curve.levels_off_band()[1]
    assert "not reachable" not in text and "cannot tell whether this model reaches it" in text


def test_the_fine_tune_pays_for_its_training_after_the_volume_the_prices_give():
    points, curve = _curve_points([30, 34, 38])
    # Training: 100 tokens a row at 100 tokens/s is 1 s a row; 3,600 rows, none held back, one
    # epoch: 1 hour at $2/hour = $2. Serving: 0.36 s a query at $2/hour = $0.20 per 1,000. The
    # endpoint's $1.20 per 1,000 saves $1 per 1,000 queries: $2 back after 2,000 queries, which
    # at 1,000 queries a month is 2 months.
    speed = TrainingSpeed(rows=48, fit_rows=48, epochs=1.0, trained_tokens=4800, tokens_per_second=100.0)
    points[-1][1].metrics.update(latency_mean_s=0.36, cost_per_1k_usd=0.36 * 2 * 1000 / 3600)
    endpoint = _result("endpoint", 10, cost_per_1k_usd=1.2)
    advice = decide(_setting(train_rows=3600, fit_share=1.0, price_per_hour=2.0, queries_per_month=1000),
                    [endpoint, _result("prompt-only", 5)], points, curve, speed)
    assert advice.approach == FINE_TUNE
    cost = advice.figures["cost"]
    assert cost["one_off_usd"] == pytest.approx(2.0)
    assert cost["break_even_queries"] == pytest.approx(2000)
    assert cost["break_even_months"] == pytest.approx(2.0)
    assert advice.figures["time"]["train_seconds"] == pytest.approx(3600)
    assert "pays for its training after about 2,000 queries" in advice.markdown("advice")


def test_an_unpriced_machine_is_said_to_be_unpriced():
    points, curve = _curve_points([4, 5, 6])
    advice = decide(_setting(), [_result("tfidf-logreg", 34)], points, curve, _speed())
    assert "eval.price_per_hour is 0" in advice.markdown("advice")


def test_curve_points_that_cannot_make_a_curve_are_refused_naming_the_key():
    from taskfit.config import parse_config
    from taskfit.errors import ConfigError

    doc = {"task": {"kind": "classify", "success": "s", "system_prompt": "p", "labels": ["a", "b"]},
           "data": {"train": "t.jsonl"}}
    assert parse_config({**doc, "advise": {"curve_points": [0.2, 0.6, 1.0]}}).advise.curve_points == [0.2, 0.6, 1.0]
    for bad in ([0.5, 1.0], [0.5, 0.25, 1.0], [0.25, 0.5, 0.75]):
        with pytest.raises(ConfigError, match=r"advise\.curve_points: got"):
            parse_config({**doc, "advise": {"curve_points": bad}})


def test_a_training_time_past_two_hours_names_the_rows_that_train_in_about_one():
    """A walkthrough: 151 intents, no cap; the estimate said hours and nothing about cutting it."""
    points, curve = _curve_points([30, 34, 38])
    slow = TrainingSpeed(rows=48, fit_rows=48, epochs=1.0, trained_tokens=4800, tokens_per_second=10.0, steady=True)
    # 100 tokens a row at 10 tokens/s: 10 s a row; 9,000 rows * 0.9 trained on: 22.5 hours
    advice = decide(_setting(train_rows=9000), [_result("prompt-only", 5)], points, curve, slow)
    text = " ".join(advice.markdown("advice").split())
    assert advice.figures["time"]["train_seconds"] == pytest.approx(8100 * 10)
    assert advice.figures["time"]["rows_in_an_hour"] == 400  # 360 rows trained on, 40 validating
    assert "`data.max_train_examples: 400`" in text and "its median step after the first" in text
    # the key it names is the one taskfit.yaml takes (train.max_train_examples, named before, is refused)
    from taskfit.config import parse_config
    from taskfit.errors import ConfigError

    doc = {"task": {"kind": "classify", "success": "s", "system_prompt": "p", "labels": ["a", "b"]},
           "data": {"train": "t.jsonl"}}
    assert parse_config({**doc, "data": {**doc["data"], "max_train_examples": 400}}).data.max_train_examples == 400
    with pytest.raises(ConfigError):
        parse_config({**doc, "train": {"max_train_examples": 400}})
    quick = decide(_setting(), [_result("prompt-only", 5)], points, curve, _speed())  # 480 rows: 7 min
    assert "max_train_examples" not in quick.markdown("advice")


def test_the_training_speed_is_the_median_step_after_the_warm_up():
    from taskfit.training.loop import LoopResult, LoopState

    state = LoopState(step=5, trained_tokens=500, seconds=80.0, step_rates=[1.4, 100.0, 90.0, 120.0, 95.0])
    result = LoopResult(state=state, total_steps=5, steps_per_epoch=5)
    assert result.tokens_per_second == pytest.approx(6.25)  # the first step's 70 s in it
    assert result.steady_tokens_per_second == 100.0


def test_a_bound_on_the_rows_needed_far_past_the_curve_is_printed_as_over_not_as_its_digits():
    """A helpdesk export's curve (heads on 12, 24 and 48 rows: 12.5%, 15%, 35%) put the rows that
    reach 85% between 3,190 and 103,015,216,262,804,275,200: the upper bound is a fitted tail's
    digits, not a figure. Past 1,000x the largest run it reads as "over" that many rows."""
    import re

    points, curve = _curve_points([5, 6, 14])
    need = curve.rows_needed(0.85)
    assert need.reachable and need.high > 1000 * 48  # the case the advice must not print digit by digit
    advice = decide(_setting(threshold=0.85, train_rows=2359), [_result("tfidf-logreg", 40)], points, curve,
                    _speed())
    line = next(x for x in advice.markdown("advice").splitlines() if "training rows reach it" in x)
    assert "to over 48,000 (1,000x the largest run)" in line, line
    assert not re.search(r"\d{1,3}(,\d{3}){4,}", line), line  # nothing of a trillion rows or more
    assert advice.figures["rows_needed"]["high"] == need.high  # advice.json keeps the fitted bound


def test_a_qa_pick_no_better_than_refusing_every_question_is_said_to_be_so():
    """The floor the scorecard's verdict warns of: 22 of 40 held-out questions unanswerable, and the
    pick refuses them all and answers none of the rest (a walkthrough's qa fine-tune refused 59 of
    60 and was kept); a pick well above that floor is not warned of."""
    points, curve = _curve_points([10, 12, 14], kind="qa")
    floor = {"refuse_all_f1": 22 / 40, "refusal_rate": 1.0, "answerable_f1": 0.0, "refuse_all_p": 1.0}
    refuser = _result("few-shot", 22, kind="qa", **floor)
    advice = decide(_setting(kind="qa", main="f1"), [refuser, _result("prompt-only", 4, kind="qa")], points, curve,
                    _speed())
    assert advice.candidate == "few-shot" and advice.figures["below_refusing_all"]
    assert ("Mind the floor: few-shot scores no better than refusing every question would (55.0% against 55.0% F1"
            in advice.headline) and "it has not shown that it answers." in advice.headline
    answering = _result("few-shot", 36, kind="qa", **{**floor, "refusal_rate": 0.6, "answerable_f1": 0.8,
                                                      "refuse_all_p": 0.001})
    clear = decide(_setting(kind="qa", main="f1"), [answering], points, curve, _speed())
    assert "Mind the floor" not in clear.headline and not clear.figures["below_refusing_all"]
