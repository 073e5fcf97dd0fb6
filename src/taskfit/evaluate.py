"""``taskfit baseline``, ``taskfit eval`` and ``taskfit compare``: evaluate candidates on the
held-out split, cache their predictions, and decide.

Every candidate of a project is evaluated into one directory per held-out split,
``<project>/evals/<eval fingerprint>/``: ``predictions/<candidate>.jsonl`` (the cache that makes an
interrupted evaluation resume), ``results/<candidate>.json`` (its scores), and, from ``compare``,
``scorecard.md``, ``scorecard.json`` and ``report.html``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from taskfit.config import ProjectConfig
from taskfit.errors import ConfigError, DataError
from taskfit.evaluation.compare import FINETUNED, Scorecard, build_scorecard
from taskfit.evaluation.runner import candidate_key, read_cache, read_predictions, run_cached
from taskfit.progress import Reporter, Silent
from taskfit.records import EvalResult, Example, Prediction

PROMPT_ONLY, FEW_SHOT, RAG, CLASSICAL, ENDPOINT = "prompt-only", "few-shot", "rag", "tfidf-logreg", "endpoint"
APPLICABLE = {"classify": [PROMPT_ONLY, FEW_SHOT, CLASSICAL, ENDPOINT],
              "extract": [PROMPT_ONLY, FEW_SHOT, ENDPOINT],
              "qa": [PROMPT_ONLY, FEW_SHOT, RAG, ENDPOINT],
              "generate": [PROMPT_ONLY, FEW_SHOT, ENDPOINT]}
STYLE_BASE = "_style-base"  # the base model's replies to training inputs: the style classifier's negatives


@dataclass
class Evaluation:
    """What every candidate of one project is evaluated with."""

    config: ProjectConfig
    project_dir: Path
    train: list[Example]
    held_out: list[Example]
    root: Path
    setup: Any
    _lm: Any = None
    _style: Any = None

    def lm(self, reporter: Reporter) -> Any:
        if self._lm is None:
            from taskfit.pipeline import _load

            self._lm = _load(self.setup, reporter)
        return self._lm

    def style(self, reporter: Reporter) -> Any:
        """generate: the style classifier (reference replies against the base model's replies to
        ``eval.style_sample`` training inputs, cached like any prediction); None otherwise."""
        from taskfit.baselines.model import GenerativePredictor
        from taskfit.tasks.generate import StyleModel

        c = self.config
        if c.task.kind != "generate" or not c.eval.style_sample:
            return None
        if self._style is None:
            sample = self.train[: c.eval.style_sample]
            key = _base_key(self, STYLE_BASE, train=self.setup.prepared.card.split.get("train_fingerprint"),
                            n=len(sample))
            cached = {p.example_id: p for p in read_cache(self.predictions(STYLE_BASE), key).values()}
            if all(ex.id in cached for ex in sample):  # no model needed
                replies = [cached[ex.id] for ex in sample]
            else:
                lm = self.lm(reporter)
                base = GenerativePredictor(STYLE_BASE, lm.model, lm.tokenizer, c.task, c.train.max_seq_length,
                                           c.eval.max_new_tokens)
                with reporter.bar("base-model replies for the style classifier", len(sample)) as advance:
                    replies, _ = run_cached(base, sample, self.predictions(STYLE_BASE), key, on_item=advance)
            self._style = StyleModel([ex.target for ex in self.train], [p.output for p in replies],
                                     seed=c.data.seed)
        return self._style

    def predictions(self, name: str) -> Path:
        return self.root / "predictions" / f"{name}.jsonl"

    def result_path(self, name: str) -> Path:
        return self.root / "results" / f"{name}.json"


def open_evaluation(project: Path, reporter: Reporter, threads: int | None = None) -> Evaluation:
    """Check the data exactly as training does and find the held-out split's evaluation directory."""
    from taskfit.pipeline import _setup

    setup = _setup(project, reporter, threads, allow_secrets=True, need=Example)
    config = setup.config
    if config.task.kind not in APPLICABLE:
        raise ConfigError(f"task.kind '{config.task.kind}' cannot be evaluated")
    held_out = setup.held_out[: config.eval.max_rows] if config.eval.max_rows else setup.held_out
    if not held_out:
        raise DataError(f"{config.data.train}: no held-out rows to evaluate on",
                        hint="set data.eval_fraction or data.eval")
    fingerprint = setup.prepared.card.split.get("eval_fingerprint", "none")[:12]
    root = setup.project_dir / "evals" / f"{fingerprint}-{len(held_out)}"
    (root / "results").mkdir(parents=True, exist_ok=True)
    return Evaluation(config=config, project_dir=setup.project_dir, train=setup.train,
                      held_out=held_out, root=root, setup=setup)


