"""`taskfit export --format promptfoo`: the held-out set, each task kind's checks and the candidates
as a promptfoo configuration, for classify, extract, qa and generate. The configuration is checked
against promptfoo's own schema (vendored in tests/data), its JavaScript checks against taskfit's
scorers (with Node.js), and, where promptfoo is installed, `promptfoo eval` runs it against
`taskfit serve` and an endpoint on loopback."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from fastapi import FastAPI, Request
from typer.testing import CliRunner

from taskfit.baselines.endpoint import endpoint_messages
from taskfit.cli.main import app
from taskfit.config import load_config
from taskfit.quickstart import make_quickstart_project
from taskfit.rendering import messages_for
from taskfit.tasks.classify import LABEL_TRANSFORM, parse_label
from taskfit.tasks.extract import FENCE_TRANSFORM, FIELD_JS, fields, load_json, per_field_scores
from taskfit.workflows import Workspace

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "data" / "promptfoo-config-schema.json"
HOSTED = "ft:gpt-4o-mini-2024-07-18:acme::abc123"  # a hosted fine-tune as the endpoint baseline
BOOKING = {"type": "object", "additionalProperties": False, "required": ["city"],
           "properties": {"city": {"type": "string"}, "size": {"type": "integer"},
                          "contact": {"type": "object", "properties": {"name": {"type": "string"}}}}}
KINDS = ("classify", "extract", "qa", "generate")


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_project(root: Path, kind: str, model_dir: Path, endpoint_url: str = "http://127.0.0.1:9/v1") -> Path:
    """A small project of ``kind`` on the tiny model, with a hosted fine-tune as its endpoint."""
    rng = random.Random(0)
    directory = root / kind
    if kind == "classify":
        doc = yaml.safe_load(make_quickstart_project(directory, seed=0, n_tickets=120).read_text())
    else:
        cities, names = ["Oslo", "Rome", "Lima", "Kyiv"], ["Ana", "Bo", "Cy"]
        if kind == "extract":
            rows = [{"text": f"Table for {i % 9 + 1} in {cities[i % 4]}"
                     + (f", ask for {names[i % 3]}" if i % 2 else "") + f" (ref {i})", "fields": {"city": cities[i % 4], "size": i % 9 + 1,
                                                 **({"contact": {"name": names[i % 3]}} if i % 2 else {})}}
                    for i in range(40)]
            task = {"kind": "extract", "name": "bookings", "success": "parsed",
                    "system_prompt": "Extract the booking as JSON with {fields}.", "schema": BOOKING}
            columns = {"input": "text", "target": "fields"}
        elif kind == "qa":
            rows = [{"question": f"When does the {c} shop open?" if i % 3 else "Is there parking?",
                     "context": f"The {c} shop opens at {i % 5 + 7} am. It sells {{bread}} and cake (ref {i}).",
                     "answer": f"{i % 5 + 7} am" if i % 3 else None}
                    for i, c in ((i, cities[i % 4]) for i in range(40))]
            task = {"kind": "qa", "name": "shop-hours", "success": "answered from the page",
                    "system_prompt": "Answer from the context only; if it is silent, say: {refusal}.",
                    "refusal": "not in the documents"}
            columns = {"input": "question", "context": "context", "target": "answer"}
        else:
            rows = [{"text": f"Where is my order {i}? {rng.choice(['Thanks', 'Regards'])}, {names[i % 3]}",
                     "reply": f"Hi {names[i % 3]}, order {i} ships on day {i % 5 + 1}. Let me know if I can help."}
                    for i in range(40)]
            task = {"kind": "generate", "name": "order-replies", "success": "in our voice",
                    "system_prompt": "Reply in our house style.",
                    "reply": {"min_words": 4, "max_words": 40, "must_include": ["let me know"],
                              "must_not_include": ["as an AI"], "patterns": [r"^Hi \w+"]}}
            columns = {"input": "text", "target": "reply"}
        _jsonl(directory / "data" / "rows.jsonl", rows)
        doc = {"task": task, "data": {"train": "data/rows.jsonl", "columns": columns}}
    doc["model"] = {"name": str(model_dir)}
    doc["data"].update(max_train_examples=24, max_eval_examples=6)
    doc["train"] = {"batch_size": 8, "max_seq_length": 128, "epochs": 1, "eval_every": 0, "metric_sample": 0,
                    "checkpoint_every": 0}
    doc["eval"] = {"max_new_tokens": 16}
    doc["baselines"] = {"endpoint": {"base_url": endpoint_url, "model": HOSTED, "api_key_env": "TASKFIT_TEST_KEY",
                                     "add_instruction": kind != "classify"}}
    (directory / "taskfit.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return directory


def export(project: Path, out: Path, *flags: str) -> tuple[dict, list[dict]]:
    result = CliRunner().invoke(app, ["export", str(project), "--format", "promptfoo", "--out", str(out), *flags])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert f"{out / 'promptfooconfig.yaml'}" in result.output
    config = yaml.safe_load((out / "promptfooconfig.yaml").read_text())
    return config, yaml.safe_load((out / "tests.yaml").read_text())


@pytest.mark.parametrize("kind", KINDS)
def test_the_export_holds_the_held_out_rows_the_checks_and_the_candidates(tmp_path, tiny_model_dir, kind):
    project = make_project(tmp_path, kind, tiny_model_dir)
    config, tests = export(project, tmp_path / "pf")
    ws = Workspace.open(project, allow_secrets=True)
    task, rows = ws.config.task, ws.eval_rows
    assert [t["description"] for t in tests] == [ex.id for ex in rows] and len(rows) >= 4
    for test, ex in zip(tests, rows):
        v = test["vars"]
        assert (v["input"], v["expected"], v.get("context")) == (ex.input, ex.target, ex.context)
        assert v["system"] == messages_for(task, ex)[0]["content"] == task.system_text  # no row has its own
        system, user = endpoint_messages(ws.config.baselines.endpoint, task, ex)
        assert (v["endpoint_system"], v["endpoint_input"]) == (system["content"], user["content"])
    # The endpoint is asked as the endpoint baseline asks it: the hosted fine-tune of the classify
    # project without the instruction it never saw in training (add_instruction: false), the extract
    # and qa ones with their kind's (generate has none).
    instructed = tests[0]["vars"]["endpoint_system"] != task.system_text
    assert instructed == (kind in ("extract", "qa"))

    taskfit, endpoint = config["providers"]
    assert taskfit["id"] == f"openai:chat:{task.name}" and taskfit["prompts"] == ["taskfit"]
    assert taskfit["config"]["apiBaseUrl"] == "http://127.0.0.1:8000/v1" and "max_tokens" not in taskfit["config"]
    assert endpoint["id"] == f"openai:chat:{HOSTED}" and endpoint["prompts"] == ["endpoint"]
    assert endpoint["config"] == {"apiBaseUrl": "http://127.0.0.1:9/v1", "apiKeyEnvar": "TASKFIT_TEST_KEY",
                                  "temperature": 0, "max_tokens": 16}
    assert [p["label"] for p in config["prompts"]] == ["taskfit", "endpoint"] and config["tests"] == "file://tests.yaml"

    checks = [[(a["type"], a.get("metric")) for a in t["assert"]] for t in tests]
    if kind == "classify":
        assert checks == [[("equals", "label")]] * len(rows)
        assert [t["assert"][0]["value"] for t in tests] == [ex.target for ex in rows]  # the labels are lower case
    elif kind == "extract":
        assert checks == [[("is-json", "schema-valid"), ("javascript", "field city"), ("javascript", "field size"),
                           ("javascript", "field contact.name")]] * len(rows)
        for t, ex in zip(tests, rows):
            assert t["assert"][0]["value"] == BOOKING
            gold = json.loads(ex.target)
            assert [a["config"] for a in t["assert"][1:]] == [
                {"field": ["city"], "expected": gold["city"]}, {"field": ["size"], "expected": gold["size"]},
                {"field": ["contact", "name"], "expected": gold.get("contact", {}).get("name")}]
    elif kind == "qa":
        for t, ex in zip(tests, rows):
            refuses = ex.target == task.refusal
            metric = "refusal" if refuses else "answer"
            assert t["assert"] == [{"type": "icontains", "value": ex.target, "metric": metric}]
        assert {t["assert"][0]["metric"] for t in tests} == {"refusal", "answer"}  # both kinds of row held out
    else:
        assert checks == [[("word-count", "length"), ("icontains", "house rules"), ("not-icontains", "house rules"),
                           ("regex", "house rules")]] * len(rows)
        assert tests[0]["assert"][0]["value"] == {"min": 4, "max": 40} and tests[0]["assert"][3]["value"] == r"^Hi \w+"

    if not SCHEMA_FILE.exists():
        pytest.skip(f"{SCHEMA_FILE} is absent: the configuration is not checked against promptfoo's schema")
    import jsonschema

    validator = jsonschema.Draft7Validator(json.loads(SCHEMA_FILE.read_text()))
    whole = {**config, "tests": tests}
    assert not [e.message for e in validator.iter_errors(whole)]
    broken = {**config, "tests": [{**tests[0], "assert": [{"value": "no type"}]}]}
    assert list(validator.iter_errors(broken))  # the schema does hold assertions to their shape


def test_text_that_looks_like_a_template_is_kept_as_it_is(tmp_path, tiny_model_dir):
    """promptfoo reads assertion values as Nunjucks templates: a qa answer holding {braces}, like the
    passages here, must reach it literally."""
    project = make_project(tmp_path, "qa", tiny_model_dir)
    lines = (project / "data" / "rows.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    for row in rows:
        if row["answer"]:
            row["answer"] = "{{bread}}"
            row["context"] += " Ask for {{bread}}."
    _jsonl(project / "data" / "rows.jsonl", rows)
    _, tests = export(project, tmp_path / "pf")
    values = {a["value"] for t in tests for a in t["assert"] if a["metric"] == "answer"}
    assert values == {"{% raw %}{{bread}}{% endraw %}"}


def test_a_project_without_labelled_rows_or_with_a_bad_run_is_refused_clearly(tmp_path, tiny_model_dir):
    project = make_project(tmp_path, "classify", tiny_model_dir)
    bad = CliRunner().invoke(app, ["export", str(project), "--format", "promptfoo", "--run", "runs/nope"])
    assert bad.exit_code != 0 and "not a taskfit run directory" in bad.output and "Traceback" not in bad.output
    wrong = CliRunner().invoke(app, ["export", str(project), "--merged", "--run", "runs/x"])
    assert wrong.exit_code != 0 and "--run and --serve-url are for --format promptfoo" in wrong.output


NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="Node.js (node) is not on PATH: the JavaScript checks are not run")
def test_the_javascript_checks_judge_as_taskfit_scores(tmp_path):
    """The checks promptfoo runs, executed by Node.js, agree with taskfit's own judgement answer
    by answer: a label as parse_label reads it, a field as per_field_scores counts it right."""
    labels = ["billing", "account_access"]
    answers = ["billing", " Billing.\n", "`account_access`", "billing please", "'ACCOUNT_ACCESS'", ""]
    gold = {"city": "Oslo", "tags": ["a", "B"], "contact": {"name": "Ana Lee"}}
    replies = ['{"city": "oslo", "tags": ["b", "A"], "contact": {"name": "ana  lee"}}',
               '```json\n{"city": "Oslo", "size": 4}\n```', '{"city": "Rome", "contact": {}}', "not json",
               '{"city": null, "tags": [], "contact": {"name": "Ana Lee", "x": 1}}']
    names = ["city", "tags", "contact.name", "size"]
    cases = {"labels": [[a, lab] for a in answers for lab in labels],
             "fields": [[r, name.split("."), dict(fields_of(gold)).get(name)] for r in replies for name in names]}
    script = tmp_path / "judge.cjs"
    script.write_text(
        f"const label = (output) => {LABEL_TRANSFORM};\n"
        f"const fence = (output) => {FENCE_TRANSFORM};\n"
        f"const field = new Function('output', 'context', {json.dumps(FIELD_JS)});\n"
        f"const cases = {json.dumps(cases)};\n"
        "console.log(JSON.stringify({\n"
        "  labels: cases.labels.map(([a, gold]) => label(a) === gold.toLowerCase()),\n"
        "  fields: cases.fields.map(([r, path, gold]) =>\n"
        "    field(fence(r), {config: {field: path, expected: gold}}).pass),\n"
        "}));\n")
    judged = json.loads(subprocess.run([NODE, str(script)], capture_output=True, text=True, check=True).stdout)

    from taskfit.config import TaskSpec

    task = TaskSpec(kind="classify", success="-", system_prompt="-", labels=labels)
    assert judged["labels"] == [parse_label(task, a)[0] == lab for a, lab in cases["labels"]]
    expected = []
    for reply in replies:
        try:
            got = fields(load_json(reply))
        except ValueError:
            got = {}
        per_field = per_field_scores(names, [fields(gold)], [got])
        expected += [per_field[name]["accuracy"] == 1.0 for name in names]
    assert judged["fields"] == expected and any(expected) and not all(expected)


def fields_of(record: dict) -> list[tuple[str, object]]:
    """A record's non-empty values by dotted name, as promptfoo_asserts gives them as gold."""
    from taskfit.tasks.extract import leaves

    return list(leaves(record))


