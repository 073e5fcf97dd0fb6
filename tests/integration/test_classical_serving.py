"""The classical candidates as users meet them: `taskfit baseline` lists and scores
`tfidf-logreg` and `embeddings-logreg` (the real MiniLM, a few dozen rows), saves the fitted models
in the project keyed by the training rows, never lets the held-out rows near the fit, and
`taskfit serve DIR --candidate NAME` (or a serve.yaml `classical:` entry) answers through the
official `openai` client with the evaluated model's labels, confidences and fallback, without
loading a language model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import openai
import pytest
import yaml
from typer.testing import CliRunner

from taskfit.cli.main import app
from taskfit.quickstart import make_quickstart_project
from taskfit.serve import load_serve_config
from taskfit.serve.app import create_app
from taskfit.workflows import baseline_project, compare_project
from taskfit.workflows.workspace import Workspace

BOTH = ["tfidf-logreg", "embeddings-logreg"]


def _project(root, model_dir, name="p", **eval_):
    """The quickstart's tickets, 48 training and 12 held-out rows, in separate files."""
    path = make_quickstart_project(root / name, seed=0, n_tickets=300)
    doc = yaml.safe_load(path.read_text())
    rows = (path.parent / doc["data"]["train"]).read_text().splitlines()
    (path.parent / "data" / "train.jsonl").write_text("\n".join(rows[:48]) + "\n")
    (path.parent / "data" / "held_out.jsonl").write_text("\n".join(rows[48:60]) + "\n")
    doc["model"]["name"] = str(model_dir)
    doc["data"].update(train="data/train.jsonl", eval="data/held_out.jsonl", max_train_examples=None,
                       max_eval_examples=None)
    doc["eval"].update(generation_sample=0, **eval_)
    path.write_text(yaml.safe_dump(doc))
    return path.parent


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, tiny_model_dir):
    """A project whose classical baselines have been evaluated (and so fitted and saved)."""
    project = _project(tmp_path_factory.mktemp("classical"), tiny_model_dir,
                       confidence_threshold=0.3, fallback="needs_human")
    result = CliRunner().invoke(app, ["baseline", str(project), "--only", BOTH[0], "--only", BOTH[1]])
    assert result.exit_code == 0, result.output
    return {"project": project, "output": result.output}


def _evaluated(project, name):
    (evals,) = project.glob("evals/*")
    lines = (evals / "predictions" / f"{name}.jsonl").read_text().splitlines()[1:]
    return {row["example_id"]: row for row in map(json.loads, lines)}


def test_baseline_lists_scores_and_saves_both_classical_models(fitted):
    project = fitted["project"]
    ws = Workspace.open(project)
    for name in BOTH:
        assert f"{name}: accuracy" in fitted["output"]
        card = json.loads((project / "baselines" / name / "model.json").read_text())
        assert card["rows"] == len(ws.train) and card["folds"] >= 2 and str(card["C"]) in card["cv_accuracy"]
        assert card["train_fingerprint"] == ws.train_fingerprint and card["fallback"] == "needs_human"
        assert card["task"]["labels"] == ws.config.task.labels
    (evals,) = project.glob("evals/*")
    sizes = {n: json.loads((evals / "results" / f"{n}.json").read_text())["metrics"]["params_m"] for n in BOTH}
    assert sizes["embeddings-logreg"] > 20 > sizes["tfidf-logreg"] > 0  # the encoder's 22.7M count
    comparison = compare_project(project)
    card = json.loads(comparison.json.read_text())
    assert set(BOTH) <= set(card["candidates"])
    assert "| embeddings-logreg |" in comparison.markdown.read_text()
    # A second `taskfit baseline` neither refits nor predicts again.
    stamp = (project / "baselines" / "embeddings-logreg" / "model.joblib").stat().st_mtime_ns
    before = (evals / "predictions" / "embeddings-logreg.jsonl").read_text()
    assert CliRunner().invoke(app, ["baseline", str(project), "--only", "embeddings-logreg"]).exit_code == 0
    assert (project / "baselines" / "embeddings-logreg" / "model.joblib").stat().st_mtime_ns == stamp
    assert (evals / "predictions" / "embeddings-logreg.jsonl").read_text() == before


