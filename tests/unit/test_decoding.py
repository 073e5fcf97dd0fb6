"""Grammar-held decoding: every record is schema-valid, even from a random model and even when the
token budget runs out mid-record."""

from __future__ import annotations

import json

import jsonschema
import pytest

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


def test_compact_json_answers_are_trained_and_decoded_compact(tiny):
    """task.json_style compact (what `init --from` proposes for answers written so): the training
    target keeps the answers' compact form, and the answer grammar allows it, token by token, and
    refuses the spaced one; spaced stays the default, as models trained before were."""
    from taskfit.config import ColumnMap, TaskSpec
    from taskfit.data.formats import convert
    from taskfit.decoding import answer_grammar

    record = {"vendor": "Café Nord", "total": 12.5, "date": "2024-03-01",
              "items": [{"name": "tea", "amount": 4.5}, {"name": "cake", "amount": 8}],
              "address": {"street": "Storgata 1", "city": "Oslo"}}
    compact = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    row = {"text": "receipt", "fields": compact}
    task = TaskSpec(kind="extract", success="s", system_prompt="Read the receipt.", schema=RECEIPT,
                    json_style="compact")
    example = convert(row, task, "auto", ColumnMap(input="text", target="fields"), "r.jsonl:1", "1")
    assert example.target == compact
    grammar = answer_grammar(task)
    assert _refused_at(tiny.tokenizer, grammar, compact) is None
    assert _refused_at(tiny.tokenizer, grammar, json.dumps(record, ensure_ascii=False)) is not None
    spaced = TaskSpec(kind="extract", success="s", system_prompt="Read the receipt.", schema=RECEIPT)
    assert convert(row, spaced, "auto", ColumnMap(input="text", target="fields"), "r.jsonl:1", "1").target == \
        json.dumps(record, ensure_ascii=False)


def _traced(decoder, trace):
    """Record each running sequence's next-token logits (what it picks from) after every pass."""
    for j, i in enumerate(decoder.active):
        trace.setdefault(i, []).append(decoder.logits[j].clone())


def test_sequences_that_join_a_running_batch_decode_as_they_do_alone(peaked, classify_task):
    """Continuous batching: prompts added between two steps of a running batch (a longer one and a
    shorter one than the running cache, one read from the task's prefix cache) get, at every
    step, the next-token probabilities and tokens they get alone, and so do the sequences already
    running; each is reported done once."""
    import torch

    from taskfit.baselines.model import prompt_ids
    from taskfit.decoding import Decoder, Sampling
    from taskfit.models.prefix import PrefixCache
    from taskfit.records import Example

    tiny = peaked
    task = [_prompt(tiny, "card charged twice"), _prompt(tiny, "app")]
    long = _prompt(tiny, "refund for order 1234 that never arrived, and the replacement was broken too " * 2)
    short = [prompt_ids(tiny.tokenizer, classify_task, Example(id="x", input=t, target=""), 256, 8)
             for t in ("refund my order", "invoice")]
    prompts = task + [long] + short
    sampled = [Sampling(max_tokens=14, temperature=1.0, seed=i) for i in range(5)]
    alone_trace: dict = {}
    alone = []
    for p, s in zip(prompts, sampled):
        one = Decoder(tiny.model, tiny.tokenizer)
        one.add([p], [s])
        trace: dict = {}
        while len(one):
            _traced(one, trace)
            one.step()
        alone_trace[len(alone)] = trace[0]
        alone.append(one.result(0))

    done: list[int] = []
    trace = {}
    decoder = Decoder(tiny.model, tiny.tokenizer, on_done=lambda i, g: done.append(i))

    def step():
        _traced(decoder, trace)
        decoder.step()

    decoder.add(task, sampled[:2])
    for _ in range(3):
        step()
    decoder.add([long], sampled[2:3])  # wider than the running cache: the running rows are padded
    step()
    prefix = PrefixCache.for_task(tiny.tokenizer, classify_task)
    decoder.add(short, sampled[3:], prefix=prefix)  # narrower: the new rows are padded
    assert prefix.uses == 1
    while len(decoder):
        step()
    assert sorted(done) == [0, 1, 2, 3, 4]
    assert not decoder.rows and not decoder.active  # a finished sequence's state is not kept
    got = [decoder.result(i) for i in range(5)]
    assert [g.text for g in got] == [g.text for g in alone]
    assert [g.completion_tokens for g in got] == [g.completion_tokens for g in alone]
    for i in range(5):
        assert len(trace[i]) == len(alone_trace[i])
        for joined, by_itself in zip(trace[i], alone_trace[i]):
            assert torch.allclose(torch.log_softmax(joined, -1), torch.log_softmax(by_itself, -1), atol=1e-4), i