# ---- promptfoo itself ---------------------------------------------------------------------------

def _promptfoo() -> tuple[list[str] | None, str]:
    """The promptfoo command (PATH, or node_modules/.bin here), and why not when it cannot run."""
    found = shutil.which("promptfoo") or next(
        (str(p) for p in (Path.cwd() / "node_modules" / ".bin" / "promptfoo",) if p.exists()), None)
    if found is None:
        return None, "promptfoo is not installed (npm install promptfoo@0.123.1; it needs Node.js 22.22+)"
    try:
        ran = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{found} does not run: {exc}"
    if ran.returncode != 0:  # e.g. "promptfoo requires a supported Node.js runtime ... Required: >=22.22.0"
        said = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", ran.stdout + ran.stderr).split())
        return None, f"{found} does not run: {said[:300]}"
    return [found], ""


PROMPTFOO, WHY_NOT = _promptfoo()


class FakeEndpoint:
    """The hosted model: records what it is asked, answers "billing"."""

    def __init__(self):
        self.requests: list[dict] = []
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self.complete)

    async def complete(self, request: Request):
        body = await request.json()
        self.requests.append({"auth": request.headers.get("authorization"), **body})
        return {"id": f"c{len(self.requests)}", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "billing"}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """One tiny trained run per kind (promptfoo asks `taskfit serve`, which serves trained runs)."""
    from taskfit.workflows import train_project

    root = tmp_path_factory.mktemp("kinds")
    projects = {kind: make_project(root, kind, tiny_model_dir) for kind in KINDS}
    return {kind: (project, train_project(project).run_dir) for kind, project in projects.items()}


