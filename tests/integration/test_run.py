"""`taskfit run` as users run it, on the tiny model: the stage commands composed for every task
kind and for DPO, one evaluation store that `compare` reads afterwards, a second run that costs
nothing, a killed run that continues to the same scorecard, and stage commands that find the
latest finished run by themselves."""

from __future__ import annotations

import json
import random
import re

import yaml
from typer.testing import CliRunner

from taskfit.cli.main import app
from taskfit.quickstart import make_quickstart_project
from taskfit.workflows import run_project

CITIES = ["Paris", "Rome", "Oslo", "Lima", "Cairo", "Quito", "Dakar", "Hanoi"]


def _classify(tmp_path, model_dir, name="p", seed=0, **train):
    path = make_quickstart_project(tmp_path / name, seed=seed, n_tickets=300)
    doc = yaml.safe_load(path.read_text())
    doc["model"]["name"] = str(model_dir)
    doc["data"].update(max_train_examples=24, max_eval_examples=16)
    doc["train"].update(dict(batch_size=8, max_seq_length=128), **train)
    doc["baselines"].update(retriever="bm25", few_shot_k=2)
    doc["eval"]["generation_sample"] = 3
    path.write_text(yaml.safe_dump(doc))
    return path.parent


def _project(tmp_path, name, rows, task, model_dir, **extra):
    project = tmp_path / name
    (project / "data").mkdir(parents=True)
    (project / "data" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = {"task": {"name": name, "success": "answers a reviewer accepts", **task},
           "model": {"name": str(model_dir)},
           "data": {"train": "data/rows.jsonl", "max_eval_examples": 6, **extra.pop("data", {})},
           "train": {"batch_size": 8, "max_seq_length": 128, "metric_sample": 4, **extra.pop("train", {})},
           "baselines": {"retriever": "bm25", "few_shot_k": 1},
           "eval": {"max_new_tokens": 10, "generation_sample": 2, "style_sample": 4, **extra.pop("eval", {})}}
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    return project


def _extract(tmp_path, model_dir):
    rng = random.Random(0)
    rows = [{"text": f"book a table for {n} in {c} ref {i}", "fields": {"city": c, "size": n}}
            for i in range(48) for c, n in [(rng.choice(CITIES), rng.randint(1, 9))]]
    schema = {"type": "object", "required": ["city", "size"], "additionalProperties": False,
              "properties": {"city": {"type": "string", "maxLength": 8}, "size": {"type": "integer"}}}
    return _project(tmp_path, "bookings", rows, {"kind": "extract", "system_prompt": "Extract the booking.",
                                                 "schema": schema}, model_dir,
                    data={"columns": {"input": "text", "target": "fields"}}, eval={"max_new_tokens": 24})


def _qa(tmp_path, model_dir):
    rows = [{"context": f"Store {i} is in {CITIES[i % 8]}.", "question": f"Where is store {i}?" if i % 3 else
             f"Who owns store {i}?", "answer": CITIES[i % 8] if i % 3 else None} for i in range(48)]
    return _project(tmp_path, "stores", rows, {"kind": "qa", "system_prompt": "Answer from the context."},
                    model_dir, data={"columns": {"input": "question", "target": "answer", "context": "context"}})


def _generate(tmp_path, model_dir):
    rows = [{"prompt": f"Where is my parcel {i} to {CITIES[i % 8]}?",
             "completion": f"Hi, parcel {i} is on its way. Let us know."} for i in range(48)]
    return _project(tmp_path, "replies", rows, {"kind": "generate", "system_prompt": "Reply in our style.",
                                                "reply": {"must_include": ["let us know"]}}, model_dir)


def _dpo(tmp_path, model_dir):
    rows = [{"prompt": f"Where is my parcel {i}?", "chosen": f"It is in {CITIES[i % 8]}, on its way.",
             "rejected": "No idea."} for i in range(48)]
    return _project(tmp_path, "prefs", rows, {"kind": "generate", "system_prompt": "Answer kindly."}, model_dir,
                    train={"method": "dpo", "metric_sample": 0})


def _cache_files(project):
    return {p.relative_to(project): p.read_bytes() for p in project.glob("evals/*/predictions/*.jsonl")}


def test_run_then_compare_prints_the_same_scorecard_and_a_second_run_costs_nothing(tmp_path, tiny_model_dir):
    project = _classify(tmp_path, tiny_model_dir)
    runner = CliRunner()
    first = runner.invoke(app, ["run", str(project)])
    assert first.exit_code == 0, first.output
    (run,) = project.glob("runs/*")
    for name in ["config.resolved.yaml", "manifest.json", "metrics.json", "splits.json", "train_log.csv",
                 "adapter/adapter_config.json", "plots/loss.png"]:
        assert (run / name).exists(), name
    (evals,) = project.glob("evals/*")
    for name in ["scorecard.md", "scorecard.json", "report.html", "plots/confusion.png", "plots/coverage.png"]:
        assert (evals / name).exists(), name
    card = json.loads((evals / "scorecard.json").read_text())
    assert set(card["candidates"]) == {"prompt-only", "few-shot", "tfidf-logreg", "embeddings-logreg", "fine-tuned"}
    assert card["success"] == "Every ticket lands in the queue a senior agent would pick."
    assert all(c["n"] == 16 for c in card["candidates"].values())
    # the data check's counts and personal-data line, as `taskfit data check` prints them, and how to serve
    # what the verdict keeps
    flat = " ".join(first.output.split())
    assert "rows read =" in flat and "personal data in" in flat, first.output
    # the rows the caps (data.max_train_examples 24, max_eval_examples 16) left out are counted, not hidden
    left = re.search(r"split: 24 train / 16 eval; left out \(a stratified sample kept\): (\d+) train rows by "
                     r"data.max_train_examples and (\d+) eval rows by data.max_eval_examples", flat)
    kept = int(re.search(r"= (\d+) kept", flat).group(1))
    assert left and 24 + 16 + int(left.group(1)) + int(left.group(2)) == kept, flat  # every kept row accounted for
    assert f"next: `taskfit serve {project}" in flat and card["keep"] in card["candidates"]
    assert "## Held-out scorecard" in (run / "adapter" / "README.md").read_text()
    cached = _cache_files(project)
    measured = (evals / "forgetting" / "fine-tuned.json").read_text()

    compared = runner.invoke(app, ["compare", str(project)])
    assert compared.exit_code == 0, compared.output
    scorecard = (evals / "scorecard.md").read_text()
    again = runner.invoke(app, ["run", str(project)])
    assert again.exit_code == 0, again.output
    assert "every prediction is cached" in again.output and f"{run.name} ({'reused'})" in again.output
    assert list(project.glob("runs/*")) == [run]  # nothing trained again
    assert _cache_files(project) == cached  # nothing predicted again
    assert (evals / "scorecard.md").read_text() == scorecard
    assert (run / "adapter" / "README.md").read_text().count("## Held-out scorecard") == 1

    # The forgetting check ran with the evaluation, is in the scorecard with the probe's licence, and
    # a second run measures nothing again.
    forgetting = evals / "forgetting" / "fine-tuned.json"
    assert json.loads(forgetting.read_text())["n"] == 64
    assert "outside the task: the general probe (64 items from SQuAD 2.0" in scorecard and "CC BY-SA 4.0" in scorecard
    assert "Outside the task: the forgetting check" in (evals / "report.html").read_text()
    assert "the forgetting check is cached" in again.output and forgetting.read_text() == measured
    (figures,) = card["forgetting"]
    assert figures["candidate"] == "fine-tuned" and figures["licence"] == "CC BY-SA 4.0" and figures["items"] == 64
    assert 0 <= figures["base_answered_right"] <= 1 and figures["kl_per_token_nats"] > 0

    # Turned off, the check leaves the scorecard; the trained run still matches the project.
    doc = yaml.safe_load((project / "taskfit.yaml").read_text())
    doc["eval"]["forgetting"] = {"enabled": False}
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    off = runner.invoke(app, ["run", str(project)])
    assert off.exit_code == 0, off.output
    assert f"{run.name} ({'reused'})" in off.output and "forgetting" not in off.output
    assert "outside the task" not in (evals / "scorecard.md").read_text()
    assert json.loads((evals / "scorecard.json").read_text())["forgetting"] == []


def test_killed_run_continues_to_the_scorecard_of_an_uninterrupted_one(tmp_path, tiny_model_dir, kill_at_checkpoint):
    train = dict(epochs=6, checkpoint_every=2, eval_every=0, metric_sample=0, lora={"dropout": 0.0})
    killed, whole = _classify(tmp_path, tiny_model_dir, "killed", **train), _classify(tmp_path, tiny_model_dir,
                                                                                      "whole", **train)
    kill_at_checkpoint("run", killed)
    result = CliRunner().invoke(app, ["run", str(killed), "--resume"])
    assert result.exit_code == 0, result.output
    assert "continuing the interrupted run" in result.output and "(resumed)" in result.output
    assert len(list(killed.glob("runs/*"))) == 1
    reference = run_project(whole)
    (evals,) = killed.glob("evals/*")
    resumed = json.loads((evals / "scorecard.json").read_text())["candidates"]
    for name, r in ((r.candidate, r) for r in reference.results):
        for key in ("accuracy", "macro_f1", "ece"):
            assert abs(resumed[name][key] - r.metrics[key]) < 1e-6, (name, key)


def test_every_task_kind_runs_end_to_end_and_compare_agrees(tmp_path, tiny_model_dir):
    expected = {"bookings": {"prompt-only", "few-shot", "fine-tuned"},
                "stores": {"prompt-only", "few-shot", "fine-tuned"},
                "replies": {"prompt-only", "few-shot", "fine-tuned"}}
    for build in (_extract, _qa, _generate):
        project = build(tmp_path, tiny_model_dir)
        summary = run_project(project)
        assert {r.candidate for r in summary.results} == expected[project.name]
        kind = summary.scorecard.kind
        assert any(t.candidate == "fine-tuned" for t in summary.scorecard.tests), kind
        result = CliRunner().invoke(app, ["compare", str(project)])
        assert result.exit_code == 0, result.output
        assert summary.verdict in result.output.replace("\n", " ") or summary.verdict[:60] in result.output
        if project.name == "replies":
            # a random tiny model babbles to eval.max_new_tokens (10): the scorecard says the answers were cut
            cut = [w for w in summary.scorecard.warnings if "answers stopped at the token budget (10, " in w]
            assert cut and "raise eval.max_new_tokens" in cut[0], summary.scorecard.warnings


def test_dpo_run_scores_preference_before_and_after(tmp_path, tiny_model_dir):
    project = _dpo(tmp_path, tiny_model_dir)
    summary = run_project(project)
    results = {r.candidate: r for r in summary.results}
    assert set(results) == {"base-model", "fine-tuned"}
    held = summary.training.training["held_out"]
    assert abs(results["fine-tuned"].metrics["preference_accuracy"] - held["preference_accuracy_after"]) < 1e-9
    assert abs(results["base-model"].metrics["preference_accuracy"] - held["preference_accuracy_before"]) < 1e-9
    assert summary.scorecard.kind == "preference" and summary.scorecard.tests[0].test == "McNemar (exact)"
    (forgetting,) = summary.scorecard.forgetting  # the model after preference training, on the general probe
    assert forgetting.candidate == "fine-tuned" and forgetting.n == 64 and not forgetting.skipped
    compared = CliRunner().invoke(app, ["compare", str(project)])
    assert compared.exit_code == 0 and "prefers chosen" in compared.output
    # pairs are scored, not answered: no latency or prompt size is claimed for them
    assert all(row[len(summary.scorecard.columns) + 1:len(summary.scorecard.columns) + 3] == ["n/a", "n/a"]
               for row in summary.scorecard.rows())
    refused = CliRunner().invoke(app, ["baseline", str(project)])
    assert refused.exit_code == 2 and "preference pairs" in refused.output


def test_eval_and_export_take_the_latest_finished_run(tmp_path, tiny_model_dir):
    project = _classify(tmp_path, tiny_model_dir, eval_every=0, metric_sample=0)
    runner = CliRunner()
    assert runner.invoke(app, ["eval", str(project)]).exit_code == 2  # nothing trained yet: says so
    trained = runner.invoke(app, ["train", str(project)])
    assert trained.exit_code == 0, trained.output
    (run,) = project.glob("runs/*")
    result = runner.invoke(app, ["eval", str(project)])
    assert result.exit_code == 0, result.output
    assert f"latest finished run: {run}" in result.output.replace("\n", "") and "fine-tuned: accuracy" in result.output
    merged = runner.invoke(app, ["eval", str(project), "--merged"])  # the shipped form, beside the served one
    assert merged.exit_code == 0, merged.output
    assert "fine-tuned-merged: accuracy" in merged.output
    compared = runner.invoke(app, ["compare", str(project)])
    assert "fine-tuned-merged gives the same answer as fine-tuned on" in compared.output.replace("\n", " ")
    exported = runner.invoke(app, ["export", str(project), "--merged"])
    assert exported.exit_code == 0, exported.output
    assert (run / "merged" / "config.json").exists()


def test_same_seed_same_split_and_metrics_other_seed_differs(tmp_path, tiny_model_dir):
    a = run_project(_classify(tmp_path, tiny_model_dir, seed=0, name="a"))
    b = run_project(_classify(tmp_path, tiny_model_dir, seed=0, name="b"))
    c = run_project(_classify(tmp_path, tiny_model_dir, seed=1, name="c"))
    split = lambda s: json.loads((s.run_dir / "splits.json").read_text())  # noqa: E731
    assert split(a) == split(b) and split(a) != split(c)
    for ra, rb in zip(a.results, b.results):
        for key in ("accuracy", "macro_f1"):
            assert abs(ra.metrics[key] - rb.metrics[key]) < 1e-9


def test_cli_run_on_missing_data_is_a_clear_error(tmp_path, tiny_model_dir):
    project = _classify(tmp_path, tiny_model_dir)
    (project / "data" / "tickets.jsonl").unlink()
    result = CliRunner().invoke(app, ["run", str(project)])
    assert result.exit_code == 3
    assert "tickets.jsonl: no such file" in result.output and "Traceback" not in result.output


def test_resume_with_nothing_to_resume_says_so(tmp_path, tiny_model_dir):
    result = CliRunner().invoke(app, ["run", str(_classify(tmp_path, tiny_model_dir)), "--resume"])
    assert result.exit_code == 2 and "no interrupted run" in result.output


def test_classical_baseline_learns_keywords():
    from taskfit.baselines.classical import RECIPES, ClassicalPredictor, fit_classical
    from taskfit.records import Example

    train = [Example(id=str(i), input=t, target=lab) for i, (t, lab) in enumerate(
        [("charged twice invoice", "billing"), ("invoice wrong amount", "billing"),
         ("parcel late tracking", "shipping"), ("tracking stuck parcel", "shipping")] * 5)]
    model = fit_classical(RECIPES["tfidf-logreg"], train)
    preds = list(ClassicalPredictor(model).predict([Example(id="q", input="my invoice", target="billing")]))
    assert preds[0].output == "billing" and 0.5 < preds[0].confidence <= 1


def test_a_head_run_is_a_candidate_beside_the_generative_fine_tune_and_exports_merged(tmp_path, tiny_model_dir):
    project = _classify(tmp_path, tiny_model_dir, eval_every=0, metric_sample=0)
    doc = yaml.safe_load((project / "taskfit.yaml").read_text())
    doc["data"]["max_eval_examples"] = 8
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    runner = CliRunner()
    first = runner.invoke(app, ["run", str(project)])
    assert first.exit_code == 0, first.output
    doc["train"]["classify_head"] = True
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    second = runner.invoke(app, ["run", str(project)])
    assert second.exit_code == 0, second.output
    assert "prompt-only: every prediction is cached" in second.output  # only the head is new
    generative, head = sorted(project.glob("runs/*"))
    assert (head / "adapter" / "classify_head.json").exists() and not (generative / "adapter" / "classify_head.json").exists()
    (evals,) = project.glob("evals/*")
    card = json.loads((evals / "scorecard.json").read_text())
    assert set(card["candidates"]) == {"prompt-only", "few-shot", "tfidf-logreg", "embeddings-logreg", "fine-tuned",
                                      "fine-tuned-head"}
    row = card["candidates"]["fine-tuned-head"]
    assert row["n"] == 8 and 0 <= row["ece"] <= 1 and row["valid_rate"] == 1.0
    assert "fine-tuned-head gives the same answer as fine-tuned on" in second.output.replace("\n", " ")
    assert ("fine-tuned-head: the forgetting check does not apply: a classification-head run answers only"
            in second.output.replace("\n", " "))
    assert {f["candidate"]: "skipped" in f for f in card["forgetting"]} == {"fine-tuned": False, "fine-tuned-head": True}
    assert "## Held-out scorecard" in (head / "adapter" / "README.md").read_text()

    merged = runner.invoke(app, ["eval", str(project), "--merged"])  # the latest run: the head's
    assert merged.exit_code == 0, merged.output
    assert "fine-tuned-head-merged: accuracy" in merged.output
    compared = runner.invoke(app, ["compare", str(project)]).output.replace("\n", " ")
    assert "fine-tuned-head-merged gives the same answer as fine-tuned-head on 8 of 8" in compared
    exported = runner.invoke(app, ["export", str(project), "--merged"])
    assert exported.exit_code == 0, exported.output
    config = json.loads((head / "merged" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert sorted(config["label2id"]) == sorted(doc["task"]["labels"])
    refused = runner.invoke(app, ["export", str(project), "--format", "gguf-lora"])
    assert refused.exit_code == 2 and "no GGUF form" in refused.output and "--merged" in refused.output


def test_a_killed_head_run_continues_from_its_checkpoint(tmp_path, tiny_model_dir, kill_at_checkpoint):
    project = _classify(tmp_path, tiny_model_dir, classify_head=True, epochs=6, checkpoint_every=2, eval_every=0,
                        metric_sample=0, early_stopping_patience=0)
    doc = yaml.safe_load((project / "taskfit.yaml").read_text())
    doc["data"]["max_eval_examples"] = 4  # the baselines are beside the point here
    doc["eval"]["generation_sample"] = 0
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    kill_at_checkpoint("run", project)
    result = CliRunner().invoke(app, ["run", str(project), "--resume"])
    assert result.exit_code == 0, result.output
    assert "continuing the interrupted run" in result.output and "(resumed)" in result.output
    (run,) = project.glob("runs/*")
    metrics = json.loads((run / "metrics.json").read_text())["training"]
    assert metrics["resumed_from_step"] >= 2 and metrics["epochs"] == 6
    (evals,) = project.glob("evals/*")
    assert "fine-tuned-head" in json.loads((evals / "scorecard.json").read_text())["candidates"]
