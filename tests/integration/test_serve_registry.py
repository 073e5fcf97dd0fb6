"""A server that follows the registry, through the official `openai` client on loopback: a
promotion switches the served answer without a restart and a rollback restores it (every
response and log row names the version that answered), the candidate in shadow never changes a
returned answer and its agreement is counted, a canary answers a fixed share of callers, and
adapter versions are loaded under their own ids beside vLLM's adapter routes.

Two classical versions that disagree by construction: the project's tf-idf classifier, and one
fitted on the same tickets with every queue renamed to the next one."""

from __future__ import annotations

import json
import sqlite3
import time

import openai
import pytest
from typer.testing import CliRunner

try:  # the HTTP client the openai package is built on (httpx2 from openai 3)
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

from taskfit.cli.main import app as cli
from taskfit.data.sample import QUEUES, generate_tickets
from taskfit.lifecycle import Registry
from taskfit.serve import load_serve_config
from taskfit.serve.app import create_app

TEXTS = [r["messages"][0]["content"] for r in generate_tickets(8, seed=7)]


def _project(build, root, name, rotate=False):
    project = build(root / name, n_tickets=300, train_rows=120, eval_rows=16)
    if rotate:  # every queue renamed to the next: a classifier that disagrees on every ticket
        data = project / "data" / "tickets.jsonl"
        rows = [json.loads(line) for line in data.read_text().splitlines()]
        queues = list(QUEUES)
        for r in rows:
            r["messages"][-1]["content"] = queues[(queues.index(r["messages"][-1]["content"]) + 1) % len(queues)]
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(cli, ["baseline", str(project), "--only", "tfidf-logreg"])
    assert result.exit_code == 0, result.output
    return project


