"""``taskfit run``: the stage commands composed over one workspace.

data check → every applicable baseline → train → evaluate the trained run → compare, for every
task kind; for ``train.method: dpo`` (preference pairs) → train → held-out preference accuracy of
the model before and after → compare. Every stage writes where the stage commands write (the
evaluation store and ``runs/``), so ``taskfit compare`` afterwards prints the same scorecard
without predicting anything, and running again costs nothing where nothing changed: cached
predictions are re-scored, a finished run trained from the same config and data is reused, and an
interrupted one is continued from its last checkpoint.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskfit.errors import ConfigError
from taskfit.evaluation.compare import FINETUNED
from taskfit.records import EvalResult
from taskfit.workflows.evaluate import (Comparison, baseline_project, candidate_cache_key, check_forgetting,
                                        compare_project, eval_project, save_result, trained_candidate, Candidate)
from taskfit.workflows.train import TrainSummary, train_or_continue
from taskfit.workflows.workspace import Workspace

BASE_MODEL = "base-model"  # dpo: the model before preference training (the reference)


@dataclass
class RunSummary:
    run_dir: Path
    results: list[EvalResult]
    comparison: Comparison
    training: TrainSummary
    train_rows: int
    eval_rows: int
    data_card: Any = None  # the data check's card (taskfit.data.card.DataCard)

    @property
    def scorecard(self) -> Any:
        return self.comparison.scorecard

    @property
    def verdict(self) -> str:
        return self.comparison.scorecard.verdict

    @property
    def report_html(self) -> Path:
        return self.comparison.report_html


def run_project(project: Path, reporter: Any = None, threads: int | None = None,
                allow_secrets: bool = False, resume: bool = False) -> RunSummary:
    """Run the whole loop for the project at ``project`` (a directory or its taskfit.yaml).

    ``resume`` insists on continuing an interrupted training run (an error when there is none);
    without it an interrupted run is continued all the same when it matches the project."""
    ws = Workspace.open(project, reporter, threads, allow_secrets)
    rows = ws.eval_rows  # no held-out rows: stop before anything is trained
    if resume and not any(m.get("status") != "finished" and ws.matches(m) for _, m in ws.runs()):
        raise ConfigError(f"{ws.project_dir / 'runs'}: no interrupted run of this config and data to resume",
                          hint="run `taskfit run` without --resume to start one")
    if ws.preference:
        trained = train_or_continue(ws)
        results = preference_results(ws, trained.run_dir)
    else:
        results = baseline_project(ws)
        trained = train_or_continue(ws)
        results.append(eval_project(ws, trained.run_dir))
    comparison = compare_project(ws)
    _card_gains_scorecard(trained, comparison)
    return RunSummary(run_dir=trained.run_dir, results=results, comparison=comparison, training=trained,
                      train_rows=len(ws.train), eval_rows=len(rows), data_card=ws.prepared.card)


def preference_results(ws: Workspace, run_dir: Path) -> list[EvalResult]:
    """dpo: the held-out preference accuracy (mean log-probability per answer token) of the model
    before and after training, pair by pair from the run's ``held_out_pairs.csv``, saved as two
    candidates so that ``compare`` tests them pairwise (McNemar) like any other; and the forgetting
    check of the model after."""
    path = run_dir / "held_out_pairs.csv"
    if not path.exists():
        raise ConfigError(f"{run_dir}: no held_out_pairs.csv (the run scored no held-out pairs)",
                          hint="set data.eval_fraction or data.eval so that pairs are held out")
    with path.open(encoding="utf-8", newline="") as f:
        pairs = list(csv.DictReader(f))
    out = []
    for name, when in ((BASE_MODEL, "before"), (FINETUNED, "after")):
        per_token = [float(float(p[f"chosen_logp_{when}"]) / int(p["chosen_tokens"])
                           > float(p[f"rejected_logp_{when}"]) / int(p["rejected_tokens"])) for p in pairs]
        summed = [float(p[f"chosen_logp_{when}"]) > float(p[f"rejected_logp_{when}"]) for p in pairs]
        n = len(pairs)
        result = EvalResult(candidate=name, n=n, kind="preference", per_example=per_token,
                            metrics={"preference_accuracy": sum(per_token) / n,
                                     "summed_preference_accuracy": sum(summed) / n})
        cand = Candidate(name, "fine-tuned" if when == "after" else "baseline",
                         {"pairs": str(path.resolve()), "digest": _digest(path)}, lambda: None,
                         forgetting=trained_candidate(ws, run_dir).forgetting if when == "after" else None)
        save_result(ws.result_path(name), result, candidate_cache_key(ws, cand), run_dir.resolve(), cand.role)
        check_forgetting(ws, cand)
        out.append(result)
    return out


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _card_gains_scorecard(trained: TrainSummary, comparison: Comparison) -> None:
    """The model card gains the scorecard it was judged by (once per scorecard)."""
    card_path = trained.artifact / "README.md"
    if not card_path.exists():
        return
    text = card_path.read_text(encoding="utf-8").split("\n## Held-out scorecard\n")[0].rstrip("\n")
    table = "\n".join(comparison.scorecard.markdown())
    card_path.write_text(f"{text}\n\n## Held-out scorecard\n\n{table}\n\n{comparison.scorecard.verdict}\n",
                         encoding="utf-8")
