"""How far the cheap candidates get on the quickstart's sample tickets: taskfit's `tfidf-logreg`
(word and character n-grams, C by cross-validation) and `embeddings-logreg` (MiniLM sentence
embeddings), fitted and scored exactly as `taskfit baseline` does.

It builds the quickstart project for each seed, prepares it the way `taskfit run` does (checks,
de-duplication, the stratified split, the quickstart's 480 training / 150 held-out rows) and scores
both on the held-out rows. `--all-rows` also scores them on every training and held-out row,
without the quickstart's caps.

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


def classical_accuracy(train, held, name: str = "tfidf-logreg") -> float:
    """Accuracy on ``held`` of taskfit's classical candidate ``name`` fitted on ``train`` (no
    fallback: what the keywords or embeddings alone decide)."""
    from taskfit.baselines.classical import RECIPES, ClassicalPredictor, fit_classical

    predictor = ClassicalPredictor(fit_classical(RECIPES[name], train))
    outputs = [p.output for p in predictor.predict(held)]
    return sum(out == ex.target for out, ex in zip(outputs, held)) / len(held)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--all-rows", action="store_true", help="also score without the quickstart's row caps")
    args = parser.parse_args()
    print("| seed | rows (train / held out) | tfidf-logreg | embeddings-logreg |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for all_rows in (False, True) if args.all_rows else (False,):
                train, held = prepared_split(seed, Path(tmp), all_rows)
                tfidf = classical_accuracy(train, held)
                embeddings = classical_accuracy(train, held, "embeddings-logreg")
                print(f"| {seed} | {len(train)} / {len(held)} | {tfidf:.1%} | {embeddings:.1%} |", flush=True)


if __name__ == "__main__":
    main()
