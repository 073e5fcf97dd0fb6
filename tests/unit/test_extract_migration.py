"""A hosted extract fine-tune's training file brought over as it is (OpenAI chat rows whose answers
are compact JSON with fixed keys, and a fixed eval file): what `init --from` writes and what
`data check` and `data prepare` say about it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

from taskfit.config import load_config
from taskfit.data.card import render_markdown
from taskfit.data.prepare import check_data, data_lines, prepare_data
from taskfit.project import init_from_file

KEYS = ["city", "country", "cuisine", "facility", "party_size_description", "party_size_number", "poi",
        "restaurant_name", "restaurant_type", "served_dish", "sort", "spatial_relation", "state", "timeRange"]
SYSTEM = "Extract the booking fields as JSON."


def _fields(rng: random.Random, i: int) -> dict:
    fields = dict.fromkeys(KEYS)
    fields["party_size_number"] = str(2 + i)  # written in the text: look-alike rows stay distinct
    fields["city"] = rng.choice(["Oslo", "Bergen", "Tromsø", "Lyon"])
    if i % 5 == 0:  # a few long answers: more tokens than the template's budget
        fields["restaurant_name"] = " ".join(rng.choice(["golden", "harbour", "grill", "house", "of", "the",
                                                         "north", "star", "kitchen"]) for _ in range(40))
    return fields


def _chat(fields: dict) -> dict:
    text = f"Book a table for {fields['party_size_number']} in {fields['city']} at {fields['restaurant_name'] or 'a cafe'}"
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text},
                         {"role": "assistant", "content": json.dumps(fields, separators=(",", ":"), ensure_ascii=False)}]}


def _files(tmp_path: Path, missing_at: int | None = None) -> tuple[Path, Path]:
    rng = random.Random(0)
    train, valid = tmp_path / "train.jsonl", tmp_path / "valid.jsonl"
    rows = []
    for i in range(60):
        fields = _fields(rng, i)
        if i == missing_at:
            del fields["sort"]
        rows.append(_chat(fields))
    train.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    valid.write_text("".join(json.dumps(_chat(_fields(rng, 100 + i)), ensure_ascii=False) + "\n"
                             for i in range(1, 21)), encoding="utf-8")
    return train, valid


def _answer_tokens(tokenizer, path: Path) -> list[int]:
    """Each row's answer in tokens, with the end of turn, as written (compact JSON)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [len(tokenizer(r["messages"][2]["content"], add_special_tokens=False)["input_ids"]) + 1 for r in rows]


def test_init_sizes_the_answer_budget_to_the_longest_answer_and_data_check_warns_of_longer_ones(tmp_path, tiny):
    train, valid = _files(tmp_path)
    lengths = _answer_tokens(tiny.tokenizer, train)
    assert max(lengths) > 96  # the template's budget would cut the long answers
    path, proposal = init_from_file(tmp_path / "p", train, tokenizer=tiny.tokenizer)
    config = load_config(path)
    assert config.task.json_style == "compact"  # the answers' own form, whose tokens were counted
    assert config.eval.max_new_tokens >= max(lengths)
    assert any(f"longest answer takes {max(lengths)} tokens" in r for r in proposal.reasons)
    # every row, with the room it keeps for an answer, fits the train.max_seq_length init wrote with it
    assert config.train.max_seq_length > 256 and any("train.max_seq_length" in r for r in proposal.reasons)
    assert not [w for w in check_data(config, path.parent, tokenizer=tiny.tokenizer).warnings
                if "eval.max_new_tokens" in w or "max_seq_length" in w]

    # the template's budget: data check counts the answers over it and names the longest
    doc = yaml.safe_load(path.read_text())
    doc["eval"]["max_new_tokens"] = 96
    path.write_text(yaml.safe_dump(doc))
    card = check_data(load_config(path), path.parent, tokenizer=tiny.tokenizer)
    (said,) = [w for w in card.warnings if "eval.max_new_tokens" in w]
    over = sum(n > 96 for n in lengths)
    longest = f"{train}:{lengths.index(max(lengths)) + 1}"
    assert said.startswith(f"{over} answers need more than eval.max_new_tokens=96 tokens")
    assert f"the longest takes {max(lengths)} ({longest})" in said and "set eval.max_new_tokens: " in said
    assert card.tokens["answers_over_budget"] == over and card.tokens["answer_max"] == max(lengths)


