"""``taskfit promote`` and ``taskfit rollback``: register a version and move an alias, gated.

A promotion to ``production`` is gated: the new version and the current production version are
evaluated on the project's held-out rows as they are now and, when ``taskfit data from-log`` has
written a snapshot with recent held-out rows (reviewed production traffic), on those too (the same
cached evaluation as ``taskfit eval``: each version once per held-out set, under
``evals/<set>/predictions/registry/<id>``, kept out of ``taskfit compare``'s scorecard), and
compared pairwise as ``compare`` compares a fine-tune with a baseline. The new version must be
significantly better (p < 0.05) on the task's main metric on at least one of the sets, and
significantly worse on none: not on either set's main metric, nor on any one class (classify:
right/wrong on the rows of that label) or field (extract: the field's value right/wrong on every
row), by McNemar's exact test, the per-class and per-field p-values Holm-adjusted within each set,
so eight classes do not give eight chances of a false refusal. ``--force`` with a reason overrides
a refusal, and the history records both.

A rollback needs no evaluation: production goes back to the version it held before, in the time
it takes to write one row.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from taskfit.errors import ConfigError, PromotionRefused
from taskfit.evaluation.compare import ALPHA, FINETUNED, PairedTest, paired_test
from taskfit.lifecycle.registry import ALIASES, FILE, Move, Registry, Version, check_name
from taskfit.records import EvalResult, Example, Prediction


def who(by: str | None = None) -> str:
    """Who moves an alias: ``--by``, else the login name."""
    if by:
        return by
    try:
        return getpass.getuser()  # $LOGNAME, $USER, ... then the password database
    except (OSError, KeyError):  # no login name in a bare container
        return "unknown"


def registry_path(project_dir: Path) -> Path:
    return project_dir / FILE


# ---- what is registered ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """What ``promote`` was given: a training run or a fitted classical model."""

    kind: str  # adapter | classical
    path: Path


def resolve_source(project_dir: Path, run: str | None) -> Source:
    """RUN as the command line gives it: None (the latest finished run), a fitted classical
    candidate's name (``tfidf-logreg``), a classical model folder, or a run directory."""
    from taskfit.baselines.classical import read_card
    from taskfit.paths import classical_dir
    from taskfit.serve.classical import SERVABLE
    from taskfit.tasks.base import ENDPOINT, FEW_SHOT, PROMPT_ONLY, RAG
    from taskfit.workflows.workspace import latest_run_dir, resolve_run

    if run is None:
        return Source("adapter", latest_run_dir(project_dir))
    if run in SERVABLE:
        folder = classical_dir(project_dir, run)
        if read_card(folder) is None:
            raise ConfigError(f"{folder}: {run} has not been fitted in this project",
                              hint=f"`taskfit baseline {project_dir} --only {run}` fits it")
        return Source("classical", folder)
    if run in (PROMPT_ONLY, FEW_SHOT, RAG, ENDPOINT) and not (project_dir / run).exists():
        raise ConfigError(f"{run}: a baseline that is the base model (or the endpoint) with a prompt; it has no "
                          "weights of its own to register as a version",
                          hint=f"promote a finished run (leave RUN out for the latest) or a fitted classical "
                               f"candidate ({', '.join(SERVABLE)}); `taskfit serve --base MODEL` serves the base "
                               "model, and the client sends the task's prompt")
    path = Path(run)
    folder = path if path.is_absolute() or path.exists() else project_dir / path
    if read_card(folder) is not None:
        return Source("classical", folder)
    root = resolve_run(project_dir, path).root
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    if manifest.get("status") != "finished":
        raise ConfigError(f"{root}: this run has not finished (status {manifest.get('status')!r})",
                          hint="finish it with `taskfit train --resume`, or name a finished run")
    return Source("adapter", root)


