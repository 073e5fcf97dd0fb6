"""The blind A/B review: which pairs a reviewer is shown, and the win rate's interval."""

from __future__ import annotations

import csv
import json

import pytest

from taskfit.errors import DataError
from taskfit.evaluation.review import export_review, import_review, load_reviews, save_review
from taskfit.records import Example, Prediction


def _preds(examples, outputs):
    return [Prediction(example_id=ex.id, output=out, valid=True, latency_s=0.01, prompt_tokens=5,
                       completion_tokens=1) for ex, out in zip(examples, outputs)]


def _fill(paths, tmp_path, verdicts):
    """Answer each item of the exported sheet by ``verdicts`` ('a', 'b' or 'tie', in item order)."""
    key = json.loads(paths["key"].read_text())
    rows = list(csv.DictReader(paths["csv"].open(encoding="utf-8-sig")))
    for row, v in zip(rows, verdicts):
        side_1 = key["items"][row["item"]]["side_1"]
        row["better"] = "tie" if v == "tie" else ("1" if side_1 == v else "2")
    out = tmp_path / "filled.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return import_review(out, paths["key"])


def test_a_classify_review_shows_only_rows_the_two_answered_differently_and_counts_the_rest(tmp_path):
    """Two classifiers that agree on 40 of 50 rows: the review asked a person to choose between two
    same labels on most of its items (judged on style), and their ties made the interval narrow."""
    examples = [Example(id=f"e{i:02d}", input=f"request {i}", target="billing") for i in range(50)]
    a = _preds(examples, ["billing"] * 50)
    b = _preds(examples, ["billing"] * 40 + ["refund"] * 10)
    paths = export_review(tmp_path / "review", examples, "fine-tuned", a, "tfidf-logreg", b, n=20)
    key = json.loads(paths["key"].read_text())
    rows = list(csv.DictReader(paths["csv"].open(encoding="utf-8-sig")))
    assert len(rows) == 10 and all(r["response_1"] != r["response_2"] for r in rows)
    assert (key["rows"], key["agreed"]) == (50, 40)
    result = _fill(paths, tmp_path, ["a"] * 6 + ["b"] * 4)
    assert "10 items of the 10 held-out rows the two answered differently (40 of 50 answered alike" \
        in result.sentence()
    with pytest.raises(DataError, match="same answer on all 50"):
        export_review(tmp_path / "same", examples, "fine-tuned", a, "prompt-only", a, n=20)


def test_ties_do_not_narrow_the_win_rates_interval(tmp_path):
    """6 wins, 4 losses and 40 ties, ties counted as half a win: 52% [46%, 58%], as if 50 items had
    shown a near-even preference; the ties say nothing of which is better."""
    from scipy.stats import binomtest

    examples = [Example(id=f"e{i:02d}", input=f"a reply to write {i}", target="x") for i in range(50)]
    a = _preds(examples, [f"answer a {i}" for i in range(50)])
    b = _preds(examples, [f"answer b {i}" for i in range(50)])
    paths = export_review(tmp_path / "review", examples, "fine-tuned", a, "few-shot", b, n=50)
    tied = _fill(paths, tmp_path, ["a"] * 6 + ["b"] * 4 + ["tie"] * 40)
    decided = _fill(paths, tmp_path, ["a"] * 6 + ["b"] * 4)
    assert (tied.judged, tied.ties, decided.judged) == (50, 40, 10)
    assert tied.win_rate == decided.win_rate == 0.6 and tied.ci == decided.ci
    wilson = binomtest(6, 10).proportion_ci(method="wilson")
    assert tied.ci == pytest.approx((wilson.low, wilson.high)) and tied.ci[0] < 0.5  # 6 of 10 proves little
    assert "fine-tuned won 60% of the 10 decided [31%, 83%] (95% Wilson, ties left out)" in tied.sentence()
    # kept for compare, and read back with the same figures
    save_review(tmp_path / "evals", tied)
    [again] = load_reviews(tmp_path / "evals")
    assert again.sentence() == tied.sentence()
