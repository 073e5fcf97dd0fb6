"""The model side of the server: one base model, the adapters beside it, and one worker thread
that decodes waiting requests together.

Batching is continuous: requests wait in a bounded queue, and between two decoding steps of the
running batch the worker takes every waiting generation request that fits (up to
``limits.max_batch`` running), whatever its adapter, because PEFT can apply a different LoRA
adapter to each row of one batch: it reads their prompts and they join the running batch
(:class:`~taskfit.decoding.Decoder`), so a request never waits for a long reply to finish, and a
finished reply is answered at once. With ``limits.gather`` above 1, while a batch runs, waiting
requests are taken in groups, since reading several prompts in one pass costs each less than
reading them one by one: a group is taken once it is that large or once its oldest request has
waited ``limits.gather_steps`` steps (after the rule of text-generation-inference's router, whose
``max_waiting_tokens`` plays the part of ``gather_steps`` and whose ``waiting_served_ratio`` sizes
the group against the running batch); an idle worker takes what waits at once. A request to a
``classify`` adapter is answered by label
scoring (a valid label and its confidence, never free text); the classify requests waiting for
the same adapter are scored together as one batch (up to ``limits.max_batch``), exactly as
evaluation scores a batch of rows, between two steps of the running batch. One to a
classification-head adapter (``train.classify_head``) is answered by its head, which runs its own
classifier over the base's weights, batched the same way. The worker is the only thread that
touches the model, so adapters are loaded and unloaded when no batch is running (a load waits
for the running batch to finish, and takes no new requests into it meanwhile).

A request to an adapter trained on a task is asked exactly as evaluation asked that adapter: the
same rendering and cut to the run's ``train.max_seq_length`` (:func:`task_prompt`), the same
answer grammar (:func:`~taskfit.decoding.answer_grammar`), the same label scorer and fallback
policy (:func:`~taskfit.tasks.classify.with_fallback`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import queue
import threading
import time
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from taskfit.baselines.model import answer_room, prompt_ids
from taskfit.baselines.protocol import LabelScorer
from taskfit.config import TaskSpec
from taskfit.decoding import Decoder, Sampling, answer_grammar, json_schema_grammar
from taskfit.errors import ConfigError, TaskfitError
from taskfit.records import Example
from taskfit.tasks import get_task
from taskfit.serve.config import AdapterSpec, ServeSpec
from taskfit.tasks.classify import with_fallback

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


class QueueFull(TaskfitError):
    """More requests are waiting than ``limits.queue`` allows."""


@dataclass(frozen=True)
class Trained:
    """What a run directory says of how its adapter was trained and evaluated."""

    task: TaskSpec | None = None
    eval: Any = None  # the run's EvalSpec (threshold, fallback, answer budget)
    base: str | None = None  # the base model's name
    max_length: int | None = None  # train.max_seq_length: prompts are cut to it, as in training
    privacy: Any = None  # the run's data.privacy: what counts as personal data in its requests


@dataclass
class Served:
    """One model name clients can ask for: the base, or an adapter with the task it was trained on."""

    name: str
    adapter: str | None  # the PEFT adapter name; None = the base model
    parent: str | None
    task: TaskSpec | None = None
    threshold: float | None = None
    fallback: str | None = None
    path: Path | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    scorer: LabelScorer | None = None  # classify: the label scorer
    head: bool = False  # a classification-head adapter: its scorer holds its own model, and it only classifies
    grammar: str | None = None  # extract: the task's answer grammar, always enforced
    max_length: int | None = None  # the run's train.max_seq_length (prompts are cut to it)
    max_new_tokens: int | None = None  # the run's answer budget (eval.max_new_tokens): the default
    room: int = 0  # tokens a cut prompt leaves for the answer, as in training (answer_room)
    privacy: Any = None  # the run's data.privacy: the request log redacts this model's rows with it
    classical: Any = None  # a classical model (taskfit.serve.classical), answered beside the engine
    version: str | None = None  # the registry version answering under this name (taskfit.lifecycle)
    prefix: Any = None  # the task's prompt prefix, read once by this model (taskfit.models.prefix)


@dataclass
class Result:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    confidence: float | None = None
    fallback: bool = False
    label: str | None = None


@dataclass
class Job:
    """One chat completion waiting for, or in, the worker."""

    model: Served
    prompt: list[int]
    sampling: Sampling
    score_labels: bool
    on_text: Callable[[str], None] | None = None
    on_done: Callable[[Result | BaseException], None] = lambda r: None
    cancelled: bool = False
    example: Example | None = None  # the request as one example (what a classical model reads)
    step: int = 0  # the engine's decoding steps when it was queued (how long it has waited, in steps)


@lru_cache(maxsize=64)
def schema_grammar(schema_json: str, style: str = "spaced") -> str:
    """A request's JSON schema (as JSON text: its key order is the order the answer's keys take)
    as a grammar with the separators of ``style`` (an extract model's task.json_style, as it was
    trained), compiled once per schema."""
    return json_schema_grammar(json.loads(schema_json), style)


def _run_task(path: Path) -> Trained:
    """The task, eval settings, base model and sequence length a run directory was trained with."""
    from taskfit.config import load_config

    for folder in (path, path.parent):
        resolved = folder / "config.resolved.yaml"
        if resolved.exists():
            cfg = load_config(resolved)
            return Trained(cfg.task, cfg.eval, cfg.model.name, cfg.train.max_seq_length, cfg.data.privacy)
    return Trained()


def task_prompt(tokenizer: Any, served: Served, example: Example, score_labels: bool) -> list[int]:
    """The prompt ids a request to a task adapter is answered after: those evaluation used for
    the same example (the label scorer's prompt when labels are scored, else the generation
    prompt), rendered and cut to the run's ``train.max_seq_length`` exactly as in training."""
    if score_labels:
        return served.scorer.prompt_ids(example)
    return prompt_ids(tokenizer, served.task, example, served.max_length, served.room)