def _shots(ev: Evaluation, reporter: Reporter) -> Callable[[Example], list[Example]]:
    from taskfit.retrieval import build_index

    reporter.status(f"indexing {len(ev.train)} training rows ({ev.config.baselines.retriever})")
    index = build_index(ev.config.baselines.retriever, [ex.input for ex in ev.train])
    k = ev.config.baselines.few_shot_k
    return lambda ex: [ev.train[i] for i in index.search(ex.input, k)]


def _contexts(ev: Evaluation, reporter: Reporter) -> Callable[[Example], tuple[str, dict[str, Any]]]:
    """RAG: the top chunks of the user's documents, numbered, as the context; the chunk ids are
    the citations, and whether the row's own passage was among them is recorded."""
    from taskfit.retrieval import build_index, chunk_documents

    spec = ev.config.baselines
    folder = ev.project_dir / (spec.documents or "")
    chunks = chunk_documents(folder, spec.chunk_words)
    reporter.status(f"indexing {len(chunks)} chunks of {folder} ({spec.retriever})")
    index = build_index(spec.retriever, [c.text for c in chunks])

    def contexts(ex: Example) -> tuple[str, dict[str, Any]]:
        found = [chunks[i] for i in index.search(ex.input, spec.top_k)]
        text = "\n\n".join(f"[{n}] {c.text}" for n, c in enumerate(found, 1))
        details: dict[str, Any] = {"citations": [c.id for c in found]}
        if ex.context:  # a hit: a chunk cut from the row's own passage was retrieved
            own = " ".join(ex.context.split())
            details["retrieval_hit"] = any(c.text in own for c in found)
        return text, details

    return contexts


def _lm_candidate(ev: Evaluation, name: str, model: Any, tokenizer: Any, *, constrained: bool,
                  shots=None, contexts=None) -> Any:
    from taskfit.baselines.model import GenerativePredictor, LabelScoringPredictor
    from taskfit.tasks.classify import label_budget

    spec, task = ev.config, ev.config.task
    if task.kind == "classify" and constrained:
        return LabelScoringPredictor(name, model, tokenizer, task, spec.train.max_seq_length, shots=shots)
    budget = label_budget(tokenizer, task) if task.kind == "classify" else spec.eval.max_new_tokens
    return GenerativePredictor(name, model, tokenizer, task, spec.train.max_seq_length, budget,
                               constrained=constrained, shots=shots, contexts=contexts,
                               batch_size=spec.eval.batch_size)


def _model_size(model: Any) -> dict[str, float]:
    return {"params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def _evaluate(ev: Evaluation, name: str, predictor: Any, key: str, reporter: Reporter,
              extra: dict[str, float] | None = None, free: Any = None, run_dir: Path | None = None) -> EvalResult:
    """Run (or resume) one candidate, score it with the task's scorer, and save the result."""
    from taskfit.tasks import score

    with reporter.bar(f"evaluating {name}", len(ev.held_out)) as advance:
        preds, _ = run_cached(predictor, ev.held_out, ev.predictions(name), key, on_item=advance)
    result = score(ev.config.task, ev.config.eval, name, ev.held_out, preds, style=ev.style(reporter))
    metrics = result.metrics
    metrics.update(extra or {})
    if free is not None and ev.config.eval.generation_sample:
        sample = ev.held_out[: ev.config.eval.generation_sample]
        with reporter.bar(f"free decoding ({name})", len(sample)) as advance:
            loose, _ = run_cached(free, sample, ev.predictions(f"{name}.unconstrained"), key + "-free",
                                  on_item=advance)
        metrics["free_valid_rate"] = sum(p.valid for p in loose) / len(loose)
    if "price_per_million_input_tokens" in metrics:
        metrics["cost_per_1k_usd"] = 1000 * (
            metrics["prompt_tokens_mean"] * metrics.pop("price_per_million_input_tokens")
            + metrics["completion_tokens_mean"] * metrics.pop("price_per_million_output_tokens")) / 1e6
    elif ev.config.eval.price_per_hour:
        metrics["cost_per_1k_usd"] = 1000 * metrics["latency_mean_s"] * ev.config.eval.price_per_hour / 3600
    save_result(ev.result_path(name), result, key, run_dir)
    return result


def save_result(path: Path, result: EvalResult, key: str, run_dir: Path | None = None) -> None:
    path.write_text(json.dumps({"candidate_key": key, "run_dir": str(run_dir) if run_dir else None,
                                **asdict(result)}, indent=1), encoding="utf-8")


