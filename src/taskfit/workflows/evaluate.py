"""Evaluate candidates on the held-out split and decide: ``taskfit baseline``, ``taskfit eval``,
``taskfit compare`` and ``taskfit review``.

Each candidate (a baseline, the fine-tuned model, a shipped form of it) is declared once as a
:class:`Candidate`: its name, its role, what decides its answers (its cache key), how it builds its
:class:`~taskfit.baselines.protocol.Predictor`, and its size. :func:`evaluate` runs any of them the
same way into the workspace's evaluation store; a candidate whose predictions are all cached is
re-scored without building anything (no model is loaded).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from taskfit.data.prepare import answers_changed_warning
from taskfit.errors import ConfigError
from taskfit.evaluation.compare import FINETUNED, SYNTHETIC_SUFFIX, Scorecard, build_scorecard
from taskfit.evaluation.runner import candidate_key, read_cache, read_predictions, run_cached, write_cache
from taskfit.paths import RunDir
from taskfit.records import EvalResult, Example, ForgettingResult, Prediction
from taskfit.tasks import get_task
from taskfit.tasks.base import CLASSICAL, EMBEDDINGS, ENDPOINT, FEW_SHOT, PROMPT_ONLY, RAG
from taskfit.workflows.workspace import Workspace, resolve_run, store_rows

STYLE_BASE = "_style-base"  # the base model's replies to training inputs: the style classifier's negatives


@dataclass
class Candidate:
    """One system that answers the task, declared once.

    ``key`` holds what decides its answers (the project's model, task and decoding settings are
    added by :func:`candidate_cache_key`); ``build`` makes its predictor and is called only when
    some prediction is missing; ``free`` makes its unconstrained twin (how often the raw output is
    valid at all); ``size`` gives its size and price figures."""

    name: str
    role: str  # baseline | fine-tuned | shipped
    key: dict[str, Any]
    build: Callable[[], Any]
    # Answered by a torch model of this process: in the workspace hardware's precision
    # (Hardware.computing), which joins its key.
    local: bool = False
    free: Callable[[], Any] | None = None
    size: Callable[[], dict[str, float]] = field(default=lambda: {})
    run_dir: Path | None = None
    # The forgetting check (eval.forgetting): the fine-tuned language model and the base to compare
    # it with, loaded apart for a full fine-tune and None for an adapter (the base is the same
    # model with the adapter disabled); or, for a fine-tune the check does not apply to, why not.
    forgetting: Callable[[], tuple[Any, Any | None]] | None = None
    no_forgetting: str = ""
    # The key an older taskfit saved this candidate's answers under, where it held more than decides
    # them (the endpoint's prices and connection settings): answers found under it are kept, re-keyed.
    legacy_key: dict[str, Any] | None = None
    # Other candidates of the store that may be this one under another name (a registered version
    # is the run `taskfit run` scored as fine-tuned): where one's key, made under its own name,
    # is this one's made under that name, its cached answers are this one's.
    same_as: tuple[str, ...] = ()


# Raised whenever taskfit changes how a candidate is asked (rendering, cutting, the answer grammar),
# so that predictions cached by an older taskfit are made again rather than scored as current.
# 2: prompts cut leaving the answer room, extract answers held to json.dumps's separators.
# 3: label scoring's confidence within 0.01 of the exact softmax (it was a looser lower bound).
ASKING = 3
HEAD = f"{FINETUNED}-head"  # a classification-head run's candidate (train.classify_head)
NO_HEAD_FORGETTING = ("the forgetting check does not apply: a classification-head run answers only "
                      "with one of task.labels, through its own head, and writes no text outside the task")


def _precision(ws: Workspace) -> dict[str, str]:
    """The precision local models answer in, as a part of a cache key: float32, the precision
    every evaluation had before it was recorded, is left out, so those caches stay valid."""
    precision = ws.hardware.precision
    return {"precision": precision} if precision != "float32" else {}


def candidate_cache_key(ws: Workspace, cand: Candidate) -> str:
    c = ws.config
    return candidate_key(asking=ASKING, name=cand.name, model=c.model.name, task=c.task.model_dump(mode="json"),
                         max_length=c.train.max_seq_length, max_new_tokens=c.eval.max_new_tokens,
                         constrained=c.eval.constrained, **cand.key, **(_precision(ws) if cand.local else {}))


def computing(ws: Workspace, cand: Candidate) -> Any:
    """The context ``cand`` answers in: a local model in the workspace hardware's precision. Its
    model is loaded, and an adapter merged, before it is entered: under bfloat16 autocast a merge
    would fold a bfloat16 product into the weights, which the exported model does not hold."""
    import contextlib

    return ws.hardware.computing() if cand.local else contextlib.nullcontext()


# ---- declarations ---------------------------------------------------------------------------
def _model_size(model: Any) -> dict[str, float]:
    return {"params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def _lm_predictor(ws: Workspace, name: str, model: Any, *, constrained: bool, shots=None, contexts=None) -> Any:
    from taskfit.baselines.model import GenerativePredictor, LabelScoringPredictor

    c, task, kind = ws.config, ws.config.task, get_task(ws.config.task.kind)
    if kind.scores_labels and constrained:
        return LabelScoringPredictor(name, model, ws.tokenizer, task, c.train.max_seq_length, shots=shots,
                                     batch_size=c.eval.batch_size)
    budget = kind.answer_budget(task, c.eval, ws.tokenizer)
    return GenerativePredictor(name, model, ws.tokenizer, task, c.train.max_seq_length, budget,
                               constrained=constrained, shots=shots, contexts=contexts,
                               batch_size=c.eval.batch_size)


def _wants_free(ws: Workspace) -> bool:
    """A kind decoded under a constraint also decodes freely on a sample: the share of raw
    answers that are valid."""
    return get_task(ws.config.task.kind).free_decoding and ws.config.eval.constrained


def _shots(ws: Workspace) -> Callable[[Example], list[Example]]:
    from taskfit.retrieval import build_index

    ws.reporter.status(f"indexing {len(ws.train)} training rows ({ws.config.baselines.retriever})")
    index = build_index(ws.config.baselines.retriever, [ex.input for ex in ws.train])
    k = ws.config.baselines.few_shot_k
    return lambda ex: [ws.train[i] for i in index.search(ex.input, k)]


def _contexts(ws: Workspace) -> Callable[[Example], list[Any]]:
    """RAG: the top chunks of the user's documents for a row, best first (the predictor numbers
    them into the context, and records which it showed and whether the row's own passage was
    among them: :meth:`~taskfit.baselines.model.GenerativePredictor._grounded`)."""
    from taskfit.retrieval import build_index, chunk_documents

    spec = ws.config.baselines
    folder = ws.project_dir / (spec.documents or "")
    chunks = chunk_documents(folder, spec.chunk_words)
    ws.reporter.status(f"indexing {len(chunks)} chunks of {folder} ({spec.retriever})")
    index = build_index(spec.retriever, [c.text for c in chunks])
    return lambda ex: [chunks[i] for i in index.search(ex.input, spec.top_k)]


def folder_digest(folder: Path, pattern: str = "*") -> str:
    """A digest of the files under ``folder`` that match ``pattern`` (names and contents)."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob(pattern)):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()[:16]


