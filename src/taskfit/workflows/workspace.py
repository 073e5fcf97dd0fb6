"""One project's workspace: what every stage command and the one-command loop work from.

A :class:`Workspace` holds the validated config, the checked and split data, the tokenizer, the
base model (loaded only when a stage needs it), and the evaluation store: one directory per
held-out split, ``<project>/evals/<eval fingerprint>-<rows>/``, where every candidate's predictions
(``predictions/<candidate>.jsonl``, the cache that makes an interrupted evaluation resume) and
scores (``results/<candidate>.json``) land, whichever command produced them. ``taskfit run`` and
the stage commands (``baseline``, ``train``, ``eval``, ``compare``) therefore see the same
candidates, and a repeated command costs nothing where nothing changed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from taskfit.config import ProjectConfig, load_config
from taskfit.data.prepare import Prepared, data_lines, prepare_data
from taskfit.data.split import fingerprint
from taskfit.errors import ConfigError, DataError
from taskfit.paths import RunDir
from taskfit.progress import Reporter, Silent
from taskfit.records import Example, PreferencePair


def config_path(project: Path) -> Path:
    """``taskfit.yaml`` of a project given as its directory or as the file itself."""
    return project / "taskfit.yaml" if project.is_dir() else project


def comparable_config(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config with the defaults of this taskfit filled in (a run started before a
    setting existed was trained as its default says) and without what does not change a trained
    model (``train.threads``, ``train.report_to``, ``task.success``, the evaluation's thresholds, prices and
    sample sizes (``eval.thresholds``, ``price_per_hour``, ``queries_per_month``, ``generation_sample``,
    ``latency_rows``, ``style_sample``, ``max_rows``, ``forgetting``), the ``baselines``, ``monitor``, ``review``,
    ``retrain``, ``advise`` and ``synth`` sections: drafting settings reach a run only through the accepted
    rows, which the training fingerprint covers), to tell whether a run was trained from the project as it
    is now. What training reads of ``eval`` (``max_new_tokens``: the room a cut prompt leaves;
    ``constrained``; a classify threshold and fallback, which the server reads from the run) stays."""
    from pydantic import ValidationError

    try:
        config = ProjectConfig.model_validate(config).model_dump(mode="json", by_alias=True)
    except ValidationError:
        pass  # a config this taskfit no longer accepts is compared as it is: it matches nothing now
    return {**{k: v for k, v in config.items() if k not in UNTRAINED_SECTIONS},
            "task": {k: v for k, v in config.get("task", {}).items() if k != "success"},
            "train": {k: v for k, v in config.get("train", {}).items() if k not in ("threads", "report_to")},
            "eval": {k: v for k, v in config.get("eval", {}).items() if k not in UNTRAINED_EVAL}}


UNTRAINED_SECTIONS = ("baselines", "monitor", "review", "retrain", "synth", "advise")
UNTRAINED_EVAL = ("thresholds", "price_per_hour", "queries_per_month", "generation_sample", "latency_rows",
                  "style_sample", "max_rows", "forgetting")


