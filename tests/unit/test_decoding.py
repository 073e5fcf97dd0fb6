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


def test_a_batch_decodes_each_prompt_as_it_decodes_alone(tiny):
    from taskfit.decoding import Sampling, decode_batch

    prompts = [_prompt(tiny, t) for t in ["card charged twice", "app", "refund for order 1234 never arrived"]]
    grammar = json_schema_grammar(OPEN_SCHEMA)
    samplings = [Sampling(max_tokens=20), Sampling(max_tokens=8), Sampling(max_tokens=30, grammar=grammar)]
    alone = [decode_batch(tiny.model, tiny.tokenizer, [p], [s])[0] for p, s in zip(prompts, samplings)]
    together = decode_batch(tiny.model, tiny.tokenizer, prompts, samplings)
    assert [g.text for g in together] == [g.text for g in alone]
    assert [g.completion_tokens for g in together] == [g.completion_tokens for g in alone]
    assert together[1].completion_tokens <= 8 and json.loads(together[2].text) is not None


def test_sampling_is_reproducible_with_a_seed_and_stops_and_streams(tiny):
    from taskfit.decoding import Sampling, decode_batch

    prompt = _prompt(tiny, "hello")
    run = lambda **kw: decode_batch(tiny.model, tiny.tokenizer, [prompt],  # noqa: E731
                                    [Sampling(max_tokens=24, temperature=1.0, **kw)])[0]
    a, b, c = run(seed=1), run(seed=1), run(seed=2)
    assert a.text == b.text and a.text != c.text
    stop = a.text[4:7]
    deltas: list[str] = []
    cut = decode_batch(tiny.model, tiny.tokenizer, [prompt],
                       [Sampling(max_tokens=24, temperature=1.0, seed=1, stop=(stop,))],
                       on_text=lambda i, d: deltas.append(d))[0]
    assert cut.text == a.text[: a.text.index(stop)].strip() and cut.finish_reason == "stop"
    assert "".join(deltas).strip() == cut.text and stop not in "".join(deltas)
    assert a.finish_reason in ("stop", "length")


# Keys deliberately not in alphabetical order, with a nested object and an array: the order a
# sorted-keys grammar would force differs from the schema's at every level.
RECEIPT = {"type": "object", "additionalProperties": False, "required": ["vendor", "total", "date"],
           "properties": {"vendor": {"type": "string"}, "total": {"type": "number"}, "date": {"type": "string"},
                          "items": {"type": "array", "items": {
                              "type": "object", "required": ["name", "amount"],
                              "properties": {"name": {"type": "string"}, "amount": {"type": "number"}}}},
                          "address": {"type": "object", "properties": {"street": {"type": "string"},
                                                                       "city": {"type": "string"}}}}}


def _refused_at(tokenizer, grammar, text):
    """The first token of ``text`` (then the end of turn) that ``grammar`` does not allow, or None."""
    from taskfit.decoding import Constraint

    constraint = Constraint(tokenizer, grammar)
    for i, token in enumerate(tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]):
        if not constraint.allowed(i, len(tokenizer), "cpu")[token]:
            return tokenizer.decode([token])
        constraint.consume(token)
    return None


def test_the_answer_grammar_allows_the_training_target_token_by_token(tiny):
    """A training target (``json.dumps`` of a record in the schema's key order) is allowed by the
    task's answer grammar at every token, end of turn included; the former grammar (sorted keys,
    compact separators) refused it at its first separator."""
    import llguidance

    from taskfit.config import ColumnMap, TaskSpec
    from taskfit.data.formats import convert
    from taskfit.decoding import answer_grammar

    task = TaskSpec(kind="extract", success="s", system_prompt="Read the receipt.", schema=RECEIPT)
    record = {"vendor": "Café Nord", "total": 12.5, "date": "2024-03-01",
              "items": [{"name": "tea", "amount": 4.5}, {"name": "cake", "amount": 8}],
              "address": {"street": "Storgata 1", "city": "Oslo"}}
    # The target as training reads it, from a row whose record lists its keys in another order.
    shuffled = {"date": record["date"], "total": 12.5, "vendor": "Café Nord",
                "address": {"city": "Oslo", "street": "Storgata 1"},
                "items": [{"amount": 4.5, "name": "tea"}, {"amount": 8, "name": "cake"}]}
    example = convert({"text": "receipt", "fields": shuffled}, task, "auto", ColumnMap(input="text", target="fields"),
                      "r.jsonl:1", "1")
    assert example.target == json.dumps(record, ensure_ascii=False)

    grammar = answer_grammar(task)
    assert _refused_at(tiny.tokenizer, grammar, example.target) is None
    old = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(RECEIPT, sort_keys=True),
                                                        defaults={"whitespace_flexible": False})
    assert _refused_at(tiny.tokenizer, old, example.target) is not None
    # The grammar holds the form: other whitespace or another key order is refused.
    assert _refused_at(tiny.tokenizer, grammar, json.dumps(record, separators=(",", ":"))) is not None
    assert _refused_at(tiny.tokenizer, grammar, json.dumps(shuffled)) is not None