def weights_digest(folder: Path) -> str:
    """What decides a trained model's answers: its weights and configs, not its model card (which
    gains the scorecard after evaluation)."""
    return folder_digest(folder, "*.safetensors") + folder_digest(folder, "*.json")[:8]


def baseline_candidates(ws: Workspace, only: Sequence[str] | None = None) -> list[Candidate]:
    """The baselines that apply to the task (those named in ``only``, when given)."""
    kind, spec = ws.config.task.kind, ws.config.baselines
    applicable = list(get_task(kind).baselines)
    names = list(only) if only else [n for n in applicable
                                     if not (n == ENDPOINT and spec.endpoint is None)
                                     and not (n == RAG and spec.documents is None)]
    unknown = [n for n in names if n not in applicable]
    if unknown:
        raise ConfigError(f"--only: {', '.join(unknown)} is not a baseline for {kind}",
                          hint=f"choose from {', '.join(applicable)}")
    if RAG in names and spec.documents is None:
        raise ConfigError("baselines.documents: the rag baseline needs a folder of documents")
    if ENDPOINT in names and spec.endpoint is None:
        raise ConfigError("baselines.endpoint: the endpoint baseline needs base_url and model")
    return [_baseline(ws, name) for name in names]


ENDPOINT_UNASKED = {"price_per_million_input_tokens", "price_per_million_output_tokens", "api_key_env",
                    "timeout_s", "concurrency"}


def _baseline(ws: Workspace, name: str) -> Candidate:
    spec = ws.config.baselines
    if name in (CLASSICAL, EMBEDDINGS):
        return classical_candidate(ws, name)
    if name == ENDPOINT:
        from taskfit.baselines.endpoint import EndpointPredictor

        e = spec.endpoint
        # add_instruction joins the key only when off: evaluations cached before it existed asked
        # with the instruction, and stay valid (an endpoint's answers cost money). Prices, the key's
        # variable, the timeout and concurrency change no answer: out of the key since 2026-12-03.
        unasked = {"add_instruction"} if e.add_instruction else set()
        key = e.model_dump(mode="json", exclude=unasked | ENDPOINT_UNASKED)
        return Candidate(name, "baseline", {"endpoint": key},
                         lambda: EndpointPredictor(name, e, ws.config.task, ws.config.eval.max_new_tokens),
                         size=lambda: {"price_per_million_input_tokens": e.price_per_million_input_tokens,
                                       "price_per_million_output_tokens": e.price_per_million_output_tokens},
                         legacy_key={"endpoint": e.model_dump(mode="json", exclude=unasked)})
    key: dict[str, Any] = {}
    if name == FEW_SHOT:
        key = {"train": ws.train_fingerprint, "k": spec.few_shot_k, "retriever": spec.retriever}
    if name == RAG:
        # "context": the chunks shown whole, no longer cut to train.max_seq_length (answers cached
        # before were asked with the cut context: made again)
        key = {"documents": folder_digest(ws.project_dir / (spec.documents or "")),
               "chunk_words": spec.chunk_words, "top_k": spec.top_k, "retriever": spec.retriever,
               "context": "whole chunks"}
    hooks: dict[str, Any] = {}

    def hook_kwargs() -> dict[str, Any]:  # retrieval indexes are built once, when first needed
        if not hooks:
            hooks["shots"] = _shots(ws) if name == FEW_SHOT else None
            hooks["contexts"] = _contexts(ws) if name == RAG else None
        return hooks

    def build() -> Any:
        return _lm_predictor(ws, name, ws.lm().model, constrained=ws.config.eval.constrained, **hook_kwargs())

    def free() -> Any:
        return _lm_predictor(ws, name, ws.lm().model, constrained=False, shots=hook_kwargs()["shots"])

    return Candidate(name, "baseline", key, build, local=True, free=free if _wants_free(ws) else None,
                     size=lambda: _model_size(ws.lm().model))


def classical_candidate(ws: Workspace, name: str, folder: Path | None = None,
                        card: dict[str, Any] | None = None) -> Candidate:
    """A classical model (``tfidf-logreg``, ``embeddings-logreg``), fitted on the training rows
    unless the project already holds one fitted on the same rows under the same definition (its
    key), and saved in the project, so ``taskfit serve DIR --candidate NAME`` serves the very
    model the scorecard measured. ``folder``: where to save it instead of the project's
    ``baselines/NAME`` (``taskfit retrain``); ``card``: more to record in its ``model.json``."""
    from taskfit.baselines.classical import RECIPES, ClassicalPredictor
    from taskfit.paths import classical_dir

    recipe, c = RECIPES[name], ws.config
    key = {"train": ws.train_fingerprint, "seed": c.data.seed, **recipe.key()}
    folder = folder or classical_dir(ws.project_dir, name)
    fitted: dict[str, Any] = {}

    def model() -> Any:
        if not fitted:
            from taskfit.baselines.classical import fit_classical, load_classical, save_classical

            fit_key = candidate_key(**key)
            fitted["m"] = load_classical(folder, fit_key)
            if fitted["m"] is None:
                fitted["m"] = fit_classical(recipe, ws.train, seed=c.data.seed, status=ws.reporter.status)
                save_classical(folder, fitted["m"], fit_key, {
                    "train_fingerprint": ws.train_fingerprint,
                    "task": c.task.model_dump(mode="json", by_alias=True),
                    "confidence_threshold": c.eval.confidence_threshold, "fallback": c.eval.fallback,
                    # what the training rows' personal data was replaced with: the server reads a
                    # request the same way, so that it answers what the scorecard measured
                    "privacy": c.data.privacy.model_dump(mode="json"),
                    **(card or {})})
            else:
                ws.reporter.status(f"{name}: using the model fitted on these training rows ({folder})")
        return fitted["m"]

    return Candidate(name, "baseline", key, lambda: ClassicalPredictor(model(), name),
                     size=lambda: {"params_m": model().params() / 1e6})


def _adapter_model(ws: Workspace, adapter: Path, merged: bool) -> Callable[[], Any]:
    """A loader of ``adapter`` on its own copy of the base model (the adapter is injected into
    it), folded into the base with ``merged``; it loads on first call, then returns the same model."""
    loaded: dict[str, Any] = {}

    def model() -> Any:
        if not loaded:
            from peft import PeftModel

            ws.reporter.status(f"loading adapter {adapter}")
            peft = PeftModel.from_pretrained(ws.load_model().model, str(adapter))
            loaded["m"] = (peft.merge_and_unload() if merged else peft).eval()
        return loaded["m"]

    return model


