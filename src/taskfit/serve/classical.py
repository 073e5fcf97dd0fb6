"""Classical candidates behind the same API: a fitted ``tfidf-logreg`` or ``embeddings-logreg``
(:mod:`taskfit.baselines.classical`) answers a classify request with a label of the task, its
calibrated confidence and, below the threshold, the fallback, exactly as the scorecard measured it:
the server loads the model ``taskfit baseline`` saved in ``<project>/baselines/<name>/`` and asks
it through the same :class:`~taskfit.baselines.classical.ClassicalPredictor` and the same
:func:`~taskfit.tasks.classify.with_fallback` policy.

No language model is involved: a request is answered in milliseconds on one of the server's
worker threads, beside the language model's own worker, never waiting behind a batch. A server
with classical models only (no adapters, no ``base``) loads no language model at all
(:class:`ClassicalOnly`).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from taskfit.errors import ConfigError
from taskfit.records import Example
from taskfit.serve.config import ClassicalSpec
from taskfit.serve.engine import Engine, Job, Result, Served
from taskfit.tasks.base import CLASSICAL, EMBEDDINGS
from taskfit.tasks.classify import with_fallback

SERVABLE = (CLASSICAL, EMBEDDINGS)


class ServedClassifier:
    """A loaded classical model and the lock that keeps its encoder's tokenizer to one thread."""

    def __init__(self, model: Any):
        from taskfit.baselines.classical import ClassicalPredictor

        self.name = model.name
        self.predictor = ClassicalPredictor(model)
        self.lock = threading.Lock()
        self.predictor.answer("warm-up")  # the encoder loads now, not on the first request

    def answer(self, example: Example) -> tuple[str, float]:
        with self.lock:
            return self.predictor.answer(example.input)


def load_served(name: str, spec: ClassicalSpec) -> Served:
    """The classical model saved in ``spec.path``, served as ``name`` with the task and fallback
    settings it was fitted with (unless ``spec`` sets its own)."""
    from taskfit.baselines.classical import load_classical, read_card
    from taskfit.config import PrivacySpec, TaskSpec

    card = read_card(spec.path)
    if card is None:
        raise ConfigError(f"{spec.path}: no fitted classical model here (model.joblib and model.json)",
                          hint="`taskfit baseline DIR --only embeddings-logreg` (or tfidf-logreg) fits one "
                               "and saves it in DIR/baselines/<name>")
    task = TaskSpec.model_validate(card["task"])
    privacy = card.get("privacy")
    project = Path(spec.path).resolve().parent.parent / "taskfit.yaml"  # <project>/baselines/<name>
    if privacy is None and project.is_file():  # fitted before cards recorded it: the project's setting
        from taskfit.config import load_config

        privacy = load_config(project).data.privacy.model_dump(mode="json")
    threshold = spec.confidence_threshold if spec.confidence_threshold is not None else card.get("confidence_threshold")
    fallback = spec.fallback or card.get("fallback")
    if threshold is not None and not fallback:
        raise ConfigError(f"classical.{name}: a confidence_threshold needs a fallback answer (e.g. needs_human)")
    return Served(name=name, adapter=None, parent=None, task=task, threshold=threshold, fallback=fallback,
                  path=Path(spec.path), classical=ServedClassifier(load_classical(spec.path)),
                  privacy=PrivacySpec.model_validate(privacy) if privacy is not None else None)


def add_classical(engine: Engine, spec: Any) -> None:
    """Load every classical model of ``spec`` (a ServeSpec) into the engine's served set."""
    for name, entry in spec.classical.items():
        if name in engine.models:
            raise ConfigError(f"model name {name!r} is already served")
        engine.status(f"loading classical model {name} from {entry.path}")
        engine.models[name] = load_served(name, entry)


def answer(job: Job) -> None:
    """Answer a request to a classical model (on a worker thread): the likeliest label and its
    confidence, or the fallback below the threshold; ``job.on_done`` gets the result or the error."""
    served = job.model
    if job.cancelled:
        job.on_done(TimeoutError("cancelled before it started"))
        return
    try:
        label, confidence = served.classical.answer(job.example)
    except Exception as exc:  # handed to the HTTP side, which answers 500 and logs it
        job.on_done(exc)
        return
    text, low = with_fallback(label, confidence, served.threshold, served.fallback)
    if job.on_text is not None:
        job.on_text(text)
    job.on_done(Result(text=text, prompt_tokens=0, completion_tokens=0, finish_reason="stop",
                       confidence=confidence, fallback=low, label=label))


class ClassicalOnly(Engine):
    """A server of classical models only: no language model is loaded, none is served."""

    def load(self) -> None:
        self.model = self.tokenizer = None
        self.context = 0


def wants_language_model(spec: Any) -> bool:
    """Whether a ServeSpec needs a language model: adapters to serve, or a base named (a server
    following the registry names the base of the adapter versions it may switch to)."""
    return bool(spec.adapters_by_path) or spec.base is not None or not (spec.classical or spec.adapters)


def project_candidate(project: Path, name: str) -> dict[str, Any]:
    """``taskfit serve DIR --candidate NAME``: the ``classical`` entry serving the project's fitted
    NAME, with the project's current ``eval.confidence_threshold`` and ``eval.fallback`` (the
    settings the scorecard applies)."""
    from taskfit.config import load_config
    from taskfit.paths import classical_dir

    if name not in SERVABLE:
        raise ConfigError(f"--candidate {name}: choose fine-tuned (the default: the latest finished run), "
                          f"{', '.join(SERVABLE)}",
                          hint="the prompt-only and few-shot baselines are the base model with a prompt (few-shot's "
                               "with the most similar training rows in it): serve the base model (`taskfit serve "
                               "--base MODEL`) and send that prompt")
    config = load_config(project / "taskfit.yaml")
    folder = classical_dir(project, name).resolve()
    if not (folder / "model.json").exists():
        raise ConfigError(f"{folder}: {name} has not been fitted in this project",
                          hint=f"`taskfit baseline {project} --only {name}` fits it and scores it")
    return {"path": str(folder), "confidence_threshold": config.eval.confidence_threshold,
            "fallback": config.eval.fallback}