def test_a_key_one_answer_lacks_is_named_with_its_row_when_init_makes_it_optional(tmp_path):
    train, _ = _files(tmp_path, missing_at=56)
    _, proposal = init_from_file(tmp_path / "p", train)
    assert "sort" not in proposal.schema["required"]
    assert any(f"field 'sort' missing in 1 row ({train}:57): made optional; add it to that row" in r
               for r in proposal.reasons)


def test_look_alikes_are_shown_by_their_inputs_then_their_answers(tmp_path):
    train, _ = _files(tmp_path)
    path, _ = init_from_file(tmp_path / "p", train)
    card = check_data(load_config(path), path.parent)
    assert card.distinct_look_alikes
    md = render_markdown(card)
    section = md.split("## Look-alikes kept as distinct examples")[1].split("\n## ")[0]
    line = next(x for x in section.splitlines() if x.startswith("- "))
    note = card.distinct_look_alikes[0]
    # the inputs first (what makes them look alike), then the answers' filled fields, not '{"city":...'
    assert line.index(repr(note["other_preview"][:100])) < line.index("answers")
    assert note["other_preview"].startswith("Book a table for")
    assert "city=" in note["other_label"] and "null" not in note["other_label"]


def test_the_card_counts_training_rows_apart_from_the_fixed_eval_file_and_names_the_caps(tmp_path, tiny):
    train, valid = _files(tmp_path)
    path, _ = init_from_file(tmp_path / "p", train)
    doc = yaml.safe_load(path.read_text())
    doc["data"].update(eval="../valid.jsonl", max_train_examples=40)
    path.write_text(yaml.safe_dump(doc))
    config = load_config(path)
    card = check_data(config, path.parent)
    assert (card.size["rows"], card.size["fixed_eval_rows"]) == (60, 20)
    assert ("60 usable training rows (data.train) and 20 fixed eval rows (data.eval); caps in force: "
            "data.max_train_examples 40") in render_markdown(card)
    prepared = prepare_data(config, path.parent, tokenizer=tiny.tokenizer)
    assert len(prepared.train) == 40
    assert "(left out: 20 train rows by data.max_train_examples)" in render_markdown(prepared.card)


def test_run_and_data_check_report_the_same_progress_to_the_same_end(tmp_path, tiny):
    """`taskfit run` (prepare_data) and `data check` (check_data) report progress through the
    training file and the fixed eval file alike, to the end the bar is given (data_lines)."""
    train, valid = _files(tmp_path)
    path, _ = init_from_file(tmp_path / "p", train)
    doc = yaml.safe_load(path.read_text())
    doc["data"]["eval"] = "../valid.jsonl"
    path.write_text(yaml.safe_dump(doc))
    config = load_config(path)
    checked, prepared = [], []
    card = check_data(config, path.parent, on_row=checked.append)
    prepare_data(config, path.parent, tokenizer=tiny.tokenizer, on_row=prepared.append)
    assert checked == prepared and sum(checked) == data_lines(config, path.parent) == card.counts["read"] == 80


def test_init_fits_the_sequence_length_to_a_long_schema_even_when_the_answers_are_short(tmp_path, tiny):
    """A CRM export of booking utterances and their slots, 40 fields in its schema and two in each
    answer: the answers fit the template's budget, but the system prompt names every field,
    so no row fitted the template's train.max_seq_length (256) and `data check` said training would
    stop at the first row (a walkthrough). init sizes the length to the prompts as it does when the
    budget grows, and data check then finds every row fits."""
    rng = random.Random(1)
    fields = [f"slot_{k}" for k in range(40)]
    records = []
    for i in range(80):
        chosen = rng.sample(fields, 2)
        records.append({"id": i, "utterance": f"Book table {i} in Oslo, " + ", ".join(f"{n} is v{i}" for n in chosen),
                        "slots": {n: f"v{i}" for n in chosen}})
    export = tmp_path / "crm_export.json"
    export.write_text(json.dumps({"exported_at": "2026-12-05", "records": records}, indent=1), encoding="utf-8")
    path, proposal = init_from_file(tmp_path / "p", export, tokenizer=tiny.tokenizer)
    config = load_config(path)
    assert config.task.kind == "extract" and len(config.task.schema_["properties"]) >= 30
    assert config.eval.max_new_tokens == 96  # the answers fit the template's budget
    assert config.train.max_seq_length > 256 and any("train.max_seq_length" in r for r in proposal.reasons)
    assert not [w for w in check_data(config, path.parent, tokenizer=tiny.tokenizer).warnings
                if "max_seq_length" in w or "cannot fit" in w]