def _adapter_size(model: Any, adapter: Path) -> dict[str, float]:
    """The base's size (the adapter's own weights, LoRA and a trained head, left out) and the
    adapter's, in MB on disk."""
    params = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n or "modules_to_save" in n)
    return {"params_m": _model_size(model)["params_m"] - params / 1e6,
            "adapter_mb": sum(p.stat().st_size for p in adapter.glob("*.safetensors")) / 1e6}


def is_head_run(run_dir: Path) -> bool:
    """Whether a run trained a classification head (``train.classify_head``)."""
    from taskfit.models.head import read_head

    return read_head(RunDir(run_dir).adapter) is not None


def head_candidate(ws: Workspace, run_dir: Path, name: str = HEAD, merged: bool = False) -> Candidate:
    """A classification-head run as it is served: the base with the run's adapter and head, each
    row read once (``batch_size`` rows a pass), the label's softmax as the confidence; folded into
    the base with ``merged`` (as ``taskfit export --merged`` ships it)."""
    from taskfit.training.artifacts import find_adapter

    adapter = find_adapter(run_dir)
    loaded: dict[str, Any] = {}

    def model() -> Any:
        if not loaded:
            from taskfit.models.head import load_classifier

            ws.reporter.status(f"loading adapter {adapter} (classification head)")
            loaded["m"], loaded["head"] = load_classifier(ws.load_model().model, ws.tokenizer, adapter, merged)
        return loaded["m"]

    def build() -> Any:
        from taskfit.baselines.head import HeadClassifier

        m, head, labels = model(), loaded["head"], ws.config.task.labels or []
        if list(head.labels) != list(labels):
            raise ConfigError(f"{adapter}: the head was trained on the labels {list(head.labels)}, and "
                              f"task.labels are now {labels}",
                              hint="train again (`taskfit train`) for the labels as they are now")
        return HeadClassifier(name, m, ws.tokenizer, head, ws.config.eval.batch_size)

    def size() -> dict[str, float]:
        return _model_size(model()) if merged else _adapter_size(model(), adapter)

    return Candidate(name, "shipped" if merged else "fine-tuned",
                     {"weights": weights_digest(adapter), "head": True, "merged": merged}, build, local=True,
                     size=size, run_dir=run_dir.resolve(),
                     no_forgetting="" if merged else NO_HEAD_FORGETTING)


def trained_candidate(ws: Workspace, run_dir: Path, name: str = FINETUNED) -> Candidate:
    """A training run's model as it is served: the base with the run's adapter applied (not
    merged), or the fully trained model for ``method: full`` (a head run's: :func:`head_candidate`)."""
    if is_head_run(run_dir):
        return head_candidate(ws, run_dir, name)
    run = RunDir(run_dir)
    if (run.full_model / "config.json").exists():
        loaded: dict[str, Any] = {}

        def model() -> Any:
            if not loaded:
                from taskfit.models import load_model

                loaded["m"] = load_model(str(run.full_model), status=ws.reporter.status).model
            return loaded["m"]

        digest = weights_digest(run.full_model)
    else:
        from taskfit.training.artifacts import find_adapter

        adapter = find_adapter(run_dir)
        digest = weights_digest(adapter)
        model = _adapter_model(ws, adapter, merged=False)

    def size() -> dict[str, float]:
        if (run.full_model / "config.json").exists():
            return _model_size(model())
        return _adapter_size(model(), find_adapter(run_dir))

    def pair() -> tuple[Any, Any | None]:  # a full fine-tune is compared with the base loaded apart
        return model(), (ws.lm().model if (run.full_model / "config.json").exists() else None)

    constrained = ws.config.eval.constrained
    return Candidate(name, "fine-tuned", {"weights": digest},
                     lambda: _lm_predictor(ws, name, model(), constrained=constrained), local=True,
                     free=(lambda: _lm_predictor(ws, name, model(), constrained=False)) if _wants_free(ws) else None,
                     size=size, run_dir=run_dir.resolve(), forgetting=pair)


def merged_candidate(ws: Workspace, run_dir: Path, name: str) -> Candidate:
    """The run's adapter folded into the base (``taskfit export --merged``, ``serve --merged``)."""
    from taskfit.training.artifacts import find_adapter

    if is_head_run(run_dir):
        return head_candidate(ws, run_dir, name, merged=True)
    adapter = find_adapter(run_dir)
    model = _adapter_model(ws, adapter, merged=True)
    return Candidate(name, "shipped", {"weights": weights_digest(adapter), "merged": True},
                     lambda: _lm_predictor(ws, name, model(), constrained=ws.config.eval.constrained),
                     local=True, size=lambda: _model_size(model()), run_dir=run_dir.resolve())


def gguf_candidate(ws: Workspace, run_dir: Path, name: str, threads: int | None) -> Candidate:
    """The exported artifact: the base GGUF with the run's GGUF LoRA, run by llama.cpp (written
    first when missing)."""
    from taskfit.training.artifacts import find_adapter
    from taskfit.training.gguf_lora import export_gguf_lora

    folder = find_adapter(run_dir).parent / "gguf"
    if not (folder / "adapter.gguf").exists():
        export_gguf_lora(run_dir, status=ws.reporter.status)
    base = Path((folder / "base.txt").read_text(encoding="utf-8").strip())

    def build() -> Any:
        from taskfit.baselines.llama_cpp import LlamaCppPredictor, load_llama

        c, task = ws.config, ws.config.task
        budget = get_task(task.kind).answer_budget(task, c.eval, ws.tokenizer)
        ws.reporter.status(f"loading {base.name} with {folder / 'adapter.gguf'} in llama.cpp")
        llm = load_llama(base, folder / "adapter.gguf", n_ctx=c.train.max_seq_length + budget + 16, threads=threads)
        return LlamaCppPredictor(name, llm, ws.tokenizer, task, c.train.max_seq_length, budget,
                                 constrained=c.eval.constrained)

    def size() -> dict[str, float]:
        from taskfit.models.registry import gguf_reader

        return {"params_m": sum(int(t.n_elements) for t in gguf_reader(str(base)).tensors) / 1e6,
                "adapter_mb": (folder / "adapter.gguf").stat().st_size / 1e6}

    return Candidate(name, "shipped", {"weights": folder_digest(folder), "engine": "llama-cpp"}, build,
                     size=size, run_dir=run_dir.resolve())


# ---- running ----------------------------------------------------------------------------------
LONE = ("latency_p50_s", "latency_p95_s", "latency_rows", "alone_same_answer", "latency_cpu_share")


