"""data check / data prepare: the card, redaction, the secrets gate, leaks, the planted problems."""

from __future__ import annotations

import json
from dataclasses import replace
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from taskfit.cli.main import app
from taskfit.config import load_config
from taskfit.data.prepare import check_data, prepare_data, write_prepared
from taskfit.data.sample import generate_tickets
from taskfit.errors import DataError
from taskfit.workflows import run_project
from taskfit.quickstart import make_quickstart_project

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="module")
def tickets_project(tmp_path_factory):
    return make_quickstart_project(tmp_path_factory.mktemp("qs") / "p", seed=0).parent


def test_planted_problems_in_the_sample_tickets_are_all_found(tickets_project, tiny):
    from taskfit.data.prepare import build_card
    from taskfit.data.scan import scan

    config = load_config(tickets_project)
    path = tickets_project / config.data.train
    result = scan(path, config.task, config.data, tokenizer=tiny.tokenizer)
    rows = {r["id"]: r for r in generate_tickets(2400, seed=0)}
    line_of = {rid: f"{path}:{int(rid[1:]) + 1}" for rid in rows}  # ids T00000.. are in file order
    planted = lambda kind: {line_of[i] for i, r in rows.items() if r["meta"].get("planted") == kind}  # noqa: E731
    removed = {n.other for n in result.near_duplicates}
    # A planted re-send is found when it, or the ticket it re-sends, was removed as a look-alike.
    for i, r in rows.items():
        if r["meta"].get("planted") in ("near_duplicate", "conflicting_label"):
            assert line_of[i] in removed or line_of[r["meta"]["duplicate_of"]] in removed, i
    assert planted("conflicting_label") <= {n.other for n in result.conflicts}
    # Every planted credential and e-mail is flagged on the row kept (a re-send is flagged on its original).
    source = lambda line: next(n.kept for n in result.near_duplicates if n.other == line)  # noqa: E731
    kept_line = lambda line: line if line not in removed else source(line)  # noqa: E731
    # (a ticket whose side topic is another, shorter ticket's whole text is removed as a conflicting
    # look-alike instead: listed among the conflicts, so its secret never reaches training unseen)
    conflicting = {n.other for n in result.conflicts}
    assert {kept_line(x) for x in planted("secret") - conflicting} <= set(result.secret_rows)
    assert result.pii_counts["EMAIL"] > 0 and result.pii_counts["PHONE"] > 0
    assert result.counts_add_up()
    card = build_card(config, [result])
    assert 0 < card.tokens["loss_token_share"] < 0.2 and card.tokens["max"] > card.tokens["mean"]
    assert any("credentials" in w for w in card.warnings) and any("different answers" in w for w in card.warnings)


def test_prepare_redacts_and_writes_a_card_without_secrets(tickets_project, tiny, tmp_path):
    config = load_config(tickets_project)
    prepared = prepare_data(config, tickets_project, tokenizer=tiny.tokenizer)
    paths = write_prepared(prepared, tmp_path / "prepared")
    written = "".join(paths[k].read_text() for k in ("train", "eval", "card_md", "card_json", "quarantine"))
    assert "<EMAIL>" in written and "<SECRET>" in written
    originals = [r["messages"][0]["content"] for r in generate_tickets(2400, seed=0)]
    import re
    secrets = {m.group() for t in originals for m in re.finditer(r"(sk_live_|AKIA|ghp_|api_key=)\w+", t)}
    emails = {m.group() for t in originals for m in re.finditer(r"[\w.]+@[\w.]+\.\w+", t)}
    assert secrets and emails
    assert not any(s in written for s in secrets | emails)
    ids_train = {json.loads(l)["id"] for l in paths["train"].read_text().splitlines()}
    ids_eval = {json.loads(l)["id"] for l in paths["eval"].read_text().splitlines()}
    assert ids_train.isdisjoint(ids_eval)
    assert (len(ids_train), len(ids_eval)) == (config.data.max_train_examples, config.data.max_eval_examples)
    card = json.loads(paths["card_json"].read_text())
    assert card["split"]["train"] == len(ids_train) and len(card["split"]["train_fingerprint"]) == 64


