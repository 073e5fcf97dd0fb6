"""`taskfit serve` answers a classification-head adapter (``train.classify_head``) through the
official `openai` client as evaluation answered it: a label, its confidence and the fallback in
``choices[0].taskfit``, beside a generative classify adapter on the same base that answers as it
does alone; plain and streamed, merged too, loaded and unloaded at run time; and the requests a
head cannot answer (a JSON reply) get a 400 that says why; a system message is accepted and not read."""

from __future__ import annotations

import openai
import pytest
import yaml

try:  # the HTTP client the openai package is built on (httpx2 from openai 3)
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

from taskfit.baselines.head import HeadClassifier
from taskfit.baselines.model import LabelScoringPredictor
from taskfit.config import TrainSpec, load_config
from taskfit.models import load_model
from taskfit.models.head import load_classifier
from taskfit.quickstart import make_quickstart_project
from taskfit.records import Example
from taskfit.serve import load_serve_config
from taskfit.serve.app import create_app
from taskfit.training.hardware import resolve_hardware
from taskfit.workflows import train_project

TEXTS = ["I was charged twice", "the app crashes on login", "where is my parcel", "cancel my plan",
         "how do I reset my password", "refund for the broken lamp"]


def _train(root, model_dir, name, head):
    path = make_quickstart_project(root / name, seed=0, n_tickets=200)
    doc = yaml.safe_load(path.read_text())
    doc["model"] = {"name": str(model_dir)}
    doc["data"].update(max_train_examples=32, max_eval_examples=8)
    doc["train"] = {"batch_size": 8, "max_seq_length": 128, "epochs": 2, "learning_rate": 5e-3, "eval_every": 0,
                    "metric_sample": 0, "checkpoint_every": 0, "classify_head": head}
    path.write_text(yaml.safe_dump(doc))
    return train_project(path).run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("head-serve")
    return {"generative": _train(root, tiny_model_dir, "generative", False),
            "head": _train(root, tiny_model_dir, "head", True)}


def _evaluated(runs, model_dir, merged=False):
    """Each text as evaluation answers it: the head over a fresh base, and the generative adapter
    by label scoring."""
    from peft import PeftModel

    lm = load_model(str(model_dir))
    model, head = load_classifier(lm.model, lm.tokenizer, runs["head"] / "adapter", merged=merged)
    rows = [Example(id=str(i), input=t, target="") for i, t in enumerate(TEXTS)]
    cfg = load_config(runs["generative"] / "config.resolved.yaml")
    lm2 = load_model(str(model_dir))
    generative = PeftModel.from_pretrained(lm2.model, str(runs["generative"] / "adapter")).eval()
    scorer = LabelScoringPredictor("gen", generative, lm2.tokenizer, cfg.task, cfg.train.max_seq_length)
    with resolve_hardware(TrainSpec()).computing():  # the precision evaluation and the server answer in
        heads = list(HeadClassifier("head", model, lm.tokenizer, head).predict(rows))
        return heads, list(scorer.predict(rows)), cfg.task.labels


def _ask(client, model, text, **kw):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kw)


def test_a_head_adapter_answers_as_evaluated_beside_a_generative_one(runs, tiny_model_dir, loopback):
    heads, generative, labels = _evaluated(runs, tiny_model_dir)
    confidences = sorted(p.confidence for p in heads)
    threshold = (confidences[0] + confidences[-1]) / 2
    assert {c < threshold for c in confidences} == {True, False}  # some rows fall back, some do not
    # The generative adapter loads first, so the head is built over a base wrapped in LoRA layers.
    spec = load_serve_config(None, {"base": str(tiny_model_dir), "base_name": "tiny", "log": {"path": None},
                                    "admin": True, "adapters": {
                                        "triage": {"path": str(runs["generative"])},
                                        "triage-head": {"path": str(runs["head"]), "fallback": "needs_human",
                                                        "confidence_threshold": threshold}}})
    url = loopback(create_app(spec))
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
    models = {m.id: m for m in client.models.list().data}
    assert models["triage-head"].taskfit["classify_head"] is True and models["triage-head"].parent == "tiny"
    assert "classify_head" not in models["triage"].taskfit
    for text, head, gen in zip(TEXTS, heads, generative):
        reply = _ask(client, "triage-head", text)
        choice = reply.choices[0]
        low = head.confidence < threshold
        assert choice.message.content == ("needs_human" if low else head.output) and head.output in labels
        assert choice.taskfit["label"] == head.output and choice.taskfit["fallback"] is low
        assert choice.taskfit["confidence"] == pytest.approx(head.confidence, rel=1e-4)
        assert reply.usage.prompt_tokens == head.prompt_tokens and reply.usage.completion_tokens == 0
        streamed = list(_ask(client, "triage-head", text, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in streamed) == choice.message.content
        beside = _ask(client, "triage", text).choices[0]  # the generative adapter is untouched by the head
        assert beside.taskfit["label"] == gen.output
        assert beside.taskfit["confidence"] == pytest.approx(gen.confidence, rel=1e-4)

    # A client that sends its system prompt (as one moving off a hosted fine-tune does) gets the
    # label of the user message alone: the head was trained and evaluated on it alone.
    with_system = client.chat.completions.create(model="triage-head", messages=[
        {"role": "system", "content": "Route it."}, {"role": "user", "content": TEXTS[0]}]).choices[0]
    alone = _ask(client, "triage-head", TEXTS[0]).choices[0]
    assert with_system.taskfit == alone.taskfit and with_system.message.content == alone.message.content
    with pytest.raises(openai.BadRequestError) as json_reply:
        _ask(client, "triage-head", "charged twice", response_format={"type": "json_object"})
    assert json_reply.value.code == "unsupported" and json_reply.value.param == "response_format"

    # Unloaded and loaded again at run time, it answers the same.
    base = url.removesuffix("/v1")
    assert httpx.delete(f"{base}/admin/adapters/triage-head").status_code == 200
    with pytest.raises(openai.NotFoundError):
        _ask(client, "triage-head", TEXTS[0])
    loaded = httpx.post(f"{base}/admin/adapters", json={"name": "again", "path": str(runs["head"])}, timeout=60)
    assert loaded.status_code == 201 and loaded.json()["taskfit"]["classify_head"] is True
    again = _ask(client, "again", TEXTS[0]).choices[0]
    assert again.taskfit["label"] == heads[0].output
    assert again.taskfit["confidence"] == pytest.approx(heads[0].confidence, rel=1e-4)


def test_a_merged_head_serves_as_the_merged_export_answers(runs, tiny_model_dir, loopback):
    heads, _, _ = _evaluated(runs, tiny_model_dir, merged=True)
    spec = load_serve_config(None, {"base": str(tiny_model_dir), "merged": True, "log": {"path": None},
                                    "adapters": {"triage-head": {"path": str(runs["head"])}}})
    client = openai.OpenAI(base_url=loopback(create_app(spec)), api_key="none", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["triage-head"]
    for text, head in zip(TEXTS, heads):
        choice = _ask(client, "triage-head", text).choices[0]
        assert choice.message.content == head.output and choice.taskfit["fallback"] is False
        assert choice.taskfit["confidence"] == pytest.approx(head.confidence, rel=1e-4)