def time_alone(ws: Workspace, predictor: Any, rows: Sequence[Example], batched: Sequence[Prediction],
               local: bool = True) -> dict:
    """A predictor that answered ``eval.batch_size`` rows at a time answers the first
    ``eval.latency_rows`` rows again one at a time: the latency p50/p95 a lone request waits
    (the batched pass's time per row is what a query costs at that throughput, not a wait), and
    the share of those rows given the batched pass's answer (1.0 expected; a lower share is
    warned about). Empty for a predictor that answers one row at a time anyway. ``local``: a
    model computing here, whose share of its threads' CPU time is recorded too (an endpoint
    waits on the network instead)."""
    from taskfit.stats import percentile

    n, size = ws.config.eval.latency_rows, getattr(predictor, "batch_size", 1)
    sample = list(rows[:n])
    if not sample:
        return {}  # not asked for (eval.latency_rows 0, as `taskfit advise` scores)
    if size <= 1:
        return {"latency_rows": 0}  # its batched pass answered one row at a time: nothing to time apart
    import time

    import torch

    answer = {p.example_id: p.output for p in batched}
    times, same = [], 0
    predictor.batch_size = 1
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        with ws.reporter.bar(f"timing {predictor.name} one request at a time", len(sample)) as advance:
            for pred in predictor.predict(sample):
                times.append(pred.latency_s)
                same += pred.output == answer.get(pred.example_id)
                advance()
    finally:
        predictor.batch_size = size
    # the share of its threads' cores the process had while timing: low when other programs ran
    share = (time.process_time() - cpu) / max(1e-9, (time.perf_counter() - wall) * torch.get_num_threads())
    if same < len(sample):
        setting = getattr(predictor, "batch_setting", "eval.batch_size")
        ws.reporter.status(f"{predictor.name}: {len(sample) - same} of {len(sample)} rows answered one at a time "
                           f"differ from the batched answer ({setting} {size}); the scorecard counts "
                           f"the batched ones; set {setting}: 1 to evaluate one request at a time")
    return {"latency_p50_s": percentile(times, 50), "latency_p95_s": percentile(times, 95),
            "latency_rows": len(times), "alone_same_answer": same / len(sample),
            **({"latency_cpu_share": share} if local else {})}


def style_model(ws: Workspace) -> Any:
    """generate: the style classifier (reference replies against the base model's replies to
    ``eval.style_sample`` training inputs, cached like any prediction); None otherwise."""
    from taskfit.baselines.model import GenerativePredictor
    from taskfit.tasks.generate import StyleModel

    c = ws.config
    if not get_task(c.task.kind).style_classifier or not c.eval.style_sample:
        return None
    if ws._style is None:
        sample = ws.train[: c.eval.style_sample]
        cand = Candidate(STYLE_BASE, "internal", {"train": ws.train_fingerprint, "n": len(sample)}, lambda: None,
                         local=True)
        key = candidate_cache_key(ws, cand)
        cached = {p.example_id: p for p in read_cache(ws.predictions(STYLE_BASE), key).values()}
        if all(ex.id in cached for ex in sample):  # no model needed
            replies = [cached[ex.id] for ex in sample]
        else:
            base = GenerativePredictor(STYLE_BASE, ws.lm().model, ws.tokenizer, c.task, c.train.max_seq_length,
                                       c.eval.max_new_tokens, batch_size=c.eval.batch_size)
            with ws.reporter.bar("base-model replies for the style classifier", len(sample)) as advance, \
                    computing(ws, cand):
                replies, _ = run_cached(base, sample, ws.predictions(STYLE_BASE), key, on_item=advance)
        ws._style = StyleModel([ex.target for ex in ws.train], [p.output for p in replies], seed=c.data.seed)
    return ws._style


def _cached(path: Path, key: str, rows: Sequence[Any]) -> list[Prediction] | None:
    """Every row's prediction from the cache, or None when one is missing."""
    from taskfit.evaluation.runner import example_digest

    cached = read_cache(path, key)
    found = [cached.get(f"{ex.id}\0{example_digest(ex)}") for ex in rows]
    return None if any(p is None for p in found) else found  # type: ignore[return-value]


def _rekey(ws: Workspace, cand: Candidate, key: str, rows: Sequence[Any]) -> None:
    """Keep the answers an older taskfit saved under ``cand.legacy_key`` (its result and every row's
    prediction), under ``key``: what changed between the two keys decides no answer."""
    found = _stored(ws.result_path(cand.name), ws.predictions(cand.name),
                    candidate_cache_key(ws, replace(cand, key=cand.legacy_key)), rows)
    if found is None:
        return
    preds, saved = found
    write_cache(ws.predictions(cand.name), key, cand.name, rows, preds)
    saved["candidate_key"] = key
    ws.result_path(cand.name).write_text(json.dumps(saved, indent=1), encoding="utf-8")