@dataclass
class Workspace:
    config: ProjectConfig
    project_dir: Path
    prepared: Prepared
    train: list[Any]  # Example, or PreferencePair for method dpo
    held_out: list[Any]  # the whole eval split
    hardware: Any
    tokenizer: Any
    reporter: Reporter = field(default_factory=Silent)
    # What a retrained run adds to the project's own data (``taskfit retrain``): the data snapshot
    # whose reviewed rows joined the training rows, and the version continued; kept in the run's
    # manifest, and part of what a run must match to be reused.
    lineage: dict[str, Any] = field(default_factory=dict)
    # ``taskfit advise``'s sample of the held-out rows when it is the whole split: scored in a
    # store of its own (``<fingerprint>-<rows>-sample``), so that its learning-curve runs stay off
    # the project's scorecard while its predictions still answer the same rows for `taskfit run`.
    sample: bool = False
    _lm: Any = None
    _style: Any = None

    # ---- opening --------------------------------------------------------------------------
    @classmethod
    def open(cls, project: Path, reporter: Reporter | None = None, threads: int | None = None,
             allow_secrets: bool = False) -> "Workspace":
        """Config → hardware → tokenizer → checked data. Rows are preference pairs for
        ``train.method: dpo`` and labelled examples otherwise; anything else is refused.

        Training refuses data that still holds credentials (``data.privacy.action: keep``, or a
        field in ``data.privacy.keep_fields``) unless
        ``allow_secrets`` or ``data.privacy.allow_secrets`` says otherwise; evaluation-only
        commands pass ``allow_secrets=True`` (nothing is learnt from the rows)."""
        from taskfit.models.registry import load_tokenizer
        from taskfit.training.hardware import resolve_hardware
        from taskfit.training.tracking import check_tracking

        reporter = reporter or Silent()
        path = config_path(project)
        config = load_config(path)
        if threads:
            config = config.model_copy(update={"train": config.train.model_copy(update={"threads": threads})})
        hardware = resolve_hardware(config.train)  # a qlora project on a CPU machine stops here
        check_tracking(config.train.report_to, path.parent)  # so does a tracker that is not installed
        tokenizer = load_tokenizer(config.model.name, status=reporter.status)
        with reporter.bar("checking data", data_lines(config, path.parent)) as advance:
            prepared = prepare_data(config, path.parent, tokenizer=tokenizer, on_row=advance)
        if prepared.unredacted_secret_rows and not (allow_secrets or config.data.privacy.allow_secrets):
            raise DataError(f"{prepared.unredacted_secret_rows} training rows hold credentials (API keys, "
                            "tokens, private keys) left unredacted by data.privacy (action: keep, or a field "
                            "in keep_fields): a model can repeat what it was trained on",
                            hint="set data.privacy.action to redact (the default) and take fields holding "
                                 "credentials out of keep_fields, or pass --allow-secrets if you are sure")
        need = PreferencePair if config.train.method == "dpo" else Example
        train = [r for r in prepared.train if isinstance(r, need)]
        held_out = [r for r in prepared.eval if isinstance(r, need)]
        if len(train) != len(prepared.train) or not train:
            kind = "preference pairs" if need is PreferencePair else "labelled examples"
            method = config.train.method
            raise DataError(f"{config.data.train}: train.method {method} needs {kind} (got {len(train)} of "
                            f"{len(prepared.train)} training rows)",
                            hint="use `method: dpo` for preference pairs ({prompt, chosen, rejected}), "
                                 "lora/qlora/full for examples; `taskfit data check` shows what was read")
        return cls(config=config, project_dir=path.parent, prepared=prepared, train=train,
                   held_out=held_out, hardware=hardware, tokenizer=tokenizer, reporter=reporter)

    def with_reviewed(self, snapshot: Any, continued: tuple[str, Path] | None = None) -> "Workspace":
        """This workspace with the reviewed training rows of ``snapshot`` (a
        :class:`~taskfit.lifecycle.from_log.Snapshot`) after the project's own: the held-out split
        stays the project's; the training fingerprint is the combined rows'. ``continued``: the id
        of the registered version a run continues, and its adapter (the starting point)."""
        reviewed = snapshot.train_rows(self.config.task)
        lineage = {"snapshot": snapshot.digest, "snapshot_path": str(snapshot.root), "project_train_rows":
                   len(self.train), "reviewed_train_rows": len(reviewed)}
        if continued is not None:
            lineage.update(continued_from=continued[0], start_adapter=str(continued[1]))
        return replace(self.on_train(self.train + reviewed), lineage=lineage)

    def on_train(self, train: list[Any]) -> "Workspace":
        """This workspace training on ``train`` instead of the project's training rows (the
        held-out split stays the project's; the training fingerprint is the new rows')."""
        card = replace(self.prepared.card, split={**self.prepared.card.split, "train": len(train),
                                                  "train_fingerprint": fingerprint(train)})
        return replace(self, prepared=replace(self.prepared, train=train, card=card), train=train,
                       _lm=None, _style=None)

    def on_rows(self, held_out: list[Any]) -> "Workspace":
        """This workspace scoring candidates on ``held_out`` instead of the project's held-out split
        (the recent held-out set): its own evaluation directory, by the rows' fingerprint."""
        card = replace(self.prepared.card, split={**self.prepared.card.split, "eval": len(held_out),
                                                  "eval_fingerprint": fingerprint(held_out)})
        return replace(self, prepared=replace(self.prepared, eval=held_out, card=card), held_out=held_out)

    def on_first(self, n: int) -> "Workspace":
        """This workspace scoring candidates on the first ``n`` of its evaluation rows (as
        ``eval.max_rows`` takes them; all of them when there are no more, in the ``-sample``
        store). Its store is its own directory, and two scorecard figures that cost more rows are
        left out there: free decoding (``eval.generation_sample``, a decoding per row) and a lone
        request's latency (``eval.latency_rows``, rows answered again one at a time): a
        candidate's time a query is its batched pass's. `taskfit run` measures both when it
        reuses these predictions."""
        whole = n >= len(self.eval_rows)
        spec = self.config.eval.model_copy(update={"max_rows": self.config.eval.max_rows if whole else n,
                                                   "generation_sample": 0, "latency_rows": 0})
        return replace(self, config=self.config.model_copy(update={"eval": spec}), sample=whole)

    @property
    def preference(self) -> bool:
        return self.config.train.method == "dpo"

    # ---- the base model ---------------------------------------------------------------------
    def lm(self) -> Any:
        """The base model, loaded on first use (4-bit for qlora; on the CPU when it is to be sharded)."""
        if self._lm is None:
            self._lm = self.load_model()
        return self._lm

    def load_model(self) -> Any:
        """A fresh copy of the base model (training changes the one it is given)."""
        from taskfit.models import load_model
        from taskfit.training.fsdp import wants_sharding

        quantization = None
        if self.config.train.method == "qlora":
            import torch
            from transformers import BitsAndBytesConfig

            q = self.config.train.qlora
            quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=q.quant_type,
                                              bnb_4bit_use_double_quant=q.double_quant,
                                              bnb_4bit_compute_dtype=getattr(torch, q.compute_dtype))
        self.reporter.status(f"loading model {self.config.model.name}")
        # A model to shard stays on the CPU until each process moves its own shard to its GPU.
        device = "cpu" if wants_sharding(self.config.train) else self.hardware.device
        return load_model(self.config.model.name, status=self.reporter.status, tokenizer=self.tokenizer,
                          dtype=self.hardware.dtype, device=device, quantization=quantization)

    def forget_model(self) -> None:
        """Drop the loaded base model (training or merging changed it in place)."""
        self._lm = None

    # ---- the evaluation store ---------------------------------------------------------------
    @property
    def eval_rows(self) -> list[Any]:
        """The held-out rows candidates are scored on (the first ``eval.max_rows`` when set)."""
        rows = self.held_out[: self.config.eval.max_rows] if self.config.eval.max_rows else self.held_out
        if not rows:
            raise DataError(f"{self.config.data.train}: no held-out rows to evaluate on",
                            hint="set data.eval_fraction or data.eval")
        return rows

    @property
    def evals(self) -> Path:
        """This held-out split's evaluation directory (made on first use)."""
        root = self.project_dir / "evals" / (f"{self._fingerprint}-{len(self.eval_rows)}"
                                             + (SAMPLE_STORE if self.sample else ""))
        (root / "results").mkdir(parents=True, exist_ok=True)
        return root

    def predictions(self, name: str) -> Path:
        return self.evals / "predictions" / f"{name}.jsonl"

    @property
    def _fingerprint(self) -> str:
        return self.prepared.card.split.get("eval_fingerprint", "none")[:12]

    def other_stores(self) -> list[Path]:
        """The other evaluation directories of this held-out split (scored on more or fewer of
        its rows, or `taskfit advise`'s sample store), largest first: a candidate's predictions
        there answer the same rows here."""
        here = self.evals
        found = [(store[0], p) for p in here.parent.glob(self._fingerprint + "-*")
                 if p != here and (store := store_rows(p.name)) is not None]
        return [p for _, p in sorted(found, key=lambda np_: -np_[0])]

    def result_path(self, name: str) -> Path:
        return self.evals / "results" / f"{name}.json"

    @property
    def train_fingerprint(self) -> str | None:
        return self.prepared.card.split.get("train_fingerprint")

    # ---- runs -------------------------------------------------------------------------------
    def runs(self) -> list[tuple[RunDir, dict[str, Any]]]:
        """Every training run of the project with its manifest, oldest first."""
        return find_runs(self.project_dir)

    def matches(self, manifest: dict[str, Any]) -> bool:
        """Whether a run was trained from the project's config and training data as they are now."""
        return (comparable_config(manifest.get("config", {}))
                == comparable_config(self.config.model_dump(mode="json", by_alias=True))
                and manifest.get("data", {}).get("train_fingerprint") == self.train_fingerprint
                and manifest.get("lineage", {}).get("continued_from") == self.lineage.get("continued_from"))

    def latest_run(self) -> RunDir:
        """The project's newest finished training run (what ``eval``, ``export`` and ``serve``
        take when no run is named; never a learning-curve run of ``taskfit advise``)."""
        return RunDir(latest_run_dir(self.project_dir))


