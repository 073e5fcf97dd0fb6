"""The loop: data → split → prompt-only baseline → LoRA fine-tune → held-out comparison → report.

:func:`run_project` reads top to bottom; each stage is one call into its own module.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from taskfit.baselines import LabelScoringPredictor, generate_answers
from taskfit.config import ProjectConfig, load_config
from taskfit.data.prepare import Prepared, prepare_data, write_prepared
from taskfit.errors import ConfigError, DataError
from taskfit.evaluation import report
from taskfit.evaluation.metrics import score_classify
from taskfit.evaluation.runner import run_predictor
from taskfit.paths import RunDir
from taskfit.progress import Reporter, Silent
from taskfit.records import EvalResult, Example

BASELINE = "prompt-only"
CLASSICAL = "tfidf-logreg"
FINETUNED = "fine-tuned"
_PACKAGES = ["taskfit", "torch", "transformers", "peft", "accelerate", "scikit-learn", "gguf", "numpy"]


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


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _git_commit(directory: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _valid_rate(model: Any, tokenizer: Any, config: ProjectConfig, examples: list[Example],
                reporter: Reporter, name: str) -> float | None:
    """Share of freely decoded answers (greedy, unconstrained) that are exactly a label."""
    sample = examples[: config.eval.generation_sample]
    if not sample:
        return None
    labels = set(config.task.labels or [])
    longest = max(len(tokenizer(lab)["input_ids"]) for lab in labels)
    valid = 0
    with reporter.bar(f"free decoding ({name})", len(sample)) as advance:
        for _, text in generate_answers(model, tokenizer, config.task, sample,
                                        config.train.max_seq_length, max_new_tokens=longest + 3):
            valid += text in labels
            advance()
    return valid / len(sample)


def _evaluate(name: str, model: Any, tokenizer: Any, config: ProjectConfig, held_out: list[Example],
              run: RunDir, reporter: Reporter) -> EvalResult:
    predictor = LabelScoringPredictor(name, model, tokenizer, config.task, config.train.max_seq_length)
    with reporter.bar(f"evaluating {name}", len(held_out)) as advance:
        preds = run_predictor(predictor, held_out, run.predictions(name), on_item=advance)
    valid = _valid_rate(model, tokenizer, config, held_out, reporter, name)
    return score_classify(name, config.task.labels or [], held_out, preds, valid_rate=valid)


def _evaluate_classical(train: list[Example], held_out: list[Example], config: ProjectConfig,
                        run: RunDir, reporter: Reporter) -> EvalResult:
    from taskfit.baselines.classical import TfidfLogRegPredictor

    predictor = TfidfLogRegPredictor(train, seed=config.data.seed, name=CLASSICAL)
    with reporter.bar(f"evaluating {CLASSICAL}", len(held_out)) as advance:
        preds = run_predictor(predictor, held_out, run.predictions(CLASSICAL), on_item=advance)
    return score_classify(CLASSICAL, config.task.labels or [], held_out, preds)


def decide(baselines: list[EvalResult], tuned: EvalResult) -> str:
    """A verdict in plain words: the fine-tuned model against the best baseline, by accuracy and
    its 95% interval."""
    best = max(baselines, key=lambda r: r.metrics["accuracy"])
    b, t = best.metrics, tuned.metrics
    gain = 100 * (t["accuracy"] - b["accuracy"])
    f1_gain = 100 * (t["macro_f1"] - b["macro_f1"])
    others = ", ".join(f"{r.candidate} {100 * r.metrics['accuracy']:.1f}%" for r in baselines)
    if t["accuracy_ci_low"] > b["accuracy_ci_high"]:
        return (f"Keep the fine-tuned adapter: {gain:+.1f} points accuracy and {f1_gain:+.1f} points "
                f"macro-F1 over the best baseline ({best.candidate}), and the 95% intervals do not "
                f"overlap (baselines: {others}).")
    if gain > 0:
        return (f"Not proven: the fine-tuned adapter scores {gain:+.1f} points accuracy over the best "
                f"baseline ({best.candidate}), but the 95% intervals overlap; evaluate on more "
                f"held-out rows before paying for the fine-tune.")
    speed = b["latency_p50_s"] and t["latency_p50_s"] / b["latency_p50_s"]
    cost = f", and it answers {speed:,.0f}x faster" if speed and speed > 1.5 else ""
    return (f"Fine-tuning is not worth it here: {best.candidate} scores {100 * b['accuracy']:.1f}% "
            f"against {100 * t['accuracy']:.1f}% for the fine-tuned model{cost}. Keep "
            f"{best.candidate}.")


def run_project(project: Path, reporter: Reporter | None = None, threads: int | None = None,
                allow_secrets: bool = False) -> RunSummary:
    """Run the whole loop for the project at ``project`` (a directory or its taskfit.yaml).

    Training refuses data that still holds credentials (``data.privacy.action: keep``) unless
    ``allow_secrets`` or ``data.privacy.allow_secrets`` says otherwise.
    """
    import torch

    reporter = reporter or Silent()
    config_path = project / "taskfit.yaml" if project.is_dir() else project
    project_dir = config_path.parent
    config = load_config(config_path)
    if config.task.kind != "classify":
        raise ConfigError(f"task.kind: '{config.task.kind}' cannot be trained and evaluated yet; "
                          "only 'classify' runs end to end so far")
    if threads:
        torch.set_num_threads(threads)

    from taskfit.models import load_model
    from taskfit.models.registry import load_tokenizer

    tokenizer = load_tokenizer(config.model.name, status=reporter.status)
    with reporter.bar("checking data (rows)", None) as advance:
        prepared = prepare_data(config, project_dir, tokenizer=tokenizer, on_row=advance)
    if prepared.unredacted_secret_rows and not (allow_secrets or config.data.privacy.allow_secrets):
        raise DataError(f"{prepared.unredacted_secret_rows} training rows hold credentials (API keys, "
                        "tokens, private keys) and data.privacy.action is 'keep': a model can repeat "
                        "what it was trained on",
                        hint="set data.privacy.action to redact (the default), or pass --allow-secrets "
                             "if you are sure")
    train = [ex for ex in prepared.train if isinstance(ex, Example)]
    held_out = [ex for ex in prepared.eval if isinstance(ex, Example)]
    if len(train) != len(prepared.train) or not train or not held_out:
        raise DataError(f"{config.data.train}: `taskfit run` needs labelled examples on both sides of "
                        f"the split (got {len(train)} train, {len(held_out)} held out); preference "
                        "pairs can be checked and prepared, but not trained on yet",
                        hint="run `taskfit data check` to see what was read")
    run = RunDir.create(project_dir, config.task.name)
    run.config.write_text(config.to_yaml(), encoding="utf-8")
    write_prepared(prepared, run.root / "data")
    (run.root / "splits.json").write_text(json.dumps(
        {"train": [ex.id for ex in train], "eval": [ex.id for ex in held_out]}), encoding="utf-8")
    rows = prepared.card.rows_summary()

    reporter.status(f"loading model {config.model.name}")
    lm = load_model(config.model.name, status=reporter.status, tokenizer=tokenizer)
    manifest = {
        "task": config.task.name, "kind": config.task.kind,
        "model": asdict(lm.info), "data": {
            "train_file": config.data.train, "eval_file": config.data.eval, "rows": rows,
            "train_rows": len(train), "eval_rows": len(held_out),
            "train_fingerprint": prepared.card.split["train_fingerprint"],
            "eval_fingerprint": prepared.card.split["eval_fingerprint"]},
        "seeds": {"split": config.data.seed, "train": config.train.seed},
        "versions": package_versions(),
        "hardware": {"machine": platform.machine(), "cpus": os.cpu_count(),
                     "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()},
        "project_git_commit": _git_commit(project_dir),
    }
    run.manifest.write_text(json.dumps(manifest, indent=2), encoding="utf-8")

    baseline = _evaluate(BASELINE, lm.model, lm.tokenizer, config, held_out, run, reporter)
    classical = _evaluate_classical(train, held_out, config, run, reporter)

    from taskfit.training import train_lora

    steps = max(1, -(-len(train) // config.train.batch_size))
    with reporter.bar("training LoRA", int(steps * config.train.epochs + 0.999)) as advance:
        peft_model, trained = train_lora(
            lm.model, lm.tokenizer, config.task, config.train, train, log_path=run.train_log,
            on_step=lambda step, total, loss: advance(info=f"loss {loss:.3f}"))
    peft_model.save_pretrained(run.adapter)
    merged = peft_model.merge_and_unload()
    tuned = _evaluate(FINETUNED, merged, lm.tokenizer, config, held_out, run, reporter)

    results = [baseline, classical, tuned]
    verdict = decide([baseline, classical], tuned)
    metrics = {r.candidate: {**r.metrics, "n": r.n, "per_class": r.per_class, "confusion": r.confusion,
                             "labels": r.labels} for r in results}
    metrics["training"] = {**asdict(trained), "tokens_per_second": trained.tokens_per_second}
    metrics["verdict"] = verdict
    run.metrics.write_text(json.dumps(metrics, indent=2), encoding="utf-8")

    plots = {
        "training loss": report.plot_loss(trained.losses, run.plots / "loss.png"),
        "accuracy and macro-F1": report.plot_scores(results, run.plots / "scores.png"),
        "per-class F1": report.plot_per_class(results, run.plots / "per_class_f1.png"),
        "confusion (fine-tuned)": report.plot_confusion(tuned, run.plots / "confusion.png"),
    }
    facts = {
        "model": f"{lm.info.name} ({lm.info.description or lm.info.path}); licence: {lm.info.licence}",
        "data": rows + f"; data card: {run.root / 'data' / 'data_card.md'}",
        "split": f"{len(train)} train / {len(held_out)} held out (seed {config.data.seed})",
        "training": (f"LoRA r={config.train.lora.r}, alpha={config.train.lora.alpha}, "
                     f"lr={config.train.learning_rate}, {trained.steps} steps, {trained.epochs:.2f} epochs, "
                     f"{trained.trained_tokens} tokens in {trained.seconds:.0f} s "
                     f"({trained.tokens_per_second:.0f} tokens/s)"),
        "fingerprints": f"train {manifest['data']['train_fingerprint'][:12]}, eval {manifest['data']['eval_fingerprint'][:12]}",
        "run directory": str(run.root),
    }
    md, html_path = report.write_report(run.root, f"taskfit: {config.task.name}", facts, results,
                                        config.eval.thresholds, plots, verdict)
    return RunSummary(run_dir=run.root, results=results, verdict=verdict, report_html=html_path,
                      report_md=md, train_rows=len(train), eval_rows=len(held_out), data=prepared,
                      train_seconds=trained.seconds, tokens_per_second=trained.tokens_per_second)