def test_a_running_batch_drops_the_columns_of_sequences_that_have_left(peaked):
    """Under steady traffic a batch never ends: once the long sequence that set its width has left,
    the columns nobody uses are dropped, and the rest decode as they do alone."""
    from taskfit.decoding import Decoder, Sampling, decode_batch

    tiny = peaked
    long, short = _prompt(tiny, "refund for order 1234 that never arrived, and more " * 3), _prompt(tiny, "app")
    sampled = [Sampling(max_tokens=2, temperature=1.0, seed=1), Sampling(max_tokens=12, temperature=1.0, seed=2)]
    decoder = Decoder(tiny.model, tiny.tokenizer)
    decoder.add([long], sampled[:1])
    decoder.add([short], sampled[1:])  # padded on the left to the long one's width
    widths = []
    while len(decoder):
        widths.append(decoder.mask.shape[1])
        decoder.step()
    assert widths[0] == len(long) and decoder.result(0).completion_tokens <= 2
    later = widths[decoder.result(0).completion_tokens:]  # after the long one left
    assert later[0] == len(short) + decoder.result(0).completion_tokens  # only the short one's columns
    alone = decode_batch(tiny.model, tiny.tokenizer, [short], sampled[1:])[0]
    assert decoder.result(1).text == alone.text and decoder.result(1).completion_tokens == alone.completion_tokens


def test_tokens_a_grammar_forces_are_read_in_one_pass_with_the_same_reply(peaked, monkeypatch):
    """A JSON reply's keys, quotes and colons are the only tokens its grammar allows where they
    stand: they are taken without a pass of their own and read with the token before them. The
    replies (greedy, and a joining sequence's) are the ones a pass per token gives, in fewer passes,
    and the streamed pieces add up to the reply."""
    from taskfit.decoding import Decoder, Row, Sampling, decode_batch

    tiny = peaked
    schema = {"type": "object", "additionalProperties": False, "required": ["customer_name", "urgent", "city"],
              "properties": {"customer_name": {"type": "string", "maxLength": 6}, "urgent": {"type": "boolean"},
                             "city": {"type": "string", "maxLength": 6}}}
    grammar = json_schema_grammar(schema)
    prompts = [_prompt(tiny, t) for t in ["refund for order 1234", "app crashes on login", "where is my parcel"]]
    samplings = [Sampling(max_tokens=40, grammar=grammar), Sampling(max_tokens=10),
                 Sampling(max_tokens=40, grammar=grammar)]
    passes = [0]
    hook = tiny.model.register_forward_pre_hook(lambda module, args: passes.__setitem__(0, passes[0] + 1))

    def decode() -> tuple[list, int, list[str]]:
        passes[0] = 0
        pieces: list[str] = []
        alone = decode_batch(tiny.model, tiny.tokenizer, prompts[:1], samplings[:1],
                             on_text=lambda i, d: pieces.append(d))
        decoder = Decoder(tiny.model, tiny.tokenizer)  # the third joins after two steps
        decoder.add(prompts[:2], samplings[:2])
        for _ in range(2):
            decoder.step()
        decoder.add(prompts[2:], samplings[2:])
        while len(decoder):
            decoder.step()
        return alone + [decoder.result(i) for i in range(3)], passes[0], pieces

    try:
        fast, fast_passes, pieces = decode()
        with monkeypatch.context() as m:
            m.setattr(Row, "take_forced", lambda self, *args: "")  # a pass for every token
            slow, slow_passes, _ = decode()
    finally:
        hook.remove()
    assert [(g.text, g.completion_tokens, g.finish_reason) for g in fast] == \
        [(g.text, g.completion_tokens, g.finish_reason) for g in slow]
    jsonschema.validate(json.loads(fast[0].text), schema)
    assert "".join(pieces).strip() == fast[0].text
    # the three keys (several tokens each), their quotes and colons cost no pass of their own
    assert fast_passes < slow_passes / 2, (fast_passes, slow_passes)


