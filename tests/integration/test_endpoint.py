"""The endpoint baseline against a real OpenAI-compatible HTTP server on loopback, through the
official `openai` client: what it is sent, how its answers and token usage are scored and priced,
and the errors a user sees when the key is missing or the server fails."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from typer.testing import CliRunner

from taskfit.cli.main import app
from taskfit.workflows import baseline_project
from taskfit.quickstart import make_quickstart_project


class FakeHostedModel:
    """Answers the gold label for every second ticket it has seen, another label otherwise."""

    def __init__(self, gold: dict[str, str], labels: list[str]):
        self.gold, self.labels = gold, labels
        self.requests: list[dict] = []
        self.fail = False
        self.usage = True
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self.complete)

    async def complete(self, request: Request):
        body = await request.json()
        self.requests.append({"auth": request.headers.get("authorization"), **body})
        if self.fail:
            return JSONResponse({"error": {"message": "overloaded", "type": "server_error"}}, status_code=500)
        text = body["messages"][-1]["content"]
        n = len(self.requests)
        right = self.gold[text]
        answer = right if n % 2 else next(lab for lab in self.labels if lab != right)
        return {"id": f"c{n}", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": f" {answer}\n"}}],
                **({"usage": {"prompt_tokens": 100, "completion_tokens": 4, "total_tokens": 104}} if self.usage else {})}


def _project(tmp_path, model_dir, base_url):
    path = make_quickstart_project(tmp_path / "p", seed=0, n_tickets=300)
    doc = yaml.safe_load(path.read_text())
    doc["model"]["name"] = str(model_dir)
    doc["data"].update(max_train_examples=48, max_eval_examples=10)
    doc["baselines"]["endpoint"] = {"base_url": base_url, "model": "hosted-large", "api_key_env": "TASKFIT_TEST_KEY",
                                    "price_per_million_input_tokens": 2.0, "price_per_million_output_tokens": 10.0}
    path.write_text(yaml.safe_dump(doc))
    return path.parent, doc["task"]["labels"]


def test_endpoint_baseline_is_scored_like_any_candidate(tmp_path, tiny_model_dir, loopback, monkeypatch):
    from taskfit.workflows import Workspace

    monkeypatch.setenv("TASKFIT_TEST_KEY", "sk-test-123")
    fake = FakeHostedModel({}, [])
    project, labels = _project(tmp_path, tiny_model_dir, loopback(fake.app))
    held_out = Workspace.open(project).held_out
    fake.gold, fake.labels = {ex.input: ex.target for ex in held_out}, labels

    (result,) = baseline_project(project, only=["endpoint"])
    # the 10 held-out rows with 4 requests in flight, then again one at a time: the latency a lone
    # request waits, as for every other candidate (it was the latency with 4 in flight, unsaid)
    assert len(fake.requests) == 20 and result.metrics["latency_rows"] == 10
    assert "latency_cpu_share" not in result.metrics  # it waits on the network: no "other programs" warning
    first = fake.requests[0]
    assert first["auth"] == "Bearer sk-test-123" and first["model"] == "hosted-large" and first["temperature"] == 0
    system = first["messages"][0]["content"]
    assert first["messages"][0]["role"] == "system" and all(lab in system for lab in labels)
    assert result.metrics["accuracy"] == 0.5  # right on every second request, as served
    assert result.metrics["valid_rate"] == 1.0  # " billing\n" parses to the label
    assert result.metrics["prompt_tokens_mean"] == 100
    assert result.metrics["cost_per_1k_usd"] == pytest.approx(1000 * (100 * 2.0 + 4 * 10.0) / 1e6)

    # Repeated: answered from the cache, not sent again.
    baseline_project(project, only=["endpoint"])
    assert len(fake.requests) == 20

    # A new price (or timeout, or concurrency) changes no answer: nothing is sent again, and the
    # cost is the new price's.
    path = project / "taskfit.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["baselines"]["endpoint"].update(price_per_million_input_tokens=1.0, timeout_s=30, concurrency=2)
    path.write_text(yaml.safe_dump(doc))
    (again,) = baseline_project(project, only=["endpoint"])
    assert len(fake.requests) == 20 and again.metrics["accuracy"] == 0.5
    assert again.metrics["cost_per_1k_usd"] == pytest.approx(1000 * (100 * 1.0 + 4 * 10.0) / 1e6)


def test_an_endpoint_that_reports_no_usage_has_no_token_count_or_cost(tmp_path, tiny_model_dir, loopback,
                                                                      monkeypatch):
    # its cost is unknown, not $0 (a walkthrough's stand-in for the hosted model looked free)
    from taskfit.workflows import Workspace

    monkeypatch.setenv("TASKFIT_TEST_KEY", "sk-test-123")
    fake = FakeHostedModel({}, [])
    fake.usage = False
    project, labels = _project(tmp_path, tiny_model_dir, loopback(fake.app))
    fake.gold, fake.labels = {ex.input: ex.target for ex in Workspace.open(project).held_out}, labels
    (result,) = baseline_project(project, only=["endpoint"])
    assert result.metrics["accuracy"] == 0.5
    assert "cost_per_1k_usd" not in result.metrics and "prompt_tokens_mean" not in result.metrics


def test_endpoint_answers_cached_by_an_older_taskfit_are_kept(tmp_path, tiny_model_dir, loopback, monkeypatch):
    """Until 2026-12-03 the endpoint's prices and connection settings were part of its cache key:
    answers saved under that key are kept (re-keyed), not bought again."""
    import json

    from taskfit.workflows import Workspace
    from taskfit.workflows.evaluate import _baseline, candidate_cache_key

    monkeypatch.setenv("TASKFIT_TEST_KEY", "sk-test-123")
    fake = FakeHostedModel({}, [])
    project, labels = _project(tmp_path, tiny_model_dir, loopback(fake.app))
    ws = Workspace.open(project)
    fake.gold, fake.labels = {ex.input: ex.target for ex in ws.held_out}, labels
    baseline_project(project, only=["endpoint"])
    assert len(fake.requests) == 20
    # put the store back as the older taskfit wrote it: under the key with the prices in it
    cand = _baseline(ws, "endpoint")
    new, old = candidate_cache_key(ws, cand), candidate_cache_key(ws, replace(cand, key=cand.legacy_key))
    assert new != old
    for path in (ws.result_path("endpoint"), ws.predictions("endpoint")):
        assert json.dumps(new)[1:-1] in path.read_text()
        path.write_text(path.read_text().replace(json.dumps(new)[1:-1], json.dumps(old)[1:-1]))
    (result,) = baseline_project(project, only=["endpoint"])
    assert len(fake.requests) == 20 and result.metrics["accuracy"] == 0.5
    assert json.loads(ws.result_path("endpoint").read_text())["candidate_key"] == new


def test_endpoint_errors_are_clear(tmp_path, tiny_model_dir, loopback, monkeypatch):
    fake = FakeHostedModel({}, [])
    project, _ = _project(tmp_path, tiny_model_dir, loopback(fake.app))
    monkeypatch.delenv("TASKFIT_TEST_KEY", raising=False)
    result = CliRunner().invoke(app, ["baseline", str(project), "--only", "endpoint"])
    assert result.exit_code == 2 and "TASKFIT_TEST_KEY is not set" in result.output

    monkeypatch.setenv("TASKFIT_TEST_KEY", "k")
    fake.fail = True
    result = CliRunner().invoke(app, ["baseline", str(project), "--only", "endpoint"])
    assert result.exit_code == 1 and "answered" in result.output and "Traceback" not in result.output


def test_an_endpoint_that_cannot_be_reached_is_named_with_what_to_check(tmp_path, tiny_model_dir, monkeypatch):
    """No server at base_url: the error names the URL that failed and what to check, where it said
    'answered Connection error.'."""
    import socket

    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    project, _ = _project(tmp_path, tiny_model_dir, f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("TASKFIT_TEST_KEY", "k")
    result = CliRunner().invoke(app, ["baseline", str(project), "--only", "endpoint"])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "Traceback" not in said
    assert f"could not reach http://127.0.0.1:{port}/v1/chat/completions" in said
    assert "check baselines.endpoint.base_url" in said and "that the server is running" in said


def test_endpoint_baseline_against_taskfit_serve(tmp_path, tiny_model_dir, loopback, monkeypatch):
    """taskfit's own server as the endpoint: the same client path a user takes against a hosted model."""
    from taskfit.serve import ServeSpec, hash_key
    from taskfit.serve.app import create_app

    spec = ServeSpec(base=str(tiny_model_dir), base_name="hosted-large", log={"path": None},
                     keys=[{"name": "eval", "sha256": hash_key("tf-eval-key")}])
    monkeypatch.setenv("TASKFIT_TEST_KEY", "tf-eval-key")
    project, labels = _project(tmp_path, tiny_model_dir, loopback(create_app(spec)))
    (result,) = baseline_project(project, only=["endpoint"])
    assert result.n == 10 and 0 <= result.metrics["accuracy"] <= 1
    assert result.metrics["prompt_tokens_mean"] > 20  # usage as the server counted it


