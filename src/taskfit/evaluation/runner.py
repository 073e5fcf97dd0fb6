"""Run a Predictor over held-out examples, writing each prediction to disk as it is made."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

from taskfit.baselines.protocol import Predictor
from taskfit.records import Example, Prediction


def run_predictor(predictor: Predictor, examples: Sequence[Example], out: Path,
                  on_item: Callable[[], None] | None = None) -> list[Prediction]:
    """Predict every example; append one JSON line per prediction to ``out`` (with the gold
    answer beside it, for error analysis)."""
    predictions: list[Prediction] = []
    gold = {ex.id: ex.target for ex in examples}
    with out.open("w", encoding="utf-8") as f:
        for pred in predictor.predict(examples):
            predictions.append(pred)
            f.write(json.dumps({**asdict(pred), "target": gold[pred.example_id]}, ensure_ascii=False) + "\n")
            f.flush()
            if on_item:
                on_item()
    return predictions
