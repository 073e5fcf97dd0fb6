"""Run a Predictor over held-out examples with every prediction cached on disk as it is made.

The cache is one JSONL file per candidate. Its first line holds the candidate's key (a digest of
everything that decides its answers: model, adapter weights, prompt, decoding settings); each
further line is one prediction. An interrupted evaluation resumes after the last prediction
written, a repeated one costs nothing, and a changed candidate (new key) starts afresh.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from taskfit.baselines.protocol import Predictor
from taskfit.records import Example, Prediction


def candidate_key(**parts: Any) -> str:
    """A digest of what decides a candidate's answers."""
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def example_digest(ex: Example) -> str:
    """What of a row decides a prediction: a changed row is predicted again."""
    return hashlib.sha256(json.dumps([ex.input, ex.context, ex.system, ex.target]).encode()).hexdigest()[:12]


def read_cache(path: Path, key: str) -> dict[str, Prediction]:
    """Predictions already made by the candidate with ``key``, by example id and digest. A line
    cut short by a kill (the last one) is ignored and predicted again."""
    if not path.exists():
        return {}
    cached: dict[str, Prediction] = {}
    with path.open(encoding="utf-8") as f:
        try:
            head = json.loads(f.readline() or "{}")
        except json.JSONDecodeError:
            return {}
        if head.get("candidate_key") != key:
            return {}
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            row.pop("target", None)
            digest = row.pop("example_digest", None)
            cached[f"{row['example_id']}\0{digest}"] = Prediction(**row)
    return cached


def run_cached(predictor: Predictor, examples: Sequence[Example], path: Path, key: str,
               on_item: Callable[[], None] | None = None) -> tuple[list[Prediction], int]:
    """Predict every example not already in ``path``; return all predictions in the examples'
    order and how many came from the cache."""
    cached = read_cache(path, key)
    digests = {ex.id: example_digest(ex) for ex in examples}
    have = {ex.id: cached[f"{ex.id}\0{digests[ex.id]}"] for ex in examples
            if f"{ex.id}\0{digests[ex.id]}" in cached}
    todo = [ex for ex in examples if ex.id not in have]
    # Rewrite the file with the kept lines only (drops a torn last line and stale rows), then append.
    write_cache(path, key, predictor.name, [ex for ex in examples if ex.id in have],
                [have[ex.id] for ex in examples if ex.id in have])
    for _ in have:
        if on_item:
            on_item()
    gold = {ex.id: ex for ex in todo}
    # A local model reads its batch's prompts as one padded pass: it answers them by length.
    order = getattr(predictor, "order", None)
    with path.open("a", encoding="utf-8") as f:
        for pred in predictor.predict(order(todo) if order else todo):
            have[pred.example_id] = pred
            f.write(_line(pred, gold[pred.example_id], digests[pred.example_id]))
            f.flush()
            if on_item:
                on_item()
    return [have[ex.id] for ex in examples], len(examples) - len(todo)


def write_cache(path: Path, key: str, name: str, examples: Sequence[Example], preds: Sequence[Prediction]) -> None:
    """Write ``path`` afresh (atomically) as the cache of the candidate ``key`` holding ``preds``,
    one per example of ``examples``, in their order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(json.dumps({"candidate_key": key, "candidate": name}) + "\n")
        for ex, pred in zip(examples, preds):
            f.write(_line(pred, ex, example_digest(ex)))
    tmp.replace(path)


def _line(pred: Prediction, ex: Example, digest: str) -> str:
    return json.dumps({**asdict(pred), "example_digest": digest, "target": ex.target},
                      ensure_ascii=False) + "\n"


def read_predictions(path: Path) -> list[Prediction]:
    """Every prediction in a cache file, whatever its key (for reports)."""
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        key = json.loads(f.readline() or "{}").get("candidate_key", "")
    return list(read_cache(path, key).values())


def run_predictor(predictor: Predictor, examples: Sequence[Example], out: Path,
                  on_item: Callable[[], None] | None = None) -> list[Prediction]:
    """Predict every example afresh (no cache), writing each prediction to ``out``."""
    if out.exists():
        out.unlink()
    return run_cached(predictor, examples, out, key="uncached", on_item=on_item)[0]