def test_training_refuses_unredacted_secrets(tickets_project, tiny_model_dir, tmp_path):
    doc = yaml.safe_load((tickets_project / "taskfit.yaml").read_text())
    doc["data"]["privacy"] = {"action": "keep"}
    doc["model"]["name"] = str(tiny_model_dir)
    project = tmp_path / "p"
    project.mkdir()
    (project / "data").symlink_to(tickets_project / "data")
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(DataError, match="credentials"):
        run_project(project)
    result = CliRunner().invoke(app, ["run", str(project)])
    assert result.exit_code == 3 and "--allow-secrets" in result.output and "sk_live" not in result.output


def test_fixed_eval_file_drops_leaks_and_grouped_split(tmp_path, tiny):
    rows = generate_tickets(400, seed=2)
    (tmp_path / "data").mkdir()
    write = lambda name, rs: (tmp_path / "data" / name).write_text("".join(json.dumps(r) + "\n" for r in rs))  # noqa: E731
    write("train.jsonl", rows[:300])
    leak = dict(rows[5], id="L1")
    leak["messages"] = [{"role": "user", "content": "Following up: " + rows[5]["messages"][0]["content"]},
                        rows[5]["messages"][1]]
    write("eval.jsonl", rows[300:] + [leak])
    make_quickstart_project(tmp_path / "tmpl")
    doc = yaml.safe_load((tmp_path / "tmpl" / "taskfit.yaml").read_text())
    doc["data"].update(train="data/train.jsonl", eval="data/eval.jsonl", max_train_examples=None, max_eval_examples=None)
    (tmp_path / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    prepared = prepare_data(load_config(tmp_path), tmp_path, tokenizer=tiny.tokenizer)
    assert prepared.card.counts["eval_rows_dropped_as_leaks"] >= 1
    assert "L1" not in {ex.id for ex in prepared.eval}
    doc["data"].update(eval=None, group_by="customer")
    (tmp_path / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    grouped = prepare_data(load_config(tmp_path), tmp_path)
    assert {ex.meta["customer"] for ex in grouped.train}.isdisjoint({ex.meta["customer"] for ex in grouped.eval})


def test_cli_data_check_writes_the_card(tickets_project):
    result = CliRunner().invoke(app, ["data", "check", str(tickets_project), "--no-tokens"])
    assert result.exit_code == 0, result.output
    assert "rows read" in result.output and "warning:" in result.output
    assert (tickets_project / "data_card.md").exists() and (tickets_project / "data_card.json").exists()


SHARED_SETS = {
    "clinc150": ({"kind": "classify"}, {"columns": {"input": "text", "target": "label"}}, "train.jsonl"),
    "snips_slots": ({"kind": "extract", "schema": {"type": "object", "additionalProperties": {"type": "string"}}},
                    {"columns": {"input": "text", "target": "fields"}}, "train.jsonl"),
    "squad2_dev": ({"kind": "qa"}, {"columns": {"input": "question", "target": "answer", "context": "context"}},
                   "train.jsonl"),
    "hh_rlhf_harmless": ({"kind": "generate"}, {"format": "preference"}, "train.jsonl"),
    "bitext_support": ({"kind": "generate"}, {"columns": {"input": "instruction", "target": "response"}},
                       "train.jsonl"),
}


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent (fresh clone)")
@pytest.mark.parametrize("name", sorted(SHARED_SETS))
def test_shared_datasets_import_by_mapping_alone(name, tmp_path):
    task, data, train = SHARED_SETS[name]
    if task["kind"] == "classify":
        task = {**task, "labels": sorted({json.loads(l)["label"] for l in (SHARED / name / train).open()})}
    doc = {"task": {"name": name, "success": "s", "system_prompt": "p", **task},
           "data": {"train": str(SHARED / name / train), **data}}
    (tmp_path / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    config = load_config(tmp_path)
    card = check_data(config, tmp_path)
    c = card.counts
    assert c["read"] == c["kept"] + c["quarantined"] + c["exact_duplicates"] + c["near_duplicates"]
    assert c["kept"] >= 0.8 * c["read"] and c["quarantined"] <= 0.01 * c["read"]
    if task["kind"] == "generate" and "columns" in data:  # other replies to look-alike requests
        assert c["conflicting_labels"] == 0 and c["distinct_look_alikes"] > 0
    from taskfit.data.card import write_card

    assert "Rows" in write_card(card, tmp_path)["card_md"].read_text()


def test_cli_data_check_on_bad_rows_lists_them_without_traceback(tmp_path):
    make_quickstart_project(tmp_path / "p", n_tickets=60)
    data = tmp_path / "p" / "data" / "tickets.jsonl"
    lines = data.read_text().splitlines()
    lines[3] = "{broken"
    lines[7] = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "nope"}]})
    data.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["data", "check", str(tmp_path / "p"), "--no-tokens"])
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert f"{data}:4: invalid JSON" in result.output and f"{data}:8: answer: label 'nope'" in result.output
    assert "60 rows read" in result.output and "2 quarantined" in result.output