def find_runs(project_dir: Path) -> list[tuple[RunDir, dict[str, Any]]]:
    """Every training run under ``project_dir/runs`` with its manifest, oldest first."""
    found = []
    for manifest in (project_dir / "runs").glob("*/manifest.json"):
        try:
            found.append((RunDir(manifest.parent), json.loads(manifest.read_text(encoding="utf-8"))))
        except (OSError, json.JSONDecodeError):
            continue  # a run directory cut short before its manifest was whole
    return sorted(found, key=lambda item: (item[1].get("started", ""), item[0].root.name))


def latest_finished_run(project: Path) -> Path | None:
    """The newest finished run of the project at ``project`` (its directory or taskfit.yaml), or
    None, without checking its data (``export`` and ``serve`` need only the run's files). A
    learning-curve run of ``taskfit advise`` (trained on a sample of the rows) is never taken."""
    finished = [run for run, m in find_runs(config_path(project).parent)
                if m.get("status") == "finished" and not is_curve_run(m)]
    return finished[-1].root if finished else None


def latest_run_dir(project: Path) -> Path:
    """:func:`latest_finished_run`, which must exist."""
    run = latest_finished_run(project)
    if run is None:
        raise ConfigError(f"{config_path(project).parent / 'runs'}: no finished training run",
                          hint="train one with `taskfit train` (or the whole loop with `taskfit run`)")
    return run


