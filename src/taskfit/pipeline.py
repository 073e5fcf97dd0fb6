"""The loop: data → split → prompt-only baseline → LoRA fine-tune → held-out comparison → report.

:func:`run_project` reads top to bottom; each stage is one call into its own module.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskfit.baselines import LabelScoringPredictor
from taskfit.config import ProjectConfig, load_config
from taskfit.data.prepare import Prepared, prepare_data, write_prepared
from taskfit.errors import ConfigError, DataError
from taskfit.manifest import build_manifest
from taskfit.evaluation import report
from taskfit.evaluation.compare import build_scorecard
from taskfit.evaluation.runner import read_predictions, run_predictor
from taskfit.paths import RunDir
from taskfit.progress import Reporter, Silent
from taskfit.records import EvalResult, Example, PreferencePair
from taskfit.training.loop import Ranks

BASELINE = "prompt-only"
CLASSICAL = "tfidf-logreg"
FINETUNED = "fine-tuned"


@dataclass
class RunSummary:
    run_dir: Path
    results: list[EvalResult]
    verdict: str
    report_html: Path
    report_md: Path
    train_rows: int
    eval_rows: int
    data: Prepared
    train_seconds: float
    tokens_per_second: float
    scorecard: Any = None


def _evaluate(name: str, model: Any, tokenizer: Any, config: ProjectConfig, held_out: list[Example],
              run: RunDir, reporter: Reporter) -> EvalResult:
    """Label scoring on every held-out row, plus free decoding on a sample to measure how often
    the raw output is a label at all."""
    from taskfit.baselines.model import GenerativePredictor
    from taskfit.tasks import score
    from taskfit.tasks.classify import label_budget

    predictor = LabelScoringPredictor(name, model, tokenizer, config.task, config.train.max_seq_length)
    with reporter.bar(f"evaluating {name}", len(held_out)) as advance:
        preds = run_predictor(predictor, held_out, run.predictions(name), on_item=advance)
    result = score(config.task, config.eval, name, held_out, preds)
    sample = held_out[: config.eval.generation_sample]
    if sample:
        free = GenerativePredictor(name, model, tokenizer, config.task, config.train.max_seq_length,
                                   max_new_tokens=label_budget(tokenizer, config.task))
        with reporter.bar(f"free decoding ({name})", len(sample)) as advance:
            loose = run_predictor(free, sample, run.predictions(f"{name}.unconstrained"), on_item=advance)
        result.metrics["free_valid_rate"] = sum(p.valid for p in loose) / len(loose)
    return result


def _evaluate_classical(train: list[Example], held_out: list[Example], config: ProjectConfig,
                        run: RunDir, reporter: Reporter) -> EvalResult:
    from taskfit.baselines.classical import TfidfLogRegPredictor
    from taskfit.tasks import score

    predictor = TfidfLogRegPredictor(train, seed=config.data.seed, name=CLASSICAL)
    with reporter.bar(f"evaluating {CLASSICAL}", len(held_out)) as advance:
        preds = run_predictor(predictor, held_out, run.predictions(CLASSICAL), on_item=advance)
    return score(config.task, config.eval, CLASSICAL, held_out, preds)


@dataclass
class _Setup:
    config: ProjectConfig
    project_dir: Path
    prepared: Prepared
    train: list[Any]
    held_out: list[Any]
    hardware: Any
    tokenizer: Any


def _setup(project: Path, reporter: Reporter, threads: int | None, allow_secrets: bool,
           need: type) -> _Setup:
    """Config → hardware → tokenizer → checked data, for a command that trains on ``need`` rows
    (:class:`Example` or :class:`PreferencePair`)."""
    from taskfit.models.registry import load_tokenizer
    from taskfit.training.hardware import resolve_hardware

    config_path = project / "taskfit.yaml" if project.is_dir() else project
    config = load_config(config_path)
    if threads:
        config = config.model_copy(update={"train": config.train.model_copy(update={"threads": threads})})
    hardware = resolve_hardware(config.train)  # a qlora project on a CPU machine stops here
    tokenizer = load_tokenizer(config.model.name, status=reporter.status)
    with reporter.bar("checking data (rows)", None) as advance:
        prepared = prepare_data(config, config_path.parent, tokenizer=tokenizer, on_row=advance)
    if prepared.unredacted_secret_rows and not (allow_secrets or config.data.privacy.allow_secrets):
        raise DataError(f"{prepared.unredacted_secret_rows} training rows hold credentials (API keys, "
                        "tokens, private keys) and data.privacy.action is 'keep': a model can repeat "
                        "what it was trained on",
                        hint="set data.privacy.action to redact (the default), or pass --allow-secrets "
                             "if you are sure")
    train = [r for r in prepared.train if isinstance(r, need)]
    held_out = [r for r in prepared.eval if isinstance(r, need)]
    kind = "preference pairs" if need is PreferencePair else "labelled examples"
    if len(train) != len(prepared.train) or not train:
        method = "dpo" if need is PreferencePair else config.train.method
        raise DataError(f"{config.data.train}: train.method {method} needs {kind} (got {len(train)} of "
                        f"{len(prepared.train)} training rows)",
                        hint="use `method: dpo` for preference pairs, lora/qlora/full for examples; "
                             "`taskfit data check` shows what was read")
    return _Setup(config=config, project_dir=config_path.parent, prepared=prepared, train=train,
                  held_out=held_out, hardware=hardware, tokenizer=tokenizer)


def _load(setup: _Setup, reporter: Reporter) -> Any:
    from taskfit.models import load_model

    quantization = None
    if setup.config.train.method == "qlora":
        import torch
        from transformers import BitsAndBytesConfig

        q = setup.config.train.qlora
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=q.quant_type,
                                          bnb_4bit_use_double_quant=q.double_quant,
                                          bnb_4bit_compute_dtype=getattr(torch, q.compute_dtype))
    from taskfit.training.fsdp import wants_sharding

    reporter.status(f"loading model {setup.config.model.name}")
    # A model to shard stays on the CPU until each process moves its own shard to its GPU.
    device = "cpu" if wants_sharding(setup.config.train) else setup.hardware.device
    return load_model(setup.config.model.name, status=reporter.status, tokenizer=setup.tokenizer,
                      dtype=setup.hardware.dtype, device=device, quantization=quantization)


def _start_run(setup: _Setup, lm: Any, run: RunDir, rows: dict[str, int]) -> dict[str, Any]:
    run.config.write_text(setup.config.to_yaml(), encoding="utf-8")
    write_prepared(setup.prepared, run.root / "data")
    (run.root / "splits.json").write_text(json.dumps(
        {"train": [r.id for r in setup.train], "eval": [r.id for r in setup.held_out]}), encoding="utf-8")
    manifest = build_manifest(setup.config, setup.project_dir, lm.info, setup.prepared.card, rows,
                              setup.hardware.describe())
    run.manifest.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def _finish_manifest(run: RunDir, manifest: dict[str, Any], training: dict[str, Any]) -> None:
    manifest.update(status="finished", training=training)
    run.manifest.write_text(json.dumps(manifest, indent=2), encoding="utf-8")


@dataclass
class TrainSummary:
    run_dir: Path
    artifact: Path
    training: dict[str, Any]


def _resume_dir(project_dir: Path, resume: Path | bool) -> RunDir:
    """The run to resume: the one named, or the newest under the project that has no artifact."""
    if isinstance(resume, Path):
        root = resume if resume.is_absolute() or resume.exists() else project_dir / resume
        if not (root / "manifest.json").exists():
            raise ConfigError(f"{root}: not a taskfit run directory (no manifest.json)",
                              hint="name a directory under runs/, or pass --resume alone for the newest")
        return RunDir(root)
    runs = sorted((project_dir / "runs").glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
    unfinished = [p.parent for p in runs if json.loads(p.read_text()).get("status") != "finished"]
    if not unfinished:
        raise ConfigError(f"{project_dir / 'runs'}: no unfinished training run to resume",
                          hint="start one with `taskfit train`")
    return RunDir(unfinished[-1])


def train_project(project: Path, reporter: Reporter | None = None, threads: int | None = None,
                  allow_secrets: bool = False, resume: Path | bool = False) -> TrainSummary:
    """``taskfit train``: check the data, train by ``train.method``, save the artifact, its model
    card and curves in a new run directory (or continue an interrupted one with ``resume``)."""
    from taskfit.training.recipe import train_model

    reporter = reporter or Silent()
    project_dir = project if project.is_dir() else project.parent
    run = _resume_dir(project_dir, resume) if resume else None
    config = load_config(project)
    need = PreferencePair if config.train.method == "dpo" else Example
    setup = _setup(project, reporter, threads, allow_secrets, need)
    if run is not None:
        saved = json.loads(run.manifest.read_text())

        def comparable(config: dict[str, Any]) -> dict[str, Any]:  # --threads may differ
            return {**config, "train": {k: v for k, v in config.get("train", {}).items() if k != "threads"}}

        if comparable(saved.get("config", {})) != comparable(setup.config.model_dump(mode="json", by_alias=True)) or \
                saved["data"].get("train_fingerprint") != setup.prepared.card.split.get("train_fingerprint"):
            raise ConfigError(f"{run.root}: taskfit.yaml or the training data changed since this run "
                              "started, so resuming would not reproduce it",
                              hint="restore them, or start a new run with `taskfit train` (no --resume)")
    lm = _load(setup, reporter)
    main = Ranks.from_env().main  # under `accelerate launch`, the first process writes the run
    if run is None and not main:
        run = RunDir(Path(tempfile.mkdtemp(prefix="taskfit-rank-")))  # never written to
    if run is None:
        run = RunDir.create(setup.project_dir, setup.config.task.name)
        manifest = _start_run(setup, lm, run, {"train": len(setup.train), "eval": len(setup.held_out)})
    else:
        manifest = json.loads(run.manifest.read_text()) if main else {}
    card = setup.prepared.card
    outcome = train_model(setup.config, lm, setup.train, run, reporter, project_dir=setup.project_dir,
                          held_out=setup.held_out, resume=bool(resume),
                          data_summary=card.rows_summary(),
                          fingerprints={"train": card.split.get("train_fingerprint"),
                                        "eval": card.split.get("eval_fingerprint")},
                          hardware=setup.hardware.describe())
    training = outcome.summary()
    if main:
        (run.root / "metrics.json").write_text(json.dumps({"training": training}, indent=2), encoding="utf-8")
        _finish_manifest(run, manifest, training)
    return TrainSummary(run_dir=run.root, artifact=outcome.artifact, training=training)


def run_project(project: Path, reporter: Reporter | None = None, threads: int | None = None,
                allow_secrets: bool = False) -> RunSummary:
    """Run the whole loop for the project at ``project`` (a directory or its taskfit.yaml).

    Training refuses data that still holds credentials (``data.privacy.action: keep``) unless
    ``allow_secrets`` or ``data.privacy.allow_secrets`` says otherwise.
    """
    from taskfit.training.recipe import train_model

    reporter = reporter or Silent()
    config = load_config(project)
    if config.task.kind != "classify" or config.train.method == "dpo":
        raise ConfigError(f"task.kind '{config.task.kind}' with train.method '{config.train.method}' "
                          "cannot be compared end to end yet; `taskfit run` covers classify with "
                          "lora, qlora or full",
                          hint="use `taskfit train` to train it on its own")
    setup = _setup(project, reporter, threads, allow_secrets, Example)
    config, train, held_out = setup.config, setup.train, setup.held_out
    if not held_out:
        raise DataError(f"{config.data.train}: `taskfit run` needs held-out rows to compare on (got none)",
                        hint="set data.eval_fraction or data.eval")
    run = RunDir.create(setup.project_dir, config.task.name)
    lm = _load(setup, reporter)
    manifest = _start_run(setup, lm, run, {"train": len(train), "eval": len(held_out)})
    prepared, rows = setup.prepared, setup.prepared.card.rows_summary()

    baseline = _evaluate(BASELINE, lm.model, lm.tokenizer, config, held_out, run, reporter)
    classical = _evaluate_classical(train, held_out, config, run, reporter)

    outcome = train_model(config, lm, train, run, reporter, project_dir=setup.project_dir,
                          data_summary=rows, hardware=setup.hardware.describe(),
                          fingerprints={"train": prepared.card.split.get("train_fingerprint"),
                                        "eval": prepared.card.split.get("eval_fingerprint")})
    model = outcome.model.merge_and_unload() if hasattr(outcome.model, "merge_and_unload") else outcome.model
    tuned = _evaluate(FINETUNED, model, lm.tokenizer, config, held_out, run, reporter)

    results = [baseline, classical, tuned]
    card = build_scorecard(results, config.eval.thresholds)
    training = outcome.summary()
    metrics = {r.candidate: {**r.metrics, "n": r.n, "per_class": r.per_class, "confusion": r.confusion,
                             "labels": r.labels, "error_counts": r.error_counts} for r in results}
    metrics.update(training=training, verdict=card.verdict, scorecard=card.to_json())
    run.metrics.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    _finish_manifest(run, manifest, training)

    spec = config.train
    best = training.get("best_validation")
    chosen = (f"; kept step {best['step']} of {training['steps']} (best validation"
              f"{', stopped early' if training['stopped_early'] else ''})") if best else ""
    facts = {
        "model": f"{lm.info.name} ({lm.info.description or lm.info.path}); licence: {lm.info.licence}",
        "data": rows + f"; data card: {run.root / 'data' / 'data_card.md'}",
        "split": (f"{len(train)} train ({outcome.validation_rows} of them held back to validate "
                  f"during training) / {len(held_out)} held out (seed {config.data.seed})"),
        "training": (f"{spec.method}, LoRA r={spec.lora.r}, alpha={spec.lora.alpha}, lr={spec.lr}, "
                     f"{training['steps']} steps, {training['epochs']:.2f} epochs, "
                     f"{training['trained_tokens']} tokens in {training['seconds']:.0f} s "
                     f"({training['tokens_per_second']:.0f} tokens/s){chosen}"),
        "fingerprints": f"train {manifest['data']['train_fingerprint'][:12]}, eval {manifest['data']['eval_fingerprint'][:12]}",
        "run directory": str(run.root),
    }
    predictions = {r.candidate: read_predictions(run.predictions(r.candidate)) for r in results}
    html_path = report.write_scorecard_report(run.root, f"taskfit: {config.task.name}", card, predictions,
                                              data_card=rows, facts=facts,
                                              extra_plots={"training and validation loss": run.plots / "loss.png"})
    table = "\n".join(card.markdown())
    md = run.root / "report.md"
    md.write_text(f"# taskfit: {config.task.name}\n\n{card.verdict}\n\n## Scorecard (held-out split)\n\n"
                  f"{table}\n\n## Run\n\n" + "\n".join(f"- **{k}**: {v}" for k, v in facts.items())
                  + "\n\nFigures: report.html and plots/.\n", encoding="utf-8")
    card_path = outcome.artifact / "README.md"  # the model card gains the scorecard it was judged by
    card_path.write_text(card_path.read_text(encoding="utf-8")
                         + f"\n## Held-out scorecard\n\n{table}\n\n{card.verdict}\n", encoding="utf-8")
    verdict = card.verdict
    return RunSummary(run_dir=run.root, results=results, verdict=verdict, report_html=html_path,
                      report_md=md, train_rows=len(train), eval_rows=len(held_out), data=prepared,
                      train_seconds=training["seconds"], tokens_per_second=training["tokens_per_second"],
                      scorecard=card)
