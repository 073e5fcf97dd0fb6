"""extract: a JSON record that must validate against the task's JSON schema.

Metrics: JSON validity, schema compliance, field-level precision/recall/F1 (micro, over
``field = value`` pairs), exact-record match, and two kinds of miss counted apart: *missing*
fields (in the gold record, absent from the answer) and *invented* fields (in the answer, absent
from the gold record: what the model made up). The same figures per field (see
:func:`per_field_scores`) say which fields are read right and which are not.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any, Callable, Iterator, Sequence

from taskfit.config import TaskSpec
from taskfit.records import AnswerParts, EvalResult, Example, Prediction
from taskfit.stats import percentile
from taskfit.tasks.base import ANSWER, AnswerValue, Column, Scoring, TaskDefaults, plain_text, spelt, written_in

EXAMPLES_PER_BUCKET = 3
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")
# load_json's cut of a Markdown fence, in JavaScript.
FENCE_TRANSFORM = "output.trim().replace(/^```(?:json)?\\s*|\\s*```$/g, '')"
# One field of the answer against the gold value (context.config: the field's key path and the
# gold value, null when the gold leaves it empty), as per_field_scores judges it: right when both
# leave it empty (absent, null, "", [], {}) or both hold it and their values match with case and
# spacing folded, a list's items in any order.
FIELD_JS = """\
const text = (v) => v !== null && typeof v === 'object' ? JSON.stringify(v) : String(v);
const norm = (v) => Array.isArray(v) ? v.map(norm).sort().join('|')
  : text(v).toLowerCase().split(/\\s+/).filter(Boolean).join(' ');
const empty = (v) => v === undefined || v === null || v === ''
  || (typeof v === 'object' && Object.keys(v).length === 0);
let got;  // an answer that is not JSON leaves every field empty
try { got = JSON.parse(output); } catch (e) { got = undefined; }
for (const key of context.config.field) {
  got = got !== null && typeof got === 'object' && !Array.isArray(got) ? got[key] : undefined;
}
const gold = context.config.expected;
const pass = empty(got) ? empty(gold) : !empty(gold) && norm(got) === norm(gold);
const shown = (v) => empty(v) ? 'nothing' : JSON.stringify(v);
return { pass, score: pass ? 1 : 0,
         reason: `${context.config.field.join('.')}: expected ${shown(gold)}, got ${shown(got)}` };
"""


def load_json(text: str) -> Any:
    """The JSON value in an answer (a Markdown code fence around it is tolerated); raises
    ValueError when there is none."""
    return json.loads(_FENCE.sub("", text.strip()))


def schema_errors(task: TaskSpec, value: Any) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(task.schema_ or {})
    return [f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in validator.iter_errors(value)]


def parse_record(task: TaskSpec, text: str) -> tuple[str, bool]:
    """Valid means: JSON, and the schema holds."""
    try:
        value = load_json(text)
    except ValueError:
        return text.strip(), False
    return json.dumps(value, ensure_ascii=False), not schema_errors(task, value)


def _norm(value: Any) -> str:
    if isinstance(value, list):
        return "|".join(sorted(_norm(v) for v in value))
    return " ".join(str(value).lower().split())


def leaves(record: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """A record's values as ``(dotted.key, value)``, nested objects flattened; null and empty
    values are left out (a model that writes ``"city": null`` did not claim a city)."""
    if not isinstance(record, dict):
        return
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from leaves(value, name + ".")
        elif value not in (None, "", [], {}):
            yield name, value


def fields(record: Any, prefix: str = "") -> dict[str, str]:
    """A record flattened to ``dotted.key -> normalised value`` (see :func:`leaves`)."""
    return {name: _norm(value) for name, value in leaves(record, prefix)}


def value_written(value: Any, text_words: str) -> bool:
    """Whether a field's value is written in a text (given as :func:`~taskfit.tasks.base.spelt`):
    a string by its words, a number as written or with two decimals ("85.9" as "85.90"), a list
    when each of its items is; a true/false flag is never written."""
    if isinstance(value, bool):
        return False
    if isinstance(value, list):
        return all(value_written(v, text_words) for v in value)
    if isinstance(value, (int, float)):
        return any(written_in(form, text_words) for form in {str(value), f"{value:.2f}"})
    return written_in(str(value), text_words)


def schema_fields(schema: Any, prefix: str = "") -> list[str]:
    """The fields a JSON schema declares, in its order, named as :func:`fields` names them: a
    property whose subschema has ``properties`` of its own is a nested object and contributes its
    leaves (``address.city``); an object without declared properties contributes nothing (its keys
    come from the data); every other property (string, number, array...) is one field."""
    out: list[str] = []
    if not isinstance(schema, dict):
        return out
    for key, sub in (schema.get("properties") or {}).items():
        if isinstance(sub, dict) and sub.get("properties"):
            out += schema_fields(sub, f"{prefix}{key}.")
        elif not (isinstance(sub, dict) and sub.get("type") == "object"):
            out.append(f"{prefix}{key}")
    return out


def answer_leaves(value: Any, name: str = "", in_list: bool = False) -> Iterator[tuple[str, Any]]:
    """Every string and number in a record, in order, with the field it fills: a nested object's
    fields dotted (``address.city``), as :func:`fields` names them; every item of a list under the
    list's own name, as :func:`schema_fields` names an array. true, false and null are left out."""
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from answer_leaves(sub, name if in_list else f"{name}.{key}" if name else str(key), in_list)
    elif isinstance(value, list):
        for item in value:
            yield from answer_leaves(item, name, True)
    elif isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        yield name or ANSWER, value


