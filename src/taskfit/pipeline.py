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
from taskfit.data.load import LoadResult, load_jsonl, write_quarantine
from taskfit.data.split import fingerprint, stratified_split, stratified_subsample
from taskfit.errors import ConfigError, DataError
from taskfit.evaluation import report
from taskfit.evaluation.metrics import score_classify
from taskfit.evaluation.runner import run_predictor
from taskfit.paths import RunDir
from taskfit.progress import Reporter, Silent
from taskfit.records import EvalResult, Example

BASELINE = "prompt-only"
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
    load: LoadResult
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


def prepare_splits(config: ProjectConfig, project_dir: Path) -> tuple[list[Example], list[Example], LoadResult]:
    """Load the data and make the (train, eval) split that training and evaluation use."""
    task, data = config.task, config.data
    loaded = load_jsonl(project_dir / data.train, task)
    if data.eval:
        eval_loaded = load_jsonl(project_dir / data.eval, task)
        train, held_out = loaded.examples, eval_loaded.examples
        loaded.quarantined += eval_loaded.quarantined
    else:
        train, held_out = stratified_split(loaded.examples, data.eval_fraction, data.seed)
    overlap = {ex.id for ex in train} & {ex.id for ex in held_out}
    if overlap:
        raise DataError(f"{len(overlap)} row ids are in both train and eval, e.g. {sorted(overlap)[:3]}",
                        hint="give every row a unique id, or let taskfit split one file")
    train = stratified_subsample(train, data.max_train_examples, data.seed)
    held_out = stratified_subsample(held_out, data.max_eval_examples, data.seed)
    return train, held_out, loaded


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


def decide(baseline: EvalResult, tuned: EvalResult) -> str:
    """A verdict in plain words from the two candidates' accuracy and its 95% intervals."""
    b, t = baseline.metrics, tuned.metrics
    gain = 100 * (t["accuracy"] - b["accuracy"])
    f1_gain = 100 * (t["macro_f1"] - b["macro_f1"])
    if t["accuracy_ci_low"] > b["accuracy_ci_high"]:
        return (f"Keep the fine-tuned adapter: {gain:+.1f} points accuracy and {f1_gain:+.1f} points "
                f"macro-F1 over prompt-only, and the 95% intervals do not overlap.")
    if gain > 0:
        return (f"Not proven: the fine-tuned adapter scores {gain:+.1f} points accuracy over "
                f"prompt-only, but the 95% intervals overlap; evaluate on more held-out rows.")
    return (f"Fine-tuning is not worth it here: prompt-only is {-gain:.1f} points ahead or level "
            f"at a lower cost.")


def run_project(project: Path, reporter: Reporter | None = None, threads: int | None = None) -> RunSummary:
    """Run the whole loop for the project at ``project`` (a directory or its taskfit.yaml)."""
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

    train, held_out, loaded = prepare_splits(config, project_dir)
    run = RunDir.create(project_dir, config.task.name)
    run.config.write_text(config.to_yaml(), encoding="utf-8")
    if loaded.quarantined:
        write_quarantine(loaded.quarantined, run.root / "quarantine.jsonl")
    (run.root / "splits.json").write_text(json.dumps(
        {"train": [ex.id for ex in train], "eval": [ex.id for ex in held_out]}), encoding="utf-8")

    from taskfit.models import load_model

    reporter.status(f"loading model {config.model.name}")
    lm = load_model(config.model.name, status=reporter.status)
    manifest = {
        "task": config.task.name, "kind": config.task.kind,
        "model": asdict(lm.info), "data": {
            "train_file": config.data.train, "rows": loaded.summary(),
            "train_rows": len(train), "eval_rows": len(held_out),
            "train_fingerprint": fingerprint(train), "eval_fingerprint": fingerprint(held_out)},
        "seeds": {"split": config.data.seed, "train": config.train.seed},
        "versions": package_versions(),
        "hardware": {"machine": platform.machine(), "cpus": os.cpu_count(),
                     "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()},
        "project_git_commit": _git_commit(project_dir),
    }
    run.manifest.write_text(json.dumps(manifest, indent=2), encoding="utf-8")

    baseline = _evaluate(BASELINE, lm.model, lm.tokenizer, config, held_out, run, reporter)

    from taskfit.training import train_lora

    steps = max(1, -(-len(train) // config.train.batch_size))
    with reporter.bar("training LoRA", int(steps * config.train.epochs + 0.999)) as advance:
        peft_model, trained = train_lora(
            lm.model, lm.tokenizer, config.task, config.train, train, log_path=run.train_log,
            on_step=lambda step, total, loss: advance(info=f"loss {loss:.3f}"))
    peft_model.save_pretrained(run.adapter)
    merged = peft_model.merge_and_unload()
    tuned = _evaluate(FINETUNED, merged, lm.tokenizer, config, held_out, run, reporter)

    results = [baseline, tuned]
    verdict = decide(baseline, tuned)
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
        "data": loaded.summary(),
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
                      report_md=md, train_rows=len(train), eval_rows=len(held_out), load=loaded,
                      train_seconds=trained.seconds, tokens_per_second=trained.tokens_per_second)