def _saved(path: Path, key: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if data.get("candidate_key") == key else None


def _stored(result: Path, predictions: Path, key: str, rows: Sequence[Any]) -> tuple[list[Prediction], dict] | None:
    """Every row's prediction and the saved result, where both were saved under ``key``."""
    saved = _saved(result, key)
    preds = _cached(predictions, key, rows) if saved else None
    return (preds, saved) if preds is not None and saved is not None else None


def _elsewhere(ws: Workspace, name: str, key: str, rows: Sequence[Any]) -> tuple[list[Prediction], dict] | None:
    """Every row's prediction, and the figures the scorer does not compute, from another store of
    this held-out split where the same candidate (the same key) answered these rows: the whole
    split's predictions answer its first rows (``eval.max_rows``, ``taskfit advise``)."""
    for root in ws.other_stores():
        found = _stored(root / "results" / f"{name}.json", root / "predictions" / f"{name}.jsonl", key, rows)
        if found is not None:
            ws.reporter.status(f"{name}: every prediction is cached in {root.name}")
            return found[0], kept(found[1]["metrics"])
    return None


def _adopt_finetunes(ws: Workspace) -> None:
    """A fine-tune of all the training rows (not a learning-curve run) evaluated in another store
    of this held-out split, on rows that include this store's, joins this store, with its
    predictions of these rows: ``taskfit compare --rows N`` after ``taskfit run`` otherwise had only
    ``taskfit advise``'s learning-curve runs to decide on, and its verdict kept a fine-tune on 24
    rows where the one that would be deployed was trained on all of them."""
    from taskfit.evaluation.compare import is_curve_point

    rows = ws.eval_rows
    have = {p.stem for p in (ws.evals / "results").glob("*.json")}
    for root in ws.other_stores():
        if store_rows(root.name)[0] < len(rows):
            continue  # scored on fewer rows: it cannot answer all of these (so `compare` reads nothing there)
        for path in sorted((root / "results").glob("*.json")):
            name = path.stem
            if name in have or not name.startswith(FINETUNED) or is_curve_point(name):
                continue
            key = json.loads(path.read_text(encoding="utf-8")).get("candidate_key")
            found = _stored(path, root / "predictions" / f"{name}.jsonl", key, rows) if key else None
            if found is None:
                continue
            write_cache(ws.predictions(name), key, name, rows, found[0])
            ws.result_path(name).parent.mkdir(parents=True, exist_ok=True)
            ws.result_path(name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
            ws.reporter.status(f"{name}: its predictions of these rows taken from {root.name}")
            have.add(name)


def _twin(ws: Workspace, cand: Candidate, rows: Sequence[Any]) -> tuple[list[Prediction], dict] | None:
    """Every row's prediction, and the figures the scorer does not compute, from one of
    ``cand.same_as`` that answered these rows as the same model (see :class:`Candidate`)."""
    for other in cand.same_as:
        found = _stored(ws.result_path(other), ws.predictions(other),
                        candidate_cache_key(ws, replace(cand, name=other)), rows)
        if found is not None:
            ws.reporter.status(f"{cand.name}: every prediction is {other}'s, cached (the same weights)")
            return found[0], kept(found[1]["metrics"])
    return None


def _twin_free(ws: Workspace, cand: Candidate, sample: Sequence[Any]) -> list[Prediction] | None:
    """The free-decoding answers to ``sample`` of one of ``cand.same_as`` (see :func:`_twin`)."""
    for other in cand.same_as:
        key = candidate_cache_key(ws, replace(cand, name=other)) + "-free"
        loose = _cached(ws.predictions(f"{other}.unconstrained"), key, sample)
        if loose is not None:
            return loose
    return None


def evaluate(ws: Workspace, cand: Candidate) -> EvalResult:
    """Run (or resume) one candidate on the held-out rows, score it with the task's scorer, and
    save the result. When every prediction is cached, nothing is built: the cached predictions
    are scored again (a new threshold or fallback needs no new predictions) and the size figures
    come from the saved result."""
    from taskfit.tasks import score

    rows, c = ws.eval_rows, ws.config
    key = candidate_cache_key(ws, cand)
    saved = _saved(ws.result_path(cand.name), key)
    if saved is None and cand.legacy_key is not None:
        _rekey(ws, cand, key, rows)
        saved = _saved(ws.result_path(cand.name), key)
    preds = _cached(ws.predictions(cand.name), key, rows) if saved else None
    found = _elsewhere(ws, cand.name, key, rows) if preds is None else None
    if found is None and preds is None and cand.same_as:
        found = _twin(ws, cand, rows)
    if found is not None:
        preds, extra = found
        write_cache(ws.predictions(cand.name), key, cand.name, rows, preds)
    elif preds is None:
        predictor = cand.build()  # loaded (and merged) outside the autocast, as it is exported
        with computing(ws, cand):  # and its caches made in the precision it answers in
            with ws.reporter.bar(f"evaluating {cand.name}", len(rows)) as advance:
                preds, _ = run_cached(predictor, rows, ws.predictions(cand.name), key, on_item=advance)
            extra = {**cand.size(), **time_alone(ws, predictor, rows, preds, cand.local)}
    else:
        ws.reporter.status(f"{cand.name}: every prediction is cached")
        extra = kept(saved["metrics"])
        if cand.name == ENDPOINT:  # its prices as configured now (out of its key)
            extra.update(cand.size())
    if c.eval.latency_rows and "latency_rows" not in extra:  # predictions `taskfit advise` made untimed
        predictor = cand.build()
        with computing(ws, cand):
            extra = {**extra, **time_alone(ws, predictor, rows, preds, cand.local)}
    result = score(c.task, c.eval, cand.name, rows, preds, style=style_model(ws))
    metrics = result.metrics
    metrics.update(extra)
    sample = rows[: c.eval.generation_sample]
    if cand.free is not None and sample:
        loose = _cached(ws.predictions(f"{cand.name}.unconstrained"), key + "-free", sample)
        if loose is None and found is not None and cand.same_as:  # the twin's free answers too
            loose = _twin_free(ws, cand, sample)
            if loose is not None:
                write_cache(ws.predictions(f"{cand.name}.unconstrained"), key + "-free", cand.name, sample, loose)
        if loose is None:
            free = cand.free()
            with ws.reporter.bar(f"free decoding ({cand.name})", len(sample)) as advance, computing(ws, cand):
                loose, _ = run_cached(free, sample, ws.predictions(f"{cand.name}.unconstrained"),
                                      key + "-free", on_item=advance)
        metrics["free_valid_rate"] = sum(p.valid for p in loose) / len(loose)
    if "price_per_million_input_tokens" in metrics and not (metrics.get("prompt_tokens_mean")
                                                            or metrics.get("completion_tokens_mean")):
        # an endpoint that reports no token usage: its tokens and cost are unknown, not zero
        for unknown in ("prompt_tokens_mean", "completion_tokens_mean"):
            metrics.pop(unknown, None)
    elif "price_per_million_input_tokens" in metrics:
        metrics["cost_per_1k_usd"] = 1000 * (
            metrics["prompt_tokens_mean"] * metrics["price_per_million_input_tokens"]
            + metrics["completion_tokens_mean"] * metrics["price_per_million_output_tokens"]) / 1e6
    elif c.eval.price_per_hour:
        metrics["cost_per_1k_usd"] = 1000 * metrics["latency_mean_s"] * c.eval.price_per_hour / 3600
    save_result(ws.result_path(cand.name), result, key, cand.run_dir, cand.role)
    return result


# Raised whenever taskfit changes how the forgetting check measures (the probe's rendering, the
# figures), so that figures cached by an older taskfit are measured again.
FORGETTING = 1


def forgetting_path(ws: Workspace, name: str) -> Path:
    return ws.evals / "forgetting" / f"{name}.json"


def check_forgetting(ws: Workspace, cand: Candidate) -> ForgettingResult | None:
    """``eval.forgetting``: what the fine-tune ``cand`` cost outside the task, on the general probe
    set. Kept in the evaluation store (``forgetting/<candidate>.json``) under a key of the
    candidate's evaluation, the probe and its size, so a repeated evaluation measures nothing; a
    fine-tune the check does not apply to is recorded with the reason. None when the check is off
    or ``cand`` is no fine-tune (a baseline, a shipped form measured as its source)."""
    from taskfit.probes import GENERAL, load_probe, measure_forgetting

    spec = ws.config.eval.forgetting
    if not spec.enabled or (cand.forgetting is None and not cand.no_forgetting):
        return None
    evaluated = candidate_cache_key(ws, cand)
    key = _forgetting_key(ws, evaluated)
    path = forgetting_path(ws, cand.name)
    saved = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if saved.get("key") == key:
        ws.reporter.status(f"{cand.name}: the forgetting check is cached")
        return _forgetting_record(saved)
    if cand.forgetting is None:
        result = ForgettingResult(cand.name, GENERAL.source, GENERAL.licence, skipped=cand.no_forgetting)
    else:
        probe = load_probe(GENERAL, spec.items)
        tuned, base = cand.forgetting()
        with ws.reporter.bar(f"forgetting check: {cand.name} and the base on the general probe",
                             len(probe.items)) as advance, ws.hardware.computing():
            result = measure_forgetting(cand.name, ws.tokenizer, tuned, base, probe, on_item=advance)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "evaluated": evaluated, **asdict(result)}), encoding="utf-8")
    return result


