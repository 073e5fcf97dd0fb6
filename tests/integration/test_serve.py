"""`taskfit serve` through the official `openai` client on loopback: the models listed, plain and
streamed replies, schema-valid JSON, classify adapters that answer only labels (or the fallback),
the 4xx a client gets for each bad request, batching, the request log without the planted PII,
adapters loaded at run time, and a graceful shutdown. Tiny models trained in the test."""

from __future__ import annotations

import concurrent.futures
import json
import sqlite3
import time

import jsonschema
import openai
import pytest
import yaml

try:  # the HTTP client the openai package is built on (httpx2 from openai 3)
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

from taskfit.workflows import train_project
from taskfit.quickstart import make_quickstart_project
from taskfit.serve import hash_key, load_serve_config
from taskfit.serve.app import create_app

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["city", "size"],
          "properties": {"city": {"type": "string", "maxLength": 12},
                         "size": {"type": "integer", "minimum": 1, "maximum": 20}}}
FULL, LIMITED, ADMIN = "tf-full-key", "tf-triage-only", "tf-admin-key"
PII = ["jane.doe@example.com", "4111 1111 1111 1111", "+44 20 7946 0958"]


def _train(tmp_path, model_dir, name, kind):
    if kind == "classify":
        path = make_quickstart_project(tmp_path / name, seed=0, n_tickets=200)
        doc = yaml.safe_load(path.read_text())
        doc["data"].update(max_train_examples=32, max_eval_examples=8)
    else:
        (tmp_path / name / "data").mkdir(parents=True)
        path = tmp_path / name / "taskfit.yaml"
        with (tmp_path / name / "data" / "b.jsonl").open("w") as f:
            for i in range(40):
                f.write(json.dumps({"text": f"table for {i % 20 + 1} in Oslo ref {i}",
                                    "fields": {"city": "Oslo", "size": i % 20 + 1}}) + "\n")
        doc = {"task": {"kind": "extract", "success": "parsed", "system_prompt": "Extract the booking.",
                        "schema": SCHEMA},
               "data": {"train": "data/b.jsonl", "columns": {"input": "text", "target": "fields"}}}
    doc["model"] = {"name": str(model_dir)}
    # A cut prompt leaves eval.max_new_tokens for the answer: 128 tokens hold a prompt and 64.
    doc["eval"] = {**doc.get("eval", {}), "max_new_tokens": 64}
    doc["train"] = {"batch_size": 8, "max_seq_length": 128, "epochs": 1, "eval_every": 0, "metric_sample": 0,
                    "checkpoint_every": 0}
    path.write_text(yaml.safe_dump(doc))
    return train_project(path).run_dir, doc["task"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("runs")
    triage, task = _train(root, tiny_model_dir, "triage", "classify")
    bookings, _ = _train(root, tiny_model_dir, "bookings", "extract")
    return {"triage": triage, "bookings": bookings, "labels": task["labels"]}


def _spec(tmp_path, runs, **more):
    doc = {"base_name": "tiny",
           "adapters": {"triage": {"path": str(runs["triage"]), "confidence_threshold": 0.0,
                                   "fallback": "needs_human"},
                        "triage-strict": {"path": str(runs["triage"]), "confidence_threshold": 1.0,
                                          "fallback": "needs_human"},
                        "bookings": str(runs["bookings"])},
           "keys": [{"name": "app", "sha256": hash_key(FULL)},
                    {"name": "triage-app", "sha256": hash_key(LIMITED), "models": ["triage"]},
                    {"name": "ops", "sha256": hash_key(ADMIN)}],
           "admin": True, "admin_keys": ["ops"],
           "limits": {"max_tokens": 64, "max_body_bytes": 4096},
           "log": {"path": str(tmp_path / "requests.sqlite")}}
    for key, value in more.items():
        doc[key] = {**doc[key], **value} if isinstance(value, dict) and key in doc else value
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_serve_config(path)


@pytest.fixture()
def server(tmp_path, runs, loopback, tiny_model_dir):
    spec = _spec(tmp_path, runs, base=str(tiny_model_dir))
    app = create_app(spec)
    url = loopback(app)
    return {"url": url, "app": app, "spec": spec, "client": openai.OpenAI(base_url=url, api_key=FULL, max_retries=0)}


def _ask(client, model, text, **kw):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kw)


