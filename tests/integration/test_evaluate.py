"""`taskfit baseline`, `taskfit eval` and `taskfit compare` as users run them, on the tiny model:
every baseline of each task kind, constrained decoding, the cache (interrupted and repeated
evaluations), the endpoint baseline against a real HTTP server, and the scorecard."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import yaml
from typer.testing import CliRunner

from taskfit.cli.main import app
from taskfit.config import load_config
from taskfit.workflows import baseline_project, compare_project
from taskfit.workflows import train_project
from taskfit.quickstart import make_quickstart_project

CITIES = ["Paris", "Rome", "Oslo", "Lima", "Cairo", "Quito", "Dakar", "Hanoi"]
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["city", "size"],
          "properties": {"city": {"type": "string", "maxLength": 10},
                         "size": {"type": "integer", "minimum": 1, "maximum": 20}}}


def _classify_project(tmp_path, model_dir, name="c", **eval_):
    path = make_quickstart_project(tmp_path / name, seed=0, n_tickets=300)
    doc = yaml.safe_load(path.read_text())
    doc["model"]["name"] = str(model_dir)
    doc["data"].update(max_train_examples=48, max_eval_examples=12)
    doc["train"].update(batch_size=8, max_seq_length=128, eval_every=0, metric_sample=0, checkpoint_every=0)
    doc["baselines"].update(retriever="bm25", few_shot_k=2)
    doc["eval"].update(dict(generation_sample=2), **eval_)
    path.write_text(yaml.safe_dump(doc))
    return path.parent


def _extract_project(tmp_path, model_dir, name="x", rows=80, **eval_):
    rng = random.Random(0)
    project = tmp_path / name
    (project / "data").mkdir(parents=True)
    with (project / "data" / "bookings.jsonl").open("w") as f:
        for i in range(rows):
            city, size = rng.choice(CITIES), rng.randint(1, 20)
            text = rng.choice(["book a table for {n} in {c}", "{c}, {n} people, tonight",
                               "need seats for {n} at a place in {c} #{i}"]).format(n=size, c=city, i=i)
            f.write(json.dumps({"text": f"{text} ref {i}", "fields": {"city": city, "size": size}}) + "\n")
    doc = {"task": {"kind": "extract", "name": "bookings", "success": "every booking parsed",
                    "system_prompt": "Extract the booking as JSON.", "schema": SCHEMA},
           "model": {"name": str(model_dir)},
           "data": {"train": "data/bookings.jsonl", "columns": {"input": "text", "target": "fields"},
                    "max_eval_examples": 10},
           "train": {"batch_size": 8, "max_seq_length": 128},
           "baselines": {"retriever": "bm25", "few_shot_k": 2},
           "eval": {"max_new_tokens": 40, "generation_sample": 4, **eval_}}
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    return project


def test_classify_baselines_fine_tune_and_scorecard(tmp_path, tiny_model_dir):
    project = _classify_project(tmp_path, tiny_model_dir, thresholds={"accuracy": 0.5, "ece": 0.5})
    runner = CliRunner()
    result = runner.invoke(app, ["baseline", str(project)])
    assert result.exit_code == 0, result.output
    for name in ("prompt-only", "few-shot", "tfidf-logreg", "embeddings-logreg"):
        assert f"{name}: accuracy" in result.output
    (evals,) = project.glob("evals/*")
    first = (evals / "predictions" / "few-shot.jsonl").read_text()
    few = json.loads((evals / "results" / "few-shot.json").read_text())
    assert few["n"] == 12 and few["metrics"]["valid_rate"] == 1.0 and 0 <= few["metrics"]["free_valid_rate"] <= 1
    # A repeated evaluation answers from the cache: the same predictions, latencies included.
    assert runner.invoke(app, ["baseline", str(project), "--only", "few-shot"]).exit_code == 0
    assert (evals / "predictions" / "few-shot.jsonl").read_text() == first

    run = train_project(project).run_dir
    result = runner.invoke(app, ["eval", str(project), "--run", str(run)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["compare", str(project)])
    assert result.exit_code == 0, result.output
    card = json.loads((evals / "scorecard.json").read_text())
    assert set(card["candidates"]) == {"prompt-only", "few-shot", "tfidf-logreg", "embeddings-logreg", "fine-tuned"}
    (test,) = card["paired_tests"]
    assert test["candidate"] == "fine-tuned" and test["test"].startswith("McNemar")
    best = max(["prompt-only", "few-shot", "tfidf-logreg", "embeddings-logreg"],
               key=lambda n: card["candidates"][n]["accuracy"])
    assert test["against"] == best and card["verdict"]
    assert card["candidates"]["fine-tuned"]["thresholds"]["accuracy"] in (True, False)
    md = (evals / "scorecard.md").read_text()
    assert "| fine-tuned |" in md and card["verdict"] in md
    html = (evals / "report.html").read_text()
    assert card["verdict"] in html and "src=\"http" not in html and "Where the misses are" in html
    assert "training and validation loss (fine-tuned)" in html  # the run's curves come along

    # A second evaluation of the same run (as an export on another engine would be) is compared
    # with the training-time model row by row.
    assert runner.invoke(app, ["eval", str(project), "--run", str(run), "--name", "copy"]).exit_code == 0
    result = runner.invoke(app, ["compare", str(project)])
    assert "fine-tuned-copy gives the same answer as fine-tuned on 12 of 12 held-out rows" in result.output

    # A confidence threshold set afterwards applies at once, from the cached predictions.
    doc = yaml.safe_load((project / "taskfit.yaml").read_text())
    confidences = sorted(json.loads(line)["confidence"] for line in first.splitlines() if "confidence" in line)
    assert confidences[0] < confidences[-1]
    threshold = (confidences[0] + confidences[-1]) / 2  # some rows above, some below
    doc["eval"].update(confidence_threshold=threshold, fallback="needs_human")
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    gated = {r.candidate: r for r in compare_project(project).scorecard.results}
    assert (evals / "predictions" / "few-shot.jsonl").read_text() == first
    assert gated["few-shot"].metrics["coverage"] < 1.0 and "needs_human" in gated["few-shot"].labels


def test_compare_before_any_evaluation_says_what_to_run(tmp_path, tiny_model_dir):
    result = CliRunner().invoke(app, ["compare", str(_classify_project(tmp_path, tiny_model_dir))])
    assert result.exit_code == 2 and "taskfit baseline" in result.output and "Traceback" not in result.output


def test_constrained_extract_is_always_schema_valid_even_from_a_random_model(tmp_path, tiny_model_dir):
    project = _extract_project(tmp_path, tiny_model_dir)
    (prompt,) = baseline_project(project, only=["prompt-only"])
    assert prompt.metrics["valid_rate"] == 1.0 and prompt.metrics["json_valid_rate"] == 1.0
    assert prompt.metrics["free_valid_rate"] < 1.0  # the same model, unconstrained
    assert set(prompt.metrics) >= {"field_f1", "exact_match", "missing_fields", "invented_fields"}


def test_extract_compare_shows_accuracy_and_f1_per_field(tmp_path, tiny_model_dir):
    project = _extract_project(tmp_path, tiny_model_dir, generation_sample=0)
    baseline_project(project, only=["prompt-only", "few-shot"])
    result = CliRunner().invoke(app, ["compare", str(project)])
    assert result.exit_code == 0, result.output
    assert "per field (accuracy / F1)" in result.output
    (evals,) = project.glob("evals/*")
    saved = json.loads((evals / "results" / "few-shot.json").read_text())
    assert list(saved["per_class"]) == ["city", "size"]  # the schema's fields, in its order
    assert saved["per_class"]["city"]["support"] == saved["n"] == 10  # every gold record has both
    city = saved["per_class"]["city"]
    assert city["missing"] + city["wrong"] == round(10 * (1 - city["recall"]))
    md = (evals / "scorecard.md").read_text()
    assert "**per field (accuracy / F1)**" in md and "| city | 10 |" in md
    html = (evals / "report.html").read_text()
    assert "<h2>Per field</h2>" in html and '<table class="per-field">' in html
    assert "<th>few-shot: accuracy / F1</th>" in html
    assert 'alt="per-field accuracy"' in html


def test_interrupted_evaluation_resumes_and_matches_an_uninterrupted_one(tmp_path, tiny_model_dir):
    killed = _extract_project(tmp_path, tiny_model_dir, "killed", rows=160, generation_sample=0, constrained=False)
    whole = _extract_project(tmp_path, tiny_model_dir, "whole", rows=160, generation_sample=0, constrained=False)
    for p in (killed, whole):  # more rows, so the kill lands mid-way
        doc = yaml.safe_load((p / "taskfit.yaml").read_text())
        doc["data"]["max_eval_examples"] = 24
        (p / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "taskfit.cli.main", "baseline", str(killed), "--only",
                             "prompt-only"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while proc.poll() is None:
            files = list(killed.glob("evals/*/predictions/prompt-only.jsonl"))
            if files and len(files[0].read_text().splitlines()) >= 6:
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    (cache,) = killed.glob("evals/*/predictions/prompt-only.jsonl")
    done = len(cache.read_text().splitlines()) - 1
    assert 5 <= done < 24
    before = [json.loads(x) for x in cache.read_text().splitlines()[1:done + 1]]

    (resumed,) = baseline_project(killed, only=["prompt-only"])
    (straight,) = baseline_project(whole, only=["prompt-only"])
    after = [json.loads(x) for x in cache.read_text().splitlines()[1:]]
    answered = {r["example_id"]: r for r in after}
    assert all(answered[r["example_id"]] == r for r in before)  # kept, not predicted again (latencies identical)
    other = [json.loads(x) for x in next(whole.glob("evals/*/predictions/prompt-only.jsonl")).read_text().splitlines()[1:]]
    # the same answer for every row (the file's lines go in the order the rows were answered)
    assert {r["example_id"]: r["output"] for r in after} == {r["example_id"]: r["output"] for r in other}
    assert len(after) == len(other)
    for key in ("field_f1", "exact_match", "valid_rate", "json_valid_rate"):
        assert resumed.metrics[key] == straight.metrics[key]
    assert resumed.per_example == straight.per_example


def test_changed_candidate_is_not_answered_from_a_stale_cache(tmp_path, tiny_model_dir):
    project = _extract_project(tmp_path, tiny_model_dir, generation_sample=0)
    baseline_project(project, only=["prompt-only"])
    (cache,) = project.glob("evals/*/predictions/prompt-only.jsonl")
    key = json.loads(cache.read_text().splitlines()[0])["candidate_key"]
    doc = yaml.safe_load((project / "taskfit.yaml").read_text())
    doc["task"]["system_prompt"] = "Return the booking as a JSON object."
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    baseline_project(project, only=["prompt-only"])
    assert json.loads(cache.read_text().splitlines()[0])["candidate_key"] != key


def test_evaluation_computes_in_the_precision_training_computes_in(tmp_path, tiny_model_dir):
    """With train.dtype: float32 a local model answers in float32; with auto, on a CPU that
    multiplies bfloat16 natively, under bfloat16 autocast, as training and the server compute: its
    predictions are made again (not read from float32's cache), with other confidences. Elsewhere
    auto is float32, and the cached predictions answer."""
    from taskfit.config import TrainSpec
    from taskfit.evaluation.runner import read_predictions
    from taskfit.training.hardware import resolve_hardware

    project = _classify_project(tmp_path, tiny_model_dir, generation_sample=0)
    keys, confidences = {}, {}
    for dtype in ("float32", "auto"):
        doc = yaml.safe_load((project / "taskfit.yaml").read_text())
        doc["train"]["dtype"] = dtype
        (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
        baseline_project(project, only=["prompt-only"])
        (cache,) = project.glob("evals/*/predictions/prompt-only.jsonl")
        keys[dtype] = json.loads(cache.read_text().splitlines()[0])["candidate_key"]
        confidences[dtype] = [p.confidence for p in sorted(read_predictions(cache), key=lambda p: p.example_id)]
    assert len(confidences["auto"]) == 12
    if resolve_hardware(TrainSpec()).autocast:
        assert keys["auto"] != keys["float32"] and confidences["auto"] != confidences["float32"]
    else:
        assert keys["auto"] == keys["float32"] and confidences["auto"] == confidences["float32"]


def test_qa_prompt_only_few_shot_and_rag_with_citations(tmp_path, tiny_model_dir):
    rng = random.Random(0)
    project = tmp_path / "qa"
    (project / "data").mkdir(parents=True)
    (project / "docs").mkdir()
    rows = []
    for i in range(40):
        city = CITIES[i % len(CITIES)]
        context = f"Store {i} is in {city}. It opens at {8 + i % 4} am and sells bikes."
        (project / "docs" / f"store{i}.txt").write_text(context)
        answerable = rng.random() < 0.7
        rows.append({"context": context, "question": f"Where is store {i}?" if answerable else f"Who owns store {i}?",
                     "answer": city if answerable else None})
    (project / "data" / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = {"task": {"kind": "qa", "name": "stores", "success": "grounded answers",
                    "system_prompt": "Answer from the context."},
           "model": {"name": str(tiny_model_dir)},
           "data": {"train": "data/qa.jsonl", "max_eval_examples": 6,
                    "columns": {"input": "question", "target": "answer", "context": "context"}},
           "train": {"max_seq_length": 256},
           "baselines": {"retriever": "bm25", "few_shot_k": 1, "documents": "docs", "chunk_words": 20, "top_k": 2},
           "eval": {"max_new_tokens": 8}}
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    results = {r.candidate: r for r in baseline_project(project)}
    assert set(results) == {"prompt-only", "few-shot", "rag"}
    for r in results.values():
        assert r.n == 6 and {"f1", "refusal_recall", "unsupported_rate"} <= set(r.metrics)
    (cache,) = project.glob("evals/*/predictions/rag.jsonl")
    rag = [json.loads(x) for x in cache.read_text().splitlines()[1:]]
    assert all(len(r["details"]["citations"]) == 2 and r["details"]["citations"][0].startswith("store") for r in rag)
    assert sum(r["details"]["retrieval_hit"] for r in rag) >= 4  # "Where is store 7?" finds store7.txt
    card = compare_project(project).scorecard
    assert card.kind == "qa" and card.verdict.startswith("Best baseline so far")


def _rag_project(tmp_path, model_dir, rows=24, words=40, **baselines):
    """A qa project whose documents are one ``words``-word chunk each (``store{i}.txt#0``), its
    training length (128 tokens) shorter than a prompt holding three of them."""
    project = tmp_path / "rag"
    (project / "data").mkdir(parents=True)
    (project / "docs").mkdir()
    filler = "refunds are paid to the card used for the order within five working days of the return"
    data = []
    for i in range(rows):
        city = CITIES[i % len(CITIES)]
        passage = " ".join(f"Store {i} is in {city}. {filler} {filler} {filler}".split()[:words])
        (project / "docs" / f"store{i}.txt").write_text(passage)
        data.append({"context": passage, "question": f"Where is store {i}?", "answer": city})
    (project / "data" / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    doc = {"task": {"kind": "qa", "name": "stores", "success": "grounded answers",
                    "system_prompt": "Answer from the context."},
           "model": {"name": str(model_dir)},
           "data": {"train": "data/qa.jsonl", "max_eval_examples": 3,
                    "columns": {"input": "question", "target": "answer", "context": "context"}},
           "train": {"max_seq_length": 128},
           "baselines": {"retriever": "bm25", "documents": "docs", "chunk_words": words, "top_k": 3, **baselines},
           "eval": {"max_new_tokens": 4}}
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    return project


def _rag_predictions(project):
    (cache,) = project.glob("evals/*/predictions/rag.jsonl")
    return [json.loads(x) for x in cache.read_text().splitlines()[1:]]


def test_rag_reads_its_chunks_whole_not_cut_to_the_training_length(tmp_path, tiny_model_dir, monkeypatch):
    """A walkthrough's rag prompts were cut to train.max_seq_length (223 tokens of 669) with no
    word, while few-shot's were not, and details.context held the three chunks the model never
    read whole. The chunks are now read whole; only over the prompt limit are the lowest-ranked
    dropped, with a warning and a scorecard line, and the context recorded is the one read."""
    from taskfit.baselines import model

    project = _rag_project(tmp_path, tiny_model_dir)
    docs = {p.name: p.read_text() for p in (project / "docs").iterdir()}
    baseline_project(project, only=["rag"])
    rag = _rag_predictions(project)
    assert len(rag) == 3
    for r in rag:
        assert r["prompt_tokens"] > 128 and "dropped_chunks" not in r["details"]
        cited = [c.removesuffix("#0") for c in r["details"]["citations"]]
        assert r["details"]["context"] == "\n\n".join(f"[{n}] {docs[c]}" for n, c in enumerate(cited, 1))
        assert len(cited) == 3

    # A prompt limit below these prompts: whole chunks are dropped, never cut, and the user is told.
    monkeypatch.setattr(model, "MAX_PROMPT_TOKENS", min(r["prompt_tokens"] for r in rag) - 1)
    for old in project.glob("evals/*/predictions/rag.jsonl"):
        old.unlink()
    with pytest.warns(RuntimeWarning, match=r"rag: .*only 2 of the 3 chunks retrieved fit .*1 dropped"):
        baseline_project(project, only=["rag"])
    rag = _rag_predictions(project)
    for r in rag:
        cited = [c.removesuffix("#0") for c in r["details"]["citations"]]
        assert r["details"]["dropped_chunks"] == 3 - len(cited) >= 1
        assert r["details"]["context"] == "\n\n".join(f"[{n}] {docs[c]}" for n, c in enumerate(cited, 1))
        assert r["prompt_tokens"] <= model.MAX_PROMPT_TOKENS
    warnings = compare_project(project).scorecard.warnings
    assert [w for w in warnings if w.startswith(f"rag: on {len(rag)} of {len(rag)} rows the prompt could not hold "
                                                "every chunk retrieved")]

    # Under a limit even one chunk does not fit: the best chunk alone, cut, and recorded as cut.
    monkeypatch.setattr(model, "MAX_PROMPT_TOKENS", 100)
    for old in project.glob("evals/*/predictions/rag.jsonl"):
        old.unlink()
    with pytest.warns(RuntimeWarning, match="only 1 of the 3 chunks"):
        baseline_project(project, only=["rag"])
    for r in _rag_predictions(project):
        (cited,) = [c.removesuffix("#0") for c in r["details"]["citations"]]
        context = r["details"]["context"]
        assert context.startswith("[1] Store ") and f"[1] {docs[cited]}".startswith(context)
        assert len(context) < len(docs[cited]) and r["prompt_tokens"] <= 100


def test_rag_counts_a_hit_when_a_short_passage_lies_inside_a_retrieved_chunk(tmp_path, tiny_model_dir):
    """A walkthrough's HR policies were one file, each row's passage a sentence of it: the chunk
    holding the passage was retrieved, but a hit needed the whole chunk inside the passage, so
    retrieval_hit was False on every row (and a wrong refusal read as a retrieval miss)."""
    project = _rag_project(tmp_path, tiny_model_dir, words=40, top_k=1)
    passages = [json.loads(x)["context"] for x in (project / "data" / "qa.jsonl").read_text().splitlines()]
    for p in (project / "docs").iterdir():
        p.unlink()
    short = [" ".join(passage.split()[:6]) + "." for passage in passages]  # "Store 3 is in Lima. refunds."
    (project / "docs" / "policies.txt").write_text(" ".join(short))
    rows = [{"context": passage, "question": f"Where is store {i}?", "answer": passage.split()[4].rstrip(".")}
            for i, passage in enumerate(short)]
    (project / "data" / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    baseline_project(project, only=["rag"])
    rag = _rag_predictions(project)
    assert rag and all(r["details"]["citations"][0].startswith("policies.txt#") for r in rag)
    assert all(r["details"]["retrieval_hit"] for r in rag)


def test_batched_evaluation_answers_as_one_at_a_time(tmp_path, tiny_model_dir):
    from taskfit.evaluation.runner import read_predictions

    outputs, results = {}, {}
    for batch in (1, 4):
        project = _extract_project(tmp_path, tiny_model_dir, f"b{batch}", generation_sample=0, batch_size=batch,
                                   latency_rows=3)
        (result,) = baseline_project(project, only=["prompt-only"])
        (cache,) = project.glob("evals/*/predictions/prompt-only.jsonl")
        outputs[batch] = ([p.output for p in read_predictions(cache)], result.metrics["field_f1"])
        results[batch] = result
    assert outputs[4] == outputs[1] and len(outputs[1][0]) == 10
    # One row at a time, the rows' own times are the latency; batched, the first eval.latency_rows
    # rows are answered again alone for it, and they got the batched answers.
    assert results[1].metrics["latency_rows"] == 0  # answered one at a time already: nothing timed apart
    batched = results[4].metrics
    assert batched["latency_rows"] == 3 and batched["alone_same_answer"] == 1.0
    assert batched["latency_cpu_share"] > 0  # the share of its threads' CPU the timing got (warned of when low)
    lone = [json.loads(line)["latency_s"] for line in cache.read_text().splitlines()[1:]]
    assert batched["latency_mean_s"] == pytest.approx(sum(lone) / len(lone))  # the cost: the batches' time
    # A scorecard from the cache keeps the lone latency and says what it is.
    card = compare_project(project).scorecard
    (again,) = card.results
    assert again.metrics["latency_p50_s"] == batched["latency_p50_s"]
    assert again.metrics["latency_cpu_share"] == batched["latency_cpu_share"]  # and how busy the machine was
    (rescored,) = baseline_project(project, only=["prompt-only"])  # scored again from the cache: kept
    assert rescored.metrics["latency_cpu_share"] == batched["latency_cpu_share"]
    assert any("lone request, timed on the first 3 held-out rows" in n for n in card.notes)


def _chromium():
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(not _chromium(), reason="needs a Chromium (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium_without_network(tmp_path, tiny_model_dir):
    project = _classify_project(tmp_path, tiny_model_dir)
    baseline_project(project, only=["tfidf-logreg", "prompt-only"])
    report = compare_project(project).report_html
    # A copy with a probe: after load, the title says whether every figure decoded.
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
  document.title = (ok ? 'FIGURES-OK ' : 'FIGURES-BROKEN ') + imgs.length;
});</script></body>"""))
    offline = ["--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9"]  # no network at all
    common = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--user-data-dir={tmp_path / 'profile'}", *offline]
    dom = subprocess.run([*common, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True).stdout
    assert "FIGURES-OK" in dom, dom[:500]
    n_figures = int(dom.split("FIGURES-OK ")[1].split("<")[0])
    assert n_figures >= 4  # scores, latency, per-class F1, confusions (and coverage)
    assert "Scorecard (held-out split)" in dom and "tfidf-logreg" in dom
    shot = tmp_path / "report.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,2000", report.as_uri()],
                   capture_output=True)
    from PIL import Image

    pixels = Image.open(shot).convert("L").getextrema()
    assert pixels[0] < 100 < pixels[1]  # something dark drawn on a light page, not a blank sheet


