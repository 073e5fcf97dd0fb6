"""extract: a JSON record that must validate against the task's JSON schema.

Metrics: JSON validity, schema compliance, field-level precision/recall/F1 (micro, over
``field = value`` pairs), exact-record match, and two kinds of miss counted apart: *missing*
fields (in the gold record, absent from the answer) and *invented* fields (in the answer, absent
from the gold record: what the model made up).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any, Sequence

from taskfit.config import TaskSpec
from taskfit.records import EvalResult, Example, Prediction
from taskfit.stats import bootstrap_mean_ci

EXAMPLES_PER_BUCKET = 3
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


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


def fields(record: Any, prefix: str = "") -> dict[str, str]:
    """A record flattened to ``dotted.key -> normalised value``; null and empty values count as
    absent (a model that writes ``"city": null`` did not claim a city)."""
    out: dict[str, str] = {}
    if not isinstance(record, dict):
        return out
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(fields(value, name + "."))
        elif value not in (None, "", [], {}):
            out[name] = _norm(value)
    return out


def score_extract(candidate: str, task: TaskSpec, examples: Sequence[Example],
                  preds: Sequence[Prediction], n_boot: int = 1000) -> EvalResult:
    json_ok = schema_ok = exact = 0
    tp = n_pred = n_gold = missing = invented = wrong = 0
    per_example: list[float] = []
    counts: Counter[str] = Counter()
    errors: dict[str, list[dict]] = {}

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
    n = len(examples)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    low, high = bootstrap_mean_ci(per_example, n_boot=n_boot)
    metrics = {
        "field_f1": f1, "field_precision": precision, "field_recall": recall,
        "record_f1_mean": sum(per_example) / n, "field_f1_ci_low": low, "field_f1_ci_high": high,
        "exact_match": exact / n, "json_valid_rate": json_ok / n, "valid_rate": schema_ok / n,
        "missing_fields": float(missing), "invented_fields": float(invented), "wrong_values": float(wrong),
        "invented_field_rate": invented / n_pred if n_pred else 0.0,
    }
    return EvalResult(candidate=candidate, metrics=metrics, n=n, kind="extract",
                      per_example=per_example, error_counts=dict(counts.most_common()), errors=errors)
