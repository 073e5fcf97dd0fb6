"""``taskfit retrain``: the project's training rows plus the reviewed ones, a new version, the
comparison with production on the fixed and the recent held-out sets, and the promotion the
config asks for.

1. **Rows.** The project's prepared training rows (its fixed held-out split untouched) followed
   by the training rows of the latest data snapshot (``taskfit data from-log``); the run's
   manifest records the snapshot's digest (``data.snapshot``, ``lineage``) and the combined rows'
   fingerprint, so the registry records it too when the run is promoted.
2. **Train.** By default what production is: a production version that is a classical model
   (``tfidf-logreg``) is refitted by its recipe on the combined rows (saved under
   ``retrain/<snapshot>/<recipe>/``); otherwise (or with ``kind="adapter"``) a fine-tune by the
   project's ``train:`` settings from scratch, or, with ``continue_from_production``, production's
   LoRA adapter trained further on the combined rows. A finished run trained from the same config,
   rows and starting point is reused, an interrupted one continued, as ``taskfit run`` does.
3. **Compare.** The new version and production on the fixed held-out split and on the snapshot's
   recent held-out rows, each evaluated once per set (the registry's cache, as ``promote``), one
   scorecard per set, and the promotion gate's decision (:class:`~taskfit.lifecycle.promote.Gate`).
4. **Promote** to ``retrain.promote`` (``candidate``: no gate; ``production``: only through the
   gate; ``none``: registered with its figures, no alias moved).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from taskfit.errors import ConfigError, DataError
from taskfit.lifecycle.from_log import Snapshot, latest_snapshot
from taskfit.lifecycle.promote import (Gate, Promotion, Source, evaluate_version, figures, gate_versions,
                                       held_out_sets, promote_project, registry_path, stage, who)
from taskfit.lifecycle.registry import Registry, Version, check_name

KINDS = ("adapter", "classical")
TARGETS = ("candidate", "production", "none")


@dataclass
class Retrained:
    snapshot: Snapshot
    source: Source  # the run directory, or the refitted classical model's folder
    how: str  # trained | resumed | reused (a run) | refitted (classical)
    rows: dict[str, int]  # project: the project's training rows; reviewed: the snapshot's
    version: Version  # the new version, registered
    production: Version | None  # production when retrain started (None: no production yet)
    alias: str  # candidate | production | none
    scorecards: list[tuple[str, Any]] = field(default_factory=list)  # (held-out set, Scorecard)
    gate: Gate | None = None  # None: nothing in production to compare with
    promotion: Promotion | None = None  # None: alias none, or the gate refused

    @property
    def refused(self) -> bool:
        return self.alias == "production" and self.promotion is None


def retrain_project(project: Path, *, promote: str | None = None, kind: str | None = None,
                    continue_from_production: bool = False, name: str | None = None, by: str | None = None,
                    reporter: Any = None, threads: int | None = None, allow_secrets: bool = False) -> Retrained:
    """Retrain on the project's rows plus the latest snapshot's reviewed rows, compare with
    production, and promote (module docstring). A refusal by the gate is not raised: the result
    says so (:attr:`Retrained.refused`) with the figures, and the version stays registered."""
    from taskfit.workflows.workspace import Workspace

    ws = Workspace.open(project, reporter, threads, allow_secrets)
    if ws.preference:
        raise ConfigError("retrain adds reviewed examples (input and the right answer); this project trains on "
                          "preference pairs (train.method: dpo)", hint="retrain a lora, qlora or full project")
    snapshot = latest_snapshot(ws.project_dir)
    if snapshot is None:
        raise DataError(f"{ws.project_dir / 'data' / 'snapshots'}: no data snapshot, so no reviewed rows to add",
                        hint="review served requests (`taskfit review queue`, `taskfit review import`), then "
                             "`taskfit data from-log`")
    alias = promote or ws.config.retrain.promote
    if alias not in TARGETS:
        raise ConfigError(f"--promote {alias}: choose {', '.join(TARGETS)}")
    by = who(by)
    path = registry_path(ws.project_dir)
    production = None
    name = name or ws.config.retrain.name
    if path.is_file():
        with Registry(path) as registry:
            name = name or registry.project_name(ws.config.task.name)
            production = registry.resolve(check_name(name), "production")
    name = check_name(name or ws.config.task.name)
    kind = kind or (production.kind if production is not None else "adapter")
    if kind not in KINDS:
        raise ConfigError(f"--kind {kind}: choose {' or '.join(KINDS)}")
    if continue_from_production and (production is None or production.kind != "adapter" or kind != "adapter"):
        raise ConfigError(f"--continue trains production's adapter further, and {name}@production is "
                          + ("not set" if production is None else f"a {production.kind} version"),
                          hint="retrain from scratch (leave out --continue)")

    combined = ws.with_reviewed(snapshot, continued=_start(production) if continue_from_production else None)
    rows = {"project": len(ws.train), "reviewed": len(combined.train) - len(ws.train)}
    ws.reporter.status(f"retraining on {rows['project']} project rows + {rows['reviewed']} reviewed rows "
                       f"(snapshot {snapshot.short})")
    if kind == "classical":
        source, how = _refit(combined, production, snapshot), "refitted"
    else:
        from taskfit.workflows.train import train_or_continue

        summary = train_or_continue(combined)
        source, how = Source("adapter", summary.run_dir), summary.how
    ws.forget_model()

    with Registry(path) as registry:
        staged = stage(registry, name, source, by)
        evaluated: dict[tuple[str, str], Any] = {}
        scorecards = []
        for label, space in held_out_sets(ws):
            for v in ([production] if production is not None else []) + [staged]:
                evaluated[label, v.id] = evaluate_version(space, v)
            scorecards.append((label, space))
        version = registry.add(registry.version(name, staged.id)
                               or replace(staged, figures=figures(evaluated["fixed", staged.id][0], ws)))
        gate = gate_versions(ws, version, production, evaluated) if production is not None else None
    cards = [(label, _scorecard(space, version, production, evaluated, gate, label)) for label, space in scorecards]
    result = Retrained(snapshot, source, how, rows, version, production, alias, cards, gate)
    if alias == "none" or (alias == "production" and gate is not None and not gate.passed):
        return result
    result.promotion = promote_project(project, str(source.path), name, alias, by=by, reporter=reporter,
                                       reason=f"retrained on snapshot {snapshot.short}")
    return result


def _start(production: Version | None) -> tuple[str, Path]:
    from taskfit.training.artifacts import find_adapter

    assert production is not None
    return production.id, find_adapter(production.path)


def _refit(ws: Any, production: Version | None, snapshot: Snapshot) -> Source:
    """Production's classical recipe (tf-idf + logistic regression when there is no classical
    production) fitted on the workspace's combined rows, in ``retrain/<snapshot>/<recipe>/``."""
    from taskfit.baselines.classical import RECIPES
    from taskfit.workflows.evaluate import CLASSICAL, classical_candidate

    recipe = (production.data.get("recipe") if production is not None and production.kind == "classical"
              else None) or CLASSICAL
    if recipe not in RECIPES:
        raise ConfigError(f"{production.name if production else ''} production's recipe {recipe!r} is not one "
                          f"taskfit fits ({', '.join(RECIPES)})")
    folder = ws.project_dir / "retrain" / snapshot.short / recipe
    classical_candidate(ws, recipe, folder=folder, card={"snapshot": snapshot.digest}).build()
    return Source("classical", folder)


def _scorecard(ws: Any, version: Version, production: Version | None, evaluated: dict[tuple[str, str], Any],
               gate: Gate | None, label: str) -> Any:
    """One held-out set's scorecard: production, then the retrained version, with the paired test
    of the retrained one against production and the set's figures as its verdict."""
    from taskfit.evaluation.compare import Scorecard
    from taskfit.tasks import main_metric

    kind = ws.config.task.kind
    new = replace(evaluated[label, version.id][0], candidate=f"retrained {version.short}")
    results, tests, verdict = [new], [], f"{label} held-out set: no production version to compare with"
    if production is not None and gate is not None:
        old = replace(evaluated[label, production.id][0], candidate=f"production {production.short}")
        results = [old, new]
        held = next(s for s in gate.sets if s.held_out == label)
        tests = [replace(held.test, candidate=new.candidate, against=old.candidate)]
        worse = held.reasons()
        verdict = held.summary() + (": " + "; ".join(worse) if worse else
                                    ": better" if held.main_better else ": within chance")
    return Scorecard(kind=kind, main=main_metric(kind), results=results, thresholds=dict(ws.config.eval.thresholds),
                     tests=tests, verdict=verdict, versus="production")