def _copy(source: Path, dest: Path) -> None:
    """``source`` (a file or folder) into ``dest``: hard links where the file system allows (a
    version's files are never written again), copies otherwise."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if source.is_dir():
        shutil.copytree(source, dest, copy_function=link)
    else:
        link(str(source), str(dest))


def stage(registry: Registry, name: str, source: Source, by: str) -> Version:
    """The version ``source`` makes under ``name``, its files in the registry's store (copied
    once; a version already there is not copied again). Not registered yet: its figures come
    from the evaluation."""
    from taskfit.workflows.evaluate import folder_digest, weights_digest

    if source.kind == "classical":
        from taskfit.baselines.classical import read_card

        card = read_card(source.path) or {}
        version_id = folder_digest(source.path)
        files = [source.path / f for f in ("model.joblib", "model.json")]
        task = card.get("task", {})
        meta = dict(task_kind=task.get("kind"), base_model=None, labels=task.get("labels"),
                    data={"train_fingerprint": card.get("train_fingerprint"), "recipe": card.get("name"),
                          "snapshot": card.get("snapshot")})
    else:
        from taskfit.paths import RunDir
        from taskfit.training.artifacts import find_adapter

        run = RunDir(source.path)
        weights = run.full_model if (run.full_model / "config.json").exists() else find_adapter(run.root)
        version_id = weights_digest(weights)
        files = [weights, run.config, run.manifest]
        manifest = json.loads(run.manifest.read_text(encoding="utf-8"))
        config = manifest.get("config", {})
        data = manifest.get("data", {})
        meta = dict(task_kind=manifest.get("kind"), base_model=config.get("model", {}).get("name"),
                    labels=config.get("task", {}).get("labels"),
                    data={k: data.get(k) for k in ("train_fingerprint", "eval_fingerprint", "train_file",
                                                    "train_rows", "eval_rows", "snapshot")})
        if manifest.get("lineage", {}).get("continued_from"):
            meta["data"]["continued_from"] = manifest["lineage"]["continued_from"]
    dest = registry.version_dir(name, version_id)
    if not dest.exists():
        tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in files:
            _copy(f, tmp / f.name)
        tmp.rename(dest)
    labels = meta.pop("labels")
    return Version(name=name, id=version_id, kind=source.kind, path=dest, source=str(source.path.resolve()),
                   labels=tuple(labels) if labels else None, created=time.time(), created_by=by, **meta)


# ---- evaluating a version -------------------------------------------------------------------------
def evaluate_version(ws: Any, version: Version) -> tuple[EvalResult, list[Prediction]]:
    """``version`` evaluated on the workspace's held-out rows (cached per version id), with its
    predictions in the rows' order."""
    from taskfit.evaluation.runner import read_predictions
    from taskfit.workflows.evaluate import Candidate, evaluate, style_model, trained_candidate

    if version.task_kind and version.task_kind != ws.config.task.kind:
        raise ConfigError(f"{version.name} {version.short} answers a {version.task_kind} task; this project's "
                          f"task is {ws.config.task.kind}")
    name = f"registry/{version.id}"  # its own cache, apart from the scorecard's candidates
    if version.kind == "classical":
        def build() -> Any:
            from taskfit.baselines.classical import ClassicalPredictor, load_classical

            return ClassicalPredictor(load_classical(version.path), name)

        cand = Candidate(name, "registered", {"weights": version.id}, build, run_dir=version.path)
    else:
        style_model(ws)  # generate: the plain base model's replies, before an adapter is applied
        cand = trained_candidate(ws, version.path, name)
    # the run's own scorecard answers, where `taskfit run` scored these weights already
    scored = sorted(p.stem for p in (ws.evals / "results").glob(f"{FINETUNED}*.json"))
    result = evaluate(ws, replace(cand, same_as=tuple(scored)))
    preds = {p.example_id: p for p in read_predictions(ws.predictions(name))}
    return result, [preds[ex.id] for ex in ws.eval_rows]


def figures(result: EvalResult, ws: Any) -> dict[str, Any]:
    """What a version is registered (and a gate decided) with: the held-out metrics."""
    from taskfit.tasks import main_metric

    return {"main": main_metric(result.kind), "n": result.n,
            "eval_fingerprint": ws.prepared.card.split.get("eval_fingerprint"),
            "metrics": {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}}


# ---- the gate ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupTest:
    """One class or field: the new version's and production's share right on it, McNemar's p and
    its Holm-adjusted value."""

    group: str
    rows: int
    new: float
    production: float
    p_value: float
    p_adjusted: float

    @property
    def worse(self) -> bool:
        return self.p_adjusted < ALPHA and self.new < self.production