def test_a_lone_sequence_on_bfloat16_weights_reads_a_short_run_a_token_a_pass(peaked, monkeypatch):
    """On a CPU holding bfloat16 weights a pass of one token takes the matrix-vector path, about a
    third of the cost of a pass of two or three: a lone sequence reads two unread tokens (one
    picked, one forced) a pass each there, and in one pass on float32 weights."""
    import copy

    import torch

    from taskfit.decoding import Row, Sampling, decode_batch

    # every picked token is followed by one forced token (the same again)
    monkeypatch.setattr(Row, "take_forced", lambda self, tokenizer, eos, vocab, device:
                        self.add(self.tokens[-1], tokenizer, eos) if self.finish is None else "")
    prompt = _prompt(peaked, "refund for order 1234")
    for model, width in ((peaked.model, 2), (copy.deepcopy(peaked.model).to(torch.bfloat16), 1)):
        widths: list[int] = []
        hook = model.register_forward_pre_hook(
            lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
        out = decode_batch(model, peaked.tokenizer, [prompt], [Sampling(max_tokens=8)])[0]
        hook.remove()
        assert widths[0] == len(prompt) and set(widths[1:]) == {width}, (model.dtype, widths)
        assert sum(widths[1:]) == out.completion_tokens - 2  # the last pick and its forced token end it


def _many_keys(n=14, types=("string", "null")):
    keys = [f"field_{i}" for i in range(n)]
    return {"type": "object", "additionalProperties": False, "required": keys,
            "properties": {k: {"type": list(types)} for k in keys}}


@pytest.fixture(scope="module")
def verbose(tiny_model_dir):
    """The tiny model made to write on: every token that holds a quote or begins ``null`` scores 0
    and every other token's score is scaled up, so it opens a string for each value and writes on
    until something else closes it (the random tiny model otherwise writes null, or closes each
    string at once)."""
    import torch

    from taskfit.models import load_model

    lm = load_model(str(tiny_model_dir))
    quotes = [i for i in range(len(lm.tokenizer))
              if '"' in (text := lm.tokenizer.decode([i])) or (text.strip() and "null".startswith(text.strip()))]
    with torch.no_grad():
        head = lm.model.get_output_embeddings().weight
        head.mul_(50)
        head[quotes] = 0
    return lm


def test_a_record_of_many_required_keys_is_finished_within_a_budget_just_above_its_shortest(verbose):
    """14 required keys (snips' restaurant bookings): closing only in the budget's last 16 tokens
    left most keys unwritten, so a model that writes long values had its record cut open; it now
    starts to close as soon as the budget left is what the remaining keys need, and where only the
    shortest record fits, a nullable field is null rather than an empty string."""
    from taskfit.decoding import json_answer, shortest_answer

    schema = _many_keys(types=("string",))
    grammar = json_schema_grammar(schema)
    written = len(verbose.tokenizer(json_answer(schema, dict.fromkeys(schema["required"], "")),
                                    add_special_tokens=False)["input_ids"])  # every value empty
    for n, budget in enumerate([written, written + 5, written + 40]):
        out = generate(verbose.model, verbose.tokenizer, _prompt(verbose, f"book a table for {n + 2}"), budget,
                       grammar)
        jsonschema.validate(json.loads(out.text), schema)  # finished, not cut
        assert out.completion_tokens <= budget
    assert shortest_answer(verbose.tokenizer, grammar) <= written
    nullable = json_schema_grammar(_many_keys())
    shortest = shortest_answer(verbose.tokenizer, nullable)
    tight = generate(verbose.model, verbose.tokenizer, _prompt(verbose, "a table"), shortest, nullable)
    assert all(v is None for v in json.loads(tight.text).values())  # room for the shortest only: null, not ""


def test_an_evaluation_budget_below_the_shortest_record_is_refused_with_the_number_needed(tiny):
    """eval.max_new_tokens below what the shortest record of the schema takes cut every record (the
    scorecard showed 0% valid JSON); it is refused before any row is decoded, naming the minimum."""
    from taskfit.baselines.model import GenerativePredictor
    from taskfit.config import TaskSpec
    from taskfit.decoding import shortest_answer
    from taskfit.errors import ConfigError

    schema = _many_keys()
    task = TaskSpec(kind="extract", success="s", system_prompt="Extract.", schema=schema)
    shortest = shortest_answer(tiny.tokenizer, json_schema_grammar(schema))
    with pytest.raises(ConfigError) as refused:
        GenerativePredictor("prompt-only", tiny.model, tiny.tokenizer, task, 512, shortest - 1, constrained=True)
    assert "eval.max_new_tokens" in str(refused.value) and f"at least {shortest}" in refused.value.hint
    GenerativePredictor("prompt-only", tiny.model, tiny.tokenizer, task, 512, shortest, constrained=True)