def test_a_hosted_fine_tune_is_asked_as_it_was_trained(tmp_path, tiny_model_dir, loopback, monkeypatch):
    """A hosted fine-tune's id as the endpoint model, and add_instruction: false: it is sent the
    task's system prompt alone, the prompt it was fine-tuned on, and scored like any candidate."""
    from taskfit.workflows import Workspace

    monkeypatch.setenv("TASKFIT_TEST_KEY", "sk-test-123")
    fake = FakeHostedModel({}, [])
    project, labels = _project(tmp_path, tiny_model_dir, loopback(fake.app))
    path = project / "taskfit.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["baselines"]["endpoint"].update(model="ft:gpt-4o-mini-2024-07-18:acme::abc123", add_instruction=False)
    path.write_text(yaml.safe_dump(doc))
    ws = Workspace.open(project)
    fake.gold, fake.labels = {ex.input: ex.target for ex in ws.held_out}, labels

    (result,) = baseline_project(project, only=["endpoint"])
    assert {r["model"] for r in fake.requests} == {"ft:gpt-4o-mini-2024-07-18:acme::abc123"}
    assert {r["messages"][0]["content"] for r in fake.requests} == {ws.config.task.system_text}
    assert result.metrics["accuracy"] == 0.5 and result.n == 10

    # The instruction back on is another candidate's answers: asked again, not read from the cache.
    doc["baselines"]["endpoint"]["add_instruction"] = True
    path.write_text(yaml.safe_dump(doc))
    baseline_project(project, only=["endpoint"])
    assert len(fake.requests) == 40
    assert fake.requests[-1]["messages"][0]["content"].startswith(ws.config.task.system_text + "\n\nAnswer with")