def _forgetting_key(ws: Workspace, evaluated: str) -> str:
    """What decides a forgetting check: the candidate's evaluation (its weights), the probe, how
    many of its items are read and the precision the models answer in."""
    from taskfit.probes import GENERAL

    return candidate_key(forgetting=FORGETTING, evaluated=evaluated, probe=GENERAL.digest,
                         items=ws.config.eval.forgetting.items, **_precision(ws))


def _forgetting_record(data: dict[str, Any]) -> ForgettingResult:
    return ForgettingResult(**{k: v for k, v in data.items() if k not in ("key", "evaluated")})


def load_forgetting(ws: Workspace) -> list[ForgettingResult]:
    """The forgetting check of each candidate saved in the evaluation store, where it was made for
    the evaluation saved now and the probe and settings of now (a later evaluation of other weights
    under the same name, or another eval.forgetting.items, leaves an older check out); none when
    ``eval.forgetting.enabled`` is false."""
    if not ws.config.eval.forgetting.enabled:
        return []
    out = []
    for path in sorted((ws.evals / "forgetting").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        result = ws.result_path(path.stem)
        evaluated = json.loads(result.read_text(encoding="utf-8")).get("candidate_key") if result.exists() else None
        if evaluated and data.get("key") == _forgetting_key(ws, evaluated):
            out.append(_forgetting_record(data))
    return out


# What the scorer does not compute and a cached candidate keeps from its saved result.
_KEPT = ("params_m", "adapter_mb", "price_per_million_input_tokens", "price_per_million_output_tokens")


def kept(metrics: dict[str, Any]) -> dict[str, Any]:
    """Of a saved result's metrics, those a re-score from cached predictions cannot compute: the
    size and price figures and, where it was timed (:func:`time_alone`), a lone request's latency."""
    keys = _KEPT + (LONE if "latency_rows" in metrics else ())
    return {k: v for k, v in metrics.items() if k in keys}


def save_result(path: Path, result: EvalResult, key: str, run_dir: Path | None = None, role: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"candidate_key": key, "run_dir": str(run_dir) if run_dir else None,
                                "role": role, **asdict(result)}, indent=1), encoding="utf-8")