@dataclass(frozen=True)
class HeldOutTest:
    """The new version against production on one held-out set (``fixed``: the project's held-out
    split; ``recent``: the latest data snapshot's recent held-out rows of reviewed traffic)."""

    held_out: str
    kind: str
    main: str
    new: float
    production: float
    test: PairedTest
    n: int
    groups: list[GroupTest] = field(default_factory=list)

    @property
    def main_worse(self) -> bool:
        return self.test.significant and self.test.difference < 0

    @property
    def main_better(self) -> bool:
        return self.test.significant and self.test.difference > 0

    @property
    def worse_groups(self) -> list[GroupTest]:
        return [g for g in self.groups if g.worse]

    def summary(self) -> str:
        return (f"{self.held_out} held-out set: {self.main} {100 * self.new:.1f}% against production's "
                f"{100 * self.production:.1f}% ({100 * self.test.difference:+.1f} pts, {self.test.test}, "
                f"{self.test.p_text}, {self.n} rows)")

    def reasons(self) -> list[str]:
        """Why this set refuses the new version: each significant loss, in words."""
        out = []
        if self.main_worse:
            out.append(f"worse on {self.main}: {self.summary()}")
        unit = "class" if self.kind == "classify" else "field"
        for g in self.worse_groups:
            out.append(f"worse on {unit} {g.group} of the {self.held_out} held-out set: {100 * g.new:.1f}% right "
                       f"against {100 * g.production:.1f}% on {g.rows} rows (McNemar p={g.p_value:.3g}, "
                       f"Holm-adjusted {g.p_adjusted:.3g})")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"held_out": self.held_out, "main": self.main, "new": self.new, "production": self.production,
                "n": self.n, "test": self.test.test, "difference": self.test.difference,
                "p_value": self.test.p_value, "better": self.main_better, "worse": self.main_worse,
                "groups": [asdict(g) for g in self.groups]}


@dataclass(frozen=True)
class Gate:
    """The promotion decision over the held-out sets (the fixed one first, then the recent one
    when there is one): passed when the new version is significantly better than production on at
    least one set's main metric, and significantly worse on none's, nor on any class or field of
    either."""

    sets: tuple[HeldOutTest, ...]

    @property
    def better(self) -> list[HeldOutTest]:
        return [s for s in self.sets if s.main_better]

    @property
    def passed(self) -> bool:
        return bool(self.better) and not any(s.reasons() for s in self.sets)

    def summary(self) -> str:
        return "; ".join(s.summary() for s in self.sets)

    def reasons(self) -> list[str]:
        out = [r for s in self.sets for r in s.reasons()]
        if not self.better:
            which = " or ".join(s.held_out for s in self.sets)
            out.append(f"not significantly better than production on the {which} held-out set "
                       f"({'; '.join(s.summary() for s in self.sets)})")
        return out

    def verdict(self, name: str) -> str:
        """The decision in one sentence."""
        if self.passed:
            return (f"Promote: the new {name} version beats production on the "
                    f"{' and '.join(s.held_out for s in self.better)} held-out set"
                    f"{'s' if len(self.better) > 1 else ''} and is significantly worse on no set, class or field.")
        return f"Keep production: the new {name} version is " + "; ".join(self.reasons()) + "."

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons(), "held_out": [s.to_json() for s in self.sets]}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: each p-value made comparable with ALPHA across the family."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [1.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def group_scores(kind: str, rows: Sequence[Example], preds: Sequence[Prediction],
                 result: EvalResult) -> dict[str, list[float | None]]:
    """Right (1) / wrong (0) per row for each class (classify: the rows of that label; None on the
    others) or each field (extract: the field's value, an absent field right when the gold lacks
    it too); empty for the other kinds."""
    if kind == "classify":
        labels = sorted({ex.target for ex in rows})
        return {lab: [s if ex.target == lab else None for ex, s in zip(rows, result.per_example)]
                for lab in labels}
    if kind == "extract":
        from taskfit.tasks.extract import fields, load_json

        def flat(text: str) -> dict[str, str]:
            try:
                return fields(load_json(text))
            except ValueError:
                return {}

        golds, answers = [flat(ex.target) for ex in rows], [flat(p.output) for p in preds]
        names = sorted({k for g in golds for k in g} | {k for a in answers for k in a})
        return {k: [float(g.get(k) == a.get(k)) for g, a in zip(golds, answers)] for k in names}
    return {}