def _replace_leaves(value: Any, texts: Iterator[str]) -> Any:
    """``value`` with its strings replaced by ``texts``, in :func:`answer_leaves`' order (a number
    takes its turn and stays)."""
    if isinstance(value, dict):
        return {key: _replace_leaves(sub, texts) for key, sub in value.items()}
    if isinstance(value, list):
        return [_replace_leaves(item, texts) for item in value]
    if isinstance(value, str):
        return next(texts)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        next(texts)
    return value


def declared_fields(schema: Any, prefix: str = "") -> list[str]:
    """Every property a JSON schema declares, nested ones dotted, objects included (``address``
    and ``address.city``)."""
    out: list[str] = []
    if not isinstance(schema, dict):
        return out
    for key, sub in (schema.get("properties") or {}).items():
        out.append(f"{prefix}{key}")
        if isinstance(sub, dict) and sub.get("properties"):
            out += declared_fields(sub, f"{prefix}{key}.")
    return out


def per_field_scores(names: Sequence[str], golds: Sequence[dict[str, str]],
                     answers: Sequence[dict[str, str]]) -> dict[str, dict[str, float]]:
    """Figures per field over the rows, from records flattened by :func:`fields`.

    Fields: ``names`` first (the schema's), then any other field some gold record or answer has,
    in order of appearance; so the per-field ``missing``, ``invented`` and ``wrong`` counts add up
    to the record-level ones, and ``support`` adds up to the gold records' field count.

    A field is *empty* in a record when it is absent, ``null``, ``""``, ``[]`` or ``{}`` (as
    :func:`fields` drops them), and an answer that is not JSON has every field empty. Per field:

    - ``support``: rows whose gold record has the field (not empty);
    - ``accuracy``: share of *all* rows where the answer's normalised value (case and spacing
      folded, a list's items in any order) equals the gold's, a row where both leave the field
      empty counting as right (so a field the gold rarely has is
      mostly judged on not inventing it);
    - ``precision``, ``recall``, ``f1``: over ``field = value`` pairs, as the record-level
      figures are (a right pair over the answer's pairs, over the gold's pairs; 0 when there are
      none);
    - ``missing`` (gold has it, the answer leaves it empty), ``invented`` (the answer has it, the
      gold leaves it empty) and ``wrong`` (both have it, the values differ), as row counts.
    """
    count: dict[str, Counter[str]] = {name: Counter() for name in names}
    for gold, got in zip(golds, answers):
        for name in [*gold, *(k for k in got if k not in gold)]:
            g, a = gold.get(name), got.get(name)
            c = count.setdefault(name, Counter())
            c["support"] += g is not None
            c["predicted"] += a is not None
            c["hits"] += g == a
            c["missing"] += a is None
            c["invented"] += g is None
            c["wrong"] += None not in (g, a) and g != a
    n = len(golds)
    out: dict[str, dict[str, float]] = {}
    for name, c in count.items():
        precision = c["hits"] / c["predicted"] if c["predicted"] else 0.0
        recall = c["hits"] / c["support"] if c["support"] else 0.0
        misses = c["missing"] + c["invented"] + c["wrong"]  # every other row is right
        out[name] = {"support": c["support"], "accuracy": (n - misses) / n if n else 0.0,
                     "precision": precision, "recall": recall,
                     "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
                     "missing": c["missing"], "invented": c["invented"], "wrong": c["wrong"]}
    return out