SAMPLE_STORE = "-sample"  # the suffix of `taskfit advise`'s store when its sample is the whole split
_STORE = re.compile(r"(?P<fingerprint>.+)-(?P<rows>\d+)(?P<sample>" + re.escape(SAMPLE_STORE) + ")?")


def store_rows(name: str) -> tuple[int, bool] | None:
    """The held-out rows an evaluation store (``<fingerprint>-<rows>``, or ``...-sample``) was
    scored on, and whether it is `taskfit advise`'s sample store; None for a folder that is no
    store."""
    m = _STORE.fullmatch(name)
    return None if m is None else (int(m["rows"]), bool(m["sample"]))


CURVE_RUN = "learning_curve"  # the manifest key of a learning-curve run: {"rows": n, "of": training rows}


def is_curve_run(manifest: dict[str, Any]) -> bool:
    """Whether a run is one of ``taskfit advise``'s learning-curve runs (a sample of the rows)."""
    return CURVE_RUN in manifest


def resolve_run(project_dir: Path, run: Path) -> RunDir:
    """A run named on the command line: as given, or relative to the project."""
    root = run if run.is_absolute() or run.exists() else project_dir / run
    if not (root / "manifest.json").exists():
        raise ConfigError(f"{root}: not a taskfit run directory (no manifest.json)",
                          hint="name a directory under runs/, or leave the run out for the latest finished one")
    return RunDir(root)
