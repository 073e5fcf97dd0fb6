"""``taskfit quickstart``: a ticket-triage project from the sample generator, run end to end.

The default size is budgeted for a 2-core CPU (see the README for the measured minutes): the
quickstart trains LoRA and a classification head, which reads a ticket alone (~58 tokens), so 480
training rows × 2 epochs are ~50,000 tokens (about 3.6 minutes in float32 on 2 cores, 2.7 with
bfloat16 products on a CPU that has them: README); the 150 held-out rows cost about 11 s
(prompt-only) and 45 s (few-shot) in batched passes under bfloat16 autocast, 30 s and 101 s in
float32, and the head about 8 s (17 s in float32).
``full=True`` trains on every training row for 2 epochs and scores the whole held-out split: the
run for a GPU or a patient CPU.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from taskfit.data.sample import QUEUES, write_tickets
from taskfit.errors import ConfigError
from taskfit.project import template
from taskfit.tasks.classify import HEAD

# Quickstart sizes, from the speeds above; a higher rate than the 2e-4 default suits this small
# a budget (one pass over 480 rows), measured in the README.
QUICK = {"max_train_examples": 480, "max_eval_examples": 150, "epochs": 1, "learning_rate": 1e-3}
FULL = {"max_train_examples": None, "max_eval_examples": None, "epochs": 2, "learning_rate": 2e-4}
# `taskfit quickstart` trains what `taskfit init` writes for a classify task: a classification head
# (HEAD, with the measurements behind it in tasks/classify.py).


def make_quickstart_project(directory: Path, seed: int = 0, full: bool = False,
                            n_tickets: int = 2400, force: bool = False, head: bool = False) -> Path:
    """Write the sample tickets and a ``taskfit.yaml`` into ``directory``; return the yaml path.
    ``head``: the fine-tune is a classification head (:data:`HEAD`, what `taskfit quickstart`
    trains) rather than the generative fine-tune (what the tests' sample projects train)."""
    path = directory / "taskfit.yaml"
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists",
                          hint="choose an empty directory, or pass --force to overwrite it")
    directory.mkdir(parents=True, exist_ok=True)
    write_tickets(directory / "data" / "tickets.jsonl", n=n_tickets, seed=seed)
    size = FULL if full else QUICK
    recipe = HEAD if head else {"classify_head": False, "learning_rate": size["learning_rate"],
                                "epochs": size["epochs"]}
    # Keep the template's comments: set only the values the quickstart chooses.
    text = template("classify", {
        "data.train": "data/tickets.jsonl", "data.seed": seed,
        "data.max_train_examples": size["max_train_examples"], "data.max_eval_examples": size["max_eval_examples"],
        **{f"train.{key}": value for key, value in recipe.items()}, "train.seed": seed})
    if yaml.safe_load(text)["task"]["labels"] != list(QUEUES):
        raise AssertionError("the classify template's labels and the sample queues drifted apart")
    path.write_text(text, encoding="utf-8")
    return path