def held_out_test(held_out: str, kind: str, rows: Sequence[Example], new: tuple[EvalResult, list[Prediction]],
                  production: tuple[EvalResult, list[Prediction]]) -> HeldOutTest:
    """The new version against production on the same rows of one held-out set: the paired test
    on the main metric, McNemar per class or field, Holm-adjusted across them."""
    from taskfit import stats
    from taskfit.tasks import main_metric

    main = main_metric(kind)
    test = paired_test(kind, new[0], production[0])
    a, b = group_scores(kind, rows, *new[1:], new[0]), group_scores(kind, rows, *production[1:], production[0])
    raw = []
    for group in a:
        pairs = [(x, y) for x, y in zip(a[group], b.get(group, [])) if x is not None and y is not None]
        if not pairs:
            continue
        xs, ys = [x for x, _ in pairs], [y for _, y in pairs]
        raw.append((group, len(pairs), sum(xs) / len(xs), sum(ys) / len(ys), stats.mcnemar(xs, ys)))
    adjusted = holm([r[4] for r in raw])
    groups = [GroupTest(g, n, x, y, p, q) for (g, n, x, y, p), q in zip(raw, adjusted)]
    return HeldOutTest(held_out, kind, main, new[0].metrics[main], production[0].metrics[main], test, new[0].n,
                       groups)


def recent_workspace(ws: Any) -> Any | None:
    """The workspace scoring on the latest data snapshot's recent held-out rows (None: no
    snapshot, or one without recent rows)."""
    from taskfit.lifecycle.from_log import latest_snapshot

    snapshot = latest_snapshot(ws.project_dir)
    if snapshot is None:
        return None
    rows = snapshot.recent_rows(ws.config.task)
    return ws.on_rows(rows) if rows else None


def held_out_sets(ws: Any) -> list[tuple[str, Any]]:
    """The held-out sets versions are compared on: ("fixed", the project's workspace), then
    ("recent", the latest snapshot's recent held-out rows) when there are any."""
    recent = recent_workspace(ws)
    return [("fixed", ws)] + ([("recent", recent)] if recent is not None else [])


def gate_versions(ws: Any, new: Version, production: Version,
                  evaluated: dict[tuple[str, str], tuple[EvalResult, list[Prediction]]] | None = None) -> Gate:
    """``new`` against ``production`` on every held-out set (see :class:`Gate`); each version is
    evaluated once per set (cached). ``evaluated``: results already in hand, by (set, version id)."""
    evaluated = dict(evaluated or {})
    sets = []
    for label, space in held_out_sets(ws):
        pair = []
        for version in (new, production):
            if (label, version.id) not in evaluated:
                evaluated[label, version.id] = evaluate_version(space, version)
            pair.append(evaluated[label, version.id])
        sets.append(held_out_test(label, space.config.task.kind, space.eval_rows, *pair))
    return Gate(tuple(sets))


# ---- the commands -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Promotion:
    version: Version
    alias: str
    move: Move | None  # None: the alias already pointed at this version
    gate: Gate | None  # None: no production to compare with, or alias candidate
    production: Version | None = None  # what was production before (the gate compared against it)
    forced: bool = False
    # the name's first adapter version: a server started before it loaded no language model
    # (it loads one only when the registry holds an adapter version), so it loads it to switch
    first_adapter: bool = False
    # to production: what the version's scores on the fixed held-out set fall short of (the task's
    # acceptance thresholds; qa: answering better than refusing every question), in words
    short_of: list[str] = field(default_factory=list)