def _cli(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def projects(tmp_path_factory, tiny_triage):
    root = tmp_path_factory.mktemp("follow")
    return {"good": _project(tiny_triage, root, "good"), "rotated": _project(tiny_triage, root, "rotated", True)}


def _with_candidate(projects):
    """The good project's registry with tf-idf in production and the renamed one as the candidate."""
    project = projects["good"]
    registry = Registry(project / "registry.sqlite")
    if registry.alias("triage", "production") is None:
        _cli("promote", project, "tfidf-logreg", "--as", "triage")
    if registry.alias("triage", "candidate") is None:
        _cli("promote", project, projects["rotated"] / "baselines" / "tfidf-logreg", "--as", "triage",
             "--alias", "candidate")
    return project, registry.resolve("triage", "production"), registry.resolve("triage", "candidate")


def _expected(version):
    """What a classical version answers, asked directly (no server)."""
    from taskfit.baselines.classical import ClassicalPredictor, load_classical

    predictor = ClassicalPredictor(load_classical(version.path))
    return [predictor.answer(t)[0] for t in TEXTS]


def _serve(loopback, tmp_path, registry, name="triage", **entry):
    spec = load_serve_config(None, {"adapters": {name: {"registry": f"{name}@production", **entry}},
                                    "registry": {"path": str(registry), "poll_s": 0.05},
                                    "log": {"path": str(tmp_path / "requests.sqlite")}, "admin": True})
    app = create_app(spec)
    return app, openai.OpenAI(base_url=loopback(app), api_key="none", max_retries=0)


def _ask(client, text, **kw):
    return client.chat.completions.create(model="triage", messages=[{"role": "user", "content": text}], **kw)


def _answers(client, **kw):
    replies = [_ask(client, t, **kw).choices[0] for t in TEXTS]
    return [c.message.content for c in replies], {c.taskfit["version"] for c in replies}


def _until(condition):
    """Wait for the server to catch up (it polls the registry); fails after a generous bound."""
    for _ in range(1200):
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("the server never caught up")


def test_promotion_and_rollback_switch_the_served_answer_without_a_restart(tmp_path, projects, loopback):
    project = projects["good"]
    _cli("promote", project, "tfidf-logreg", "--as", "triage")
    registry = Registry(project / "registry.sqlite")
    v1 = registry.resolve("triage", "production")
    app, client = _serve(loopback, tmp_path, project / "registry.sqlite")
    assert app.state.engine.tokenizer is None  # classical versions only: no language model loaded
    before, versions = _answers(client)
    assert before == _expected(v1) and versions == {v1.id}
    raw = httpx.post(f"{client.base_url}chat/completions", json={"model": "triage", "messages": [
        {"role": "user", "content": TEXTS[0]}]})
    assert raw.headers["x-taskfit-version"] == v1.id

    _cli("promote", project, projects["rotated"] / "baselines" / "tfidf-logreg", "--as", "triage", "--force",
         "--reason", "a renamed taxonomy")
    v2 = registry.resolve("triage", "production")
    assert v2.id != v1.id
    _until(lambda: _ask(client, TEXTS[0]).choices[0].taskfit["version"] == v2.id)
    after, versions = _answers(client)
    assert after == _expected(v2) and versions == {v2.id} and after != before

    _cli("rollback", project, "triage")
    _until(lambda: _ask(client, TEXTS[0]).choices[0].taskfit["version"] == v1.id)
    assert _answers(client) == (before, {v1.id})
    assert [m.id for m in client.models.list().data] == ["triage"]

    app.state.request_log.flush()
    rows = sqlite3.connect(tmp_path / "requests.sqlite").execute(
        "SELECT version, label, shadow_of FROM requests WHERE status = 200 ORDER BY created").fetchall()
    assert {r[0] for r in rows} == {v1.id, v2.id} and all(r[2] is None for r in rows)
    by_version = {v: [r[1] for r in rows if r[0] == v] for v in (v1.id, v2.id)}
    assert set(by_version[v2.id]) <= set(after) and set(by_version[v1.id]) <= set(before)


def test_shadow_never_changes_a_returned_answer_and_reports_its_agreement(tmp_path, projects, loopback):
    from taskfit.monitoring.requests import shadow_summary

    project, production, candidate = _with_candidate(projects)
    app, client = _serve(loopback, tmp_path, project / "registry.sqlite", shadow=True)
    answers, versions = _answers(client)
    streamed = ["".join(c.choices[0].delta.content or "" for c in _ask(client, t, stream=True) if c.choices)
                for t in TEXTS]
    assert answers == streamed == _expected(production) and versions == {production.id}

    def counted():
        text = httpx.get(str(client.base_url).removesuffix("/v1/") + "/metrics").text
        return {line.split('agreement="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines() if line.startswith("taskfit_shadow_answers_total{")}

    _until(lambda: sum(counted().values()) == 2 * len(TEXTS))
    shadowed = _expected(candidate)
    agree = sum(a == b for a, b in zip(answers, shadowed))
    assert counted().get("agree", 0) == 2 * agree and counted()["disagree"] == 2 * (len(TEXTS) - agree) > 0
    app.state.request_log.flush()
    db = sqlite3.connect(tmp_path / "requests.sqlite")
    shadows = db.execute("SELECT id, shadow_of, version, label FROM requests WHERE shadow_of IS NOT NULL").fetchall()
    assert len(shadows) == 2 * len(TEXTS)
    assert all(s[0] == s[1] + "-shadow" and s[2] == candidate.id for s in shadows)
    summary = shadow_summary(db, "triage")
    assert (summary.candidate, summary.answers, summary.agree) == (candidate.id, 2 * len(TEXTS), 2 * agree)


def test_a_canary_answers_a_sticky_share_of_callers(tmp_path, projects, loopback):
    project, production, candidate = _with_candidate(projects)
    _, client = _serve(loopback, tmp_path, project / "registry.sqlite", canary=0.5)
    seen = {}
    for user in [f"user-{i}" for i in range(24)]:
        first, again = (_ask(client, TEXTS[0], user=user).choices[0].taskfit["version"] for _ in range(2))
        assert first == again  # sticky
        seen[user] = first
    assert set(seen.values()) == {production.id, candidate.id}


def test_adapter_versions_load_under_their_own_ids_beside_the_vllm_routes(tmp_path, projects, loopback,
                                                                          tiny_model_dir):
    from taskfit.lifecycle.promote import Source, stage, who

    project = projects["good"]
    _cli("train", project)
    run = next(project.glob("runs/*"))
    registry = Registry(tmp_path / "registry.sqlite")  # a registry of its own, written through the library
    lora = registry.add(stage(registry, "triage", Source("adapter", run), who()))
    tfidf = registry.add(stage(registry, "triage", Source("classical", project / "baselines" / "tfidf-logreg"), who()))
    assert lora.base_model == str(tiny_model_dir) and lora.labels == tuple(QUEUES)
    registry.move("triage", "production", lora.id, action="promote", by="t", reason=None)
    app, client = _serve(loopback, tmp_path, tmp_path / "registry.sqlite")
    first, versions = _answers(client)
    assert versions == {lora.id} and set(first) <= set(QUEUES)
    assert app.state.engine.models["triage"].adapter == f"v-{lora.id}"

    registry.move("triage", "production", tfidf.id, action="promote", by="t", reason=None)
    _until(lambda: _ask(client, TEXTS[0]).choices[0].taskfit["version"] == tfidf.id)
    registry.move("triage", "production", lora.id, action="rollback", by="t", reason=None)
    _until(lambda: _ask(client, TEXTS[0]).choices[0].taskfit["version"] == lora.id)
    assert _answers(client) == (first, {lora.id})  # the version kept loaded answers as it did

    base = str(client.base_url).removesuffix("/v1/")
    r = httpx.post(f"{base}/v1/load_lora_adapter", json={"lora_name": "extra", "lora_path": str(run)}, timeout=60)
    assert r.status_code == 200 and r.json()["id"] == "extra"
    extra = client.chat.completions.create(model="extra", messages=[{"role": "user", "content": TEXTS[0]}])
    assert extra.choices[0].message.content == first[0]  # the same run, under another name
    assert httpx.post(f"{base}/v1/unload_lora_adapter", json={"lora_name": "extra"}).status_code == 200
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="extra", messages=[{"role": "user", "content": TEXTS[0]}])
    r = httpx.post(f"{base}/v1/unload_lora_adapter", json={"lora_name": "triage"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "follows_registry"


def test_a_server_started_on_classical_versions_alone_follows_the_first_adapter_version(tmp_path, projects,
                                                                                        loopback, caplog):
    """A server started on classical versions only loaded no language model: when the name's first
    adapter version is promoted, it loads the base model and switches to it, as to any version
    (it logged "could not switch" and kept the classical version, and promote said to restart it);
    promote says the server follows, loading the base model first."""
    import logging

    project = projects["rotated"]  # its own registry, not the other tests'
    _cli("promote", project, "tfidf-logreg", "--as", "rotated")
    registry = Registry(project / "registry.sqlite")
    v1 = registry.resolve("rotated", "production")
    app, client = _serve(loopback, tmp_path, project / "registry.sqlite", name="rotated")
    assert app.state.engine.tokenizer is None
    before = client.chat.completions.create(model="rotated", messages=[{"role": "user", "content": TEXTS[0]}])
    assert before.choices[0].taskfit["version"] == v1.id
    _cli("train", project)
    with caplog.at_level(logging.INFO):
        result = CliRunner().invoke(cli, ["promote", str(project), "--as", "rotated", "--force", "--reason", "try it"])
        assert result.exit_code == 0, result.output
        said = " ".join(result.output.split())
        assert "follows rotated@production now" in said and "first adapter version" in said
        assert "loads the base language model first" in said and "restart" not in said
        v2 = registry.resolve("rotated", "production")
        assert v2.kind == "adapter"
        _until(lambda: any(f"is now {v2.short}" in r.getMessage() for r in caplog.records))
    assert not [r for r in caplog.records if "could not switch" in r.getMessage()]
    assert app.state.engine.tokenizer is not None  # the base model, loaded when the adapter came
    reply = client.chat.completions.create(model="rotated", messages=[{"role": "user", "content": TEXTS[0]}])
    assert reply.choices[0].taskfit["version"] == v2.id and reply.choices[0].message.content
    _cli("rollback", project, "rotated")  # back to the classical version: a pointer move
    _until(lambda: client.chat.completions.create(model="rotated", messages=[{"role": "user", "content": TEXTS[0]}])
           .choices[0].taskfit["version"] == v1.id)