def _reviewed_project(tmp_path, tiny_model_dir):
    project = _classify_project(tmp_path, tiny_model_dir)
    baseline_project(project, only=["tfidf-logreg", "prompt-only"])
    result = CliRunner().invoke(app, ["review", "export", str(project), "--a", "tfidf-logreg", "--b", "prompt-only",
                                      "-n", "8"])
    assert result.exit_code == 0, result.output
    (evals,) = project.glob("evals/*")
    return project, evals / "review"


def _write_csv(path, rows):
    import csv

    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_blind_review_round_trip_through_the_spreadsheet(tmp_path, tiny_model_dir):
    import csv

    project, review = _reviewed_project(tmp_path, tiny_model_dir)
    key = json.loads((review / "review_key.json").read_text())
    rows = list(csv.DictReader((review / "review.csv").open(encoding="utf-8-sig")))
    assert len(rows) == 8 and "tfidf-logreg" not in (review / "review.csv").read_text()
    assert "tfidf-logreg" not in (review / "review.html").read_text()  # names hidden
    assert {key["items"][r["item"]]["side_1"] for r in rows} == {"a", "b"}  # sides shuffled (seeded)
    # The reviewer always prefers whichever response the classical model wrote, except one tie.
    for n, r in enumerate(rows):
        r["better"] = "tie" if n == 0 else ("1" if key["items"][r["item"]]["side_1"] == "a" else "2")
        r["accuracy_1"], r["accuracy_2"] = "5", "2"
    _write_csv(tmp_path / "filled.csv", rows)
    result = CliRunner().invoke(app, ["review", "import", str(project), str(tmp_path / "filled.csv"),
                                      "--key", str(review / "review_key.json")])
    assert result.exit_code == 0, result.output
    assert "tfidf-logreg preferred 7, prompt-only 0, ties 1" in result.output
    assert "tfidf-logreg won 100% of the 7 decided [65%, 100%]" in result.output  # Wilson, the tie left out
    card = compare_project(project).scorecard
    assert card.reviews and "preferred 7" in card.reviews[0]

    rows[1]["better"] = "maybe"
    _write_csv(tmp_path / "bad.csv", rows)
    bad = CliRunner().invoke(app, ["review", "import", str(project), str(tmp_path / "bad.csv"),
                                   "--key", str(review / "review_key.json")])
    # named by the line the row starts on in the file (the first row's cells span several lines)
    first = str(list(rows[1].values())[0])
    line = next(n for n, text in enumerate((tmp_path / "bad.csv").read_text().splitlines(), 1)
                if text.startswith(first + ","))
    assert bad.exit_code == 3 and f"bad.csv:{line}: better = 'maybe'" in bad.output, bad.output