def test_fixed_eval_file_sharing_ids_with_train_is_refused(tmp_path):
    rows = generate_tickets(60, seed=3)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:40]))
    reused = dict(rows[45], id=rows[0]["id"])  # a different ticket under a training row's id
    (tmp_path / "data" / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [reused] + rows[46:]))
    make_quickstart_project(tmp_path / "tmpl")
    doc = yaml.safe_load((tmp_path / "tmpl" / "taskfit.yaml").read_text())
    doc["data"].update(train="data/train.jsonl", eval="data/eval.jsonl")
    (tmp_path / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(DataError, match=f"ids are in both.*{rows[0]['id']}"):
        prepare_data(load_config(tmp_path), tmp_path)


def test_rows_that_cannot_be_cut_to_fit_are_named_before_training(tmp_path, tiny):
    import random

    from taskfit.records import Example
    from taskfit.rendering import render

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(5)) for _ in range(500)]  # no near-duplicates
    long_answer = "We are sorry for the delay. " * 30
    rows = [{"messages": [{"role": "user", "content": " ".join(rng.choice(words) for _ in range(60))},
                          {"role": "assistant", "content": long_answer if i in (3, 11) else "Sorry, on it."}]}
            for i in range(20)]
    doc = _generate_doc(tmp_path, rows)
    config = load_config(_write(tmp_path, doc))
    short = render(tiny.tokenizer, config.task, Example(id="s", input="x", target="Sorry, on it."),
                   target="Sorry, on it.")
    limit = len(short.ids) + 30  # the inputs (60 words) must be cut; the short answers then fit
    doc["train"]["max_seq_length"] = limit
    doc["eval"]["max_new_tokens"] = 8  # the room a cut prompt keeps for the answer (rendering.answer_room)
    config = load_config(_write(tmp_path, doc))
    prepared = prepare_data(config, tmp_path, tokenizer=tiny.tokenizer)
    (warning,) = [w for w in prepared.card.warnings if "cannot fit" in w]

    # exactly the rows training would stop on are named, by file and line; the long inputs are not
    rows_read = prepared.train + prepared.eval
    assert len(rows_read) == 20 and any(len(ex.input) > 300 for ex in rows_read)
    stopping = [ex.source for ex in rows_read if not _renders(tiny.tokenizer, config, ex, limit)]
    assert sorted(stopping) == sorted(f"{tmp_path / 'data' / 'train.jsonl'}:{n}" for n in (4, 12))
    assert warning.startswith("2 rows cannot fit") and all(s in warning for s in stopping)
    # the room kept for the answer counts like the answer: with room for 96 tokens none fits
    doc["eval"]["max_new_tokens"] = 96
    roomy = load_config(_write(tmp_path, doc))
    (warning,) = [w for w in prepare_data(roomy, tmp_path, tokenizer=tiny.tokenizer).card.warnings if "cannot fit" in w]
    assert warning.startswith("20 rows cannot fit")
    assert not any(_renders(tiny.tokenizer, roomy, ex, limit) for ex in rows_read)

    # qa: the context is what gets cut, so a long question cannot be cut away
    def text(n):
        return " ".join(rng.choice(words) for _ in range(n))

    qa_rows = [{"messages": [{"role": "user", "content": text(80 if i == 2 else 5)},
                             {"role": "assistant", "content": "It says so."}], "context": text(60)}
               for i in range(8)]
    (tmp_path / "data" / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa_rows))
    assert CliRunner().invoke(app, ["init", str(tmp_path / "q"), "--task", "qa"]).exit_code == 0
    qa = yaml.safe_load((tmp_path / "q" / "taskfit.yaml").read_text())
    qa["data"]["train"] = str(tmp_path / "data" / "qa.jsonl")
    qa["train"]["max_seq_length"] = limit + 20
    qa["eval"]["max_new_tokens"] = 8
    config = load_config(_write(tmp_path, qa))
    prepared = prepare_data(config, tmp_path, tokenizer=tiny.tokenizer)
    rows_read = prepared.train + prepared.eval
    assert len(rows_read) == 8 and all(ex.context for ex in rows_read)
    stopping = [ex.source for ex in rows_read
                if not _renders(tiny.tokenizer, config, ex, limit + 20)]
    assert stopping == [f"{tmp_path / 'data' / 'qa.jsonl'}:3"]
    (warning,) = [w for w in prepared.card.warnings if "cannot fit" in w]
    assert warning.startswith("1 rows cannot fit") and stopping[0] in warning