def load_results(root: Path) -> list[EvalResult]:
    return [r for r, _ in _load_saved(root)]


def _load_saved(root: Path) -> list[tuple[EvalResult, Path | None]]:
    """Each saved result with the training run it came from (for its loss curve), if any."""
    out = []
    for path in sorted((root / "results").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("candidate_key", None)
        run_dir = data.pop("run_dir", None)
        out.append((EvalResult(**data), Path(run_dir) if run_dir else None))
    return out


def _base_key(ev: Evaluation, name: str, **more: Any) -> str:
    c = ev.config
    return candidate_key(name=name, model=c.model.name, task=c.task.model_dump(mode="json"),
                         max_length=c.train.max_seq_length, max_new_tokens=c.eval.max_new_tokens,
                         constrained=c.eval.constrained, **more)


def baseline_project(project: Path, reporter: Reporter | None = None, only: Sequence[str] | None = None,
                     threads: int | None = None) -> list[EvalResult]:
    """``taskfit baseline``: evaluate every applicable baseline (or ``only`` those named)."""
    reporter = reporter or Silent()
    ev = open_evaluation(project, reporter, threads)
    kind, spec = ev.config.task.kind, ev.config.baselines
    names = list(only) if only else [n for n in APPLICABLE[kind]
                                     if not (n == ENDPOINT and spec.endpoint is None)
                                     and not (n == RAG and spec.documents is None)]
    unknown = [n for n in names if n not in APPLICABLE[kind]]
    if unknown:
        raise ConfigError(f"--only: {', '.join(unknown)} is not a baseline for {kind}",
                          hint=f"choose from {', '.join(APPLICABLE[kind])}")
    if RAG in names and spec.documents is None:
        raise ConfigError("baselines.documents: the rag baseline needs a folder of documents")
    if ENDPOINT in names and spec.endpoint is None:
        raise ConfigError("baselines.endpoint: the endpoint baseline needs base_url and model")
    train_fp = ev.setup.prepared.card.split.get("train_fingerprint")
    results = []
    for name in names:
        if name == CLASSICAL:
            from taskfit.baselines.classical import TfidfLogRegPredictor

            predictor = TfidfLogRegPredictor(ev.train, seed=ev.config.data.seed, name=name)
            coef = predictor.model[-1].coef_
            results.append(_evaluate(ev, name, predictor, _base_key(ev, name, train=train_fp), reporter,
                                     extra={"params_m": coef.size / 1e6}))
        elif name == ENDPOINT:
            from taskfit.baselines.endpoint import EndpointPredictor

            e = spec.endpoint
            predictor = EndpointPredictor(name, e, ev.config.task, ev.config.eval.max_new_tokens)
            results.append(_evaluate(ev, name, predictor,
                                     _base_key(ev, name, endpoint=e.model_dump(mode="json")), reporter,
                                     extra={"price_per_million_input_tokens": e.price_per_million_input_tokens,
                                            "price_per_million_output_tokens": e.price_per_million_output_tokens}))
        else:
            lm = ev.lm(reporter)
            shots = _shots(ev, reporter) if name == FEW_SHOT else None
            contexts = _contexts(ev, reporter) if name == RAG else None
            more = {"train": train_fp, "k": spec.few_shot_k, "retriever": spec.retriever} if shots else {}
            if contexts:
                more = {"documents": _folder_digest(ev.project_dir / (spec.documents or "")),
                        "chunk_words": spec.chunk_words, "top_k": spec.top_k, "retriever": spec.retriever}
            predictor = _lm_candidate(ev, name, lm.model, lm.tokenizer, constrained=ev.config.eval.constrained,
                                      shots=shots, contexts=contexts)
            free = (_lm_candidate(ev, name, lm.model, lm.tokenizer, constrained=False, shots=shots)
                    if kind in ("classify", "extract") and ev.config.eval.constrained else None)
            results.append(_evaluate(ev, name, predictor, _base_key(ev, name, **more), reporter,
                                     extra=_model_size(lm.model), free=free))
    return results


def _folder_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()[:16]


def _load_trained(ev: Evaluation, run_dir: Path, reporter: Reporter) -> tuple[Any, dict[str, float], str]:
    """The run's model (base + adapter, merged for speed, or the fully trained model), its size
    and a digest of its trained weights."""
    from taskfit.paths import RunDir

    run = RunDir(run_dir)
    if (run.full_model / "config.json").exists():
        from taskfit.models import load_model

        lm = load_model(str(run.full_model), status=reporter.status)
        digest = _folder_digest(run.full_model)
        return lm.model, _model_size(lm.model), digest
    from peft import PeftModel

    from taskfit.training.artifacts import find_adapter

    adapter = find_adapter(run_dir)
    base = ev.lm(reporter)
    reporter.status(f"loading adapter {adapter}")
    model = PeftModel.from_pretrained(base.model, str(adapter)).merge_and_unload()
    ev._lm = None  # the base was merged into: never reuse it as the plain base
    weights = sum(p.stat().st_size for p in adapter.glob("*.safetensors"))
    return model, {**_model_size(model), "adapter_mb": weights / 1e6}, _folder_digest(adapter)


def eval_project(project: Path, run_dir: Path, reporter: Reporter | None = None, name: str | None = None,
                 threads: int | None = None, engine: str = "transformers") -> EvalResult:
    """``taskfit eval --run RUN``: evaluate a trained run as a candidate on the same held-out rows.

    ``engine="llama-cpp"`` evaluates the exported artifact instead (the base GGUF with the run's
    GGUF LoRA, written first when missing) under the name ``fine-tuned-gguf``: its row beside the
    ``fine-tuned`` one shows whether the export behaves like the model that was trained."""
    reporter = reporter or Silent()
    name = name or (FINETUNED if engine == "transformers" else f"{FINETUNED}-gguf")
    if not name.startswith(FINETUNED):
        name = f"{FINETUNED}-{name}"
    ev = open_evaluation(project, reporter, threads)
    if not run_dir.is_absolute() and not run_dir.exists():
        run_dir = ev.project_dir / run_dir
    if engine == "llama-cpp":
        return _eval_gguf(ev, run_dir, name, reporter, threads)
    if engine != "transformers":
        raise ConfigError(f"--engine {engine}: choose transformers or llama-cpp")
    ev.style(reporter)  # needs the plain base model, before an adapter is merged into it
    model, size, digest = _load_trained(ev, run_dir, reporter)
    tokenizer = ev.setup.tokenizer
    predictor = _lm_candidate(ev, name, model, tokenizer, constrained=ev.config.eval.constrained)
    kind = ev.config.task.kind
    free = (_lm_candidate(ev, name, model, tokenizer, constrained=False)
            if kind in ("classify", "extract") and ev.config.eval.constrained else None)
    return _evaluate(ev, name, predictor, _base_key(ev, name, weights=digest), reporter, extra=size, free=free,
                     run_dir=run_dir.resolve())


def _eval_gguf(ev: Evaluation, run_dir: Path, name: str, reporter: Reporter, threads: int | None) -> EvalResult:
    from taskfit.baselines.llama_cpp import LlamaCppPredictor, load_llama
    from taskfit.tasks.classify import label_budget
    from taskfit.training.artifacts import find_adapter
    from taskfit.training.gguf_lora import export_gguf_lora

    ev.style(reporter)
    folder = find_adapter(run_dir).parent / "gguf"
    if not (folder / "adapter.gguf").exists():
        export_gguf_lora(run_dir, status=reporter.status)
    base = Path((folder / "base.txt").read_text(encoding="utf-8").strip())
    spec, task = ev.config, ev.config.task
    budget = label_budget(ev.setup.tokenizer, task) if task.kind == "classify" else spec.eval.max_new_tokens
    reporter.status(f"loading {base.name} with {folder / 'adapter.gguf'} in llama.cpp")
    llm = load_llama(base, folder / "adapter.gguf", n_ctx=spec.train.max_seq_length + budget + 16, threads=threads)
    predictor = LlamaCppPredictor(name, llm, ev.setup.tokenizer, task, spec.train.max_seq_length, budget,
                                  constrained=spec.eval.constrained)
    from gguf import GGUFReader

    size = {"params_m": sum(int(t.n_elements) for t in GGUFReader(str(base)).tensors) / 1e6,
            "adapter_mb": (folder / "adapter.gguf").stat().st_size / 1e6}
    return _evaluate(ev, name, predictor, _base_key(ev, name, weights=_folder_digest(folder), engine="llama-cpp"),
                     reporter, extra=size, run_dir=run_dir.resolve())


def _rescore(ev: Evaluation, saved: EvalResult, reporter: Reporter) -> EvalResult:
    """Score a candidate's cached predictions again with the scorer and settings of now (a new
    confidence threshold or fallback needs no new predictions); what the scorer does not compute
    (size, cost, free-decoding validity) is kept from the evaluation."""
    from taskfit.tasks import score

    preds = {p.example_id: p for p in read_predictions(ev.predictions(saved.candidate))}
    if any(ex.id not in preds for ex in ev.held_out):
        return saved
    fresh = score(ev.config.task, ev.config.eval, saved.candidate, ev.held_out, list(preds.values()),
                  style=ev.style(reporter))
    fresh.metrics.update({k: v for k, v in saved.metrics.items() if k not in fresh.metrics})
    return fresh


@dataclass
class Comparison:
    scorecard: Scorecard
    markdown: Path
    json: Path
    report_html: Path


def _agreements(predictions: dict[str, list[Prediction]]) -> list[str]:
    """How often each other fine-tuned candidate (an export on another engine, say) answers as the
    training-time model does, row by row."""
    trained = {p.example_id: p.output for p in predictions.get(FINETUNED, [])}
    notes = []
    for name, preds in predictions.items():
        if name == FINETUNED or not name.startswith(FINETUNED) or not trained:
            continue
        pairs = [(trained[p.example_id], p.output) for p in preds if p.example_id in trained]
        same = sum(a == b for a, b in pairs)
        if pairs:
            notes.append(f"{name} gives the same answer as {FINETUNED} on {same} of {len(pairs)} held-out rows "
                         f"({100 * same / len(pairs):.1f}%).")
    return notes


def compare_project(project: Path, reporter: Reporter | None = None, threads: int | None = None) -> Comparison:
    """``taskfit compare``: the scorecard of every candidate evaluated on the current held-out split."""
    from taskfit.evaluation import report

    reporter = reporter or Silent()
    ev = open_evaluation(project, reporter, threads)
    saved = _load_saved(ev.root)
    results = [_rescore(ev, r, reporter) for r, _ in saved]
    curves = {f"training and validation loss ({r.candidate})": run / "plots" / "loss.png"
              for r, run in saved if run is not None and (run / "plots" / "loss.png").exists()}
    if not results:
        raise ConfigError(f"{ev.root}: no candidate has been evaluated on this held-out split",
                          hint="run `taskfit baseline` (and `taskfit eval --run RUN` for a fine-tune) first")
    from taskfit.evaluation.review import load_reviews

    card = build_scorecard(results, ev.config.eval.thresholds)
    card.reviews = [r.sentence() for r in load_reviews(ev.root)]
    predictions = {r.candidate: read_predictions(ev.predictions(r.candidate)) for r in results}
    card.notes = _agreements(predictions)
    md = ["# Scorecard: " + ev.config.task.name, "", card.verdict, ""] + [f"> {w}" for w in card.warnings]
    md += [f"- {r}" for r in card.reviews + card.notes]
    md += ["", *card.markdown(), "",
           f"{len(ev.held_out)} held-out rows; paired tests against the best baseline by {card.main}."]
    md_path = ev.root / "scorecard.md"
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")
    json_path = ev.root / "scorecard.json"
    json_path.write_text(json.dumps(card.to_json(), indent=2), encoding="utf-8")
    html = report.write_scorecard_report(ev.root, f"taskfit: {ev.config.task.name}", card, predictions,
                                         data_card=ev.setup.prepared.card.rows_summary(), extra_plots=curves)
    return Comparison(scorecard=card, markdown=md_path, json=json_path, report_html=html)



def review_export_project(project: Path, a: str, b: str, n: int = 50, out: Path | None = None,
                          reporter: Reporter | None = None) -> dict[str, Path]:
    """``taskfit review export``: a blind A/B page for two evaluated candidates."""
    from taskfit.evaluation.review import export_review

    ev = open_evaluation(project, reporter or Silent())
    preds = {}
    for name in (a, b):
        preds[name] = read_predictions(ev.predictions(name))
        if not preds[name]:
            raise ConfigError(f"{name}: no predictions on this held-out split",
                              hint="evaluate it first (`taskfit baseline` or `taskfit eval --run RUN`)")
    return export_review(out or ev.root / "review", ev.held_out, a, preds[a], b, preds[b], n,
                         seed=ev.config.data.seed)


def review_import_project(project: Path, verdicts: Path, key: Path | None = None,
                          reporter: Reporter | None = None) -> Any:
    """``taskfit review import``: un-blind the verdicts and keep the result for ``compare``."""
    from taskfit.evaluation.review import import_review, save_review

    ev = open_evaluation(project, reporter or Silent())
    key = key or verdicts.parent / "review_key.json"
    if not key.exists():
        key = ev.root / "review" / "review_key.json"
    if not key.exists():
        raise ConfigError(f"{key}: no review key", hint="pass --key, the review_key.json written by the export")
    result = import_review(verdicts, key)
    save_review(ev.root, result)
    return result