@pytest.mark.skipif(PROMPTFOO is None, reason=WHY_NOT or "promptfoo is not installed")
def test_promptfoo_eval_runs_the_export_against_taskfit_serve(tmp_path, trained, loopback, monkeypatch):
    from taskfit.serve import load_serve_config
    from taskfit.serve.app import create_app

    names = {kind: load_config(project).task.name for kind, (project, _) in trained.items()}
    spec = load_serve_config(None, {"adapters": {names[k]: {"path": str(run)} for k, (_, run) in trained.items()},
                                    "log": {"path": None}})
    serve_url = loopback(create_app(spec))
    fake = FakeEndpoint()
    endpoint_url = loopback(fake.app)
    env = {**os.environ, "TASKFIT_TEST_KEY": "sk-test", "PROMPTFOO_DISABLE_TELEMETRY": "1",
           "PROMPTFOO_DISABLE_UPDATE": "1", "PROMPTFOO_FAILED_TEST_EXIT_CODE": "0",
           "PROMPTFOO_CONFIG_DIR": str(tmp_path / "promptfoo-home"), "OPENAI_API_KEY": ""}
    for kind, (project, run) in trained.items():
        doc = yaml.safe_load((project / "taskfit.yaml").read_text())
        doc["baselines"]["endpoint"]["base_url"] = endpoint_url
        (project / "taskfit.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        out = tmp_path / kind
        config, tests = export(project, out, "--serve-url", serve_url, "--run", str(run))
        asked = len(fake.requests)
        ran = subprocess.run([*PROMPTFOO, "eval", "-c", str(out / "promptfooconfig.yaml"), "--no-cache",
                              "--no-table", "--no-progress-bar", "--no-write", "-o", str(out / "results.json")],
                             cwd=out, env=env, capture_output=True, text=True, timeout=600)
        assert ran.returncode == 0, (ran.stdout + ran.stderr)[-3000:]
        results = json.loads((out / "results.json").read_text())["results"]["results"]
        by = {(r["provider"]["label"], r["testCase"]["description"]): r for r in results}
        assert sorted(by) == sorted((p, t["description"]) for p in ("taskfit", "endpoint") for t in tests)
        for test in tests:
            for provider in ("taskfit", "endpoint"):
                r = by[(provider, test["description"])]
                # an answer came back (failureReason 2: the call failed; 1: an assertion did not pass)
                assert r["failureReason"] != 2 and r["response"].get("output") is not None, r
                # promptfoo ran every one of our assertions on the answer, with our metric names
                components = r["gradingResult"]["componentResults"]
                assert [(c["assertion"]["type"], c["assertion"].get("metric")) for c in components] == [
                    (a["type"], a.get("metric")) for a in test["assert"]], (kind, components)
                assert not [c["reason"] for c in components if "threw" in c["reason"]]
                if kind == "extract":  # each field judged as taskfit's per-field figures judge it
                    try:
                        got = fields(load_json(r["response"]["output"]))
                    except ValueError:
                        got = {}
                    gold = fields(json.loads(test["vars"]["expected"]))
                    for c in components[1:]:
                        name = c["assertion"]["metric"].removeprefix("field ")
                        assert c["pass"] == (per_field_scores([name], [gold], [got])[name]["accuracy"] == 1.0)
            v = test["vars"]
            sent = json.loads(by[("taskfit", test["description"])]["prompt"]["raw"])
            assert sent == [{"role": "system", "content": v["system"]}, {"role": "user", "content": v["input"]}]
        # What the endpoint received: the messages the endpoint baseline sends, as it sends them.
        received = fake.requests[asked:]
        assert sorted(json.dumps(r["messages"]) for r in received) == sorted(
            json.dumps([{"role": "system", "content": t["vars"]["endpoint_system"]},
                        {"role": "user", "content": t["vars"]["endpoint_input"]}]) for t in tests)
        assert {(r["model"], r["auth"], r["temperature"], r["max_tokens"]) for r in received} == {
            (HOSTED, "Bearer sk-test", 0, 16)}
        if kind == "classify":  # the hosted answer "billing" passes exactly where the gold label is billing
            for test in tests:
                passed = by[("endpoint", test["description"])]["success"]
                assert passed == (test["vars"]["expected"] == "billing")