def load_saved(root: Path) -> list[tuple[EvalResult, Path | None]]:
    """Each saved result with the training run it came from (for its loss curve), if any."""
    out = []
    for path in sorted((root / "results").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for meta in ("candidate_key", "role"):
            data.pop(meta, None)
        run_dir = data.pop("run_dir", None)
        out.append((EvalResult(**data), Path(run_dir) if run_dir else None))
    return out


# ---- the stage commands -----------------------------------------------------------------------
def baseline_project(project: Path | Workspace, reporter: Any = None, only: Sequence[str] | None = None,
                     threads: int | None = None) -> list[EvalResult]:
    """``taskfit baseline``: evaluate every applicable baseline (or ``only`` those named)."""
    ws = project if isinstance(project, Workspace) else Workspace.open(project, reporter, threads,
                                                                        allow_secrets=True)
    _needs_examples(ws, "baseline")
    return [evaluate(ws, cand) for cand in baseline_candidates(ws, only)]


def _needs_examples(ws: Workspace, command: str) -> None:
    if ws.preference:
        raise ConfigError(f"`taskfit {command}` scores answers to labelled examples; this project trains "
                          "on preference pairs (train.method: dpo)",
                          hint="`taskfit run` (or `taskfit train`) reports the held-out preference accuracy "
                               "before and after training")


def eval_project(project: Path | Workspace, run_dir: Path | None = None, reporter: Any = None,
                 name: str | None = None, threads: int | None = None, engine: str = "transformers",
                 merged: bool = False) -> EvalResult:
    """``taskfit eval [--run RUN]``: evaluate a trained run (default: the project's latest finished
    one) as a candidate on the same held-out rows.

    ``engine="llama-cpp"`` evaluates the exported artifact instead (the base GGUF with the run's
    GGUF LoRA) as ``fine-tuned-gguf``, and ``merged`` the adapter folded into the base as
    ``fine-tuned-merged``: each row beside ``fine-tuned`` shows whether the shipped form answers as
    the evaluated one."""
    ws = project if isinstance(project, Workspace) else Workspace.open(project, reporter, threads,
                                                                        allow_secrets=True)
    _needs_examples(ws, "eval")
    run = resolve_run(ws.project_dir, run_dir).root if run_dir is not None else ws.latest_run().root
    if run_dir is None:
        ws.reporter.status(f"evaluating the latest finished run: {run}")
    if engine not in ("transformers", "llama-cpp"):
        raise ConfigError(f"--engine {engine}: choose transformers or llama-cpp")
    suffix = "-gguf" if engine == "llama-cpp" else "-merged" if merged else ""
    synthetic = SYNTHETIC_SUFFIX if trained_on_synthetic(run) else ""
    name = name or f"{HEAD if is_head_run(run) else FINETUNED}{synthetic}{suffix}"
    if not name.startswith(FINETUNED):
        name = f"{FINETUNED}-{name}"
    style_model(ws)  # needs the plain base model, before an adapter is applied to a copy
    if engine == "llama-cpp":
        cand = gguf_candidate(ws, run, name, threads)
    elif merged:
        cand = merged_candidate(ws, run, name)
    else:
        cand = trained_candidate(ws, run, name)
    result = evaluate(ws, cand)
    check_forgetting(ws, cand)
    _report_evaluation(ws, RunDir(run), result)
    return result


def trained_on_synthetic(run_dir: Path) -> bool:
    """Whether a run's training rows included synthetic ones (data.synthetic: include)."""
    manifest = json.loads(RunDir(run_dir).manifest.read_text(encoding="utf-8"))
    return bool(manifest.get("data", {}).get("synthetic_train_rows"))


def _report_evaluation(ws: Workspace, run: RunDir, result: EvalResult) -> None:
    """``train.report_to``: the held-out figures join the run's tracked training curves."""
    from taskfit.training.tracking import log_evaluation

    if ws.config.train.report_to == "none":
        return
    steps = json.loads(run.manifest.read_text(encoding="utf-8")).get("training", {}).get("steps", 0)
    if log_evaluation(ws.config.train.report_to, ws.project_dir, run, ws.config.task.name, result.candidate,
                      result.metrics, result.n, steps, warn=ws.reporter.status):
        ws.reporter.status(f"{result.candidate}: held-out figures sent to {ws.config.train.report_to}")


def _rescore(ws: Workspace, saved: EvalResult) -> EvalResult:
    """A saved candidate scored again with the scorer and settings of now; what the scorer does
    not compute (size, cost, free-decoding validity) is kept from the evaluation."""
    from taskfit.tasks import score

    if saved.kind == "preference":
        return saved
    preds = {p.example_id: p for p in read_predictions(ws.predictions(saved.candidate))}
    rows = ws.eval_rows
    if any(ex.id not in preds for ex in rows):
        return saved
    fresh = score(ws.config.task, ws.config.eval, saved.candidate, rows, [preds[ex.id] for ex in rows],
                  style=style_model(ws))
    fresh.metrics.update({k: v for k, v in saved.metrics.items() if k not in fresh.metrics})
    fresh.metrics.update(kept(saved.metrics))  # a lone request's latency, where it was timed apart
    return fresh


@dataclass
class Comparison:
    scorecard: Scorecard
    markdown: Path
    json: Path
    report_html: Path


def agreements(predictions: dict[str, list[Prediction]]) -> list[str]:
    """How often each other fine-tuned candidate (an export on another engine, say) answers as the
    fine-tuned candidate it derives from does, row by row: the longest other fine-tuned name it
    extends (``fine-tuned-head-merged`` against ``fine-tuned-head``, ``fine-tuned-head`` against
    ``fine-tuned``)."""
    notes = []
    for name, preds in predictions.items():
        sources = [n for n in predictions if n.startswith(FINETUNED) and name.startswith(n + "-")]
        if not sources:
            continue
        source = max(sources, key=len)
        trained = {p.example_id: p.output for p in predictions[source]}
        pairs = [(trained[p.example_id], p.output) for p in preds if p.example_id in trained]
        same = sum(a == b for a, b in pairs)
        if pairs:
            notes.append(f"{name} gives the same answer as {source} on {same} of {len(pairs)} held-out rows "
                         f"({100 * same / len(pairs):.1f}%).")
    return notes


CUT_SHORT_SHARE = 0.1  # a candidate with more of its answers stopped by the token budget is warned of


def cut_short_warnings(ws: Workspace, predictions: dict[str, list[Prediction]]) -> list[str]:
    """A warning for each candidate that wrote answers to the end of the kind's token budget
    (``eval.max_new_tokens``) on more than :data:`CUT_SHORT_SHARE` of the rows: its answers were
    cut, and its scores measure the cut (a walkthrough's replies, 60 tokens for references of
    about 65, scored 0% on the house rules with no word of why)."""
    from taskfit.tasks import get_task

    kind = get_task(ws.config.task.kind)
    if kind.scores_labels:  # a label's tokens are its answer, never cut
        return []
    budget = kind.answer_budget(ws.config.task, ws.config.eval, ws.tokenizer)
    cut = {name: sum(p.completion_tokens >= budget for p in preds) for name, preds in predictions.items()}
    cut = {name: n for name, n in cut.items() if n > CUT_SHORT_SHARE * len(predictions[name])}
    if not cut:
        return []
    targets = [r.target for r in ws.eval_rows if isinstance(getattr(r, "target", None), str)]
    needed = max((len(ws.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in targets), default=0) + 1
    return [f"{name}: {n} of {len(predictions[name])} answers stopped at the token budget ({budget}, "
            f"eval.max_new_tokens), cut short; the held-out reference answers take up to {needed} tokens with "
            "the end of turn: raise eval.max_new_tokens if the answers should be whole." for name, n in cut.items()]


def dropped_chunks_warnings(predictions: dict[str, list[Prediction]]) -> list[str]:
    """A warning for each candidate (RAG) whose prompts could not hold every chunk it retrieved
    (``details.dropped_chunks``): it answered from fewer than ``baselines.top_k``, and its scores
    measure that."""
    from taskfit.baselines.model import MAX_PROMPT_TOKENS

    out = []
    for name, preds in predictions.items():
        dropped = [p.details["dropped_chunks"] for p in preds if p.details.get("dropped_chunks")]
        if dropped:
            out.append(f"{name}: on {len(dropped)} of {len(preds)} rows the prompt could not hold every chunk "
                       f"retrieved ({sum(dropped)} dropped in all, the lowest-ranked, to stay under "
                       f"{MAX_PROMPT_TOKENS} prompt tokens): lower baselines.top_k or baselines.chunk_words "
                       "if they should all be read.")
    return out


def unlisted_labels_notes(task: Any, names: Sequence[str]) -> list[str]:
    """classify: a note where prompt-only is on the scorecard and the system prompt it is asked
    with does not name every label (no ``{labels}``: ``taskfit init`` leaves them out above
    :data:`~taskfit.project.LISTED_LABELS`). The data check's card said so once; the scorecard,
    where the row is read, did not, and 151 intents' prompt-only read as a prompted model's score."""
    if task.kind != "classify" or PROMPT_ONLY not in names or not task.labels:
        return []
    text = task.system_text
    named = sum(label in text for label in task.labels)
    if named == len(task.labels):
        return []
    return [f"prompt-only was not told the labels: task.system_prompt names {named} of the {len(task.labels)}"
            + (" (it has no {labels})" if "{labels}" not in task.system_prompt else "")
            + ", so the base model picked, by label scoring, among labels no instruction named: its score is no "
            "fair test of a prompted model. Listing them costs every prompt about 4 tokens a label; few-shot "
            "sees some in its examples, and the fine-tune learns them from the rows."]


def kept_by_verdict(project_dir: Path) -> tuple[str, str, Path] | None:
    """(the candidate the verdict keeps, the verdict, its scorecard.json) of the project's
    scorecard on its largest held-out set (the newest among equals: `taskfit advise` writes one
    on a sample); None when no scorecard names one."""
    def rank(path: Path) -> tuple[bool, int, float]:  # the whole split's stores first, then by rows
        rows, sample = store_rows(path.parent.name) or (0, True)
        return (not sample, rows, path.stat().st_mtime)

    for path in sorted((project_dir / "evals").glob("*/scorecard.json"), key=rank, reverse=True):
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if saved.get("keep"):
            return saved["keep"], saved.get("verdict", ""), path
        return None  # the largest set's scorecard keeps none (yet), or predates the field
    return None


def compare_project(project: Path | Workspace, reporter: Any = None, threads: int | None = None) -> Comparison:
    """``taskfit compare``: the scorecard of every candidate evaluated on the current held-out
    split, written as scorecard.md, scorecard.json and report.html in the evaluation directory."""
    from taskfit.evaluation import report
    from taskfit.evaluation.review import load_reviews

    ws = project if isinstance(project, Workspace) else Workspace.open(project, reporter, threads,
                                                                        allow_secrets=True)
    root = ws.evals
    _adopt_finetunes(ws)
    saved = load_saved(root)
    results = [_rescore(ws, r) for r, _ in saved]
    curves = {f"training and validation loss ({r.candidate})": run / "plots" / "loss.png"
              for r, run in saved if run is not None and (run / "plots" / "loss.png").exists()}
    if not results:
        raise ConfigError(f"{root}: no candidate has been evaluated on this held-out split",
                          hint="run `taskfit run`, or `taskfit baseline` (and `taskfit eval` after "
                               "`taskfit train`) first")
    card = build_scorecard(results, ws.config.eval.thresholds, forgetting=load_forgetting(ws),
                           max_drop=ws.config.eval.forgetting.max_drop)
    rewritten = answers_changed_warning(ws.prepared.card.privacy)
    if rewritten:  # both sides of the comparison were rewritten alike: no score shows it
        card.warnings.append(f"data: {rewritten}")
    card.reviews = [r.sentence() for r in load_reviews(root)]
    predictions = {r.candidate: read_predictions(ws.predictions(r.candidate)) for r in results}
    card.warnings += cut_short_warnings(ws, predictions) + dropped_chunks_warnings(predictions)
    task = ws.config.task
    card.notes += (unlisted_labels_notes(task, [r.candidate for r in results]) + agreements(predictions)
                   + card.versus_real_sentences() + card.versus_endpoint_sentences())
    md = ([f"# Scorecard: {task.name}", "", f"Success means: {task.success}", "", card.verdict, ""]
          + [f"> {w}" for w in card.warnings] + [f"- {r}" for r in card.reviews + card.notes]
          + ["", *card.markdown(), "",
             f"{len(ws.eval_rows)} held-out rows; paired tests against the best baseline by {card.main}."])
    md_path = root / "scorecard.md"
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")
    json_path = root / "scorecard.json"
    json_path.write_text(json.dumps({"task": task.name, "success": task.success, **card.to_json()}, indent=2),
                         encoding="utf-8")
    html = report.write_scorecard_report(root, f"taskfit: {task.name}", card, predictions,
                                         data_card=ws.prepared.card.rows_summary(), extra_plots=curves,
                                         success=task.success, advice=_advice_html(root))
    return Comparison(scorecard=card, markdown=md_path, json=json_path, report_html=html)


ADVICE = "advice.json"  # taskfit advise's advice, in the evaluation directory it scored on


def _advice_html(root: Path) -> str:
    """The report's section for ``taskfit advise``'s advice on this evaluation directory, if any."""
    from taskfit.evaluation.advice import Advice
    from taskfit.evaluation.report import advice_section

    path = root / ADVICE
    if not path.exists():
        return ""
    advice = Advice.from_json(json.loads(path.read_text(encoding="utf-8")))
    return advice_section(advice, root / "plots" / "learning_curve.png")


def review_export_project(project: Path, a: str, b: str, n: int = 50, out: Path | None = None,
                          reporter: Any = None) -> dict[str, Path]:
    """``taskfit review export``: a blind A/B page for two evaluated candidates."""
    from taskfit.evaluation.review import export_review

    ws = Workspace.open(project, reporter, allow_secrets=True)
    preds = {}
    for name in (a, b):
        preds[name] = read_predictions(ws.predictions(name))
        if not preds[name]:
            raise ConfigError(f"{name}: no predictions on this held-out split",
                              hint="evaluate it first (`taskfit baseline` or `taskfit eval`)")
    return export_review(out or ws.evals / "review", ws.eval_rows, a, preds[a], b, preds[b], n,
                         seed=ws.config.data.seed)


def review_import_project(project: Path, verdicts: Path, key: Path | None = None, reporter: Any = None) -> Any:
    """``taskfit review import``: un-blind the verdicts and keep the result for ``compare``."""
    from taskfit.evaluation.review import import_review, save_review

    ws = Workspace.open(project, reporter, allow_secrets=True)
    key = key or verdicts.parent / "review_key.json"
    if not key.exists():
        key = ws.evals / "review" / "review_key.json"
    if not key.exists():
        raise ConfigError(f"{key}: no review key", hint="pass --key, the review_key.json written by the export")
    result = import_review(verdicts, key)
    save_review(ws.evals, result)
    return result


@dataclass
class PromptfooExport:
    """What ``taskfit export --format promptfoo`` wrote, and what it was written for."""

    paths: dict[str, Path]  # config, tests, prompts
    rows: int  # held-out rows, one test each
    serve_url: str
    served: str  # the model name taskfit serve answers under (task.name)
    run: Path | None  # the run whose task the taskfit prompts are rendered with (None: the project's)
    endpoint: str | None  # the endpoint baseline's model, when configured


def export_promptfoo_project(project: Path, run: Path | None = None, out: Path | None = None,
                             serve_url: str | None = None, reporter: Any = None) -> PromptfooExport:
    """``taskfit export --format promptfoo``: the held-out rows candidates are scored on, the task
    kind's checks and the candidates (``taskfit serve``, the endpoint baseline) as a promptfoo
    configuration (:mod:`taskfit.evaluation.promptfoo`), in ``out`` (default: the evaluation
    directory's ``promptfoo/``). The ``taskfit serve`` prompts are rendered with the task of
    ``run`` (default: the latest finished run, else the project's task), as serving renders them."""
    from taskfit.config import load_config
    from taskfit.evaluation.promptfoo import write_promptfoo
    from taskfit.serve.config import ServeSpec
    from taskfit.workflows.workspace import latest_finished_run

    ws = Workspace.open(project, reporter, allow_secrets=True)
    _needs_examples(ws, "export --format promptfoo")
    root = resolve_run(ws.project_dir, run).root if run is not None else latest_finished_run(ws.project_dir)
    served = ws.config.task
    if root is not None and RunDir(root).config.exists():
        served = load_config(RunDir(root).config).task  # what `taskfit serve` renders the run's requests with
    if serve_url is None:
        defaults = ServeSpec.model_fields
        serve_url = f"http://{defaults['host'].default}:{defaults['port'].default}/v1"
    rows = ws.eval_rows
    try:
        paths = write_promptfoo(out or ws.evals / "promptfoo", ws.config.task, rows, serve_url, served,
                                head=root is not None and is_head_run(root), endpoint=ws.config.baselines.endpoint,
                                max_new_tokens=ws.config.eval.max_new_tokens)
    except ValueError as exc:  # a task kind that cannot say how promptfoo should check its answers
        raise ConfigError(str(exc), hint="add promptfoo_asserts(spec, example) to the kind's Task object") from None
    endpoint = ws.config.baselines.endpoint
    return PromptfooExport(paths, len(rows), serve_url, ws.config.task.name, root,
                           endpoint.model if endpoint is not None else None)