def test_calibrated_confidence_sends_the_unsure_rows_to_the_fallback(fitted, tmp_path):
    """A threshold set after the evaluation applies to the cached predictions: every row under it,
    and only those, is answered with the fallback."""
    for name in BOTH:
        project = shutil.copytree(fitted["project"], tmp_path / name)
        confidences = sorted(row["confidence"] for row in _evaluated(project, name).values())
        threshold = confidences[len(confidences) // 2]  # the median: rows on both sides
        doc = yaml.safe_load((project / "taskfit.yaml").read_text())
        doc["eval"]["confidence_threshold"] = threshold
        (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
        result = {r.candidate: r for r in compare_project(project).scorecard.results}[name]
        below = sum(c < threshold for c in confidences)
        assert 0 < below < len(confidences)
        assert result.metrics["coverage"] == pytest.approx(1 - below / len(confidences))
        column = result.labels.index("needs_human")
        assert sum(row[column] for row in result.confusion) == below  # answered with the fallback


def test_held_out_rows_never_reach_the_fit(tmp_path, tiny_model_dir):
    project = _project(tmp_path, tiny_model_dir)
    (tfidf,) = baseline_project(project, only=["tfidf-logreg"])
    saved = project / "baselines" / "tfidf-logreg"
    first = json.loads((saved / "model.json").read_text())
    from taskfit.baselines.classical import load_classical

    coef = np.vstack([e.coef_ for e in load_classical(saved).classifier.estimators_])
    # Held-out rows that would change any fit they reached: the training texts' words (in reverse
    # order, so the data check does not take them for duplicates of training rows), every one
    # labelled with one queue, and twice as many as the training rows.
    train = [json.loads(line)["messages"][0]["content"] for line in
             (project / "data" / "train.jsonl").read_text().splitlines()]
    poison = [{"messages": [{"role": "user", "content": " ".join(text.split()[::-1]) + f" (copy {n})"},
                            {"role": "assistant", "content": "feedback"}]} for text in train for n in range(2)]
    (project / "data" / "held_out.jsonl").write_text("\n".join(json.dumps(r) for r in poison) + "\n")
    shutil.rmtree(saved)
    shutil.rmtree(project / "evals")
    baseline_project(project, only=["tfidf-logreg"])
    again = json.loads((saved / "model.json").read_text())
    assert {k: again[k] for k in ("C", "cv_accuracy", "rows", "key")} == \
           {k: first[k] for k in ("C", "cv_accuracy", "rows", "key")}
    # The temperature is found by a numerical minimiser over scores summed on several threads: the
    # same rows give the same temperature to the minimiser's tolerance, not to the last bit.
    assert again["temperature"] == pytest.approx(first["temperature"], rel=1e-4)
    assert np.allclose(np.vstack([e.coef_ for e in load_classical(saved).classifier.estimators_]), coef)
    # Other training rows are another model: refitted, under another key.
    rows = (project / "data" / "train.jsonl").read_text().splitlines()
    (project / "data" / "train.jsonl").write_text("\n".join(rows[:40]) + "\n")
    baseline_project(project, only=["tfidf-logreg"])
    refit = json.loads((saved / "model.json").read_text())
    assert refit["rows"] < first["rows"] and refit["key"] != first["key"] and refit["train_fingerprint"] != first["train_fingerprint"]


def _client(url):
    return openai.OpenAI(base_url=url, api_key="none", max_retries=0)


def _ask(client, model, text, **kw):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kw)


def test_served_classical_models_answer_as_evaluated_through_the_openai_client(fitted, tmp_path, loopback):
    project = fitted["project"]
    doc = {"classical": {"triage-emb": str(project / "baselines" / "embeddings-logreg"),
                         "triage-tfidf": str(project / "baselines" / "tfidf-logreg"),
                         "triage-strict": {"path": str(project / "baselines" / "embeddings-logreg"),
                                           "confidence_threshold": 1.0}},
           "log": {"path": str(tmp_path / "requests.sqlite")}}
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(doc))
    server = create_app(load_serve_config(tmp_path / "serve.yaml"))
    assert server.state.engine.model is None  # classical models only: no language model loaded
    client = _client(loopback(server))
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"triage-emb", "triage-tfidf", "triage-strict"}
    assert models["triage-emb"].taskfit["classical"] == "embeddings-logreg"
    assert models["triage-emb"].taskfit["fallback"] == "needs_human"
    labels = models["triage-emb"].taskfit["labels"]

    # Every held-out row, as evaluated, gets the evaluated answer with the evaluated confidence.
    held_out = Workspace.open(project).eval_rows
    for model, name in (("triage-emb", "embeddings-logreg"), ("triage-tfidf", "tfidf-logreg")):
        evaluated = _evaluated(project, name)
        assert set(evaluated) == {ex.id for ex in held_out}
        for ex in held_out:
            pred = evaluated[ex.id]
            choice = _ask(client, model, ex.input).choices[0]
            assert choice.taskfit["label"] == pred["output"] and choice.taskfit["label"] in labels
            assert choice.taskfit["confidence"] == pytest.approx(pred["confidence"], abs=1e-6)
            assert choice.message.content == (pred["output"] if pred["confidence"] >= 0.3 else "needs_human")
            assert choice.taskfit["fallback"] == (pred["confidence"] < 0.3)
    text = held_out[0].input
    strict = _ask(client, "triage-strict", text).choices[0]
    assert strict.message.content == "needs_human" and strict.taskfit["fallback"] is True
    streamed = list(_ask(client, "triage-tfidf", text, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == \
           _ask(client, "triage-tfidf", text).choices[0].message.content
    # Personal data is replaced as in the rows it was fitted and scored on (the card records the
    # project's data.privacy), so a request carrying an e-mail address answers as its redacted text.
    assert json.loads((project / "baselines" / "tfidf-logreg" / "model.json").read_text())["privacy"]["action"] \
        == "redact"
    for model in ("triage-tfidf", "triage-emb"):
        raw, placeholder = (_ask(client, model, f"Refund my order, reply to {who} please").choices[0].taskfit
                            for who in ("anna.smith@gmail.com", "<EMAIL>"))
        assert raw == placeholder, model
    with pytest.raises(openai.BadRequestError) as err:
        _ask(client, "triage-emb", text, response_format={"type": "json_object"})
    assert err.value.status_code == 400 and "classical classifier" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:  # one input, as evaluated
        client.chat.completions.create(model="triage-emb", messages=[{"role": "user", "content": "a"},
                                                                      {"role": "assistant", "content": "b"},
                                                                      {"role": "user", "content": "c"}])
    # named as what it is: no adapter
    assert "triage-emb is a classical model (embeddings-logreg)" in err.value.message, err.value.message


def test_serve_dir_candidate_serves_the_fitted_model_under_the_task_name(fitted, loopback, monkeypatch):
    import taskfit.serve

    project = fitted["project"]
    specs = []
    monkeypatch.setattr(taskfit.serve, "serve", lambda spec, status=None: specs.append(spec))
    result = CliRunner().invoke(app, ["serve", str(project), "--candidate", "embeddings-logreg"])
    assert result.exit_code == 0, result.output
    (spec,) = specs
    task = yaml.safe_load((project / "taskfit.yaml").read_text())["task"]["name"]
    assert list(spec.classical) == [task] and not spec.adapters
    entry = spec.classical[task]
    assert entry.path == (project / "baselines" / "embeddings-logreg").resolve()
    assert (entry.confidence_threshold, entry.fallback) == (0.3, "needs_human")  # the project's, now
    choice = _ask(_client(loopback(create_app(spec.model_copy(update={"log": spec.log.model_copy(
        update={"path": None})})))), task, "I was charged twice").choices[0]
    assert choice.taskfit["label"] in yaml.safe_load((project / "taskfit.yaml").read_text())["task"]["labels"]

    result = CliRunner().invoke(app, ["serve", str(project), "--candidate", "few-shot"])
    assert result.exit_code == 2 and "choose fine-tuned" in result.output and "Traceback" not in result.output
    shutil.copytree(project, project.parent / "unfitted", ignore=shutil.ignore_patterns("baselines"))
    result = CliRunner().invoke(app, ["serve", str(project.parent / "unfitted"), "--candidate", "tfidf-logreg"])
    assert result.exit_code == 2 and "has not been fitted" in result.output and "--only tfidf-logreg" in result.output
