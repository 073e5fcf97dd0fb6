"""How far keywords get on the quickstart's sample tickets: TF-IDF and logistic regression.

It builds the quickstart project for each seed, prepares it the way `taskfit run` does (checks,
de-duplication, the stratified split, the quickstart's 480 training / 150 held-out rows) and scores
two keyword models on the held-out rows: taskfit's own `tfidf-logreg` baseline, and a tuned one
(word 1-2-grams plus character 2-5-grams, C chosen by 5-fold cross-validation). `--all-rows` also
scores both on every training and held-out row, without the quickstart's caps.

    .venv/bin/python bench/sample_keywords.py                  # seed 0, about a minute on 2 cores
    .venv/bin/python bench/sample_keywords.py --seeds 0 1 2 --all-rows
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def prepared_split(seed: int, directory: Path, all_rows: bool = False):
    """The quickstart project's train and held-out examples, as `taskfit run` prepares them."""
    from taskfit.config import load_config
    from taskfit.data.prepare import prepare_data
    from taskfit.quickstart import make_quickstart_project

    project = directory / f"seed{seed}"
    make_quickstart_project(project, seed=seed, force=True)
    config = load_config(project)
    if all_rows:
        data = config.data.model_copy(update={"max_train_examples": None, "max_eval_examples": None})
        config = config.model_copy(update={"data": data})
    prepared = prepare_data(config, project)
    return prepared.train, prepared.eval


def tuned_model():
    """Word 1-2-grams and character 2-5-grams, C by 5-fold cross-validation."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                          TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True))
    return make_pipeline(features, LogisticRegressionCV(Cs=[0.3, 1, 3, 10, 30, 100], cv=5, max_iter=3000))


def keyword_accuracy(train, held, tuned: bool = False) -> float:
    """Accuracy on ``held`` of taskfit's tfidf-logreg baseline (or the tuned model) fitted on ``train``."""
    if tuned:
        model = tuned_model().fit([ex.input for ex in train], [ex.target for ex in train])
        outputs = model.predict([ex.input for ex in held])
    else:
        from taskfit.baselines.classical import TfidfLogRegPredictor

        outputs = [p.output for p in TfidfLogRegPredictor(train).predict(held)]
    return sum(out == ex.target for out, ex in zip(outputs, held)) / len(held)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--all-rows", action="store_true", help="also score without the quickstart's row caps")
    args = parser.parse_args()
    print("| seed | rows (train / held out) | tfidf-logreg | tuned (word + char, CV) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for all_rows in (False, True) if args.all_rows else (False,):
                train, held = prepared_split(seed, Path(tmp), all_rows)
                base, tuned = keyword_accuracy(train, held), keyword_accuracy(train, held, tuned=True)
                print(f"| {seed} | {len(train)} / {len(held)} | {base:.1%} | {tuned:.1%} |", flush=True)


if __name__ == "__main__":
    main()