@pytest.mark.skipif(not _chromium(), reason="needs a Chromium (Debian: apt-get install chromium)")
def test_blind_review_page_works_in_headless_chromium(tmp_path, tiny_model_dir):
    project, review = _reviewed_project(tmp_path, tiny_model_dir)
    page = (review / "review.html").read_text()
    # Play the reviewer: click "Response 2 is better" and rate usefulness 4 everywhere, then read
    # back the CSV the download button would save.
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", """<script>
window.addEventListener('load', () => {
  document.querySelectorAll('input[type=radio][value="2"]').forEach(r => { r.checked = true; });
  document.querySelectorAll('select[name^="usefulness_"]').forEach(s => { s.value = "4"; });
  document.dispatchEvent(new Event('change'));
  const pre = document.createElement('pre'); pre.id = 'probe-out'; pre.textContent = csvText();
  document.body.appendChild(pre);
});</script></body>"""))
    dom = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True).stdout
    import html as html_lib

    assert "8 of 8 judged" in dom
    text = html_lib.unescape(dom.split('<pre id="probe-out">')[1].split("</pre>")[0])
    (tmp_path / "verdicts.csv").write_text(text)
    from taskfit.workflows import review_import_project

    result = review_import_project(project, tmp_path / "verdicts.csv", review / "review_key.json")
    key = json.loads((review / "review_key.json").read_text())
    b_first = sum(v["side_1"] == "b" for v in key["items"].values())
    assert result.judged == 8 and result.ties == 0
    assert (result.a_wins, result.b_wins) == (b_first, 8 - b_first)  # side 2 un-blinded correctly
    assert result.ratings["tfidf-logreg"]["usefulness"] == 4.0


def test_generate_baselines_with_house_rules_and_style_match(tmp_path, tiny_model_dir, monkeypatch):
    rng = random.Random(0)
    project = tmp_path / "gen"
    (project / "data").mkdir(parents=True)
    with (project / "data" / "replies.jsonl").open("w") as f:
        for i in range(60):
            city = rng.choice(CITIES)
            f.write(json.dumps({"prompt": f"Where is my parcel {i} to {city}?",
                                "completion": f"Hi there, your parcel {i} to {city} is on its way. Let us know if it is late."}) + "\n")
    doc = {"task": {"kind": "generate", "name": "replies", "success": "house style",
                    "system_prompt": "Reply in our house style.",
                    "reply": {"min_words": 5, "max_words": 40, "must_include": ["let us know"]}},
           "model": {"name": str(tiny_model_dir)},
           "data": {"train": "data/replies.jsonl", "max_eval_examples": 5},
           "baselines": {"retriever": "bm25", "few_shot_k": 1},
           "eval": {"max_new_tokens": 12, "style_sample": 6, "thresholds": {"format_compliance": 0.5}}}
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    from taskfit.baselines.model import GenerativePredictor

    made, init = {}, GenerativePredictor.__init__

    def spy(self, name, *args, **kwargs):
        init(self, name, *args, **kwargs)
        made[name] = self.batch_size

    monkeypatch.setattr(GenerativePredictor, "__init__", spy)
    results = {r.candidate: r for r in baseline_project(project)}
    # the base model's replies for the style classifier are read eval.batch_size at a time, as the
    # candidates' are (one at a time, they were a walkthrough's longest stage: 10 min for 12 replies)
    assert made["_style-base"] == made["prompt-only"] == load_config(project / "taskfit.yaml").eval.batch_size > 1
    assert set(results) == {"prompt-only", "few-shot"}
    for r in results.values():
        assert r.kind == "generate" and r.n == 5
        assert {"rouge_l", "chrf", "style_match", "length_compliance", "format_compliance"} <= set(r.metrics)
        assert r.metrics["format_compliance"] == 0.0  # 12 random tokens never say "let us know"
        assert r.error_counts["missing required phrase"] == 5
    (style,) = project.glob("evals/*/predictions/_style-base.jsonl")
    assert len(style.read_text().splitlines()) == 1 + 6  # the base model's replies, cached
    card = compare_project(project).scorecard
    assert card.kind == "generate" and card.main == "rouge_l" and "format_compliance FAIL" in card.rows()[0][-1]


def test_the_scorecard_says_when_redaction_changed_the_answers(tmp_path, tiny_model_dir):
    # Both sides of the comparison hold the same placeholders, so no score can show it: the scorecard says it.
    project = _extract_project(tmp_path, tiny_model_dir, generation_sample=0)
    doc = yaml.safe_load((project / "taskfit.yaml").read_text())
    doc["task"]["schema"]["properties"]["email"] = {"type": "string"}
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    data = project / "data" / "bookings.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for i, row in enumerate(rows[::8]):
        row["text"] += f", mail guest{i}@example.org"
        row["fields"]["email"] = f"guest{i}@example.org"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    baseline_project(project, only=["prompt-only"])
    card = compare_project(project).scorecard
    (warning,) = [w for w in card.warnings if w.startswith("data: answers changed by redaction: email 10 (of ")]
    assert "keep_fields: [email]" in warning
    (md,) = project.glob("evals/*/scorecard.md")
    assert f"> {warning}" in md.read_text()


def test_compare_on_the_first_rows_takes_the_whole_fine_tune_from_the_full_store(tmp_path, tiny_triage):
    """A walkthrough (151 intents): `taskfit compare --rows 40` after `taskfit run` showed only
    advise's learning-curve runs, and its verdict kept "fine-tuned@24rows" though the fine-tune
    that would be deployed, trained on every row, had answered those 40 rows in the full store."""
    from taskfit.evaluation.runner import read_predictions, write_cache
    from taskfit.workflows import Workspace, baseline_project, compare_project
    from taskfit.workflows.evaluate import save_result

    project = tiny_triage(tmp_path / "triage", n_tickets=300, train_rows=120, eval_rows=30)
    ws = Workspace.open(project)
    (classical,) = baseline_project(ws, only=["tfidf-logreg"])
    preds = read_predictions(ws.predictions("tfidf-logreg"))  # stand-in answers for a fine-tune of every row
    write_cache(ws.predictions("fine-tuned"), "key-of-the-whole-run", "fine-tuned", ws.eval_rows, preds)
    save_result(ws.result_path("fine-tuned"), replace(classical, candidate="fine-tuned"), "key-of-the-whole-run")
    first = ws.on_first(12)
    baseline_project(first, only=["tfidf-logreg"])  # as `taskfit advise` scores the cheap candidates there
    save_result(first.result_path("fine-tuned@24rows"), replace(classical, candidate="fine-tuned@24rows"), "curve")
    write_cache(first.predictions("fine-tuned@24rows"), "curve", "fine-tuned@24rows", first.eval_rows,
                [replace(p, output="billing") for p in preds[:12]])
    card = compare_project(first).scorecard
    scored = {r.candidate: r for r in card.results}
    assert {"fine-tuned", "fine-tuned@24rows", "tfidf-logreg"} <= set(scored) and scored["fine-tuned"].n == 12
    assert [t.candidate for t in card.tests if t.against == "tfidf-logreg"][:1] and "fine-tuned@24rows" not in card.verdict


def test_the_scorecard_says_where_prompt_only_was_not_told_the_labels(tmp_path, tiny_triage):
    """A walkthrough (151 intents, a system prompt without {labels} as init writes it above 30
    labels): the data card said prompt-only was then no fair test, the scorecard showed its row
    without a word."""
    from taskfit.workflows import Workspace, baseline_project, compare_project

    project = tiny_triage(tmp_path / "triage", n_tickets=120, train_rows=40, eval_rows=12)
    doc = yaml.safe_load((project / "taskfit.yaml").read_text())
    doc["task"]["system_prompt"] = "Classify the ticket. Reply with its queue."
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    ws = Workspace.open(project)
    baseline_project(ws, only=["prompt-only", "tfidf-logreg"])
    labels = len(ws.config.task.labels)
    comparison = compare_project(ws)
    (note,) = [n for n in comparison.scorecard.notes if n.startswith("prompt-only was not told the labels")]
    assert f"names 0 of the {labels} (it has no {{labels}})" in note
    assert f"- {note}" in comparison.markdown.read_text()
    assert json.loads(comparison.json.read_text())["notes"].count(note) == 1
    # a prompt that lists them (the template's {labels}) gets no such note
    doc["task"]["system_prompt"] = "Classify the ticket. Reply with one queue: {labels}."
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    ws = Workspace.open(project)
    baseline_project(ws, only=["prompt-only"])
    assert not [n for n in compare_project(ws).scorecard.notes if "not told the labels" in n]
