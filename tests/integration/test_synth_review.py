"""`taskfit data synth` against `taskfit serve` on loopback (a tiny random model drafts gibberish,
decoded under the draft's JSON schema), then `taskfit review import` of a reviewer's decisions:
what each request asked, every draft accounted for, nothing trained on before a person accepts
it, no synthetic row held out, and the scorecard comparing real-only with real-plus-synthetic
training."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest
import yaml
from typer.testing import CliRunner

from conftest import build_tiny_model
from taskfit.cli.main import app
from taskfit.config import load_config
from taskfit.data.prepare import ACCEPTED, SYNTHETIC, prepare_data
from taskfit.data.split import is_synthetic
from taskfit.lifecycle.synth import PENDING, REASONS, batches, quotas, read_drafts
from taskfit.quickstart import make_quickstart_project
from taskfit.serve import ServeSpec
from taskfit.serve.app import create_app

KEY = "TASKFIT_SYNTH_TEST_KEY"


class Recorder:
    """The server's ASGI app, with every chat request's JSON body kept as it arrived."""

    def __init__(self, app):
        self.app, self.bodies = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        self.bodies.append(json.loads(body))
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


@pytest.fixture(scope="module")
def drafted(tmp_path_factory, module_loopback):
    """A triage project drafting with a served tiny model (2048 positions: the prompt shows real
    tickets), after `taskfit data synth --n 10`."""
    root = tmp_path_factory.mktemp("synth")
    model = build_tiny_model(root / "tiny", positions=2048)
    recorder = Recorder(create_app(ServeSpec(base=str(model), base_name="drafter", log={"path": None}, threads=1)))
    url = module_loopback(recorder)
    path = make_quickstart_project(root / "p", seed=0, n_tickets=160)
    doc = yaml.safe_load(path.read_text())
    doc["model"]["name"] = str(model)
    doc["data"].update(max_train_examples=32, max_eval_examples=8)
    doc["train"].update(batch_size=8, max_seq_length=128, epochs=1, eval_every=0, metric_sample=0,
                        checkpoint_every=0)
    doc["synth"] = {"endpoint": {"base_url": url, "model": "drafter", "api_key_env": KEY},
                    "shots": 2, "paraphrase": 0.3, "temperature": 0.9, "seed": 5, "max_tokens": 320}
    path.write_text(yaml.safe_dump(doc))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY, "any")
        result = CliRunner().invoke(app, ["data", "synth", str(path.parent), "--n", "10"])
        assert result.exit_code == 0, result.output
        yield {"project": path.parent, "output": result.output, "requests": recorder.bodies}


def _split(project):
    prepared = prepare_data(load_config(project / "taskfit.yaml"), project)
    return prepared


def test_each_request_asks_as_configured(drafted):
    project, requests = drafted["project"], drafted["requests"]
    config = load_config(project / "taskfit.yaml")
    (batch,) = batches(project)
    drafts = read_drafts(batch)
    assert len(requests) == len(drafts) == 10
    by_seed = {r["seed"]: r for r in requests}
    assert sorted(by_seed) == list(range(5, 15))  # synth.seed + k, one per request
    assert all(r["model"] == "drafter" and r["temperature"] == 0.9 and r["max_tokens"] == 320 for r in requests)
    # The label quotas: 10 drafts over 8 labels, the 2 extra to the labels with the fewest training rows.
    every = config.model_copy(update={"data": config.data.model_copy(update={"max_train_examples": None,
                                                                             "max_eval_examples": None})})
    split = prepare_data(every, project)
    train = {r.id: r for r in split.train}
    held = {r.id: r for r in split.eval}
    wanted = quotas(config.task.labels, Counter(r.target for r in train.values()), 10, "even")
    assert Counter(d["request"]["label"] for d in drafts) == wanted
    rewrites = 0
    for d in drafts:
        asked = d["request"]
        body = by_seed[asked["seed"]]
        schema = body["response_format"]["json_schema"]["schema"]
        system, user = body["messages"][0]["content"], body["messages"][1]["content"]
        assert config.task.success in system and config.task.system_text in system
        assert len(asked["shown"]) == 2 and set(asked["shown"]) <= set(train)  # never a held-out row
        for rid in asked["shown"]:
            assert train[rid].input in user and train[rid].target == asked["label"]
        if asked["kind"] == "paraphrase":
            rewrites += 1
            source = train[asked["paraphrase_of"]]
            assert source.input in user and source.target == asked["label"]
            assert list(schema["properties"]) == ["input"]
        else:
            # the label is decoded under an enum of the one label asked for
            assert schema["properties"]["answer"] == {"type": "string", "enum": [asked["label"]]}
            assert json.dumps(asked["label"]) in user
        assert not any(h.input in user for h in held.values())
    assert rewrites == 3  # round(10 * synth.paraphrase)


def test_every_draft_is_accounted_for_and_none_is_trainable_before_review(drafted):
    project, output = drafted["project"], drafted["output"]
    (batch,) = batches(project)
    drafts = read_drafts(batch)
    info = json.loads((batch / "synth.json").read_text())
    pending = [d for d in drafts if d["status"] == PENDING]
    rejected = [d for d in drafts if d["status"] != PENDING]
    assert all(d["reason"] in REASONS and d["detail"] for d in rejected)
    assert info["asked"] == 10 == info["passed"] + sum(info["rejected"].values())
    assert info["passed"] == len(pending) and Counter(d["reason"] for d in rejected) == \
        {k: v for k, v in info["rejected"].items() if v}
    assert f"10 drafts asked = {len(pending)} passed the checks" in output.replace("\n", " ")
    # The schema holds even a random model's labels to the one asked for: the drafts that pass are
    # gibberish with the right label, for the reviewer to reject.
    assert pending and all(d["row"]["messages"][1]["content"] == d["request"]["label"] for d in pending)
    assert all(d["row"]["meta"]["synthetic"] for d in pending)
    with (batch / "review.csv").open(encoding="utf-8-sig") as f:
        sheet = list(csv.DictReader(f))
    assert [r["draft_id"] for r in sheet] == [d["id"] for d in pending]
    page = (batch / "review.html").read_text()
    assert all(d["id"] in page for d in pending) and not any(d["id"] in page for d in rejected)

    # Nothing is trained on before a person accepts it, whatever data.synthetic says.
    path = project / "taskfit.yaml"
    doc = yaml.safe_load(path.read_text())
    before = _split(project)
    doc["data"]["synthetic"] = "include"
    path.write_text(yaml.safe_dump(doc))
    try:
        included = _split(project)
    finally:
        doc["data"].pop("synthetic")
        path.write_text(yaml.safe_dump(doc))
    assert not any(is_synthetic(r) for r in included.train + included.eval)
    assert included.card.split["train_fingerprint"] == before.card.split["train_fingerprint"]
    assert any("no accepted synthetic row" in w for w in included.card.warnings)


def test_accepted_drafts_train_and_are_compared_with_real_only(drafted):
    from taskfit.workflows import compare_project, eval_project, train_project

    project = drafted["project"]
    (batch,) = batches(project)
    pending = [d for d in read_drafts(batch) if d["status"] == PENDING]
    assert len(pending) >= 2
    with (batch / "review.csv").open(encoding="utf-8-sig") as f:
        sheet = list(csv.DictReader(f))
    sheet[0].update(verdict="accept", reviewer="ana")
    sheet[1].update(verdict="reject", reviewer="ana", comment="not a ticket")
    verdicts = batch / "verdicts.csv"
    with verdicts.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(sheet[0]))
        writer.writeheader()
        writer.writerows(sheet)
    result = CliRunner().invoke(app, ["review", "import", str(project), str(verdicts)])
    assert result.exit_code == 0, result.output
    assert "1 accepted, 1 rejected" in result.output and f"{len(sheet) - 2} drafts not judged" in result.output
    accepted = [json.loads(line) for line in (project / SYNTHETIC / ACCEPTED).read_text().splitlines()]
    assert [r["id"] for r in accepted] == [sheet[0]["draft_id"]] and accepted[0]["meta"]["reviewer"] == "ana"

    # A draft the checks rejected is not for review; a bad verdict names its line; nothing is stored then.
    rejected = next((d for d in read_drafts(batch) if d["status"] != PENDING), None)
    bad = batch / "bad.csv"
    bad.write_text("draft_id,verdict,reviewer\n" + f"{sheet[2]['draft_id']},maybe,ana\n")
    result = CliRunner().invoke(app, ["review", "import", str(project), str(bad)])
    assert result.exit_code == 3 and "bad.csv:2" in result.output and "accept, reject" in result.output
    if rejected is not None:
        bad.write_text(f"draft_id,verdict,reviewer\n{rejected['id']},accept,ana\n")
        result = CliRunner().invoke(app, ["review", "import", str(project), str(bad)])
        assert result.exit_code == 3 and "not for review" in result.output
    assert len((project / SYNTHETIC / "decisions.jsonl").read_text().splitlines()) == 2

    # Training reads the accepted draft only, with data.synthetic: include; held-out rows stay real and the same.
    path = project / "taskfit.yaml"
    doc = yaml.safe_load(path.read_text())
    real = train_project(project)
    eval_project(project, real.run_dir)
    doc["data"]["synthetic"] = "include"
    path.write_text(yaml.safe_dump(doc))
    prepared = _split(project)
    assert [r.id for r in prepared.train if is_synthetic(r)] == [sheet[0]["draft_id"]]
    assert not any(is_synthetic(r) for r in prepared.eval)
    mixed = train_project(project)
    manifest = json.loads((mixed.run_dir / "manifest.json").read_text())
    assert manifest["data"]["synthetic_train_rows"] == 1 and manifest["data"]["train_rows"] == 33
    assert json.loads((real.run_dir / "manifest.json").read_text())["data"]["eval_fingerprint"] == \
        manifest["data"]["eval_fingerprint"]
    assert eval_project(project, mixed.run_dir).candidate == "fine-tuned-synthetic"
    card = compare_project(project).scorecard
    assert {r.candidate for r in card.results} == {"fine-tuned", "fine-tuned-synthetic"}
    (test,) = card.versus_real
    assert (test.candidate, test.against) == ("fine-tuned-synthetic", "fine-tuned")
    assert any(line.startswith("fine-tuned-synthetic (real + synthetic training rows) against fine-tuned")
               for line in card.notes)

    # A second batch asks with new seeds: the first batch's ten were 5..14.
    result = CliRunner().invoke(app, ["data", "synth", str(project), "--n", "2"])
    assert result.exit_code == 0, result.output
    second = [b for b in batches(project) if b != batch]
    assert [d["request"]["seed"] for d in read_drafts(second[0])] == [15, 16]
    assert "seeds 15-16" in result.output