class Engine:
    """Loads the models and answers :class:`Job` s on its worker thread.

    One thread does all of it: loading, holding the weights, adapter loads and unloads, every
    pass. On a CPU that multiplies bfloat16 natively, a second thread computing on the same
    process made each decoding step about twice as slow (20 ms against 40 on SmolLM2-135M here,
    docs/serving.md), so the models are loaded on the thread that later serves them."""

    def __init__(self, spec: ServeSpec, status: Callable[[str], None] = lambda m: None):
        self.spec = spec
        self.status = status
        self.models: dict[str, Served] = {}
        self.queue: collections.deque[Job] = collections.deque()
        self.tasks: collections.deque[tuple[Callable[[], Any], concurrent.futures.Future]] = collections.deque()
        self.cond = threading.Condition()
        self.stopping = False
        self.on_batch: Callable[[int], None] = lambda n: None
        self._thread: threading.Thread | None = None  # the one thread that touches the model
        self._calls: "queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future]]" = queue.SimpleQueue()
        self._worker: concurrent.futures.Future | None = None  # the serving loop, once started
        self._tokenizer_lock = threading.Lock()
        self._peft = False
        self.mixed = True  # mixed-adapter batches (not with DoRA adapters)
        self.steps = 0  # decoding steps taken so far
        self.hardware: Any = None  # what the model computes in (set by load)
        self._precision: contextlib.ExitStack | None = None  # the serving loop's, while it runs

    # ---- loading ----------------------------------------------------------------------------
    def base_model(self) -> tuple[str, dict[str, Trained]]:
        """The base model to load, and each adapter's task, eval settings and base."""
        from taskfit.training.artifacts import find_adapter

        for adapter in self.spec.adapters_by_path.values():
            find_adapter(adapter.path)  # a wrong path fails now, not after the base has loaded
        tasks = {name: _run_task(a.path) for name, a in self.spec.adapters_by_path.items()}
        base = self.spec.base
        if base is None:
            trained_on = {t.base for t in tasks.values() if t.base}
            if len(trained_on) > 1:
                raise ConfigError(f"the adapters were trained on different base models ({sorted(trained_on)})",
                                  hint="serve one base model per server; set base: in serve.yaml")
            base = next(iter(trained_on), "smollm2-135m")
        return base, tasks

    def name_base(self, base: str) -> None:
        import re

        from taskfit.models.prefix import PrefixCache

        short = re.sub(r"[^A-Za-z0-9._:-]", "-", Path(base).name).lstrip("-._:")[:64] or "base"
        self.base_name = self.spec.base_name or short
        # chat requests without a system prompt share the template's header (and its default system prompt)
        self.models[self.base_name] = Served(name=self.base_name, adapter=None, parent=None,
                                             prefix=PrefixCache.for_task(self.tokenizer, None))

    def load(self) -> None:
        """Load the base model and the adapters (on the engine's thread); return when done."""
        self._on_thread(self._load).result()

    def load_base(self, base: str) -> None:
        """Load ``base`` into a server started without a language model (classical models alone),
        when the registry it follows gets its first adapter version: on the engine's thread,
        between batches (:meth:`between_batches`); the classical models keep serving as they did."""
        self.spec = self.spec.model_copy(update={"base": base})
        self._load()
        if self._precision is not None:  # the serving loop runs (this is its thread): it now computes
            self._precision.enter_context(self.hardware.computing())  # as evaluation did, from here on

    def _load(self) -> None:
        from taskfit.config import TrainSpec
        from taskfit.models import load_model
        from taskfit.training.hardware import resolve_hardware

        # GPU and bf16 when there is one; bfloat16 autocast where evaluation answers under it
        self.hardware = hw = resolve_hardware(TrainSpec(threads=self.spec.threads, dtype=self.spec.dtype))
        base, tasks = self.base_model()
        self.status(f"loading base model {base}")
        lm = load_model(base, status=self.status, dtype=hw.dtype, device=hw.device)
        self.model, self.tokenizer = lm.model, lm.tokenizer
        self.context = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)
        self.name_base(base)
        for name, adapter in self.spec.adapters_by_path.items():
            self._add_adapter(name, adapter, tasks[name])
        if self.spec.merged:
            self.status("merging the adapter into the base model")
            del self.models[self.base_name]
            if self._peft:
                self.model = self.model.merge_and_unload()
                self._peft = False
            for served in self.models.values():
                served.adapter = None
                if served.head:  # folds into the weights it shares with the base, no longer served
                    served.scorer.model = served.scorer.model.merge_and_unload()
                elif served.scorer is not None:
                    served.scorer.model = self.model
        # The weights as the autocast reads them, not cast again each pass (a head's classifier
        # shares them); not with DoRA adapters (not mixed), whose norms are computed from them.
        if self.mixed:
            hw.hold(self.model, *(s.scorer.model for s in self.models.values() if s.scorer is not None))
        if hw.autocast:
            self.status("computing under bfloat16 autocast (this CPU multiplies bfloat16 natively), "
                        "as evaluation does")

    def served(self, name: str, spec: AdapterSpec, run: Trained, path: Path, adapter: str | None = None) -> Served:
        """What clients see of an adapter: its task, threshold and fallback, answer grammar, and
        the run's sequence length and answer budget. ``adapter``: its PEFT name (default ``name``)."""
        task, ev = run.task, run.eval
        served = Served(name=name, adapter=adapter or name, parent=self.base_name, task=task, path=path,
                        threshold=spec.confidence_threshold if spec.confidence_threshold is not None
                        else (ev.confidence_threshold if ev else None),
                        fallback=spec.fallback or (ev.fallback if ev else None),
                        max_length=run.max_length, max_new_tokens=ev.max_new_tokens if ev else None,
                        privacy=run.privacy)
        if task is not None:
            from taskfit.models.prefix import PrefixCache

            served.room = answer_room(self.tokenizer, task, ev.max_new_tokens)
            with self._tokenizer_lock:
                served.prefix = PrefixCache.for_task(self.tokenizer, task)
        if task is not None and not get_task(task.kind).scores_labels:
            served.grammar = answer_grammar(task)  # None for free text
        return served

    def _add_adapter(self, name: str, spec: AdapterSpec, run: Trained) -> Served:
        if name in self.models:
            raise ConfigError(f"model name {name!r} is already served")
        self.models[name] = served = self.load_adapter(name, spec, run)
        return served

    def load_adapter(self, name: str, spec: AdapterSpec, run: Trained, adapter: str | None = None) -> Served:
        """Load the adapter at ``spec.path`` under the PEFT name ``adapter`` (default ``name``) and
        return what would serve it as ``name``, without serving it (the registry's versions are
        loaded under their own ids, then switched to)."""
        from peft import PeftModel

        from taskfit.models.head import read_head
        from taskfit.training.artifacts import find_adapter

        adapter = adapter or name
        path = find_adapter(spec.path)
        if read_head(path) is not None:
            return self._add_head(name, spec, run, path)
        self.status(f"loading adapter {name} from {path}")
        try:
            if not self._peft:
                self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=adapter)
                self._peft = True
            else:
                self.model.load_adapter(str(path), adapter_name=adapter)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot load this adapter onto {self.base_name} "
                              f"({str(exc).splitlines()[0]})") from None
        self.model.eval()
        if getattr(self.model.peft_config[adapter], "use_dora", False):
            self.mixed = False
        served = self.served(name, spec, run, path, adapter)
        if served.task is not None and get_task(served.task.kind).scores_labels:
            from taskfit.baselines.model import LabelScoringPredictor

            served.scorer = LabelScoringPredictor(name, self.model, self.tokenizer, served.task,
                                                  max_length=served.max_length)
            served.scorer.prefix = served.prefix  # one read of the prefix for the adapter's replies and labels
        return served

    def _add_head(self, name: str, spec: AdapterSpec, run: Trained, path: Path) -> Served:
        """A classification-head adapter: its own classifier over the base's weights (shared, not
        copied; :func:`~taskfit.models.head.load_classifier`), answering as its evaluation did."""
        from taskfit.baselines.head import HeadClassifier
        from taskfit.models.head import load_classifier

        if run.task is None:
            raise ConfigError(f"{path}: a classification-head adapter needs the run it was trained in "
                              "(config.resolved.yaml beside the adapter directory)",
                              hint="serve the run directory `taskfit train` wrote")
        self.status(f"loading adapter {name} from {path} (classification head)")
        model, head = load_classifier(self.model, self.tokenizer, path)
        if list(head.labels) != list(run.task.labels or []):
            raise ConfigError(f"{path}: the head's labels differ from the run's task.labels")
        served = self.served(name, spec, run, path)
        served.head = True
        served.scorer = HeadClassifier(name, model, self.tokenizer, head)
        return served

    def add_adapter(self, name: str, spec: AdapterSpec) -> Served:
        """Load an adapter while serving (when no batch runs)."""
        if self.spec.merged:
            raise ConfigError("this server runs a merged model; it cannot take more adapters")
        return self.between_batches(lambda: self._add_adapter(name, spec, _run_task(spec.path)))

    def remove_adapter(self, name: str) -> None:
        def remove() -> None:
            with self.cond:
                served = self.models.get(name)
                if served is None or served.adapter is None:
                    raise KeyError(name)
                if any(j.model is served for j in self.queue):
                    raise ConfigError(f"{name} has requests waiting; try again when they are answered")
                del self.models[name]
            self._unload(served)

        self.between_batches(remove)

    def between_batches(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` run by the worker when no batch runs (the worker is the only thread that
        touches the model, so adapters are loaded and unloaded there; a running batch takes no new
        requests until it is done), waited for; its result, or its exception raised here. Before
        the worker starts (or after it stops), ``fn`` runs on the engine's thread at once."""
        if self._worker is None or self._worker.done():
            return self._on_thread(fn).result()
        done: concurrent.futures.Future = concurrent.futures.Future()
        with self.cond:
            self.tasks.append((fn, done))
            self.cond.notify()
        return done.result()

    def _run_tasks(self) -> None:
        while True:
            with self.cond:
                if not self.tasks:
                    return
                fn, done = self.tasks.popleft()
            try:
                done.set_result(fn())
            except BaseException as exc:  # handed to the caller of between_batches
                done.set_exception(exc)

    def _unload(self, served: Served) -> None:
        if served.head:  # its classifier goes with it; the base's weights it shared stay
            return
        with warnings.catch_warnings():  # "the active adapter was deleted": we set it per request
            warnings.simplefilter("ignore")
            self.model.delete_adapter(served.adapter)

    # ---- requests ---------------------------------------------------------------------------
    def prompt(self, served: Served, messages: list[dict[str, str]]) -> list[int]:
        """A request to a model without a task (the base): the chat template applied to its
        messages as they are."""
        from taskfit.rendering import template_ids

        with self._tokenizer_lock:  # a fast tokenizer must not be entered by two threads at once
            return template_ids(self.tokenizer, messages, generation_prompt=True)

    def task_prompt(self, served: Served, example: Example, score_labels: bool) -> list[int]:
        """A request to a task adapter, as one ``example``: :func:`task_prompt`."""
        with self._tokenizer_lock:
            return task_prompt(self.tokenizer, served, example, score_labels)

    def submit(self, job: Job) -> None:
        with self.cond:
            if self.stopping:
                raise QueueFull("the server is shutting down")
            if len(self.queue) >= self.spec.limits.queue:
                raise QueueFull(f"{len(self.queue)} requests are waiting")
            job.step = self.steps
            self.queue.append(job)
            self.cond.notify()

    def waiting(self) -> int:
        return len(self.queue)

    def start(self) -> None:
        """Start answering the queue (on the thread the models were loaded on)."""
        if self._worker is None or self._worker.done():
            self._worker = self._on_thread(self._work)
            self._worker.add_done_callback(_report_crash)

    def _on_thread(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """``fn()`` run on the engine's thread (started at the first call), its future."""
        done: concurrent.futures.Future = concurrent.futures.Future()
        if threading.current_thread() is self._thread:
            done.set_result(fn())
            return done
        if self._thread is None:
            self._thread = threading.Thread(target=self._run_calls, name="taskfit-engine", daemon=True)
            self._thread.start()
        self._calls.put((fn, done))
        return done

    def _run_calls(self) -> None:
        while True:
            fn, done = self._calls.get()
            try:
                done.set_result(fn())
            except BaseException as exc:  # raised to the caller, who waits on ``done``
                done.set_exception(exc)

    def stop(self, timeout: float | None = None) -> None:
        """Finish every request already accepted, then stop the worker."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        if self._worker is not None:
            concurrent.futures.wait([self._worker], timeout)

    def _next(self, running: _Running | None = None) -> list[Job] | None:
        """The requests to take now: a batch of classify requests to one model, or generation
        requests (to join ``running``, or to start a batch). Without a running batch it waits for
        work (None: stopping, and nothing left); with one it never waits, and takes nothing while
        a load or unload waits for the batch to finish. [] when loads and unloads come first."""
        with self.cond:
            if running is None:
                while not self.queue and not self.tasks:
                    if self.stopping:
                        return None
                    self.cond.wait()
            if self.tasks:  # loads and unloads first, when no batch runs
                return []
            while self.queue and self.queue[0].cancelled:
                self.queue.popleft().on_done(TimeoutError("cancelled before it started"))
            if not self.queue:
                return []
            first = self.queue[0]
            if running is not None:
                if not running.takes(first, self):
                    return []  # it waits for the running batch to finish (first come, first served)
                first = self._gathered(running)
                if first is None:
                    return []  # no group is large enough or has waited long enough
            room = self.spec.limits.max_batch - (len(running.decoder) if running and not first.score_labels else 0)
            batch, rest = [], collections.deque()
            while self.queue and len(batch) < room:
                job = self.queue.popleft()
                # Generation mixes adapters (PEFT's mixed batches); label scoring is one adapter's.
                same = job.model is first.model or (self.mixed and not job.score_labels)
                if not job.cancelled and job.score_labels == first.score_labels and same:
                    batch.append(job)
                else:
                    rest.append(job)
            self.queue.extendleft(reversed(rest))
            return batch

    def requeue(self, jobs: list[Job]) -> None:
        """Put ``jobs`` back at the head of the queue, in order (taken, then found no room)."""
        with self.cond:
            self.queue.extendleft(reversed(jobs))

    def decoder(self, model: Served, mixed: bool, **callbacks: Any) -> Any:
        """A running batch's decoder for ``model`` (every model, with ``mixed``)."""
        return Decoder(self.model, self.tokenizer, mixed=mixed, keep_results=False, **callbacks)

    def _gathered(self, running: _Running) -> Job | None:
        """While ``running`` decodes: the oldest request of the first waiting group that is ready
        to be taken (the requests that would join the batch; the classify requests to one model),
        ready once ``limits.gather`` of them wait (or as many as the batch has room for) or once
        its oldest has waited ``limits.gather_steps`` decoding steps; None while none is."""
        limits = self.spec.limits
        if limits.gather <= 1:  # every group is ready: the first request, which the caller checked
            return self.queue[0]
        groups: dict[int | None, list[Job]] = {}  # in the order of their oldest requests
        for job in self.queue:
            if not job.cancelled and running.takes(job, self):
                groups.setdefault(id(job.model) if job.score_labels else None, []).append(job)
        for key, jobs in groups.items():
            room = limits.max_batch - (len(running.decoder) if key is None else 0)
            if len(jobs) >= min(limits.gather, room) or self.steps - jobs[0].step >= limits.gather_steps:
                return jobs[0]
        return None

    def _work(self) -> None:
        import torch

        torch.set_grad_enabled(False)
        # every pass and key/value cache in the precision evaluation answered in (autocast is per
        # thread); a server started without a language model enters it when it loads one (load_base)
        with contextlib.ExitStack() as self._precision:
            if self.hardware is not None:
                self._precision.enter_context(self.hardware.computing())
            try:
                self._serve()
            finally:
                self._precision = None

    def _serve(self) -> None:
        running: _Running | None = None
        while (batch := self._next(running)) is not None:
            if running is None:
                self._run_tasks()
            if batch and batch[0].score_labels:
                try:
                    results = self._score(batch)
                except Exception as exc:  # one failed batch must not stop the server
                    results = [exc] * len(batch)
                for job, result in zip(batch, results):
                    job.on_done(result)
            elif batch:
                running = running or _Running(self, batch[0].model)
                try:
                    running.join(batch)
                except Exception as exc:  # the joining requests fail; the running ones go on
                    for job in batch:
                        job.on_done(exc)
            if running is not None:
                self.steps += 1
                try:
                    running.decoder.step()
                except Exception as exc:  # the running requests fail; the server goes on
                    running.fail(exc)
                if not len(running.decoder):
                    running.close()
                    running = None

    def _score(self, batch: list[Job]) -> list[Result]:
        """Classify replies to one adapter: for each, the likeliest label, or the fallback below
        the threshold."""
        served = batch[0].model
        self.on_batch(len(batch))
        with self._adapter(served):
            choices = served.scorer.choose([j.prompt for j in batch])
        results = []
        for job, choice in zip(batch, choices):
            label = served.task.labels[choice.best]
            text, low = with_fallback(label, choice.confidence, served.threshold, served.fallback)
            if job.on_text is not None:
                job.on_text(text)
            results.append(Result(text=text, prompt_tokens=len(job.prompt),
                                  completion_tokens=len(served.scorer.completions[choice.best]),
                                  finish_reason="stop", confidence=choice.confidence, fallback=low, label=label))
        return results

    def _adapter(self, served: Served) -> Any:
        """A context in which the model runs as ``served`` (for single-model passes)."""
        if not self._peft or served.head:
            return contextlib.nullcontext()
        if served.adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(served.adapter)
        return contextlib.nullcontext()


def _report_crash(worker: concurrent.futures.Future) -> None:
    """Log the serving loop's end by an exception (each request's own failure is answered, not
    raised: an exception here stopped the loop, and the server no longer answers)."""
    if not worker.cancelled() and worker.exception() is not None:
        import logging

        logging.getLogger("taskfit.serve").error("the engine's worker stopped", exc_info=worker.exception())


class _Running:
    """The engine's running generation batch: a :class:`~taskfit.decoding.Decoder` and the
    request behind each of its sequences. Without mixed-adapter batches (DoRA adapters), every
    request runs as one model, set for the batch's whole life, and only requests to it join."""

    def __init__(self, engine: Engine, model: Served):
        self.engine, self.model = engine, model
        self.mixed = engine._peft and engine.mixed
        self.jobs: dict[int, Job] = {}
        self.decoder = engine.decoder(model, self.mixed,
                                      on_text=lambda i, delta: self.jobs[i].on_text(delta) if self.jobs[i].on_text else None,
                                      on_done=self._done, cancelled=lambda i: self.jobs[i].cancelled)
        self._context = contextlib.ExitStack()
        if not self.mixed:
            self._context.enter_context(engine._adapter(model))

    def takes(self, job: Job, engine: Engine) -> bool:
        """Whether ``job`` can be answered while this batch runs: a generation request that fits
        (and, without mixed batches, asks the batch's model), or classify requests to score
        between two steps (with mixed batches, which set no adapter for the batch)."""
        if job.score_labels:
            return self.mixed or not engine._peft
        return (self.decoder.joinable and len(self.decoder) < engine.spec.limits.max_batch
                and (self.mixed or job.model is self.model) and self.decoder.fits([job.prompt], [job.sampling]) == 1)

    def join(self, jobs: list[Job]) -> None:
        taken = self.decoder.fits([j.prompt for j in jobs], [j.sampling for j in jobs])
        if taken < len(jobs):  # no room for the rest beside the running sequences: they wait
            if not taken and not len(self.decoder):  # not even alone: it fails, the others wait
                jobs[0].on_done(ValueError(f"a prompt of {len(jobs[0].prompt)} tokens and "
                                           f"{jobs[0].sampling.max_tokens} to generate do not fit in the "
                                           f"engine's cache"))
                jobs, taken = jobs[1:], 0
            self.engine.requeue(jobs[taken:])
            jobs = jobs[:taken]
            if not jobs:
                return
        names = [j.model.adapter or BASE for j in jobs] if self.mixed else None
        one = all(j.model is jobs[0].model for j in jobs)  # then the prompts share its prefix
        numbers = self.decoder.add([j.prompt for j in jobs], [j.sampling for j in jobs], names,
                                   prefix=jobs[0].model.prefix if one else None)
        self.jobs.update(zip(numbers, jobs))
        self.engine.on_batch(len(jobs))

    def _done(self, i: int, g: Any) -> None:
        job = self.jobs.pop(i)
        job.on_done(Result(text=g.text, prompt_tokens=g.prompt_tokens, completion_tokens=g.completion_tokens,
                           finish_reason=g.finish_reason))

    def fail(self, exc: BaseException) -> None:
        for i in list(self.decoder.active):
            self.jobs.pop(i).on_done(exc)
        self.decoder.clear()

    def close(self) -> None:
        self._context.close()