def test_models_plain_and_streamed_replies_and_json_schema(server, runs):
    client = server["client"]
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"tiny", "triage", "triage-strict", "bookings"}
    assert models["triage"].parent == "tiny" and models["tiny"].parent is None
    assert models["triage"].taskfit["task"] == "classify"
    limited = openai.OpenAI(base_url=server["url"], api_key=LIMITED, max_retries=0)
    assert [m.id for m in limited.models.list().data] == ["triage"]

    reply = _ask(client, "tiny", "my card was charged twice", max_tokens=12)
    text = reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.completion_tokens <= 12
    assert reply.usage.prompt_tokens > 5
    chunks = list(_ask(client, "tiny", "my card was charged twice", max_tokens=12, stream=True,
                       stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed.strip() == text  # greedy: the same reply, token by token
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reply.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens

    # Sampling with a seed is reproducible; a stop string ends the reply before it.
    a = _ask(client, "tiny", "hello", max_tokens=16, temperature=1.0, seed=3).choices[0].message.content
    assert a == _ask(client, "tiny", "hello", max_tokens=16, temperature=1.0, seed=3).choices[0].message.content
    if len(a) > 6:
        cut = _ask(client, "tiny", "hello", max_tokens=16, temperature=1.0, seed=3, stop=[a[3:6]])
        assert cut.choices[0].message.content == a[:3].strip() and cut.choices[0].finish_reason == "stop"

    fmt = {"type": "json_schema", "json_schema": {"name": "booking", "schema": SCHEMA, "strict": True}}
    for text in ["two people in Rome", "table for 4", "hello"]:  # a random model, held to the schema
        out = _ask(client, "tiny", text, max_tokens=40, response_format=fmt).choices[0].message.content
        jsonschema.validate(json.loads(out), SCHEMA)
    # An extract adapter is held to its task's schema without being asked.
    out = _ask(client, "bookings", "table for 3 in Lima", max_tokens=40).choices[0].message.content
    jsonschema.validate(json.loads(out), SCHEMA)


def test_classify_adapter_answers_only_labels_with_confidence_and_falls_back(server, runs):
    client, labels = server["client"], runs["labels"]
    for text in ["I was charged twice", "the app crashes on login", "where is my parcel", "cancel my plan"]:
        choice = _ask(client, "triage", text).choices[0]
        ext = choice.taskfit
        assert choice.message.content in labels and ext["label"] == choice.message.content
        assert 0 < ext["confidence"] <= 1 and ext["fallback"] is False
        strict = _ask(client, "triage-strict", text).choices[0]
        assert strict.message.content == "needs_human" and strict.taskfit["fallback"] is True
        assert strict.taskfit["label"] == choice.message.content  # the label it would have given
        streamed = list(_ask(client, "triage", text, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in streamed) == choice.message.content
    # always one of its labels: a reply format other than text is refused, not decoded freely
    for fmt in ({"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "t", "schema": SCHEMA}}):
        with pytest.raises(openai.BadRequestError) as refused:
            _ask(client, "triage", "I was charged twice", response_format=fmt)
        assert refused.value.code == "unsupported" and refused.value.param == "response_format"


def _error(response):
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "code"} and "Traceback" not in response.text
    return response.status_code, body["error"]["code"]


def test_bad_requests_get_the_right_4xx_in_openai_shape(server):
    url, client = server["url"], server["client"]
    good = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    post = lambda body, key=FULL, **kw: httpx.post(  # noqa: E731
        f"{url}/chat/completions", headers={"Authorization": f"Bearer {key}"} if key else {}, **kw,
        **({"json": body} if body is not None else {}))
    assert post(good).status_code == 200
    assert _error(post(good, key=None)) == (401, "missing_api_key")
    assert _error(post(good, key="tf-wrong")) == (401, "invalid_api_key")
    assert _error(post({**good, "model": "bookings"}, key=LIMITED)) == (403, "model_not_allowed")
    assert _error(post({**good, "model": "gpt-9"})) == (404, "model_not_found")
    for name in ["../../etc/passwd", "runs/x", "/tmp/a", "a b"]:
        assert _error(post({**good, "model": name})) == (400, "invalid_model")
    assert _error(post(None, content=b"{not json")) == (400, "invalid_json")
    for model in ("tiny", "triage"):  # half of a character, as JSON may escape it: no tokenizer takes it
        half = json.dumps({**good, "model": model, "messages": [{"role": "user", "content": "hi \udc00"}]})
        assert _error(post(None, content=half.encode())) == (400, "invalid_value")
    big = {**good, "messages": [{"role": "user", "content": "x" * 5000}]}
    assert _error(post(big)) == (413, "request_too_large")
    assert _error(post({**good, "max_tokens": 65})) == (400, "max_tokens_too_large")
    assert _error(post({**good, "messages": []}))[0] == 400
    assert _error(post({**good, "n": 2})) == (400, "unsupported")
    many = {**good, "messages": [{"role": "user", "content": "hi"}] * 33}
    assert _error(post(many)) == (400, "too_many_messages")
    bad_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}
    assert _error(post({**good, "response_format": bad_schema}))[0] == 400
    booking = {"type": "json_schema", "json_schema": {"name": "booking", "schema": SCHEMA}}
    assert _error(post({**good, "max_tokens": 2, "response_format": booking})) == (400, "max_tokens_too_small")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="tf-wrong", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError):
        _ask(client, "nope", "hi")


def test_concurrent_requests_are_batched_and_match_one_at_a_time(server):
    client = server["client"]
    asks = [("tiny", "refund please"), ("bookings", "seats for 2 in Oslo"), ("tiny", "login broken"),
            ("triage", "charged twice"), ("bookings", "4 people in Rome"), ("tiny", "hello there")] * 2
    alone = [_ask(client, m, t, max_tokens=24).choices[0].message.content for m, t in asks]
    with concurrent.futures.ThreadPoolExecutor(len(asks)) as pool:
        together = list(pool.map(lambda a: _ask(client, a[0], a[1], max_tokens=24).choices[0].message.content, asks))
    assert together == alone  # mixed adapters in one batch answer as each does alone
    metrics = httpx.get(server["url"].removesuffix("/v1") + "/metrics").text
    sizes = {line.split('le="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
             for line in metrics.splitlines() if line.startswith("taskfit_batch_size_bucket")}
    assert sizes["1.0"] < sizes["+Inf"]  # some batches held more than one request
    assert 'taskfit_requests_total{model="tiny",status="200"}' in metrics
    assert "process_resident_memory_bytes" in metrics


def test_a_request_joins_the_running_batch_instead_of_waiting_for_a_long_reply(server):
    """Continuous batching: a short request sent while a long reply streams is read between two of
    its steps and answered before the long one ends, with the answer it gets alone."""
    client = server["client"]
    alone = _ask(client, "bookings", "seats for 2 in Oslo", max_tokens=24).choices[0].message.content
    events, short = [], []
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # sampled: the random model's greedy reply is special tokens, which stream no text
        stream = client.chat.completions.create(model="tiny", stream=True, max_tokens=64, temperature=1.0, seed=1,
                                                messages=[{"role": "user", "content": "tell me a long story"}])
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                events.append("long")
                if not short:  # the long reply is running: ask the short one now
                    short.append(pool.submit(_ask, client, "bookings", "seats for 2 in Oslo", max_tokens=24))
                    short[0].add_done_callback(lambda _: events.append("short done"))
        events.append("long done")
        assert short[0].result().choices[0].message.content == alone
    # the short reply came while the long one was still streaming
    assert events.index("short done") < events.index("long done")
    assert events[events.index("short done"):].count("long") > 1


def test_while_a_batch_decodes_waiting_requests_are_read_in_groups_or_after_gather_steps(tmp_path, runs,
                                                                                         tiny_model_dir):
    """limits.gather: while a long reply decodes, two requests that arrive together wait for a
    third, at most gather_steps steps, then join it together; three that arrive together join at
    the next step, in one pass; a lone classify request waits the same steps, then is scored."""
    from taskfit.decoding import Sampling
    from taskfit.records import Example
    from taskfit.serve.engine import Engine, Job

    spec = _spec(tmp_path, runs, base=str(tiny_model_dir), limits={"max_batch": 8, "gather": 3, "gather_steps": 5})
    engine = Engine(spec)
    engine.load()
    taken: list[tuple[int, int]] = []  # (requests taken together, the engine's decoding steps then)
    engine.on_batch = lambda n: taken.append((n, engine.steps))
    base, triage = engine.models["tiny"], engine.models["triage"]
    answers: dict[int, concurrent.futures.Future] = {}  # id(job) -> its result

    def job(text: str, max_tokens: int = 4, model=base) -> Job:
        answer = concurrent.futures.Future()
        classify = model is triage
        prompt = (engine.task_prompt(triage, Example(id="1", input=text, target=None), True) if classify
                  else engine.prompt(base, [{"role": "user", "content": text}]))
        made = Job(model=model, prompt=prompt, sampling=Sampling(max_tokens=max_tokens), score_labels=classify,
                   on_done=answer.set_result)
        answers[id(made)] = answer
        return made

    def arrive(*jobs: Job) -> int:
        """Queue ``jobs`` together, between two steps; the engine's steps then."""
        with engine.cond:
            for one in jobs:
                engine.submit(one)
            return engine.steps

    def taken_at(n: int) -> tuple[int, int]:
        for _ in range(6000):
            if len(taken) >= n:
                return taken[n - 1]
            time.sleep(0.005)
        raise AssertionError(f"only {taken} taken")

    engine.start()
    long = job("tell me a long story", max_tokens=400)
    try:
        arrive(long)
        taken_at(1)
        pair = [job("refund please"), job("login broken")]
        at = arrive(*pair)
        size, step = taken_at(2)
        assert size == 2 and step - at >= 5  # they waited gather_steps for a third, then joined together
        trio = [job("where is my parcel"), job("cancel my plan"), job("hello there")]
        at = arrive(*trio)
        size, step = taken_at(3)
        assert size == 3 and step - at <= 1  # three at once: read at the next step, in one pass
        lone = job("I was charged twice", model=triage)
        at = arrive(lone)
        size, step = taken_at(4)
        assert size == 1 and step - at >= 5
        assert not answers[id(long)].done()  # all of it while the long reply decoded
        for one in pair + trio:
            assert answers[id(one)].result(timeout=60).completion_tokens >= 1
        assert answers[id(lone)].result(timeout=60).label in runs["labels"]
    finally:
        long.cancelled = True
        engine.stop(60)


def test_one_thread_loads_the_models_and_makes_every_pass(tmp_path, runs, tiny_model_dir, monkeypatch, loopback):
    """The models are loaded, held and run on the engine's one thread (a second thread computing
    in bfloat16 made every decoding step about twice as slow on the reference CPU), including an
    adapter loaded while the server runs."""
    import threading

    from taskfit.serve.engine import Engine

    threads: list[threading.Thread] = []
    load = Engine._load
    monkeypatch.setattr(Engine, "_load", lambda self: (threads.append(threading.current_thread()), load(self))[1])
    app = create_app(_spec(tmp_path, runs, base=str(tiny_model_dir)))
    engine = app.state.engine
    engine.model.register_forward_pre_hook(lambda module, args: threads.append(threading.current_thread()))
    url = loopback(app)
    client = openai.OpenAI(base_url=url, api_key=FULL, max_retries=0)
    asks = [("tiny", "hello"), ("triage", "refund"), ("bookings", "2 in Oslo"), ("tiny", "hi")]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # batched generation and label scoring
        list(pool.map(lambda a: _ask(client, a[0], a[1], max_tokens=24 if a[0] == "bookings" else 6), asks))
    added = httpx.post(url.removesuffix("/v1") + "/admin/adapters", json={"name": "later", "path": str(runs["triage"])},
                       headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)
    assert added.status_code == 201
    assert _ask(client, "later", "refund", max_tokens=6).choices[0].taskfit["label"] in runs["labels"]
    assert len(threads) > 4 and set(threads) == {engine._thread} and threads[0] is not threading.main_thread()


def _batches(url):
    """(requests, batches) the engine has answered so far, from /metrics."""
    metrics = httpx.get(url.removesuffix("/v1") + "/metrics").text
    value = {line.split(" ")[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
             if line.startswith(("taskfit_batch_size_sum", "taskfit_batch_size_count"))}
    return value["taskfit_batch_size_sum"], value["taskfit_batch_size_count"]


def test_concurrent_classify_requests_are_scored_together_and_answer_as_one_at_a_time(server, runs):
    client, url = server["client"], server["url"]
    texts = ["I was charged twice", "the app crashes on login", "where is my parcel", "cancel my plan",
             "refund my order", "my password reset mail never came", "invoice for March", "hello"]
    asks = [("triage", t) for t in texts] + [("triage-strict", t) for t in texts[:4]]

    def answer(ask):
        choice = _ask(client, *ask).choices[0]
        return choice.message.content, choice.taskfit["label"], choice.taskfit["fallback"], choice.taskfit["confidence"]

    alone = [answer(a) for a in asks]
    before = _batches(url)
    with concurrent.futures.ThreadPoolExecutor(len(asks) + 1) as pool:
        # A long generation first keeps the worker busy while the classify requests queue up.
        busy = pool.submit(_ask, client, "tiny", "tell me a long story", max_tokens=64)
        together = list(pool.map(answer, asks))
        busy.result()
    for (text, label, low, conf), (text2, label2, low2, conf2) in zip(alone, together):
        assert (text2, label2, low2) == (text, label, low) and label in runs["labels"]
        assert conf2 == pytest.approx(conf, abs=0.01)  # each is within 0.01 below the exact confidence
    requests, batches = (a - b for a, b in zip(_batches(url), before))
    assert requests == len(asks) + 1 and batches < requests  # some classify requests shared a batch


def test_request_log_is_redacted(server):
    client = server["client"]
    _ask(client, "tiny", f"I am {PII[0]}, card {PII[1]}, call me on {PII[2]}", max_tokens=8)
    with pytest.raises(openai.NotFoundError):
        _ask(client, "nope", f"mail {PII[0]}")
    # refused before its model was resolved: logged under the model it names (monitor counts it
    # there), or none where the body names none it can read
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "track 991"}],
                                       tools=[{"type": "function", "function": {"name": "track"}}])
    headers = {"Authorization": f"Bearer {FULL}"}
    assert httpx.post(f"{server['url']}/chat/completions", headers=headers, content=b"{not json").status_code == 400
    server["app"].state.request_log.flush()
    db = sqlite3.connect(server["spec"].log.path)
    rows = db.execute("SELECT key_name, model, status, request, response, latency_ms, prompt_tokens "
                      "FROM requests ORDER BY created").fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [("app", "tiny", 200), ("app", "nope", 404), ("app", "tiny", 400),
                                                  ("app", None, 400)]
    rows = rows[:2]
    assert rows[0][5] > 0 and rows[0][6] > 0
    dump = "\n".join(db.iterdump())
    assert not any(p in dump for p in PII)
    assert "<EMAIL>" in rows[0][3] and "<CARD>" in rows[0][3] and "<PHONE>" in rows[0][3]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_reply_in_the_clients_own_format_is_not_read_as_the_tasks_answer(server):
    """An extract adapter asked for the client's own response_format answers in it: the log says
    so, and monitoring and the review queue do not read that reply as a task answer (a walkthrough's
    monitor counted a reply valid against the client's schema as "schema validity: invalid", and
    the queue picked it as "invalid output")."""
    from taskfit.config import TaskSpec
    from taskfit.lifecycle.queue import reason_of
    from taskfit.monitoring.requests import read_requests

    client = server["client"]
    own = {"type": "json_schema", "json_schema": {"name": "n", "schema": {
        "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}
    asked = _ask(client, "bookings", "table for 3 in Lima", max_tokens=24, response_format=own)
    assert set(json.loads(asked.choices[0].message.content)) >= {"n"}
    _ask(client, "bookings", "table for 2 in Oslo", max_tokens=40)
    server["app"].state.request_log.flush()
    db = sqlite3.connect(server["spec"].log.path)
    assert [r[0] for r in db.execute("SELECT response_format FROM requests ORDER BY created")] == ["json_schema", None]
    theirs, ours = read_requests(db, "bookings")
    assert theirs.answer is None and theirs.reply == asked.choices[0].message.content  # no task answer
    assert ours.answer is not None and ours.reply == ours.answer
    task = TaskSpec(kind="extract", success="s", system_prompt="p", schema=SCHEMA)
    assert reason_of(theirs, task) != "invalid output" and reason_of(ours, task) != "invalid output"


def test_a_task_adapter_reads_personal_data_replaced_as_its_training_rows_were(server, runs):
    # Its training and held-out rows had e-mail addresses and phone numbers replaced (data.privacy
    # redact): a request carrying them is read as those rows were, so the served answer is the
    # one evaluation measured; the base model reads what it is sent.
    client = server["client"]
    raw = f"refund please, write to {PII[0]} or call {PII[2]}"
    placed = "refund please, write to <EMAIL> or call <PHONE>"
    for model in ("triage", "bookings"):
        a, b = _ask(client, model, raw), _ask(client, model, placed)
        assert a.usage.prompt_tokens == b.usage.prompt_tokens
        assert a.choices[0].message.content == b.choices[0].message.content
    a, b = _ask(client, "tiny", raw, max_tokens=2), _ask(client, "tiny", placed, max_tokens=2)
    assert a.usage.prompt_tokens != b.usage.prompt_tokens


def test_adapters_load_and_unload_at_run_time(server, runs):
    url = server["url"].removesuffix("/v1")
    admin = {"Authorization": f"Bearer {ADMIN}"}
    body = {"name": "triage-2", "path": str(runs["triage"])}
    assert _error(httpx.post(f"{url}/admin/adapters", json=body,
                             headers={"Authorization": f"Bearer {FULL}"})) == (403, "not_admin")
    r = httpx.post(f"{url}/admin/adapters", json=body, headers=admin, timeout=60)
    assert r.status_code == 201 and r.json()["parent"] == "tiny"
    assert _ask(server["client"], "triage-2", "charged twice").choices[0].message.content in runs["labels"]
    assert httpx.delete(f"{url}/admin/adapters/triage-2", headers=admin).status_code == 200
    with pytest.raises(openai.NotFoundError):
        _ask(server["client"], "triage-2", "charged twice")
    assert _error(httpx.delete(f"{url}/admin/adapters/triage-2", headers=admin)) == (404, "model_not_found")


def test_full_queue_gets_429_with_retry_after_and_shutdown_finishes_in_flight(tmp_path, runs, loopback,
                                                                               tiny_model_dir):
    spec = _spec(tmp_path, runs, base=str(tiny_model_dir), limits={"queue": 1, "max_batch": 1})
    url = loopback(create_app(spec))
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64}
    headers = {"Authorization": f"Bearer {FULL}"}
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(lambda _: httpx.post(f"{url}/chat/completions", json=body, headers=headers,
                                                     timeout=60), range(12)))
    codes = sorted(r.status_code for r in replies)
    assert set(codes) == {200, 429}
    busy = next(r for r in replies if r.status_code == 429)
    assert int(busy.headers["Retry-After"]) >= 1 and busy.json()["error"]["type"] == "rate_limit_error"

    # Shutdown while a reply is being streamed: the stream still finishes.
    with httpx.stream("POST", f"{url}/chat/completions", json={**body, "stream": True}, headers=headers,
                      timeout=60) as stream:
        lines = stream.iter_lines()
        first = next(line for line in lines if line)
        loopback.server.should_exit = True
        rest = [line for line in lines if line]
    assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"]["role"] == "assistant"
    assert rest[-1] == "data: [DONE]" and '"finish_reason": "' in rest[-2]


def test_timeout_gets_504(tmp_path, runs, loopback, tiny_model_dir):
    spec = _spec(tmp_path, runs, base=str(tiny_model_dir), limits={"timeout_s": 0.001})
    url = loopback(create_app(spec))
    r = httpx.post(f"{url}/chat/completions", headers={"Authorization": f"Bearer {FULL}"}, timeout=60,
                   json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64})
    assert _error(r) == (504, "timeout")


def test_merged_single_adapter_serves_only_that_adapter(tmp_path, runs, loopback, tiny_model_dir):
    spec = load_serve_config(None, {"base": str(tiny_model_dir), "merged": True, "log": {"path": None},
                                    "adapters": {"triage": {"path": str(runs["triage"])}}})
    client = openai.OpenAI(base_url=loopback(create_app(spec)), api_key="none", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["triage"]
    choice = _ask(client, "triage", "I was charged twice").choices[0]
    assert choice.message.content in runs["labels"] and choice.taskfit["confidence"] > 0


def test_the_serve_command_starts_answers_and_stops_cleanly_on_sigterm(tmp_path, tiny_model_dir):
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "taskfit.cli.main", "serve", "--base", str(tiny_model_dir),
                             "--port", str(port)], cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        (model,) = client.models.list().data
        assert _ask(client, model.id, "hello", max_tokens=4).usage.completion_tokens <= 4
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status says what stopped it
    assert code in (0, -signal.SIGTERM) and "Application shutdown complete" in proc.stderr.read().decode()
    rows = sqlite3.connect(tmp_path / "requests.sqlite").execute("SELECT model, status FROM requests").fetchall()
    assert rows == [(model.id, 200)]