def test_the_card_counts_the_rows_training_cuts(tmp_path, tiny):
    """A cut is decided by the prompt with the answer, or with the room kept for an answer where
    that is longer (eval.max_new_tokens for extract): the card counted the answers as written, so
    short answers hid most cut rows (a walkthrough: 31 counted, 56 of 111 cut)."""
    import random

    from taskfit.rendering import answer_room, render

    rng = random.Random(1)
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(5)) for _ in range(500)]
    rows = [{"messages": [{"role": "user", "content": " ".join(rng.choice(words) for _ in range(10 + 4 * i))},
                          {"role": "assistant", "content": "Sorry, on it."}]} for i in range(24)]
    doc = _generate_doc(tmp_path, rows)
    doc["data"]["dedup"] = {"near": False}
    doc["train"]["max_seq_length"], doc["eval"]["max_new_tokens"] = 160, 48
    config = load_config(_write(tmp_path, doc))
    prepared = prepare_data(config, tmp_path, tokenizer=tiny.tokenizer)
    room = answer_room(tiny.tokenizer, config.task, 48)
    cut = sum(render(tiny.tokenizer, config.task, ex, target=ex.target, max_length=160, answer_room=room).truncated
              for ex in prepared.train + prepared.eval)
    written = sum(len(render(tiny.tokenizer, config.task, ex, target=ex.target).ids) > 160
                  for ex in prepared.train + prepared.eval)
    assert cut > written > 0  # the answers as written would have counted fewer
    assert prepared.card.tokens["over_max"] == cut
    (warning,) = [w for w in prepared.card.warnings if "need more than train.max_seq_length" in w]
    assert warning.startswith(f"{cut} rows need more") and "would hold 95% of the rows whole" in warning
    suggested = int(warning.split("train.max_seq_length: ")[1].split()[0])
    assert suggested > 160 and suggested % 32 == 0
    # fewer than 5% of the rows over the limit: the suggestion holds every row, not the limit set
    doc["train"]["max_seq_length"] = prepared.card.tokens["p95"]
    config = load_config(_write(tmp_path, doc))
    card = prepare_data(config, tmp_path, tokenizer=tiny.tokenizer).card
    (warning,) = [w for w in card.warnings if "need more than train.max_seq_length" in w]
    suggested = int(warning.split("train.max_seq_length: ")[1].split()[0])
    assert "would hold every row whole" in warning and suggested >= card.tokens["max"] > config.train.max_seq_length


def _renders(tokenizer, config, ex, limit) -> bool:
    """Whether training can render ``ex`` in ``limit`` tokens (with the room it keeps for the answer)."""
    from taskfit.rendering import answer_room, render

    room = answer_room(tokenizer, config.task, config.eval.max_new_tokens)
    try:
        render(tokenizer, config.task, ex, target=ex.target, max_length=limit, answer_room=room)
    except ValueError:
        return False
    return True


