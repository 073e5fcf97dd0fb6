"""Grammar-held decoding: every record is schema-valid, even from a random model and even when the
token budget runs out mid-record."""

from __future__ import annotations

import json

import jsonschema

from taskfit.decoding import choice_grammar, generate, json_schema_grammar

OPEN_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["city"],
               "properties": {"city": {"type": "string"}, "notes": {"type": "string"},
                              "tags": {"type": "array", "items": {"type": "string"}}}}


def _prompt(tiny, text):
    ids = tiny.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                             tokenize=False)
    return tiny.tokenizer(ids, add_special_tokens=False)["input_ids"]


def test_a_random_model_writes_schema_valid_json_within_a_tight_budget(tiny):
    grammar = json_schema_grammar(OPEN_SCHEMA)  # strings of any length: nothing bounds them but the budget
    for n, budget in enumerate([20, 24, 32, 40]):
        out = generate(tiny.model, tiny.tokenizer, _prompt(tiny, f"ticket {n} about billing"), budget, grammar)
        assert out.completion_tokens <= budget
        jsonschema.validate(json.loads(out.text), OPEN_SCHEMA)  # closed in time, and valid


def test_without_the_grammar_the_same_model_is_not_json(tiny):
    out = generate(tiny.model, tiny.tokenizer, _prompt(tiny, "ticket about billing"), 20)
    try:
        json.loads(out.text)
        parsed = True
    except ValueError:
        parsed = False
    assert not parsed


def test_choice_grammar_answers_one_of_the_options(tiny):
    options = ["billing", "refund", "technical_issue"]
    for text in ["charged twice", "app crashes", "money back"]:
        out = generate(tiny.model, tiny.tokenizer, _prompt(tiny, text), 12, choice_grammar(options))
        assert out.text in options
