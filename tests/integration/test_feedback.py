"""`POST /v1/feedback` on a real server: a chat completion's `id` is its request log row, and a
correction sent for it is stored as a reviewed queue's is (with its reviewer), under the same keys
as the other routes; `taskfit data from-log` then turns it into a training row. A fitted TF-IDF
model answers, so no language model is loaded."""

from __future__ import annotations

import json
import sqlite3

import openai
import pytest
import yaml

try:  # the HTTP client the openai package is built on (httpx2 from openai 3)
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

from taskfit.lifecycle.from_log import from_log_project
from taskfit.lifecycle.reviews import store_path
from taskfit.quickstart import make_quickstart_project
from taskfit.serve import hash_key, load_serve_config
from taskfit.serve.app import create_app
from taskfit.workflows import baseline_project

FULL, OTHER = "tf-full-key", "tf-other-model"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, tiny_model_dir):
    path = make_quickstart_project(tmp_path_factory.mktemp("feedback") / "p", seed=0, n_tickets=200)
    doc = yaml.safe_load(path.read_text())
    doc["model"]["name"] = str(tiny_model_dir)
    doc["data"].update(max_train_examples=60, max_eval_examples=12)
    path.write_text(yaml.safe_dump(doc))
    baseline_project(path.parent, only=["tfidf-logreg"])
    return path.parent, doc["task"]


def test_feedback_is_stored_for_the_completion_id(fitted, loopback):
    project, task = fitted
    name = task["name"]
    doc = {"classical": {name: str(project / "baselines" / "tfidf-logreg")},
           "keys": [{"name": "app", "sha256": hash_key(FULL)},
                    {"name": "other", "sha256": hash_key(OTHER), "models": ["something-else"]}],
           "log": {"path": str(project / "requests.sqlite")}}
    (project / "serve.yaml").write_text(yaml.safe_dump(doc))
    url = loopback(create_app(load_serve_config(project / "serve.yaml")))
    client = openai.OpenAI(base_url=url, api_key=FULL, max_retries=0)
    reply = client.chat.completions.create(model=name, messages=[{"role": "user", "content":
                                           "I was charged twice for my subscription this month"}])
    served = reply.choices[0].taskfit["label"]
    right = "refund" if served != "refund" else "billing"

    def post(body, key=FULL):
        return httpx.post(f"{url}/feedback", json=body, headers={"Authorization": f"Bearer {key}"})

    answer = post({"id": reply.id, "label": right, "reviewer": "support-desk"})
    assert answer.status_code == 201, answer.text
    assert answer.json()["verdict"] == "wrong" and answer.json()["correction"] == right
    # the completion's id is the request log's row
    log = sqlite3.connect(project / "requests.sqlite")
    assert log.execute("SELECT model, label FROM requests WHERE id = ?", (reply.id,)).fetchone() == (name, served)
    store = sqlite3.connect(store_path(project / "requests.sqlite"))
    assert store.execute("SELECT reviewer, verdict, correction, served, source FROM corrections WHERE request_id = ?",
                         (reply.id,)).fetchall() == [("support-desk", "wrong", right, served, "feedback")]
    # without a reviewer, the key's name is the reviewer; the served label confirms the answer
    confirm = post({"id": reply.id, "label": served})
    assert confirm.status_code == 201 and confirm.json()["reviewer"] == "app" and confirm.json()["verdict"] == "correct"

    errors = {
        "unknown id": (post({"id": "chatcmpl-nope", "label": right}), 404, "request_not_found"),
        "no correction": (post({"id": reply.id, "reviewer": "x"}), 400, "missing_correction"),
        "both": (post({"id": reply.id, "label": right, "answer": right}), 400, "missing_correction"),
        "unknown key": (post({"id": reply.id, "label": right}, key="tf-wrong"), 401, "invalid_api_key"),
        "other model's key": (post({"id": reply.id, "label": right}, key=OTHER), 403, "model_not_allowed"),
        "extra field": (post({"id": reply.id, "label": right, "score": 3}), 400, None),
        "not a label": (post({"id": reply.id, "label": "urgent-ish"}), 400, None),
    }
    for case, (response, status, code) in errors.items():
        assert response.status_code == status, (case, response.text)
        assert response.json()["error"]["code"] == code, case
    assert "'urgent-ish' is not a label the project knows" in errors["not a label"][0].json()["error"]["message"]
    assert store.execute("SELECT COUNT(*) FROM corrections").fetchone()[0] == 2
    # a label in another case is the label: the served one written "Billing" confirms it
    respelled = post({"id": reply.id, "label": served.upper()})
    assert respelled.status_code == 201 and respelled.json()["verdict"] == "correct", respelled.text
    assert respelled.json()["correction"] == served

    # The newest correction counts: the served answer was confirmed last.
    result = from_log_project(project)
    assert result.reviewed == 1
    rows = [json.loads(line) for path in (result.snapshot.train, result.snapshot.recent_held_out)
            for line in path.read_text().splitlines()]
    assert len(rows) + result.exact_duplicates + result.near_duplicates == 1
    for row in rows:
        assert row["meta"]["request_id"] == reply.id and row["meta"]["reviewer"] == "app"
        assert row["messages"][-1]["content"] == served


