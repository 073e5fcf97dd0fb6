"""taskfit.yaml: every template validates, and broken files give one clear message, no traceback."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from taskfit.cli.main import app
from taskfit.config import load_config, parse_config
from taskfit.errors import ConfigError
from taskfit.project import init_project, template


@pytest.mark.parametrize("kind", ["classify", "extract", "qa", "generate"])
def test_init_writes_a_valid_commented_config(tmp_path, kind):
    path = init_project(tmp_path / kind, kind)
    text = path.read_text()
    assert "#" in text  # commented for a human
    config = load_config(path)
    assert config.task.kind == kind
    assert config.train.lora.r == 16 and config.train.lora.alpha == 32
    assert sorted(yaml.safe_load(text)) == ["baselines", "data", "eval", "model", "task", "train"]


def test_init_refuses_to_overwrite(tmp_path):
    init_project(tmp_path, "classify")
    with pytest.raises(ConfigError, match="already exists"):
        init_project(tmp_path, "classify")


def _doc():
    return yaml.safe_load(template("classify"))


def _error(doc) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    return str(info.value)


def test_wrong_type_names_key_and_value():
    doc = _doc()
    doc["train"]["learning_rate"] = "fast"
    msg = _error(doc)
    assert "train.learning_rate" in msg and "'fast'" in msg and "number" in msg


def test_unknown_key_is_named():
    doc = _doc()
    doc["train"]["learnig_rate"] = 0.001
    msg = _error(doc)
    assert "train.learnig_rate" in msg and "unknown key" in msg


def test_missing_label_list():
    doc = _doc()
    del doc["task"]["labels"]
    assert "task.labels" in _error(doc) and "non-empty list" in _error(doc)


def test_bad_choice_lists_allowed_values():
    doc = _doc()
    doc["task"]["kind"] = "summarise"
    msg = _error(doc)
    assert "task.kind" in msg and "'summarise'" in msg and "classify" in msg and "generate" in msg


def test_threshold_must_be_a_share():
    doc = _doc()
    doc["eval"]["thresholds"] = {"accuracy": 85}
    assert "eval.thresholds.accuracy" in _error(doc)


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "taskfit.yaml"
    path.write_text("task:\n  kind: classify\n  labels: [a, b\n")
    with pytest.raises(ConfigError, match=r"line \d+"):
        load_config(path)


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d["train"].__setitem__("epochs", "many"), "train.epochs"),
    (lambda d: d["task"].pop("labels"), "task.labels"),
    (lambda d: d.__setitem__("extra_section", {}), "extra_section"),
])
def test_cli_reports_broken_config_without_traceback(tmp_path, edit, expected):
    doc = _doc()
    edit(doc)
    (tmp_path / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(app, ["data", "check", str(tmp_path), "--no-tokens"])
    assert result.exit_code == 2
    output = result.output + (result.stderr if hasattr(result, "stderr") else "")
    assert expected in output
    assert "Traceback" not in output


def test_labels_are_written_once_and_fill_the_system_prompt():
    text = template("classify")
    doc = yaml.safe_load(text)
    assert "{labels}" in doc["task"]["system_prompt"] and text.count("product_question") == 1
    config = parse_config(doc)
    assert config.task.system_text.endswith("queue name: " + ", ".join(config.task.labels) + ".")
    doc["task"]["labels"] = ["yes", "no"]  # edited in one place, the prompt follows
    assert parse_config(doc).task.system_text.endswith("queue name: yes, no.")
    qa = parse_config(yaml.safe_load(template("qa"))).task
    assert qa.system_text.endswith(f"say exactly: {qa.refusal}.") and "{" not in qa.system_text


def test_each_kind_starts_from_the_learning_rate_and_epochs_measured_for_it():
    """`taskfit init` writes what docs/training.md measured per kind, not the method's 2e-4 for
    one epoch (which left qa, generate and extract short of what one setting more reached)."""
    measured = {"classify": (1e-3, 2), "extract": (1e-3, 3), "qa": (1e-3, 1), "generate": (1e-3, 3)}
    for kind, (rate, epochs) in measured.items():
        train = parse_config(yaml.safe_load(template(kind))).train
        assert (train.lr, train.epochs) == (rate, epochs), kind


def test_literal_braces_survive_and_unknown_placeholders_are_named():
    doc = _doc()
    doc["task"]["system_prompt"] = 'Reply like {"queue": "billing"} or {{labels}}: {labels}'
    task = parse_config(doc).task
    assert task.system_text == 'Reply like {"queue": "billing"} or {labels}: ' + ", ".join(task.labels)
    doc["task"]["system_prompt"] = "Route it to {queues}."
    msg = _error(doc)
    assert "task.system_prompt" in msg and "{queues}" in msg and "{labels}" in msg
    extract = yaml.safe_load(template("extract"))
    extract["task"]["system_prompt"] = "Use one of {labels}."
    assert "task.system_prompt: {labels} is for classify" in _error(extract)
    extract["task"]["system_prompt"] = "Fill in {fields}."
    assert parse_config(extract).task.system_text == "Fill in order_id, amount, currency."


def test_a_run_from_before_a_setting_existed_matches_the_same_project_now():
    """`taskfit run` reuses a finished run trained from the project as it is: a run whose resolved
    config predates a setting (here train.classify_head) was trained as its default says."""
    from taskfit.workflows.workspace import comparable_config

    doc = _doc()
    doc["train"]["classify_head"] = False  # the setting's default (init writes true for classify)
    now = parse_config(doc).model_dump(mode="json", by_alias=True)
    before = {**now, "train": {k: v for k, v in now["train"].items() if k != "classify_head"}}
    assert comparable_config(before) == comparable_config(now)
    head = {**now, "train": {**now["train"], "classify_head": True}}
    assert comparable_config(head) != comparable_config(now)
    assert comparable_config({**now, "train": {**now["train"], "threads": 1}}) == comparable_config(now)
    # where the figures are also sent changes no trained model: a run is reused all the same
    assert comparable_config({**now, "train": {**now["train"], "report_to": "mlflow"}}) == comparable_config(now)


def test_a_run_is_reused_when_only_what_training_never_reads_changed():
    """A walkthrough changed a price and a threshold and `taskfit run` trained again (28 minutes on
    a busy machine): the scorecard's settings, the success sentence and the baselines' settings
    change no trained model; the answer budget a cut prompt leaves room for does."""
    from taskfit.workflows.workspace import comparable_config

    now = parse_config(_doc()).model_dump(mode="json", by_alias=True)
    same = [{**now, "task": {**now["task"], "success": "Another sentence."}},
            {**now, "eval": {**now["eval"], "thresholds": {"accuracy": 0.9}, "price_per_hour": 1.5,
                             "latency_rows": 4, "generation_sample": 0, "max_rows": 10}},
            {**now, "baselines": {**now["baselines"], "few_shot_k": 8}}]
    for changed in same:
        assert comparable_config(changed) == comparable_config(now)
    other = [{**now, "eval": {**now["eval"], "max_new_tokens": now["eval"]["max_new_tokens"] + 1}},
             {**now, "task": {**now["task"], "system_prompt": "Something else: {labels}"}}]
    for changed in other:
        assert comparable_config(changed) != comparable_config(now)


def test_report_to_is_none_by_default_and_names_the_trackers_it_knows():
    assert parse_config(_doc()).train.report_to == "none"
    doc = _doc()
    doc["train"]["report_to"] = "wandb"
    message = _error(doc)
    assert "train.report_to" in message and "wandb" in message and "mlflow" in message and "tensorboard" in message