def promote_project(project: Path, run: str | None, name: str, alias: str = "production", *,
                    force: bool = False, reason: str | None = None, by: str | None = None,
                    reporter: Any = None) -> Promotion:
    """Register ``run`` (see :func:`resolve_source`) under ``name`` and point ``name@alias`` at it.
    To production, it must pass the gate against the current production version (see the module
    docstring) unless ``force`` (which needs a ``reason``); the first production version needs no gate.
    A :class:`PromotionRefused` names the figures."""
    from taskfit.workflows.workspace import Workspace, config_path

    check_name(name)
    if alias not in ALIASES:
        raise ConfigError(f"--alias {alias}: choose {' or '.join(ALIASES)}")
    if force and not (reason or "").strip():
        raise ConfigError("--force needs --reason: the history records why the gate was overridden")
    by = who(by)
    project_dir = config_path(project).parent
    source = resolve_source(project_dir, run)
    ws = Workspace.open(project, reporter, allow_secrets=True)
    with Registry(registry_path(project_dir)) as registry:
        staged = stage(registry, name, source, by)
        known = registry.version(name, staged.id)
        current_id = registry.alias(name, alias)
        if known is not None and current_id == known.id:
            return Promotion(known, alias, None, None)
        production = registry.resolve(name, "production")
        gate_result: Gate | None = None
        if ws.preference:  # preference pairs have no held-out answers to score
            if alias == "production" and production is not None and not force:
                raise ConfigError("a DPO project's versions cannot be compared on held-out answers, so the "
                                  "promotion gate cannot run", hint="promote with --force --reason TEXT")
            version = registry.add(staged)
        else:
            new = evaluate_version(ws, known or staged)
            version = registry.add(known or Version(**{**staged.__dict__, "figures": figures(new[0], ws)}))
            if alias == "production" and production is not None:
                gate_result = gate_versions(ws, version, production, {("fixed", version.id): new})
                if not gate_result.passed and not force:
                    raise PromotionRefused(
                        f"{name} {version.short} is not promoted to production: it is "
                        + "; ".join(gate_result.reasons()) + f" (production is {production.short})",
                        hint="improve the run and promote it again, promote it to --alias candidate to try it "
                             "on live traffic in shadow, or override with --force --reason TEXT")
        short_of = []
        if alias == "production" and not ws.preference:
            from taskfit.evaluation.compare import missed_thresholds, refusing_all

            missed = missed_thresholds(ws.config.task.kind, new[0], ws.config.eval.thresholds)
            named = f"{name} {version.short}"
            short_of = [f"{named} misses the task's acceptance thresholds (eval.thresholds) on the fixed held-out "
                        f"set: {', '.join(missed)}"] if missed else []
            short_of += [why for why in [refusing_all(new[0], named)] if why]
        forced = force and gate_result is not None and not gate_result.passed
        first_adapter = version.kind == "adapter" and not any(
            v.kind == "adapter" and v.id != version.id for v in registry.versions(name))
        move = registry.move(name, alias, version.id, action="promote", by=by,
                             reason=reason or ("first production version" if production is None and
                                               alias == "production" else None),
                             forced=forced, gate=gate_result.to_json() if gate_result else None,
                             expect=current_id)
        return Promotion(version, alias, move, gate_result, production, forced, first_adapter, short_of)


def rollback_project(project: Path, name: str, *, by: str | None = None, reason: str | None = None) -> Move:
    """``name@production`` back to the version it held before its current one (see
    :meth:`Registry.previous`); recorded in the history. No model is loaded."""
    from taskfit.workflows.workspace import config_path

    project_dir = config_path(project).parent
    with Registry.existing(registry_path(project_dir)) as registry:
        current = registry.alias(name, "production")
        if current is None:
            known = ", ".join(registry.names()) or "none"
            raise ConfigError(f"{name}@production is not set in {registry.path} (registered names: {known})")
        previous = registry.previous(name)
        if previous is None:
            others = {m.to_version for m in registry.history(name) if m.alias == "production"} - {current}
            why = (f"{current[:12]} is the first version left in its history: the later ones were rolled back"
                   if others else "it has had no other version")
            raise ConfigError(f"{name}@production: nothing to roll back to ({why})",
                              hint=f"`taskfit registry history {project_dir} {name}` shows every move; "
                                   f"`taskfit promote {project_dir} RUN --as {name}` moves it forward")
        return registry.move(name, "production", previous, action="rollback", by=who(by),
                             reason=reason or "rollback", expect=current)