def test_feedback_without_a_reviewer_on_a_server_without_keys_says_how_to_name_one(fitted, loopback, tmp_path):
    project, task = fitted
    doc = {"classical": {task["name"]: str(project / "baselines" / "tfidf-logreg")},
           "log": {"path": str(tmp_path / "requests.sqlite")}}
    url = loopback(create_app(load_serve_config(None, doc)))
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
    reply = client.chat.completions.create(model=task["name"], messages=[{"role": "user", "content": "Where is my parcel?"}])
    answer = httpx.post(f"{url}/feedback", json={"id": reply.id, "label": "shipping"})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "reviewer"
    message = answer.json()["error"]["message"]
    assert "send \"reviewer\" in the body" in message and "serve.yaml keys" in message, message
    named = httpx.post(f"{url}/feedback", json={"id": reply.id, "label": "shipping", "reviewer": "desk"})
    assert named.status_code == 201 and named.json()["reviewer"] == "desk"


def test_feedback_confirms_or_corrects_a_reply_that_fell_back(fitted, loopback, tmp_path):
    """An after-deploy walkthrough: the fallback label was refused (400, not in task.labels) and a
    correction compared with the model's own label, not the fallback the customer got."""
    project, task = fitted
    doc = {"classical": {task["name"]: {"path": str(project / "baselines" / "tfidf-logreg"),
                                        "confidence_threshold": 1.0, "fallback": "out_of_scope"}},
           "log": {"path": str(tmp_path / "requests.sqlite")}}
    url = loopback(create_app(load_serve_config(None, doc)))
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
    ask = lambda text: client.chat.completions.create(  # noqa: E731
        model=task["name"], messages=[{"role": "user", "content": text}])
    fell_back = ask("Is the office open on Sunday?")
    assert fell_back.choices[0].message.content == "out_of_scope" and fell_back.choices[0].taskfit["fallback"]
    own = fell_back.choices[0].taskfit["label"]
    confirmed = httpx.post(f"{url}/feedback", json={"id": fell_back.id, "label": "out_of_scope", "reviewer": "desk",
                                                    "comment": "asked jane.doe@example.com, who confirmed"})
    assert confirmed.status_code == 201, confirmed.text
    assert confirmed.json()["verdict"] == "correct" and confirmed.json()["correction"] == "out_of_scope"
    other = ask("I was charged twice for my subscription")
    corrected = httpx.post(f"{url}/feedback", json={"id": other.id, "label": own, "reviewer": "desk"})
    assert corrected.status_code == 201 and corrected.json()["verdict"] == "wrong"  # the customer got out_of_scope
    store = sqlite3.connect(store_path(tmp_path / "requests.sqlite"))
    assert {r[0] for r in store.execute("SELECT served FROM corrections")} == {"out_of_scope"}
    (comment,) = [r[0] for r in store.execute("SELECT comment FROM corrections WHERE comment IS NOT NULL")]
    assert "jane.doe@example.com" not in comment and "who confirmed" in comment  # redacted, as the log is
    refused = httpx.post(f"{url}/feedback", json={"id": other.id, "label": "urgent-ish", "reviewer": "desk"})
    assert refused.status_code == 400 and "out_of_scope" in refused.json()["error"]["message"]


def test_feedback_takes_a_label_the_project_lists_now_and_names_the_allowed_ones(fitted, loopback, tmp_path):
    """An after-deploy walkthrough: after `oos` was added to the project's task.labels, the running
    server still refused a correction to it (400), checking only the served version's labels."""
    project, task = fitted
    doc = yaml.safe_load((project / "taskfit.yaml").read_text())
    config = tmp_path / "taskfit.yaml"  # the project beside the request log, as `taskfit serve DIR` logs
    config.write_text(yaml.safe_dump(doc))
    serve = {"classical": {task["name"]: {"path": str(project / "baselines" / "tfidf-logreg"),
                                          "confidence_threshold": 1.0, "fallback": "out_of_scope"}},
             "log": {"path": str(tmp_path / "requests.sqlite")}}
    url = loopback(create_app(load_serve_config(None, serve)))
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
    reply = client.chat.completions.create(model=task["name"], messages=[{"role": "user", "content":
                                           "Do you sell gift cards for the loyalty programme?"}])

    def post(label):
        return httpx.post(f"{url}/feedback", json={"id": reply.id, "label": label, "reviewer": "desk"})

    refused = post("loyalty_program")
    assert refused.status_code == 400, refused.text
    message = refused.json()["error"]["message"]
    assert "'loyalty_program' is not a label the project knows" in message, message
    assert f"allowed: {', '.join(task['labels'])}, out_of_scope" in message, message
    assert f"add it to task.labels in {config}" in message, message
    doc["task"]["labels"] = [*task["labels"], "loyalty_program"]
    config.write_text(yaml.safe_dump(doc))  # the server is not restarted
    taken = post("Loyalty_Program")
    assert taken.status_code == 201, taken.text
    assert taken.json()["correction"] == "loyalty_program" and taken.json()["verdict"] == "wrong"
    # a taskfit.yaml that no longer loads (mid-edit): the served labels and the fallback still hold, and it is said
    config.write_text("task: [\n")
    assert post("out_of_scope").status_code == 201
    broken = post("loyalty_program")
    assert broken.status_code == 400 and f"{config} could not be read" in broken.json()["error"]["message"]