def _generate_doc(tmp_path: Path, rows: list[dict]) -> dict:
    """The taskfit.yaml `init --task generate` writes, as a dict, reading ``rows`` (chat rows) from
    ``tmp_path/data/train.jsonl``."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert CliRunner().invoke(app, ["init", str(tmp_path / "p"), "--task", "generate"]).exit_code == 0
    doc = yaml.safe_load((tmp_path / "p" / "taskfit.yaml").read_text())
    doc["data"]["train"] = str(tmp_path / "data" / "train.jsonl")
    return doc


def _write(project: Path, doc: dict) -> Path:
    (project / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    return project


def test_answers_redaction_would_change_are_named_before_training_and_kept_verbatim_on_request(tmp_path,
                                                                                            tiny_model_dir):
    import random

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(6)) for _ in range(300)]  # no near-duplicates
    rows = []
    for i in range(40):
        email = f"buyer.{words[i]}@example.org" if i % 4 == 0 else None
        text = f"Order {1000 + i} for {words[i]}: {' '.join(rng.choice(words) for _ in range(12))}."
        if email:
            text += f" Reply to {email} (again: {email})."
        rows.append({"text": text, "fields": {"customer": words[i], "order": str(1000 + i),
                                              **({"email": email} if email else {})}})
    emails = {r["fields"]["email"] for r in rows if "email" in r["fields"]}
    project = tmp_path / "p"
    assert CliRunner().invoke(app, ["init", str(project), "--task", "extract"]).exit_code == 0
    doc = yaml.safe_load((project / "taskfit.yaml").read_text())
    doc["task"]["schema"] = {"type": "object", "additionalProperties": False, "required": ["customer"],
                             "properties": {"customer": {"type": "string"}, "order": {"type": "string"},
                                            "email": {"type": "string"}}}
    doc["model"]["name"] = str(tiny_model_dir)
    doc["data"].update(train="data/orders.jsonl", columns={"input": "text", "target": "fields"})
    (project / "data" / "orders.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _write(project, doc)

    # data check names the field and the count before any training, on the screen and in the card
    result = CliRunner().invoke(app, ["data", "check", str(project), "--no-tokens"])
    assert result.exit_code == 0, result.output
    assert "answers changed by redaction: email 10 (of 40 answers)" in result.output
    assert "data.privacy.keep_fields (keep_fields: [email])" in result.output
    card = json.loads((project / "data_card.json").read_text())
    assert card["privacy"]["answers_changed"] == {"email": 10} and card["counts"]["kept"] == 40
    assert "Answers changed by redaction, in the answer and the input alike: email 10" in \
        (project / "data_card.md").read_text()
    # without keep_fields, prepare writes the same placeholder on both sides
    result = CliRunner().invoke(app, ["data", "prepare", str(project)])
    assert result.exit_code == 0 and "answers changed by redaction: email 10" in result.output, result.output
    written = [json.loads(line) for name in ("train", "eval")
               for line in (project / "prepared" / f"{name}.jsonl").read_text().splitlines()]
    redacted = [r for r in written if "email" in json.loads(r["messages"][-1]["content"])]
    assert len(redacted) == 10 and not any(e in json.dumps(written) for e in emails)
    assert all(json.loads(r["messages"][-1]["content"])["email"] == "<EMAIL>"
               and r["messages"][-2]["content"].count("<EMAIL>") == 2 for r in redacted)

    # keep_fields: the values stay verbatim in the answer and in the input, and the card says how many
    doc["data"]["privacy"]["keep_fields"] = ["email"]
    _write(project, doc)
    result = CliRunner().invoke(app, ["data", "check", str(project), "--no-tokens"])
    assert result.exit_code == 0 and "answers changed by redaction" not in result.output, result.output
    assert "kept verbatim (data.privacy.keep_fields): email 10" in result.output
    result = CliRunner().invoke(app, ["data", "prepare", str(project)])
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for name in ("train", "eval")
               for line in (project / "prepared" / f"{name}.jsonl").read_text().splitlines()]
    by_order = {json.loads(r["messages"][-1]["content"])["order"]: r for r in written}
    assert len(by_order) == 40
    for row in rows:
        kept = by_order[row["fields"]["order"]]
        assert json.loads(kept["messages"][-1]["content"]) == row["fields"]
        assert kept["messages"][-2]["content"] == row["text"]
    card = json.loads((project / "prepared" / "data_card.json").read_text())
    assert card["privacy"]["answers_kept"] == {"email": 10} and card["privacy"]["answers_changed"] == {}
    assert "answers whose value redaction would have changed: email 10" in \
        (project / "prepared" / "data_card.md").read_text()

    # a field the schema does not have is refused, naming the ones it has
    doc["data"]["privacy"]["keep_fields"] = ["mail"]
    _write(project, doc)
    result = CliRunner().invoke(app, ["data", "check", str(project), "--no-tokens"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "'mail' is not a field of extract answers; allowed: customer, email, order" in result.output


def test_rows_that_redaction_makes_one_never_sit_on_both_sides_of_the_split(tmp_path):
    # the same message sent twice from two addresses: distinct as written (not even look-alikes:
    # the address is most of a short message), one row once redacted
    import random

    rng = random.Random(0)
    words = ["parcel", "refund", "invoice", "login", "password", "delivery", "charge", "order", "account"]
    rows = []
    for i in range(60):
        text = " ".join(rng.choice(words) for _ in range(4)) + f" case {i}"
        label = ["billing", "shipping", "refund"][i % 3]
        for sender in ("anna.berg.personal.mailbox", "j.doe.work.address.here"):
            rows.append({"messages": [{"role": "user", "content": f"{sender}@example.com {text}"},
                                      {"role": "assistant", "content": label}]})
    project = tmp_path / "p"
    (project / "data").mkdir(parents=True)
    (project / "data" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (project / "taskfit.yaml").write_text(yaml.safe_dump({
        "task": {"name": "t", "kind": "classify", "success": "-", "system_prompt": "Route it.",
                 "labels": ["billing", "shipping", "refund"]},
        "data": {"train": "data/rows.jsonl", "eval_fraction": 0.3}}))
    prepared = prepare_data(load_config(project), project)
    assert prepared.card.counts["kept"] > 100  # most twins kept as written
    seen = {r.input for r in prepared.train}
    assert "<EMAIL>" in next(iter(seen)) and not [r for r in prepared.eval if r.input in seen]
    dropped = prepared.card.counts["eval_rows_dropped_as_leaks"]
    assert dropped > 0 and prepared.card.split["eval"] == len(prepared.eval) > 0
    assert f"{dropped} held-out rows dropped as copies of (or conflicts with) training rows" in \
        prepared.card.split_summary()
    # each kept row counted once: trained on, held out, left out by a cap, or dropped as a leak
    split = prepared.card.split
    assert split["eval_left_out"] == 0  # no cap on the held-out side here (the default leaves all)
    assert (split["train"] + split["eval"] + split["train_left_out"] + split["eval_left_out"] + dropped
            == prepared.card.counts["kept"])


def test_a_documents_folder_that_is_not_there_is_named_by_data_check(tmp_path):
    """The rag baseline would stop on it only after the model loaded: data check, which validates
    taskfit.yaml, says so first."""
    path = make_quickstart_project(tmp_path / "p", n_tickets=60)
    doc = yaml.safe_load(path.read_text())
    doc["baselines"]["documents"] = "help-centre"
    path.write_text(yaml.safe_dump(doc))
    (warning,) = [w for w in check_data(load_config(path.parent), path.parent).warnings if "documents" in w]
    assert warning.startswith(f"baselines.documents: {path.parent / 'help-centre'} is not a folder")
    (path.parent / "help-centre").mkdir()
    assert not [w for w in check_data(load_config(path.parent), path.parent).warnings if "documents" in w]


def test_empty_qa_answer_cells_are_read_as_the_refusal_and_said(tmp_path):
    """An empty answer cell is the refusal by design (the passage does not hold the answer); a
    forgotten answer whose passage does hold it would be trained as a refusal without a word."""
    import csv

    project = tmp_path / "p"
    (project / "data").mkdir(parents=True)
    with (project / "data" / "qa.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["question", "passage", "answer"])
        for i in range(30):
            w.writerow([f"How many days of leave in grade {i}?", f"Grade {i} staff get {20 + i} days of leave.",
                        " " if i == 4 else "" if i == 9 else f"{20 + i} days"])
        w.writerow(["How many days of leave in grade 9?", "Grade 9 staff get 29 days of leave.", ""])  # a copy
    (project / "taskfit.yaml").write_text(yaml.safe_dump({
        "task": {"name": "hr", "kind": "qa", "success": "-", "system_prompt": "Answer from the passage."},
        "data": {"train": "data/qa.csv", "columns": {"input": "question", "context": "passage", "target": "answer"},
                 "dedup": {"near": False}}}))
    config = load_config(project / "taskfit.yaml")
    card = check_data(config, project)
    assert card.counts["kept"] == 30 and card.counts["exact_duplicates"] == 1  # kept, as the refusal
    (said,) = [w for w in card.warnings if "empty answer cell" in w]
    assert said.startswith("2 rows have an empty answer cell, read as task.refusal") and "qa.csv:6" in said


def test_reference_replies_that_break_the_house_rules_are_counted_by_rule_and_named(tmp_path):
    """A walkthrough's reference replies promised refunds, used "!", lacked the sign-off or ran
    long, and data check said nothing: they were trained on as the house style and held out as
    references. Now each rule names its rows on the screen and in the card (the rows are kept)."""
    import random

    rng = random.Random(0)
    words = lambda n: " ".join("".join(rng.choice("abcdefghij") for _ in range(6)) for _ in range(n))  # noqa: E731
    sign = "— The Fernhill team"
    replies = [f"Thanks for writing, {words(12)}. {sign}" for _ in range(30)]
    replies[4] = f"We will refund you, {words(12)}. {sign}"  # line 5
    replies[9] = f"Thanks for writing! {words(12)}. {sign}"
    replies[14] = f"Thanks for writing, {words(12)}."
    replies[19] = f"Thanks for writing, {words(80)}. {sign}"
    project = tmp_path / "p"
    assert CliRunner().invoke(app, ["init", str(project), "--task", "generate"]).exit_code == 0
    doc = yaml.safe_load((project / "taskfit.yaml").read_text())
    doc["task"]["reply"] = {"min_words": 10, "max_words": 40, "must_include": [sign],
                            "must_not_include": ["refund", "!"]}
    doc["data"].update(train="data/replies.jsonl", columns={"input": "message", "target": "reply"})
    (project / "data" / "replies.jsonl").write_text("".join(
        json.dumps({"message": f"Question {i}: {words(8)}", "reply": r}) + "\n" for i, r in enumerate(replies)))
    _write(project, doc)
    result = CliRunner().invoke(app, ["data", "check", str(project), "--no-tokens"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    path = project / "data" / "replies.jsonl"
    assert "warning: 4 of 30 kept replies break the house rules (task.reply)" in output
    assert f'forbidden phrase (must_not_include: "refund", "!") 2 (first {path}:5, {path}:10)' in output
    assert f'missing required phrase (must_include: "{sign}") 1 (first {path}:15)' in output
    assert f"too long (max_words: 40) 1 (first {path}:20)" in output
    assert "30 rows read = 30 kept" in output  # counted, not quarantined
    card = json.loads((project / "data_card.json").read_text())
    assert card["counts"]["breaking_house_rules"] == 4
    assert card["house_rules"]["rules"]["forbidden phrase"] == {
        "rows": 2, "rule": 'must_not_include: "refund", "!"', "first": [f"{path}:5", f"{path}:10"]}
    text = (project / "data_card.md").read_text()
    assert "## Replies that break the house rules (task.reply)" in text
    assert f"| too long | max_words: 40 | 1 | `{path}:20` |" in text

    # preference pairs: the chosen reply is the reference (a rejected one breaking them is the point)
    (project / "data" / "pairs.jsonl").write_text("".join(
        json.dumps({"prompt": f"Question {i}: {words(8)}", "chosen": r, "rejected": f"No refund! {words(12)}"}) + "\n"
        for i, r in enumerate(replies)))
    doc["data"].update(train="data/pairs.jsonl", columns=None, format="preference")
    doc["train"]["method"] = "dpo"
    _write(project, doc)
    card = check_data(load_config(project), project)
    assert card.house_rules["rows"] == 4 and card.house_rules["replies"] == "chosen replies" and card.house_rules["rules"]["forbidden phrase"]["rows"] == 2


def test_a_spreadsheets_rows_of_empty_cells_are_skipped_and_counted(tmp_path):
    """Excel writes ",,," for a row left empty: no example, but the card says how many were
    skipped, so 'rows read' meets the number of rows the user sees in the sheet."""
    from taskfit.data.card import render_markdown

    project = tmp_path / "p"
    (project / "data").mkdir(parents=True)
    rows = ["text,label,note"] + [f"Ticket {i} about my invoice,billing," for i in range(10)]
    rows[4:4] = [",,", ",,"]
    (project / "data" / "t.csv").write_text("\r\n".join(rows + [",,", ""]), encoding="utf-8")
    (project / "taskfit.yaml").write_text(yaml.safe_dump({
        "task": {"name": "t", "kind": "classify", "success": "-", "system_prompt": "Route it.",
                 "labels": ["billing", "shipping"]},
        "data": {"train": "data/t.csv", "columns": {"input": "text", "target": "label"}, "dedup": {"near": False}}}))
    card = check_data(load_config(project / "taskfit.yaml"), project)
    assert card.counts["read"] == 10 and card.files[0]["empty_rows"] == 3
    assert "(10 rows; 3 rows of empty cells skipped)" in render_markdown(card)


def test_answers_longer_than_the_generation_budget_are_named_with_the_budget_that_holds_them(tmp_path, tiny):
    """An OpenAI migration: init wrote eval.max_new_tokens 96 while the answers ran to 126 tokens,
    so those records could never be written whole; the data check said nothing."""
    rows = [{"messages": [{"role": "user", "content": f"where is parcel {i}?"},
                          {"role": "assistant", "content": "It is on its way. " * (1 + 6 * (i % 4 == 0))}]}
            for i in range(24)]
    doc = _generate_doc(tmp_path, rows)
    doc["data"]["dedup"] = {"near": False}
    short = len(tiny.tokenizer("It is on its way. ", add_special_tokens=False)["input_ids"])
    doc["eval"]["max_new_tokens"] = 3 * short
    card = prepare_data(load_config(_write(tmp_path, doc)), tmp_path, tokenizer=tiny.tokenizer).card
    (warning,) = [w for w in card.warnings if "need more than eval.max_new_tokens" in w]
    assert warning.startswith(f"6 answers need more than eval.max_new_tokens={3 * short} tokens")
    line, longest = re.search(re.escape(str(tmp_path / "data" / "train.jsonl")) + r":(\d+)\)", warning).group(1), \
        card.tokens["answer_max"]
    assert int(line) % 4 == 1 and longest > 6 * short  # the longest row, by file and line
    suggested = int(warning.split("set eval.max_new_tokens: ")[1].split()[0])
    assert suggested >= longest and suggested % 16 == 0
    doc["eval"]["max_new_tokens"] = suggested
    card = prepare_data(load_config(_write(tmp_path, doc)), tmp_path, tokenizer=tiny.tokenizer).card
    assert not [w for w in card.warnings if "need more than eval.max_new_tokens" in w]


def test_the_card_says_when_the_held_out_split_takes_more_rows_than_its_fraction(tmp_path):
    import random

    rng = random.Random(2)
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(6)) for _ in range(2000)]
    labels = [f"intent{k}" for k in range(151)]
    rows = [{"text": " ".join(rng.choice(words) for _ in range(8)), "label": labels[i % 151]} for i in range(600)]
    path = make_quickstart_project(tmp_path / "p", n_tickets=100)
    (path.parent / "data" / "intents.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = yaml.safe_load(path.read_text())
    doc["task"]["labels"] = labels
    doc["data"].update(train="data/intents.jsonl", columns={"input": "text", "target": "label"}, format="auto",
                       max_train_examples=None, max_eval_examples=None)
    prepared = prepare_data(load_config(_write(path.parent, doc)), path.parent)
    (warning,) = [w for w in prepared.card.warnings if w.startswith("the held-out split takes")]
    assert warning.startswith("the held-out split takes 151 of 600 rows, 61 more than data.eval_fraction 0.15")
    assert len(prepared.eval) == 151


def test_a_classify_projects_length_hints_name_its_labels_not_the_answer_budget(tmp_path, tiny):
    """A walkthrough (151 intents): the data check told a classify project to lower
    eval.max_new_tokens, which a task that scores its labels never reads."""
    from taskfit.data.card import render_markdown

    project = make_quickstart_project(tmp_path / "p", n_tickets=60).parent
    doc = yaml.safe_load((project / "taskfit.yaml").read_text())
    doc["task"]["system_prompt"] = "Route the ticket to one queue. " * 12 + "Queues: {labels}."
    doc["train"]["max_seq_length"] = 64  # the system prompt and a label alone take more
    config = load_config(_write(project, doc))
    card = prepare_data(config, project, tokenizer=tiny.tokenizer).card
    (warning,) = [w for w in card.warnings if "cannot fit" in w]
    assert "the longest label" in warning and "shorten the system prompt or the longest labels" in warning
    assert "max_new_tokens" not in warning
    text = render_markdown(card)
    assert "the longest label" in text and "max_new_tokens" not in text
    # a kind that writes its answers is still told of its budget
    assert "eval.max_new_tokens" in render_markdown(replace(card, kind="generate"))
