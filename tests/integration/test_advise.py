"""`taskfit advise` as a user runs it, on the tiny model and the sample tickets: a task the
classical baseline wins is advised as classical, with the learning curve's runs stored as
ordinary (marked) runs and evaluations that `compare --rows` shows and `eval` never takes as the
latest run; predictions already made on the whole held-out split are not made again on its first
rows; a second advise trains and predicts nothing."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from taskfit.cli.main import app
from taskfit.errors import ConfigError, DataError
from taskfit.evaluation.runner import read_predictions
from taskfit.quickstart import make_quickstart_project
from taskfit.workflows.workspace import Workspace, find_runs, is_curve_run, latest_run_dir


def _tickets(tmp_path, model_dir):
    path = make_quickstart_project(tmp_path / "tickets", seed=0, n_tickets=300)
    doc = yaml.safe_load(path.read_text())
    doc["model"]["name"] = str(model_dir)
    doc["data"].update(max_train_examples=120, max_eval_examples=30)
    doc["train"].update(batch_size=8, max_seq_length=128, eval_every=0, metric_sample=0, checkpoint_every=0)
    doc["baselines"].update(retriever="bm25", few_shot_k=2)
    doc["advise"] = {"eval_rows": 20, "curve_rows": 24, "curve_points": [0.5, 0.75, 1.0], "resamples": 100}
    path.write_text(yaml.safe_dump(doc))
    return path.parent


def test_advise_says_classical_where_the_classical_baseline_wins_and_costs_nothing_twice(tmp_path, tiny_model_dir):
    project = _tickets(tmp_path, tiny_model_dir)
    runner = CliRunner()
    scored = runner.invoke(app, ["baseline", str(project), "--only", "tfidf-logreg"])  # on all 30 held-out rows
    assert scored.exit_code == 0, scored.output
    first = runner.invoke(app, ["advise", str(project)])
    assert first.exit_code == 0, first.output
    (whole,) = project.glob("evals/*-30")
    assert f"tfidf-logreg: every prediction is cached in {whole.name}" in first.output  # its first 20 rows
    # a random tiny model learns nothing from 24 rows; TF-IDF words find the queue
    assert "Pick classical (" in first.output
    (evals,) = project.glob("evals/*-20")  # the first 20 held-out rows (of 30): their own store
    advice = json.loads((evals / "advice.json").read_text())
    assert advice["approach"] == "classical" and advice["candidate"] in ("tfidf-logreg", "embeddings-logreg")
    assert advice["figures"]["curve"]["rows"] == [12, 18, 24] and not advice["figures"]["curve"]["identifiable"]
    text = (evals / "advice.md").read_text()
    for words in ["## Candidates", "## Learning curve", "3 points for 3 parameters", "## Rows to the threshold",
                  "## Time on this machine", "tokens/s", "## Cost", "eval.price_per_hour is 0",
                  "(plots/learning_curve.png)"]:
        assert words in text, words
    assert (evals / "plots" / "learning_curve.png").exists()
    report = (evals / "report.html").read_text()
    assert "Advice (taskfit advise)" in report and 'alt="learning curve"' in report

    runs = find_runs(project)
    assert len(runs) == 3 and all(is_curve_run(m) and m["status"] == "finished" for _, m in runs)
    assert sorted(m["learning_curve"]["rows"] for _, m in runs) == [12, 18, 24]
    train_rows = len(Workspace.open(project).train)
    assert all(m["learning_curve"]["of"] == train_rows for _, m in runs)
    with pytest.raises(ConfigError, match="no finished training run"):
        latest_run_dir(project)  # `eval`, `export` and `serve` never take a curve run
    # each sampled row is answered once: no row answered again alone to time a lone request
    for name in ("prompt-only", "fine-tuned@24rows"):
        metrics = json.loads((evals / "results" / f"{name}.json").read_text())["metrics"]
        assert "latency_rows" not in metrics and metrics["latency_mean_s"] > 0, name
    assert "| time a query |" in text
    card = json.loads((evals / "scorecard.json").read_text())
    assert {"fine-tuned@12rows", "fine-tuned@18rows", "fine-tuned@24rows", "tfidf-logreg"} <= set(card["candidates"])
    assert all(c["n"] == 20 for c in card["candidates"].values())

    (evals / "scorecard.md").unlink()
    compared = runner.invoke(app, ["compare", str(project), "--rows", "20"])
    assert compared.exit_code == 0, compared.output
    assert "fine-tuned@24rows" in (evals / "scorecard.md").read_text()

    cached = {p: p.read_bytes() for p in evals.glob("predictions/*.jsonl")}
    again = runner.invoke(app, ["advise", str(project)])
    assert again.exit_code == 0, again.output
    assert len(find_runs(project)) == 3 and "reusing it" in again.output
    assert {p: p.read_bytes() for p in evals.glob("predictions/*.jsonl")} == cached
    assert json.loads((evals / "advice.json").read_text())["headline"] == advice["headline"]


def test_advise_on_a_split_no_larger_than_its_sample_keeps_its_runs_off_the_projects_scorecard(tmp_path,
                                                                                                tiny_model_dir):
    # 30 held-out rows, advise.eval_rows 40: advise scores all of them, in a store of its own, and
    # untimed; `taskfit run` reuses its predictions, times what it must, and its scorecard holds
    # the project's candidates, not the learning curve's runs
    project = _tickets(tmp_path, tiny_model_dir)
    doc = yaml.safe_load((project / "taskfit.yaml").read_text())
    doc["advise"]["eval_rows"] = 40
    doc["eval"]["latency_rows"] = 4
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    runner = CliRunner()
    advised = runner.invoke(app, ["advise", str(project)])
    assert advised.exit_code == 0, advised.output
    (sample,) = project.glob("evals/*-30-sample")
    assert (sample / "advice.json").exists() and not list(project.glob("evals/*-30"))
    for name in ("prompt-only", "fine-tuned@24rows"):  # nothing answered again alone, nothing decoded freely
        assert "latency_rows" not in json.loads((sample / "results" / f"{name}.json").read_text())["metrics"]
    assert not list(sample.glob("predictions/*.unconstrained.jsonl"))

    ran = runner.invoke(app, ["run", str(project)])
    assert ran.exit_code == 0, ran.output
    assert f"prompt-only: every prediction is cached in {sample.name}" in ran.output
    (whole,) = project.glob("evals/*-30")
    card = json.loads((whole / "scorecard.json").read_text())
    assert not any("@" in name for name in card["candidates"]) and "fine-tuned" in card["candidates"]
    assert card["candidates"]["prompt-only"]["latency_rows"] == 4  # timed alone now that the scorecard asks
    assert list(whole.glob("predictions/prompt-only.unconstrained.jsonl"))


def test_advise_on_too_few_training_rows_says_what_to_change_before_scoring_anything(tmp_path, tiny_model_dir):
    project = _tickets(tmp_path, tiny_model_dir)
    doc = yaml.safe_load((project / "taskfit.yaml").read_text())
    doc["advise"].update(curve_rows=16, curve_points=[0.25, 0.5, 1.0])  # runs of 4, 8 and 16 rows
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(app, ["advise", str(project)])
    assert result.exit_code == DataError.exit_code, result.output
    assert "needs three" in result.output and "advise.curve_rows" in result.output
    assert not list(project.glob("evals/*/predictions/*")) and not list(project.glob("runs/*"))


def test_advise_after_run_takes_the_finished_runs_answers_for_the_curves_point_on_every_row(tmp_path,
                                                                                           tiny_model_dir):
    # a walkthrough (151 intents): after `taskfit run`, the learning curve's point on every
    # training row is that run; its answers to advise's rows are the ones `run` scored, not asked
    # again, and the advise store's verdict weighs the run as `fine-tuned`, never a curve point
    project = _tickets(tmp_path, tiny_model_dir)
    doc = yaml.safe_load((project / "taskfit.yaml").read_text())
    doc["data"]["max_train_examples"] = 40
    doc["advise"].update(curve_rows=200)  # more than there are: the curve's largest run is every row
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    runner = CliRunner()
    ran = runner.invoke(app, ["run", str(project)])
    assert ran.exit_code == 0, ran.output
    every = len(Workspace.open(project).train)
    advised = runner.invoke(app, ["advise", str(project)])
    assert advised.exit_code == 0, advised.output
    point = f"fine-tuned@{every}rows"
    assert "reusing it" in advised.output
    assert f"{point}: every prediction is fine-tuned's, cached (the same weights)" in advised.output
    (evals,) = project.glob("evals/*-20")
    (whole,) = project.glob("evals/*-30")
    ran_answers = {p.example_id: p.output for p in read_predictions(whole / "predictions" / "fine-tuned.jsonl")}
    answers = read_predictions(evals / "predictions" / f"{point}.jsonl")
    assert len(answers) == 20 and all(p.output == ran_answers[p.example_id] for p in answers)
    card = json.loads((evals / "scorecard.json").read_text())
    assert {"fine-tuned", point} <= set(card["candidates"]) and "@" not in (card["keep"] or "")
