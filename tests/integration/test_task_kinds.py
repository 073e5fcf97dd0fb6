"""A task kind is one module plus its registration: a kind defined here, in the test (yes/no
answers), runs through `taskfit init` and `taskfit run` with nothing changed anywhere else."""

from __future__ import annotations

import json
import random
from typing import Any, Callable, Sequence

import pytest
import yaml
from typer.testing import CliRunner

from taskfit.cli.main import app
from taskfit.records import AnswerParts, EvalResult, Example, Prediction
from taskfit.tasks import register, unregister
from taskfit.tasks.base import FEW_SHOT, PROMPT_ONLY, Column, Scoring, Task, answer_as_label


class YesNoTask:
    """yesno: the answer is "yes" or "no"; scored by accuracy, McNemar between candidates."""

    kind = "yesno"
    description = "a yes/no answer"
    scoring = Scoring("accuracy", (Column("accuracy", "accuracy"), Column("valid_rate", "yes or no")),
                      paired_test="mcnemar")
    baselines = (PROMPT_ONLY, FEW_SHOT)
    size_guidance = (20, 200)
    scores_labels = False
    free_decoding = True
    style_classifier = False
    takes_context = False
    validation_side = "valid_rate"
    error_buckets = ("wrong answer", "neither yes nor no")
    template = ("task:\n  kind: yesno\n  name: in-stock\n  success: \"Says whether the item is in stock.\"\n"
                "  system_prompt: Answer yes or no.\n")
    thresholds = {"accuracy": 0.9}

    def check_spec(self, spec: Any) -> None:
        pass

    def target_text(self, spec: Any, value: Any) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        if not isinstance(value, str):
            raise ValueError(f"expected yes or no, got {type(value).__name__}")
        return value.strip().lower()

    def answer_check(self, spec: Any) -> Callable[[Example], None]:
        def check(ex: Example) -> None:
            if ex.target not in ("yes", "no"):
                raise ValueError(f"answer: {ex.target!r} is neither yes nor no")

        return check

    def answer_parts(self, spec: Any) -> Callable[[Example], AnswerParts]:
        return answer_as_label(spec)  # "yes" is not written in the question: another answer is a conflict

    def parse(self, spec: Any, text: str) -> tuple[str, bool]:
        answer = text.strip().lower().rstrip(".!")
        return answer, answer in ("yes", "no")

    def score(self, spec: Any, evaluation: Any, candidate: str, examples: Sequence[Example],
              predictions: Sequence[Prediction], n_boot: int = 1000, style: Any = None) -> EvalResult:
        right = [float(p.output == ex.target) for ex, p in zip(examples, predictions)]
        counts: dict[str, int] = {}
        for ex, p, ok in zip(examples, predictions, right):
            if not ok:
                bucket = "wrong answer" if p.valid else "neither yes nor no"
                counts[bucket] = counts.get(bucket, 0) + 1
        n = len(examples)
        return EvalResult(candidate=candidate, n=n, kind=self.kind, per_example=right, error_counts=counts,
                          metrics={"accuracy": sum(right) / n, "valid_rate": sum(p.valid for p in predictions) / n})

    def grammar(self, spec: Any) -> str | None:
        from taskfit.decoding import choice_grammar

        return choice_grammar(["yes", "no"])

    def answer_budget(self, spec: Any, evaluation: Any, tokenizer: Any) -> int:
        return 3

    def instruction(self, spec: Any) -> str:
        return "Answer yes or no and nothing else."


@pytest.fixture()
def yes_no():
    task = register(YesNoTask())
    yield task
    unregister("yesno")


def test_a_kind_defined_in_a_test_runs_through_init_and_run(tmp_path, tiny_model_dir, yes_no):
    assert isinstance(yes_no, Task)
    runner = CliRunner()
    project = tmp_path / "stock"
    made = runner.invoke(app, ["init", str(project), "--task", "yesno"])
    assert made.exit_code == 0, made.output
    doc = yaml.safe_load((project / "taskfit.yaml").read_text())
    assert doc["task"]["kind"] == "yesno" and doc["eval"]["thresholds"] == {"accuracy": 0.9}
    rng = random.Random(0)
    rows = [{"text": f"Is item {i} ({rng.choice(['red', 'blue'])}) in stock?", "answer": i % 3 != 0}
            for i in range(60)]
    (project / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc["model"]["name"] = str(tiny_model_dir)
    doc["data"].update(columns={"input": "text", "target": "answer"}, max_eval_examples=8)
    doc["train"].update(batch_size=8, max_seq_length=96, metric_sample=4, eval_every=0)
    doc["baselines"].update(retriever="bm25", few_shot_k=1)
    doc["eval"].update(generation_sample=2)
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))

    result = runner.invoke(app, ["run", str(project)])
    assert result.exit_code == 0, result.output
    (evals,) = project.glob("evals/*")
    card = json.loads((evals / "scorecard.json").read_text())
    assert card["kind"] == "yesno" and card["main_metric"] == "accuracy"
    assert set(card["candidates"]) == {"prompt-only", "few-shot", "fine-tuned"}
    for name, metrics in card["candidates"].items():
        assert metrics["n"] == 8 and metrics["valid_rate"] == 1.0  # decoded under the yes/no grammar
        assert 0 <= metrics["free_valid_rate"] <= 1  # and measured free on a sample
    assert card["paired_tests"][0]["test"] == "McNemar (exact)"
    (run,) = project.glob("runs/*")
    header = (run / "validation_log.csv").read_text().splitlines()[0]
    assert "valid_rate" in header  # training validated by the kind's own metric and side figure
    assert "yes or no" in (evals / "scorecard.md").read_text()  # the kind's own columns
    checked = runner.invoke(app, ["data", "check", str(project)])
    assert checked.exit_code == 0, checked.output


def test_an_unknown_kind_names_the_known_ones(tmp_path):
    result = CliRunner().invoke(app, ["init", str(tmp_path / "x"), "--task", "poetry"])
    assert result.exit_code == 2
    assert "poetry" in result.output and "classify" in result.output and "Traceback" not in result.output
