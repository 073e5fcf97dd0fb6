"""The whole loop on the tiny model: artifacts of a run, reproducibility by seed, CLI errors."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from taskfit.cli.main import app
from taskfit.pipeline import run_project
from taskfit.quickstart import make_quickstart_project


def _project(tmp_path, model_dir, seed=0, name="p"):
    path = make_quickstart_project(tmp_path / name, seed=seed, n_tickets=300)
    doc = yaml.safe_load(path.read_text())
    doc["model"]["name"] = str(model_dir)
    doc["data"].update(max_train_examples=24, max_eval_examples=16)
    doc["train"].update(batch_size=8, max_seq_length=128)
    doc["eval"]["generation_sample"] = 3
    path.write_text(yaml.safe_dump(doc))
    return path.parent


def test_run_leaves_a_complete_record(tmp_path, tiny_model_dir):
    summary = run_project(_project(tmp_path, tiny_model_dir))
    run = summary.run_dir
    for name in ["config.resolved.yaml", "manifest.json", "metrics.json", "splits.json", "train_log.csv",
                 "report.md", "report.html", "predictions/prompt-only.jsonl",
                 "predictions/fine-tuned.jsonl", "adapter/adapter_config.json",
                 "plots/loss.png", "plots/confusion.png", "plots/scores.png", "plots/per_class_f1.png",
                 "plots/latency.png", "plots/coverage.png"]:
        assert (run / name).exists(), name
    manifest = json.loads((run / "manifest.json").read_text())
    assert len(manifest["data"]["train_fingerprint"]) == 64
    assert manifest["versions"]["torch"] and manifest["versions"]["transformers"]
    metrics = json.loads((run / "metrics.json").read_text())
    for cand in ("prompt-only", "tfidf-logreg", "fine-tuned"):
        m = metrics[cand]
        assert m["n"] == 16 and 0 <= m["accuracy"] <= 1 and m["valid_rate"] == 1.0
        assert m["accuracy_ci_low"] <= m["accuracy"] <= m["accuracy_ci_high"]
        assert m["latency_p95_s"] >= m["latency_p50_s"] > 0
        if cand != "tfidf-logreg":  # free decoding is measured for the language models
            assert 0 <= m["free_valid_rate"] <= 1
    assert len((run / "predictions/fine-tuned.jsonl").read_text().splitlines()) == 1 + 16  # key line + rows
    html = (run / "report.html").read_text()
    assert "data:image/png;base64," in html and "src=\"http" not in html
    assert summary.verdict in html
    card = (run / "adapter" / "README.md").read_text()
    assert "## Held-out scorecard" in card and "fine-tuned" in card and summary.verdict in card


def test_same_seed_same_split_and_metrics_other_seed_differs(tmp_path, tiny_model_dir):
    a = run_project(_project(tmp_path, tiny_model_dir, seed=0, name="a"))
    b = run_project(_project(tmp_path, tiny_model_dir, seed=0, name="b"))
    c = run_project(_project(tmp_path, tiny_model_dir, seed=1, name="c"))
    split = lambda s: json.loads((s.run_dir / "splits.json").read_text())
    assert split(a) == split(b) and split(a) != split(c)
    for ra, rb in zip(a.results, b.results):
        for key in ("accuracy", "macro_f1"):
            assert abs(ra.metrics[key] - rb.metrics[key]) < 1e-9


def test_cli_run_on_missing_data_is_a_clear_error(tmp_path, tiny_model_dir):
    project = _project(tmp_path, tiny_model_dir)
    (project / "data" / "tickets.jsonl").unlink()
    result = CliRunner().invoke(app, ["run", str(project)])
    assert result.exit_code == 3
    assert "tickets.jsonl: no such file" in result.output and "Traceback" not in result.output


def test_cli_refuses_non_classify_runs_clearly(tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["init", str(tmp_path / "x"), "--task", "qa"]).exit_code == 0
    result = runner.invoke(app, ["run", str(tmp_path / "x")])
    assert result.exit_code == 2 and "covers classify" in result.output and "taskfit train" in result.output


def test_classical_baseline_learns_keywords():
    from taskfit.baselines.classical import TfidfLogRegPredictor
    from taskfit.records import Example

    train = [Example(id=str(i), input=t, target=lab) for i, (t, lab) in enumerate(
        [("charged twice invoice", "billing"), ("invoice wrong amount", "billing"),
         ("parcel late tracking", "shipping"), ("tracking stuck parcel", "shipping")] * 5)]
    preds = list(TfidfLogRegPredictor(train).predict([Example(id="q", input="my invoice", target="billing")]))
    assert preds[0].output == "billing" and 0.5 < preds[0].confidence <= 1
