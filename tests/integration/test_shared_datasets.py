"""The README's walkthroughs, followed on the shared public datasets: `taskfit init --from` plus
the settings the walkthrough names, then `taskfit run`, then `taskfit compare`, which must print
the same scorecard without predicting anything again. The commands and settings are read from
README.md itself, so the README cannot drift from what works. Small slices and the tiny model keep
it cheap (the full runs' times are in docs/benchmarks.md); skipped without ../shared/data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from taskfit.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from walkthroughs import merge, walkthroughs  # noqa: E402  (the one reader of the README's walkthroughs)
SHARED = ROOT.parent / "shared" / "data"


WALKTHROUGHS = walkthroughs()


def test_the_readme_walks_through_every_shared_dataset():
    assert set(WALKTHROUGHS) == {"clinc150", "snips_slots", "squad2_dev", "bitext_support", "hh_rlhf_harmless"}


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data (the team's copies of public datasets)")
@pytest.mark.parametrize("dataset", sorted(WALKTHROUGHS))
def test_walkthrough_runs_end_to_end_and_compare_agrees(dataset, tmp_path, tiny_model_dir, monkeypatch):
    args, settings = WALKTHROUGHS[dataset]
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the repository's root
    project = tmp_path / args[0]
    runner = CliRunner()
    made = runner.invoke(app, ["init", str(project), *args[1:]])
    assert made.exit_code == 0, made.output
    path = project / "taskfit.yaml"
    doc = yaml.safe_load(path.read_text())
    merge(doc, settings)
    # Only what makes it cheap changes: the tiny model, small slices, short answers.
    doc["model"]["name"] = str(tiny_model_dir)
    # The tiny model's 600-token vocabulary spends about twice SmolLM2's tokens on the same text, and
    # it has 512 positions: rows that cannot fit in those are dropped here rather than cut.
    doc["data"].update(max_train_examples=32, max_eval_examples=6, too_long="drop")
    doc["train"].update(max_seq_length=448, metric_sample=0, eval_every=0, validation_share=0.1)
    doc["eval"].update(max_new_tokens=min(doc["eval"]["max_new_tokens"], 12), generation_sample=2, style_sample=4)
    doc["baselines"].update(retriever="bm25")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))

    ran = runner.invoke(app, ["run", str(project)])
    assert ran.exit_code == 0, ran.output
    (evals,) = project.glob("evals/*")
    scorecard = (evals / "scorecard.md").read_text()
    cached = {p: p.read_bytes() for p in evals.glob("predictions/*.jsonl")}
    assert any("fine-tuned" in p.name for p in cached) or dataset == "hh_rlhf_harmless"
    compared = runner.invoke(app, ["compare", str(project)])
    assert compared.exit_code == 0, compared.output
    assert (evals / "scorecard.md").read_text() == scorecard
    assert {p: p.read_bytes() for p in evals.glob("predictions/*.jsonl")} == cached  # nothing predicted again
    assert "fine-tuned" in scorecard


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "clinc150").is_dir(), reason="needs ../shared/data/clinc150")
def test_full_label_scoring_of_clinc150_intents_in_a_batch_on_the_embedded_model():
    """Scoring every one of clinc150's 151 intents for a batch of 16 requests: each row reads the
    tree in its own order, so rows run out of nodes at different steps (this stopped with an
    IndexError before the search let rows read unequal shares of a step). The answers are the
    ones each request gets alone; and the search with its confidence tolerance, whose rows stop
    at different steps, gives every row full scoring's label (or one tied with it to float32's
    noise) and a confidence at most the tolerance below full scoring's."""
    import json

    from taskfit.baselines import LabelScoringPredictor
    from taskfit.baselines.label_tree import CONFIDENCE_TOLERANCE
    from taskfit.config import TaskSpec
    from taskfit.models import load_model
    from taskfit.records import Example

    read = lambda name: [json.loads(line) for line in (SHARED / "clinc150" / name).read_text().splitlines()]  # noqa: E731
    labels = sorted({r["label"] for r in read("train.jsonl")})
    task = TaskSpec(kind="classify", success="a request lands on its intent", labels=labels,
                    system_prompt="Name the intent of the user's request (oos when it is out of scope).")
    rows = [Example(id=str(i), input=r["text"], target=r["label"]) for i, r in enumerate(read("test.jsonl")[:16])]
    lm = load_model("smollm2-135m")
    scorer = lambda batch, tolerance=0.0: LabelScoringPredictor(  # noqa: E731
        "full", lm.model, lm.tokenizer, task, 256, batch_size=batch, tolerance=tolerance)
    full = list(scorer(16).predict(rows))
    together = [p.output for p in full]
    alone = [p.output for p in scorer(1).predict(rows[:4])]
    assert all(out in labels for out in together) and together[:4] == alone
    searching = scorer(16, CONFIDENCE_TOLERANCE)
    stats: dict[str, int] = {}
    prompts = [searching.prompt_ids(ex) for ex in rows]
    found = [s.choice() for s in searching.search(prompts, stats)]
    exact = [s.totals for s in scorer(16).search(prompts, {})]  # every label's score
    assert all(len(scores) == len(labels) for scores in exact)
    for c, scores, label in zip(found, exact, together):
        # two labels whose scores tie to float32's noise (clinc150's 8th request: yes and no at
        # -10.389004 and -10.389011) may come out either way from passes of different shapes
        assert labels[c.best] == label or scores[c.best] >= scores[labels.index(label)] - 1e-4
    for c, exact in zip(found, full):
        assert exact.confidence - CONFIDENCE_TOLERANCE - 1e-4 <= c.confidence <= exact.confidence + 1e-4
    assert stats["early"] > 0