def field_f1_ci(golds: Sequence[dict[str, str]], answers: Sequence[dict[str, str]], n_boot: int = 1000,
                seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the field F1 itself (micro: 2 x right pairs over
    answer pairs + gold pairs), resampling rows. (The mean of the per-record F1s is another
    figure: where records hold different numbers of fields, the field F1 can lie outside its
    interval.)"""
    import numpy as np

    if not golds:
        return (0.0, 0.0)
    counts = np.array([(sum(1 for k, v in a.items() if g.get(k) == v), len(a) + len(g))
                       for g, a in zip(golds, answers)], dtype=float)
    n = len(counts)
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=n_boot)  # rows drawn
    sums = weights @ counts
    f1 = np.divide(2 * sums[:, 0], sums[:, 1], out=np.zeros(n_boot), where=sums[:, 1] > 0)
    return percentile(f1, 2.5), percentile(f1, 97.5)


def score_extract(candidate: str, task: TaskSpec, examples: Sequence[Example],
                  preds: Sequence[Prediction], n_boot: int = 1000) -> EvalResult:
    """Record- and field-level figures for one candidate (see the module docstring); the
    figures per field (:func:`per_field_scores`) go to ``EvalResult.per_class``."""
    json_ok = schema_ok = exact = 0
    tp = n_pred = n_gold = missing = invented = wrong = 0
    per_example: list[float] = []
    parts: list[list[int]] = []
    counts: Counter[str] = Counter()
    errors: dict[str, list[dict]] = {}
    golds: list[dict[str, str]] = []
    answers: list[dict[str, str]] = []

    def note(bucket: str, ex: Example, pred: Prediction, detail: str) -> None:
        counts[bucket] += 1
        if len(errors.setdefault(bucket, [])) < EXAMPLES_PER_BUCKET:
            errors[bucket].append({"id": ex.id, "input": ex.input[:300], "expected": ex.target[:300],
                                   "got": pred.output[:300], "detail": detail})

    for ex, pred in zip(examples, preds):
        gold = fields(load_json(ex.target))
        try:
            value = load_json(pred.output)
            json_ok += 1
        except ValueError:
            value = None
            note("invalid format", ex, pred, "not JSON")
        if value is not None:
            problems = schema_errors(task, value)
            schema_ok += not problems
            if problems:
                note("schema violation", ex, pred, problems[0])
        got = fields(value)
        golds.append(gold)
        answers.append(got)
        hits = sum(1 for k, v in got.items() if gold.get(k) == v)
        tp, n_pred, n_gold = tp + hits, n_pred + len(got), n_gold + len(gold)
        for key in gold.keys() - got.keys():
            missing += 1
            note("missing field", ex, pred, key)
        for key in got.keys() - gold.keys():
            invented += 1
            note("invented field", ex, pred, key)
        for key in gold.keys() & got.keys():
            if gold[key] != got[key]:
                wrong += 1
                note("wrong value", ex, pred, f"{key}: expected {gold[key]!r}, got {got[key]!r}")
        exact += got == gold
        denom = len(got) + len(gold)
        per_example.append(1.0 if denom == 0 else 2 * hits / denom)
        parts.append([hits, len(got), len(gold)])
    n = len(examples)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    low, high = field_f1_ci(golds, answers, n_boot=n_boot)
    metrics = {
        "field_f1": f1, "field_precision": precision, "field_recall": recall,
        "record_f1_mean": sum(per_example) / n, "field_f1_ci_low": low, "field_f1_ci_high": high,
        "exact_match": exact / n, "json_valid_rate": json_ok / n, "valid_rate": schema_ok / n,
        "missing_fields": float(missing), "invented_fields": float(invented), "wrong_values": float(wrong),
        "invented_field_rate": invented / n_pred if n_pred else 0.0,
    }
    per_field = per_field_scores(schema_fields(task.schema_), golds, answers)
    return EvalResult(candidate=candidate, metrics=metrics, per_class=per_field, n=n, kind="extract",
                      per_example=per_example, per_example_counts=parts, error_counts=dict(counts.most_common()),
                      errors=errors)


def shown_fields(results: Sequence[EvalResult], most: int | None = None) -> list[str]:
    """The fields worth a row when showing candidates' per-field figures side by side: those the
    gold records have, then those only some answer invented (most invented first); a schema
    field that neither ever has is left out. With ``most``, the ``most`` of them with the most
    support (then invented values) are kept, in the same order."""
    names = list(dict.fromkeys(k for r in results for k in r.per_class))
    support = {k: max(r.per_class.get(k, {}).get("support", 0) for r in results) for k in names}
    invented = {k: max(r.per_class.get(k, {}).get("invented", 0) for r in results) for k in names}
    order = ([k for k in names if support[k]]
             + sorted((k for k in names if not support[k] and invented[k]), key=lambda k: -invented[k]))
    if most is not None and len(order) > most:
        keep = set(sorted(order, key=lambda k: (-support[k], -invented[k]))[:most])
        order = [k for k in order if k in keep]
    return order


TEMPLATE = """\
task:
  kind: extract             # classify | extract | qa | generate
  name: order-fields
  success: "Every field a human would fill in is filled in correctly, and nothing is invented."
  # {fields} stands for the schema's property names below.
  system_prompt: >-
    Extract the order details from the message as JSON with these fields: {fields}.
  # The JSON schema every answer must satisfy.
  schema:
    type: object
    properties:
      order_id: {type: string}
      amount: {type: number}
      currency: {type: string}
    required: [order_id]
    additionalProperties: false
  # How an answer's JSON is written, trained and decoded: spaced ({"a": 1, "b": null}) or
  # compact ({"a":1,"b":null}: fewer tokens an answer).
  json_style: spaced
"""


def _no_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is no JSON number (write the value, or null)", name, 0)


class ExtractTask(TaskDefaults):
    """extract: one JSON record valid against the task's schema, decoded under it."""

    kind = "extract"
    description = "fields out of messy text, as JSON valid against a schema"
    scoring = Scoring(
        "field_f1",
        (Column("field_f1", "field F1 [95% CI]"), Column("exact_match", "exact record"),
         Column("valid_rate", "schema-valid"), Column("free_valid_rate", "schema-valid, unconstrained"),
         Column("missing_fields", "missing fields", share=False),
         Column("invented_fields", "invented fields", share=False)),
        other_metrics=frozenset({"field_precision", "field_recall", "json_valid_rate", "invented_field_rate"}),
        lower_is_better=frozenset({"invented_field_rate"}))
    size_guidance = (200, 1000)
    free_decoding = True
    validation_side = "valid_rate"
    error_buckets = ("invalid format", "schema violation", "missing field", "invented field", "wrong value")
    template = TEMPLATE
    # invented_field_rate: the share of answered fields the gold record does not have (a date the
    # text never gives); a maximum, chosen as the task's success sentence asks, not measured
    thresholds = {"field_f1": 0.8, "valid_rate": 1.0, "invented_field_rate": 0.05}
    # snips_slots (200 training rows, 100 held out): lr 1e-3 reached 23.5% field F1 in one epoch where
    # the method's 2e-4 reached 11.5%, and 41.0% in three (the best validation kept; +17.5 points over
    # one, p < 0.001): docs/training.md, "What taskfit init writes for each task kind".
    train = {"learning_rate": 1e-3, "epochs": 3}

    def check_spec(self, spec: TaskSpec) -> None:
        if not spec.schema_:
            raise ValueError("task.schema: an extract task needs a JSON schema")

    def target_text(self, spec: TaskSpec, value: Any) -> str:
        """The record as its answer grammar writes it (keys in the schema's order, the separators
        of task.json_style): the model learns the answer constrained decoding allows. Text that is not
        JSON is kept as it is, for the answer check to report."""
        from taskfit.decoding import json_answer

        if isinstance(value, dict):
            return json_answer(spec.schema_, value, spec.json_style)
        text = plain_text(value)
        try:
            return json_answer(spec.schema_, json.loads(text), spec.json_style)
        except ValueError:
            return text

    def answer_values(self, spec: TaskSpec, target: str) -> list[AnswerValue]:
        """Each string of the record, and each number as the answer prints it (which no
        placeholder can replace), with its field's name."""
        return [AnswerValue(name, v) if isinstance(v, str) else AnswerValue(name, json.dumps(v), editable=False)
                for name, v in answer_leaves(json.loads(target))]

    def with_answer_values(self, spec: TaskSpec, target: str, texts: Sequence[str]) -> str:
        return self.target_text(spec, _replace_leaves(json.loads(target), iter(texts)))

    def answer_fields(self, spec: TaskSpec) -> list[str] | None:
        return declared_fields(spec.schema_) or None

    def answer_check(self, spec: TaskSpec) -> Callable[[Example], None]:
        import jsonschema

        validator = jsonschema.Draft202012Validator(spec.schema_ or {})  # built once per scan

        def check(ex: Example) -> None:
            try:  # Python reads NaN and Infinity, which JSON has not (a model could not be held to them)
                value = json.loads(ex.target, parse_constant=_no_constant)
            except json.JSONDecodeError as exc:
                # json's whole message, where in the answer it fails ("...: line 1 column 12 (char 11)"),
                # but for a NaN or Infinity (_no_constant), whose message names it
                said = exc if exc.doc == ex.target else exc.msg
                raise ValueError(f"answer: not valid JSON ({said}); extract answers must be JSON") from None
            errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
            if errors:
                first = errors[0]
                where = ".".join(map(str, first.path)) or "(root)"
                raise ValueError(f"answer: does not match task.schema at {where}: {first.message}")

        return check

    def answer_parts(self, spec: TaskSpec) -> Callable[[Example], AnswerParts]:
        """Each field, and whether its value is written in the row's text: one shop's receipts
        share a layout, and a date or total written in each is what makes them distinct."""

        def parts(ex: Example) -> AnswerParts:
            text = spelt(ex.input)
            return AnswerParts(fixed=tuple((name, _norm(value), value_written(value, text))
                                           for name, value in leaves(json.loads(ex.target))))

        return parts

    def parse(self, spec: TaskSpec, text: str) -> tuple[str, bool]:
        return parse_record(spec, text)

    def score(self, spec: TaskSpec, evaluation: Any, candidate: str, examples: Sequence[Example],
              predictions: Sequence[Prediction], n_boot: int = 1000, style: Any = None) -> EvalResult:
        return score_extract(candidate, spec, examples, predictions, n_boot=n_boot)

    def grammar(self, spec: TaskSpec) -> str | None:
        from taskfit.decoding import json_schema_grammar

        return json_schema_grammar(spec.schema_ or {}, spec.json_style)

    def promptfoo_asserts(self, spec: TaskSpec, example: Example) -> list[dict[str, Any]]:
        """The answer is JSON valid against the schema (``$schema`` and ``$id`` left out: promptfoo's
        validator compiles the schema once per row, for draft-07), and each field, the schema's and
        the gold record's, is right as :func:`per_field_scores` judges it (one metric per field)."""
        gold = dict(leaves(json.loads(example.target)))
        schema = {k: v for k, v in (spec.schema_ or {}).items() if k not in ("$schema", "$id")}
        return [{"type": "is-json", "value": schema, "transform": FENCE_TRANSFORM, "metric": "schema-valid"},
                *({"type": "javascript", "value": FIELD_JS, "transform": FENCE_TRANSFORM, "metric": f"field {name}",
                   "config": {"field": name.split("."), "expected": gold.get(name)}}
                  for name in dict.fromkeys([*schema_fields(spec.schema_), *gold]))]

    def answer_schema(self, spec: TaskSpec) -> dict[str, Any]:
        """The record: task.schema itself."""
        return dict(spec.schema_ or {"type": "object"})

    def instruction(self, spec: TaskSpec) -> str:
        return "Answer with one JSON object and nothing else, valid against this JSON schema: " + \
            json.dumps(spec.schema_)

    def answer_facets(self, spec: TaskSpec, text: str) -> dict[str, str]:
        """The schema-valid rate, and each declared field's empty rate (null, "" and absent count
        as empty, as in scoring)."""
        _, valid = parse_record(spec, text)
        try:
            filled = fields(load_json(text))
        except ValueError:
            filled = {}
        facets = {"schema validity": "valid" if valid else "invalid"}
        facets.update({f"field {name}": "filled" if name in filled else "empty"
                       for name in schema_fields(spec.schema_)})
        return facets
