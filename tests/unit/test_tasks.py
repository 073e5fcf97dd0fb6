"""Scorers per task kind and the comparison: numbers a user reads in the scorecard."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from sklearn.metrics import f1_score

from taskfit import stats
from taskfit.config import EvalSpec, TaskSpec
from taskfit.evaluation.compare import build_scorecard
from taskfit.records import EvalResult, Example, Prediction
from taskfit.tasks import parse, score
from taskfit.tasks.classify import _macro_f1_counts, bootstrap_ci, expected_calibration_error


def _fake(n=200, acc=0.7, seed=0):
    rng = random.Random(seed)
    labels = list("abcde")
    y_true = [rng.choice(labels) for _ in range(n)]
    y_pred = [y if rng.random() < acc else rng.choice(labels[:3]) for y in y_true]
    return labels, y_true, y_pred


def _pred(i, out, valid=True, conf=None, latency=0.01):
    return Prediction(example_id=str(i), output=out, valid=valid, latency_s=latency, prompt_tokens=10,
                      completion_tokens=2, confidence=conf)


CLASSIFY = TaskSpec(kind="classify", success="s", system_prompt="p", labels=list("abcde"))


def test_fast_macro_f1_matches_scikit_learn():
    labels, t, p = _fake()
    idx = {lab: i for i, lab in enumerate(labels)}
    ours = _macro_f1_counts(np.array([idx[y] for y in t]), np.array([idx[y] for y in p]), len(labels))
    assert abs(ours - f1_score(t, p, labels=labels, average="macro")) < 1e-12


def test_interval_contains_the_estimate_and_shrinks_with_more_data():
    small = bootstrap_ci(*_fake(n=50))
    large = bootstrap_ci(*_fake(n=2000))
    width = lambda ci: ci["accuracy"][1] - ci["accuracy"][0]
    assert width(large) < width(small)


def test_macro_f1_interval_holds_its_estimate_with_many_classes_of_few_rows():
    """151 intents with about three held-out rows each (clinc150's scorecard): resampled macro-F1
    runs below the held-out figure, and the plain percentile interval fell wholly below it (seen
    as 62.9% [54.3%, 62.9%] on a learning-curve run, which broke the report's bar plot)."""
    rng = random.Random(1)
    labels = [f"intent{i}" for i in range(150)]
    y_true = [lab for lab in labels for _ in range(3)]
    y_pred = [y if rng.random() < 0.6 else rng.choice(labels) for y in y_true]
    idx = {lab: i for i, lab in enumerate(labels)}
    t, p = np.array([idx[y] for y in y_true]), np.array([idx[y] for y in y_pred])
    estimate = _macro_f1_counts(t, p, len(labels))
    gen = np.random.default_rng(0)
    resampled = [_macro_f1_counts(t[i], p[i], len(labels)) for i in (gen.integers(0, len(t), len(t)) for _ in range(1000))]
    assert np.percentile(resampled, 97.5) < estimate  # the plain percentile interval misses it
    low, high = bootstrap_ci(labels, y_true, y_pred)["macro_f1"]
    assert low < estimate < high and high - low < 0.2
    labels, t5, p5 = _fake(n=400)  # a few classes of many rows: about the plain interval
    plain = bootstrap_ci(labels, t5, p5)["macro_f1"]
    assert plain[0] < f1_score(t5, p5, labels=labels, average="macro") < plain[1]


def test_macro_f1_interval_is_not_zero_width_when_each_class_has_one_held_out_row():
    """151 intents of one held-out row each (a small held-out split of clinc150): resampling within
    each true class never varied such a class, and the scorecard showed 85.0% [85.0, 85.0]."""
    rng = random.Random(3)
    labels = [f"intent{i}" for i in range(151)]
    y_pred = [y if rng.random() < 0.85 else rng.choice(labels) for y in labels]
    low, high = bootstrap_ci(labels, labels, y_pred)["macro_f1"]
    estimate = f1_score(labels, y_pred, labels=sorted(set(labels) | set(y_pred)), average="macro", zero_division=0)
    assert low < estimate < high
    assert high - low > 0.03  # one row a class: the figure moves by several points from set to set


def test_macro_f1_interval_covers_the_figure_held_out_sets_of_one_row_a_class_estimate():
    """Coverage over many held-out sets of one row a class, from one classifier (150 classes, each
    answered right with its own probability, else as one of the next five): the interval covers
    the held-out figure's mean over sets in most of them (25 of these 30; bench/macro_f1_interval.py:
    81% of 200);
    resampling within each true class covered it in none, every interval being of zero width."""
    k = 150
    right = np.random.default_rng(42).beta(6, 1.5, k)

    def held_out(seed):
        gen = np.random.default_rng(seed)
        t = np.arange(k)
        return t, np.where(gen.random(k) >= right, (t + gen.integers(1, 6, k)) % k, t)

    expected = np.mean([_macro_f1_counts(*held_out(10_000 + s), k) for s in range(500)])
    labels = [str(i) for i in range(k)]
    covered = 0
    for trial in range(30):
        t, p = held_out(100 + trial)
        low, high = bootstrap_ci(labels, [str(x) for x in t], [str(x) for x in p], n_boot=300, seed=trial)["macro_f1"]
        covered += low <= expected <= high
    assert covered >= 18  # of 30: most sets, if below the nominal 95% (the bench measures it)


def test_classify_counts_and_confusable_buckets():
    labels, t, p = _fake(n=100)
    exs = [Example(id=str(i), input="x", target=y) for i, y in enumerate(t)]
    preds = [_pred(i, y, latency=0.01 * (i % 10 + 1)) for i, y in enumerate(p)]
    r = score(CLASSIFY, EvalSpec(), "c", exs, preds)
    assert r.metrics["accuracy"] == sum(a == b for a, b in zip(t, p)) / 100
    assert r.metrics["accuracy_ci_low"] <= r.metrics["accuracy"] <= r.metrics["accuracy_ci_high"]
    assert sum(map(sum, r.confusion)) == 100 and sum(v["support"] for v in r.per_class.values()) == 100
    assert abs(r.metrics["latency_p50_s"] - 0.055) < 1e-9
    misses = sum(a != b for a, b in zip(t, p))
    assert sum(r.error_counts.values()) == misses
    assert all(k.startswith("confusable: ") for k in r.error_counts)
    assert r.per_example == [float(a == b) for a, b in zip(t, p)]


def test_low_confidence_goes_to_the_fallback_and_coverage_is_reported():
    exs = [Example(id=str(i), input="x", target=t) for i, t in enumerate(["a", "b", "oos", "a"])]
    preds = [_pred(0, "a", conf=0.9), _pred(1, "a", conf=0.3), _pred(2, "b", conf=0.2), _pred(3, "a", conf=0.8)]
    task = TaskSpec(kind="classify", success="s", system_prompt="p", labels=["a", "b", "oos"])
    plain = score(task, EvalSpec(), "c", exs, preds)
    gated = score(task, EvalSpec(confidence_threshold=0.5, fallback="oos"), "c", exs, preds)
    assert plain.metrics["accuracy"] == 0.5 and "coverage" not in plain.metrics
    assert gated.metrics["coverage"] == 0.5 and gated.metrics["covered_accuracy"] == 1.0
    assert gated.metrics["accuracy_raw"] == plain.metrics["accuracy"] == 0.5
    assert gated.metrics["accuracy"] == 0.75  # the oos row is now right, the b row sent to oos
    assert gated.curves["coverage"][-1][1] == 1.0


def test_a_fallback_needs_a_threshold_pair():
    with pytest.raises(ValueError, match="fallback"):
        EvalSpec(confidence_threshold=0.5)


def test_calibration_error_is_zero_when_confidence_matches_accuracy():
    assert expected_calibration_error([1.0, 1.0, 0.0 + 1e-9], [True, True, False]) < 1e-6
    assert abs(expected_calibration_error([0.9] * 10, [True] * 5 + [False] * 5) - 0.4) < 1e-9


def test_free_text_label_parsing():
    assert parse(CLASSIFY, " B.\n") == ("b", True)
    assert parse(CLASSIFY, "The answer is b") == ("The answer is b", False)


EXTRACT = TaskSpec(kind="extract", success="s", system_prompt="p", schema={
    "type": "object", "properties": {"city": {"type": "string"}, "size": {"type": "integer"}},
    "additionalProperties": False})


def test_extract_field_scores_missing_and_invented_apart():
    exs = [Example(id="0", input="x", target=json.dumps({"city": "Paris", "size": 4})),
           Example(id="1", input="y", target=json.dumps({"city": "Rome"})),
           Example(id="2", input="z", target=json.dumps({"city": "Oslo"}))]
    preds = [_pred(0, '```json\n{"city": "paris", "size": 4}\n```'),  # fence and case tolerated
             _pred(1, '{"city": "Rome", "size": 2}'),                  # an invented field
             _pred(2, "Oslo, I think")]                                # not JSON: city missing
    r = score(EXTRACT, EvalSpec(), "c", exs, preds)
    m = r.metrics
    assert m["json_valid_rate"] == pytest.approx(2 / 3) and m["exact_match"] == pytest.approx(1 / 3)
    assert m["field_precision"] == pytest.approx(3 / 4) and m["field_recall"] == pytest.approx(3 / 4)
    assert m["missing_fields"] == 1 and m["invented_fields"] == 1
    assert r.error_counts["invalid format"] == 1 and r.errors["invented field"][0]["detail"] == "size"
    assert r.per_example == [1.0, pytest.approx(2 / 3), 0.0]


def test_extract_schema_compliance_is_validity():
    assert parse(EXTRACT, '{"city": "Paris"}')[1] is True
    assert parse(EXTRACT, '{"city": "Paris", "size": "four"}')[1] is False  # wrong type
    assert parse(EXTRACT, '{"town": "Paris"}')[1] is False  # not allowed
    assert parse(EXTRACT, "{city: Paris}")[1] is False


QA = TaskSpec(kind="qa", success="s", system_prompt="p")


def test_qa_scores_answers_refusals_and_unsupported_answers():
    ctx = "The Eiffel Tower is in Paris and was finished in 1889."
    refusal = QA.refusal
    exs = [Example(id="0", input="Where?", target="Paris", context=ctx),
           Example(id="1", input="When?", target="in 1889", context=ctx),
           Example(id="2", input="Who painted it?", target=refusal, context=ctx),
           Example(id="3", input="How tall?", target=refusal, context=ctx),
           Example(id="4", input="Which city?", target="Paris", context=ctx)]
    preds = [_pred(0, "Paris."), _pred(1, "1889"), _pred(2, "Not enough evidence in the provided documents."),
             _pred(3, "About 300 metres"), _pred(4, "London, England")]
    r = score(QA, EvalSpec(), "c", exs, preds)
    m = r.metrics
    assert m["answerable_exact_match"] == pytest.approx(1 / 3)
    assert m["refusal_precision"] == 1.0 and m["refusal_recall"] == 0.5
    assert m["unsupported_rate"] == pytest.approx(2 / 5)  # answered the unanswerable; London not in context
    assert r.error_counts == {"unsupported answer": 2, "partial or wrong answer": 1}
    assert r.per_example[:3] == [1.0, pytest.approx(2 / 3), 1.0]


def test_a_refusal_earns_nothing_on_an_answerable_question_whatever_words_it_shares():
    """The refusal "not enough evidence in the provided documents" shares "in" with "the Catholic
    Church in the region": scored by token overlap it earned 0.2 F1 on that row, and a model that
    refused all 40 questions of a walkthrough scored above refusing everything would."""
    ctx = "The Catholic Church in the region sent aid."
    exs = [Example(id="0", input="Who sent aid?", target="the Catholic Church in the region", context=ctx),
           Example(id="1", input="Who painted it?", target=QA.refusal, context=ctx)]
    r = score(QA, EvalSpec(), "refuser", exs, [_pred(0, QA.refusal), _pred(1, QA.refusal)])
    assert r.per_example == [0.0, 1.0] and r.metrics["answerable_f1"] == 0.0
    assert r.metrics["f1"] == r.metrics["refuse_all_f1"] == 0.5 and r.error_counts == {"wrong refusal": 1}


def test_qa_refusal_precision_is_n_a_for_a_candidate_that_refused_nothing():
    """A walkthrough's scorecard showed 0.0% refusal precision for a candidate that never refused:
    with no refusals there is nothing to be precise about, so it shows n/a, a threshold on it
    reads n/a, and the verdict and its tests are made as before."""
    ctx = "The Eiffel Tower is in Paris."
    exs = [Example(id="0", input="Where?", target="Paris", context=ctx),
           Example(id="1", input="Who painted it?", target=QA.refusal, context=ctx)]
    answers = score(QA, EvalSpec(), "prompt-only", exs, [_pred(0, "Paris"), _pred(1, "Paris")])
    assert "refusal_precision" not in answers.metrics and answers.metrics["refusal_recall"] == 0.0
    refuses = score(QA, EvalSpec(), "few-shot", exs, [_pred(0, "Paris"), _pred(1, QA.refusal)])
    assert refuses.metrics["refusal_precision"] == 1.0
    card = build_scorecard([answers, refuses], {"refusal_precision": 0.5})
    rows = {row[0]: dict(zip(card.header, row)) for row in card.rows()}
    assert rows["prompt-only"]["refusal P"] == "n/a" and rows["few-shot"]["refusal P"] == "100.0%"
    assert rows["prompt-only"]["thresholds"] == "refusal_precision n/a"
    assert card.keep in rows and card.verdict


def _result(name, right, latency=0.5, tokens=100):
    return EvalResult(candidate=name, metrics={"accuracy": sum(right) / len(right), "macro_f1": 0.5,
                                               "latency_p50_s": latency, "prompt_tokens_mean": tokens},
                      n=len(right), kind="classify", per_example=[float(x) for x in right])


def test_mcnemar_and_paired_difference_see_a_real_difference_and_not_noise():
    rng = random.Random(0)
    base = [rng.random() < 0.6 for _ in range(400)]
    better = [True if not b and rng.random() < 0.5 else b for b in base]
    assert stats.mcnemar(better, base) < 1e-6
    assert stats.mcnemar(base, base) == 1.0
    diff, ci, p = stats.paired_difference(better, base)
    assert diff > 0 and ci[0] > 0 and p < 0.01
    same = [b if rng.random() < 0.9 else not b for b in base]
    assert stats.paired_difference(same, base)[2] > 0.05 or abs(stats.paired_difference(same, base)[0]) < 0.05


def test_few_rows_can_never_give_a_small_p_value():
    """Four held-out rows that all favour one side: a bootstrap's own p-value read 0.002 (the
    promotion gate refused on it); the paired swap test runs through all 16 swaps and cannot go
    below 2/16, for a mean per row and for the pooled field F1 alike. Many rows still show a
    real difference."""
    diff, _, p = stats.paired_difference([0.5, 0.75, 0.6, 0.9], [1.0, 1.0, 1.0, 1.0])
    assert diff < 0 and p == 2 / 16
    production = [[2, 2, 2]] * 4  # each row: right, answered, due
    retrained = [[1, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]]
    f1_diff, _, f1_p = stats.paired_difference_f1(retrained, production)
    assert f1_diff < 0 and f1_p >= 2 / 16
    rng = random.Random(3)
    many = [[int(rng.random() < 0.9), 1, 1] for _ in range(200)]
    worse = [[r if rng.random() < 0.7 else 0, a, g] for r, a, g in many]
    assert stats.paired_difference_f1(many, worse)[2] < 0.01


def test_verdict_keeps_the_fine_tune_only_when_the_paired_test_says_so():
    rng = random.Random(1)
    base = [rng.random() < 0.6 for _ in range(300)]
    prompt = _result("prompt-only", [False] * 300, tokens=400)
    classical = _result("tfidf-logreg", base, latency=0.001, tokens=0)
    better = _result("fine-tuned", [True if not b and rng.random() < 0.6 else b for b in base], tokens=80)
    keep = build_scorecard([prompt, classical, better], {"accuracy": 0.7})
    assert keep.verdict.startswith("Keep the fine-tuned adapter") and "tfidf-logreg" in keep.verdict
    assert keep.tests[0].against == "tfidf-logreg" and keep.tests[0].test.startswith("McNemar")
    worse = _result("fine-tuned", [b and rng.random() < 0.6 for b in base], latency=0.4)
    lose = build_scorecard([prompt, classical, worse], {})
    assert lose.verdict.startswith("Fine-tuning is not worth it") and "Keep tfidf-logreg" in lose.verdict
    assert "and it is cheaper to run: " in lose.verdict and "faster" in lose.verdict
    close = _result("fine-tuned", [b if i % 60 else not b for i, b in enumerate(base)])
    unsure = build_scorecard([prompt, classical, close], {})
    assert unsure.verdict.startswith("Not proven") and unsure.warnings and "rows would be needed" in unsure.warnings[0]
    assert "tfidf-logreg costs less" in unsure.verdict  # 500x faster
    few = _result("few-shot", base, latency=1.5, tokens=135)
    lean = _result("fine-tuned", [b if i % 60 else not b for i, b in enumerate(base)], latency=1.0, tokens=41)
    cheaper = build_scorecard([prompt, few, lean], {}).verdict
    assert cheaper.startswith("Not proven") and "fine-tuned model is cheaper to run (3.3x fewer prompt tokens, 1.5x faster)" in cheaper
    rows = keep.rows()
    assert rows[2][0] == "fine-tuned" and "pass" in rows[2][-1] and "FAIL" in rows[0][-1]


def test_a_not_proven_verdict_says_what_the_kept_baseline_is_cheaper_than():
    """Two baselines tied (tfidf-logreg at 3 ms, embeddings-logreg at 7 ms) and a fine-tune within
    chance of them (141 ms): the verdict keeps the cheaper baseline and says how much cheaper it is
    than each, naming each, not the fine-tune's ratio beside the tied baseline's name."""
    rng = random.Random(2)
    base = [rng.random() < 0.8 for _ in range(300)]
    misses = [i for i, b in enumerate(base) if not b]
    tfidf = _result("tfidf-logreg", base, latency=0.003, tokens=0)
    embeddings = _result("embeddings-logreg", [b or i in misses[:2] for i, b in enumerate(base)], latency=0.007,
                         tokens=0)
    tuned = _result("fine-tuned", [b if i % 60 else not b for i, b in enumerate(base)], latency=0.141, tokens=60)
    card = build_scorecard([tfidf, embeddings, tuned], {})
    assert card.verdict.startswith("Not proven") and card.keep == "tfidf-logreg"
    assert "tfidf-logreg is tied with embeddings-logreg (" in card.verdict
    assert "and cheaper to run (2.3x faster)" in card.verdict
    assert "it costs less than the fine-tuned model (47x faster)" in card.verdict
    assert "and costs less (47x faster)" not in card.verdict


GENERATE = TaskSpec(kind="generate", success="s", system_prompt="p",
                    reply={"min_words": 4, "max_words": 20, "must_include": ["let us know"],
                           "must_not_include": ["as an AI"], "patterns": [r"^Hi\b"]})


def test_generate_house_rules_overlap_and_style():
    from taskfit.tasks.generate import StyleModel, rule_violations

    assert rule_violations(GENERATE.reply, "Hi Ann, your refund is on its way. Let us know if not.") == []
    assert rule_violations(GENERATE.reply, "Refund sent.") == ["too short", "missing required phrase",
                                                               "pattern not matched"]
    assert "forbidden phrase" in rule_violations(GENERATE.reply, "Hi, as an AI I cannot; let us know")
    refs = [f"Hi {n}, thanks for writing. Your order is on its way. Let us know if we can help."
            for n in ("Ann", "Bo", "Cy", "Di", "Ed", "Flo")]
    base = [f"Sure! Here is a detailed answer about topic {i}: first, consider the options..." for i in range(6)]
    style = StyleModel(refs, base)
    in_style, off_style = style.scores(["Hi Gus, thanks for writing. Let us know if we can help.",
                                        "Sure! Here is a detailed answer: first, consider..."])
    assert in_style > 0.5 > off_style
    exs = [Example(id=str(i), input="q", target=refs[i]) for i in range(2)]
    preds = [_pred(0, refs[0]), _pred(1, "Sure! Here is a detailed answer about topic 9: first, consider the options...")]
    for p_, (reply, valid) in zip(preds, [(refs[0], True), (preds[1].output, False)]):
        assert parse(GENERATE, p_.output) == (reply, valid)
    r = score(GENERATE, EvalSpec(), "c", exs, preds, style=style)
    m = r.metrics
    assert r.per_example[0] == 1.0 and r.per_example[1] < 0.3 and m["rouge_l"] == sum(r.per_example) / 2
    assert m["chrf"] < 1.0 and m["format_compliance"] == 0.5 and m["length_compliance"] == 1.0
    assert 0.0 < m["style_match"] < 1.0 and r.error_counts["off style"] == 1
