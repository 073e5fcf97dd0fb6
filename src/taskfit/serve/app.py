"""The HTTP side: OpenAI's chat-completions API over the :class:`Engine`, with keys, limits,
metrics and the request log.

Every error has OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``: 4xx for the
client's faults, naming what to fix; 500 says only that the server failed (the details go to the
server's own log, never into a response).

A request to an adapter trained on a task is one input, answered as evaluation answered it: the
messages are one user message (the input; for ``qa`` the question), optionally after one system
message (which replaces the task's system prompt, as a training row's own system prompt does);
a ``qa`` adapter also needs the passage, as ``context`` in the request body (the ``openai``
client sends it with ``extra_body={"context": ...}``). A classification-head adapter
(``train.classify_head``) reads the user message alone (a system message is accepted and not
read, as in training) and answers with a label only. The server renders the prompt itself
(``Context:`` / ``Question:`` framing, system prompt, cut to the run's ``train.max_seq_length``)
and, unless ``max_tokens`` says otherwise, answers within the run's answer budget
(``eval.max_new_tokens``).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import math
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.concurrency import run_in_threadpool

from taskfit.data.read import lone_surrogate
from taskfit.decoding import Sampling, shortest_answer
from taskfit.errors import TaskfitError
from taskfit.records import Example
from taskfit.tasks import get_task
from taskfit.tasks.base import answer_spelling
from taskfit.serve.config import MODEL_NAME, AdapterSpec, ServeSpec, hash_key
from taskfit.serve.engine import Engine, Job, QueueFull, Result, Served, schema_grammar

log = logging.getLogger("taskfit.serve")
UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "logprobs", "top_logprobs",
               "logit_bias", "audio", "modalities", "prediction")


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, "only text content parts are supported", param="messages")
            parts.append(part["text"])
        return "".join(parts)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    context: str | None = None  # qa adapters: the passage the question is answered from

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value


def task_example(served: Served, messages: list[dict[str, str]], context: str | None, request_id: str) -> Example:
    """A request to a task adapter as the one example it answers (see the module's docstring);
    an ApiError (400) names what is wrong with any other shape."""
    task = served.task
    systems = [m["content"] for m in messages if m["role"] == "system"]
    turns = [m for m in messages if m["role"] != "system"]
    if (len(systems) > 1 or (systems and messages[0]["role"] != "system") or len(turns) != 1
            or turns[0]["role"] != "user"):
        what = f"a classical model ({served.classical.name})" if served.classical is not None else f"a {task.kind} adapter"
        raise ApiError(400, f"messages: {served.name} is {what}; it answers one input as it "
                            "was trained and evaluated: send one user message, optionally after one system "
                            "message", param="messages", code="unsupported_messages")
    if not turns[0]["content"].strip():
        raise ApiError(400, "messages: the user message is empty", param="messages", code="invalid_value")
    takes_context = get_task(task.kind).takes_context
    if takes_context and not (context or "").strip():
        raise ApiError(400, f"context: {served.name} answers a question from a passage: send the question as "
                            "the user message and the passage as \"context\" in the request body (openai "
                            "client: extra_body={\"context\": passage})", param="context", code="missing_context")
    if not takes_context and context is not None:
        raise ApiError(400, f"context: only qa adapters take a context; {served.name} is a {task.kind} adapter",
                       param="context", code="unsupported")
    return Example(id=request_id, input=turns[0]["content"], target="", system=systems[0] if systems else None,
                   context=context if takes_context else None)


def as_trained(served: Served, example: Example) -> Example:
    """``example`` with its personal data and secrets replaced as the run's training and held-out
    rows were (its ``data.privacy``: ``<EMAIL>`` placeholders, or masks): a task adapter answers
    the text it was trained and evaluated on, so a served answer is the one the scorecard measured.
    A run trained on raw data (``action: keep``) reads the request as sent."""
    if served.privacy is None or served.privacy.action == "keep" or served.task is None:
        return example
    from taskfit.data.redaction import redact_row

    return redact_row(example, served.task, served.privacy).record


def _describe(exc: ValidationError) -> tuple[str, str | None]:
    err = exc.errors()[0]
    param = ".".join(str(p) for p in err["loc"]) or None
    return f"{param}: {err['msg']}" if param else err["msg"], param


class Metrics:
    """Prometheus metrics of one server (its own registry, so several apps can share a process)."""

    def __init__(self, engine: Engine):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.requests = Counter("taskfit_requests", "Chat completion requests answered.",
                                ["model", "status"], registry=self.registry)
        self.latency = Histogram("taskfit_request_seconds", "Time from request to last token.", ["model"],
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
                                 registry=self.registry)
        self.tokens = Counter("taskfit_tokens", "Tokens read and generated.", ["model", "type"],
                              registry=self.registry)
        self.errors = Counter("taskfit_errors", "Requests refused or failed.", ["model", "type"],
                              registry=self.registry)
        self.fallbacks = Counter("taskfit_fallbacks", "classify replies that fell back below the threshold.",
                                 ["model"], registry=self.registry)
        self.shadow = Counter("taskfit_shadow_answers", "Shadow answers of NAME@candidate: agree or disagree "
                              "with production's answer (classify: the label), or failed.", ["model", "agreement"],
                              registry=self.registry)
        self.shadow_latency = Histogram("taskfit_shadow_seconds", "Time a shadow answer took, from its submission.",
                                        ["model"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
                                        registry=self.registry)
        self.batch = Histogram("taskfit_batch_size", "Requests decoded together.",
                               buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        Gauge("taskfit_queue_waiting", "Requests waiting for the model.",
              registry=self.registry).set_function(engine.waiting)


def create_app(spec: ServeSpec, engine: Engine | None = None, status: Any = None) -> FastAPI:
    """The server for ``spec``; its models are loaded here, before it accepts a request."""
    from contextlib import asynccontextmanager

    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from taskfit.serve.log import RequestLog

    from taskfit.serve import classical

    follower = None
    if spec.followed:  # registry: NAME@ALIAS adapters (taskfit.lifecycle.serving)
        from taskfit.lifecycle.serving import RegistryFollower

        follower = RegistryFollower(spec, status or (lambda m: None))
        if spec.base is None:
            spec = spec.model_copy(update={"base": follower.base_model()})
    if engine is None:
        if not classical.wants_language_model(spec):
            EngineClass: type[Engine] = classical.ClassicalOnly
        elif spec.engine == "llama-cpp":
            from taskfit.serve.llama_engine import LlamaCppEngine as EngineClass
        else:
            EngineClass = Engine
        engine = EngineClass(spec, status or (lambda m: None))
    if not engine.models:
        engine.load()
        classical.add_classical(engine, spec)
    if follower is not None:
        follower.engine = engine
        follower.sync()
    # Each row is redacted with its model's run's data.privacy settings (the defaults for the base).
    request_log = (RequestLog(spec.log.path, spec.log.redact, spec.log.retention_days,
                              privacy_of=lambda model: getattr(engine.models.get(model), "privacy", None))
                   if spec.log.path else None)
    review_store = None
    if spec.log.path:
        from taskfit.lifecycle.reviews import ReviewStore, store_path

        review_store = ReviewStore(store_path(spec.log.path))  # POST /v1/feedback keeps corrections there
    metrics = Metrics(engine)
    engine.on_batch = metrics.batch.observe
    keys = [(k, k.sha256) for k in spec.keys]
    pace = {"seconds": 1.0}  # moving average of answer times, for Retry-After

    @functools.lru_cache(maxsize=256)
    def enforceable(grammar: str) -> str:
        """``grammar``, once the engine has accepted it (a ValueError otherwise, not cached)."""
        from taskfit.decoding import Constraint

        Constraint(engine.tokenizer, grammar)
        return grammar

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        if follower is not None:
            follower.start()
        yield
        # uvicorn has stopped taking connections and waited for those in flight
        if follower is not None:
            await run_in_threadpool(follower.stop)
        await run_in_threadpool(engine.stop, spec.limits.timeout_s)
        if request_log is not None:
            await run_in_threadpool(request_log.close)
        if review_store is not None:
            review_store.close()

    app = FastAPI(title="taskfit serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.request_log, app.state.metrics = engine, request_log, metrics
    app.state.follower = follower
    shadows: set[asyncio.Task] = set()  # shadow answers in the background (kept from the collector)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        return ApiError(500, "the server failed to answer this request", "server_error").response()

    @app.exception_handler(404)
    async def _not_found(request: Request, exc: Exception) -> JSONResponse:
        return ApiError(404, f"no route {request.method} {request.url.path}", code="not_found").response()

    @app.exception_handler(405)
    async def _method(request: Request, exc: Exception) -> JSONResponse:
        return ApiError(405, f"{request.method} is not allowed on {request.url.path}",
                        code="method_not_allowed").response()

    def caller(request: Request) -> str | None:
        """The name of the key the request carries (401 without a valid one); None when the
        server has no keys (loopback only)."""
        if not keys:
            return None
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer ") or not header[7:].strip():
            raise ApiError(401, "no API key: send it as 'Authorization: Bearer <key>'",
                           "authentication_error", code="missing_api_key")
        digest = hash_key(header[7:].strip())
        for key, stored in keys:
            if hmac.compare_digest(digest, stored):
                return key.name
        raise ApiError(401, "invalid API key", "authentication_error", code="invalid_api_key")

    def allowed(key_name: str | None, model: str) -> bool:
        if key_name is None:
            return True
        key = next(k for k, _ in keys if k.name == key_name)
        return key.models == "*" or model in key.models

    def resolve(key_name: str | None, name: str) -> Served:
        if not MODEL_NAME.match(name):
            raise ApiError(400, "invalid model name: letters, digits and . _ : - only", param="model",
                           code="invalid_model")
        served = engine.models.get(name)
        if served is None:
            raise ApiError(404, f"model {name!r} is not served here; GET /v1/models lists them",
                           param="model", code="model_not_found")
        if not allowed(key_name, name):
            raise ApiError(403, f"this API key may not use model {name!r}", "permission_error",
                           param="model", code="model_not_allowed")
        return served

    def describe(served: Served) -> dict[str, Any]:
        out: dict[str, Any] = {"id": served.name, "object": "model", "created": served.created,
                               "owned_by": "taskfit", "parent": served.parent, "root": served.parent or served.name}
        if served.task is not None:
            out["taskfit"] = {"task": served.task.kind, "labels": served.task.labels,
                              "schema": served.task.schema_, "confidence_threshold": served.threshold,
                              "fallback": served.fallback}
            if served.head:
                out["taskfit"]["classify_head"] = True
        if served.classical is not None:
            out["taskfit"]["classical"] = served.classical.name
        if served.version is not None:
            out["taskfit"]["version"] = served.version
        return out

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": len(engine.models), "waiting": engine.waiting()}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        key_name = caller(request)
        return {"object": "list", "data": [describe(s) for n, s in engine.models.items() if allowed(key_name, n)]}

    @app.get("/v1/models/{name}")
    async def get_model(name: str, request: Request) -> dict[str, Any]:
        return describe(resolve(caller(request), name))

    async def read_body(request: Request) -> bytes:
        limit = spec.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"request body over {limit} bytes", code="request_too_large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"request body over {limit} bytes", code="request_too_large")
        return bytes(body)

    def named_model(raw: bytes) -> str | None:
        """The model a refused body names, where it is a JSON object with a plain string ``model``
        (so that ``taskfit monitor`` counts the refusal against that model), else None."""
        try:
            data = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            return None
        model = data.get("model") if isinstance(data, dict) else None
        return model if isinstance(model, str) and lone_surrogate(model) is None else None

    def parse(raw: bytes) -> ChatRequest:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the body is not valid JSON ({exc})", code="invalid_json") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object", code="invalid_json")
        half = lone_surrogate(data)
        if half is not None:  # no tokenizer takes it, nor the request log
            raise ApiError(400, half, code="invalid_value")
        try:
            req = ChatRequest.model_validate(data)
        except ValidationError as exc:
            message, param = _describe(exc)
            raise ApiError(400, message, param=param, code="invalid_value") from None
        for name in UNSUPPORTED:
            if data.get(name):
                raise ApiError(400, f"{name} is not supported by taskfit serve", param=name, code="unsupported")
        if req.n != 1:
            raise ApiError(400, "n: only n=1 is supported", param="n", code="unsupported")
        if len(req.messages) > spec.limits.max_messages:
            raise ApiError(400, f"messages: at most {spec.limits.max_messages} per request", param="messages",
                           code="too_many_messages")
        return req

    def grammar_for(req: ChatRequest, served: Served) -> str | None:
        """The grammar the reply is held to: the request's JSON schema (keys in the order it lists
        them), else an extract adapter's answer grammar; a schema that cannot be enforced is
        refused before decoding starts."""
        fmt = req.response_format
        if not fmt or fmt.get("type") == "text":
            return served.grammar
        if fmt.get("type") == "json_object":
            schema: Any = {"type": "object"}
        elif fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema")
            if not isinstance(schema, dict):
                raise ApiError(400, "response_format.json_schema.schema: a JSON schema object is required",
                               param="response_format")
        else:
            raise ApiError(400, f"response_format.type: {fmt.get('type')!r} is not one of text, json_object, "
                                "json_schema", param="response_format")
        try:
            task = served.task
            style = task.json_style if task is not None and task.kind == "extract" else "spaced"
            grammar = enforceable(schema_grammar(json.dumps(schema), style))
        except ValueError as exc:
            raise ApiError(400, f"response_format: this JSON schema cannot be enforced ({exc})",
                           param="response_format") from None
        return grammar

    def chunk(cid: str, created: int, model: str, delta: dict[str, Any], finish: str | None = None,
              **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, **extra}
        return "data: " + json.dumps({"id": cid, "object": "chat.completion.chunk", "created": created,
                                      "model": model, "choices": [choice]}) + "\n\n"

    def extension(result: Result, served: Served) -> dict[str, Any]:
        """choices[0].taskfit: a classify answer's label, confidence and fallback, and the registry
        version that answered."""
        out: dict[str, Any] = {}
        if result.confidence is not None:
            out = {"label": result.label, "confidence": result.confidence, "fallback": result.fallback}
        if served.version is not None:
            out["version"] = served.version
        return {"taskfit": out} if out else {}

    def version_header(served: Served | None) -> dict[str, str]:
        return {"x-taskfit-version": served.version} if served is not None and served.version else {}

    def usage(result: Result) -> dict[str, int]:
        return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens}

    def record(cid: str, started: float, key_name: str | None, model: str | None, served: Served | None,
               status: int, req: ChatRequest | None = None, result: Result | None = None,
               error: str | None = None, stream: bool = False, shadow_of: str | None = None) -> None:
        label = model if served is not None else "unknown"
        elapsed = time.perf_counter() - started
        if shadow_of is None:
            count(label, status, elapsed, result, error)
        if request_log is None:
            return
        request_log.add(id=cid, created=time.time(), key_name=key_name, model=model,
                        adapter=served.adapter if served else None, stream=int(stream), status=status,
                        latency_ms=elapsed * 1000, prompt_tokens=result.prompt_tokens if result else None,
                        completion_tokens=result.completion_tokens if result else None,
                        confidence=result.confidence if result else None,
                        fallback=int(result.fallback) if result and result.confidence is not None else None,
                        finish_reason=result.finish_reason if result else None,
                        request=[m.model_dump() for m in req.messages] if req else None,
                        response=result.text if result else None, error=error,
                        label=result.label if result and result.confidence is not None else None,
                        context=req.context if req else None, version=served.version if served else None,
                        shadow_of=shadow_of, response_format=own_format(req))

    def own_format(req: ChatRequest | None) -> str | None:
        """The format a request asked for in place of the task's answer (json_object, json_schema)."""
        kind = (req.response_format or {}).get("type", "text") if req is not None else "text"
        return None if kind == "text" else str(kind)

    def count(label: str, status: int, elapsed: float, result: Result | None, error: str | None) -> None:
        metrics.requests.labels(label, str(status)).inc()
        if result is not None:
            metrics.latency.labels(label).observe(elapsed)
            metrics.tokens.labels(label, "prompt").inc(result.prompt_tokens)
            metrics.tokens.labels(label, "completion").inc(result.completion_tokens)
            if result.fallback:
                metrics.fallbacks.labels(label).inc()
            pace["seconds"] = 0.9 * pace["seconds"] + 0.1 * elapsed
        if error is not None:
            metrics.errors.labels(label, str(status)).inc()

    def answer_key(result: Result) -> str:
        """What shadow agreement compares: a classify answer's label, else the text."""
        return result.label if result.label is not None else result.text

    def shadow(req: ChatRequest, served: Served, messages: list[dict[str, str]], cid: str, asked: int | None,
               key_name: str | None, answered: Result) -> None:
        """Ask the candidate the same request in the background, if one runs in shadow beside
        ``served``: its answer is logged (shadow_of=cid) and counted, never returned."""
        candidate = follower.shadow(served) if follower is not None else None
        if candidate is None:
            return
        task = asyncio.get_running_loop().create_task(
            shadow_answer(req, candidate, messages, cid, asked, key_name, answered))
        shadows.add(task)
        task.add_done_callback(shadows.discard)

    async def shadow_answer(req: ChatRequest, candidate: Served, messages: list[dict[str, str]], cid: str,
                            asked: int | None, key_name: str | None, answered: Result) -> None:
        started, sid = time.perf_counter(), f"{cid}-shadow"
        try:
            if candidate.classical is not None:
                job = classical_job(req, candidate, messages, sid)
            else:
                job = await model_job(req, candidate, messages, sid, asked, spec.limits.max_tokens)
            loop = asyncio.get_running_loop()
            future: asyncio.Future[Any] = loop.create_future()
            job.on_done = lambda r: loop.call_soon_threadsafe(_settle, future, r)
            submit(job)  # a full queue drops the shadow answer (429 below), never a client's
            result = await wait(job, future)
        except ApiError as exc:
            metrics.shadow.labels(req.model, "failed").inc()
            record(sid, started, key_name, req.model, candidate, exc.status, req, error=exc.message, shadow_of=cid)
            return
        metrics.shadow.labels(req.model, "agree" if answer_key(result) == answer_key(answered) else "disagree").inc()
        metrics.shadow_latency.labels(req.model).observe(time.perf_counter() - started)
        record(sid, started, key_name, req.model, candidate, 200, req, result, shadow_of=cid)

    async def model_job(req: ChatRequest, served: Served, messages: list[dict[str, str]], cid: str,
                        asked: int | None, limit: int) -> Job:
        """A request to the language model (the base or an adapter): its prompt, rendered as
        evaluation rendered it for a task adapter, and its sampling settings."""
        grammar = grammar_for(req, served)
        score = served.scorer is not None and (req.response_format or {}).get("type", "text") == "text"
        if served.scorer is not None and not score:  # a classify adapter: one of its labels, always
            raise ApiError(400, f"response_format: {served.name} is a "
                                f"{'classification head' if served.head else 'classify adapter'}; it answers with "
                                "one label (with its confidence in choices[0].taskfit), never free text or "
                                "JSON", param="response_format", code="unsupported")
        if served.task is not None:
            example = as_trained(served, task_example(served, messages, req.context, cid))
            prompt = await run_in_threadpool(engine.task_prompt, served, example, score)
        elif req.context is not None:
            raise ApiError(400, f"context: only qa adapters take a context; {served.name} is a base model",
                           param="context", code="unsupported")
        else:
            prompt = await run_in_threadpool(engine.prompt, served, messages)
        room = engine.context - len(prompt) - (max(map(len, served.scorer.completions)) if score else 0)
        if room < (1 if score else (asked or 1)):
            raise ApiError(400, f"the prompt ({len(prompt)} tokens) plus "
                                f"{'the longest label' if score else f'max_tokens ({asked or 1})'} is over "
                                f"the model's context of {engine.context} tokens", param="messages",
                           code="context_length_exceeded")
        # Unasked: the run's answer budget (as evaluated), else as much as fits; up to the limit.
        max_tokens = asked or max(1, min(limit, room, served.max_new_tokens or room))
        shortest = shortest_answer(engine.tokenizer, grammar) if grammar and not score else None
        if shortest is not None and max_tokens < shortest:
            raise ApiError(400, f"max_tokens: {max_tokens} tokens cannot hold a record of this JSON schema: the "
                                f"shortest, every field at its smallest (null where allowed), takes {shortest}, "
                                f"so the reply would be cut", param="max_tokens", code="max_tokens_too_small")
        stops = tuple([req.stop] if isinstance(req.stop, str) else req.stop or [])
        sampling = Sampling(max_tokens=max_tokens, temperature=req.temperature or 0.0, top_p=req.top_p,
                            seed=req.seed, stop=stops, grammar=grammar)
        return Job(model=served, prompt=prompt, sampling=sampling, score_labels=score)

    def classical_job(req: ChatRequest, served: Served, messages: list[dict[str, str]], cid: str) -> Job:
        """A request to a classical model: the one input it classifies (see task_example); it
        answers a label and nothing else, so it takes no response_format."""
        if (req.response_format or {}).get("type", "text") != "text":
            raise ApiError(400, f"response_format: {served.name} is a classical classifier; it answers one "
                                "of its labels, as text", param="response_format", code="unsupported")
        return Job(model=served, prompt=[], sampling=Sampling(max_tokens=1), score_labels=True,
                   example=as_trained(served, task_example(served, messages, req.context, cid)))

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        started = time.perf_counter()
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        key_name: str | None = None
        req: ChatRequest | None = None
        served: Served | None = None
        raw = b""
        try:
            key_name = caller(request)
            raw = await read_body(request)
            req = parse(raw)
            served = resolve(key_name, req.model)
            if follower is not None:  # a canary's share of callers gets the candidate
                user = (req.model_extra or {}).get("user")
                served = follower.route(served, user if isinstance(user, str) and user else
                                        key_name or (request.client.host if request.client else ""))
            limit = spec.limits.max_tokens
            asked = req.max_completion_tokens or req.max_tokens
            if asked is not None and asked > limit:
                raise ApiError(400, f"max_tokens: {asked} is over this server's limit of {limit}",
                               param="max_tokens", code="max_tokens_too_large")
            messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                        for m in req.messages]
            if served.classical is not None:
                job = classical_job(req, served, messages, cid)
            else:
                job = await model_job(req, served, messages, cid, asked, limit)
            if req.stream:
                return await stream(job, cid, started, key_name, req, served,
                                    lambda r: shadow(req, served, messages, cid, asked, key_name, r))
            loop = asyncio.get_running_loop()
            future: asyncio.Future[Any] = loop.create_future()
            job.on_done = lambda r: loop.call_soon_threadsafe(_settle, future, r)
            submit(job)
            result = await wait(job, future)
        except ApiError as exc:
            record(cid, started, key_name, req.model if req else named_model(raw), served, exc.status, req,
                   error=exc.message)
            response = exc.response()
            response.headers.update(version_header(served))
            return response
        created = int(time.time())
        record(cid, started, key_name, req.model, served, 200, req, result)
        shadow(req, served, messages, cid, asked, key_name, result)
        choice = {"index": 0, "message": {"role": "assistant", "content": result.text},
                  "finish_reason": result.finish_reason, "logprobs": None, **extension(result, served)}
        return JSONResponse({"id": cid, "object": "chat.completion", "created": created, "model": req.model,
                             "choices": [choice], "usage": usage(result), "system_fingerprint": None},
                            headers=version_header(served))

    def submit(job: Job) -> None:
        if job.model.classical is not None:  # milliseconds on a worker thread, never behind a batch
            asyncio.get_running_loop().run_in_executor(None, classical.answer, job)
            return
        try:
            engine.submit(job)
        except QueueFull as exc:
            retry = max(1, math.ceil(pace["seconds"] * (engine.waiting() + 1) / spec.limits.max_batch))
            raise ApiError(429, f"the server is busy ({exc}); retry after {retry} s", "rate_limit_error",
                           code="queue_full", headers={"Retry-After": str(retry)}) from None

    async def wait(job: Job, future: asyncio.Future[Any]) -> Result:
        try:
            result = await asyncio.wait_for(asyncio.shield(future), spec.limits.timeout_s)
        except TimeoutError:
            job.cancelled = True
            raise ApiError(504, f"no answer within {spec.limits.timeout_s:g} s", "timeout",
                           code="timeout") from None
        if isinstance(result, TaskfitError):
            raise ApiError(400, str(result))
        if isinstance(result, BaseException):
            log.error("generation failed", exc_info=result)
            raise ApiError(500, "the server failed to answer this request", "server_error")
        return result

    async def stream(job: Job, cid: str, started: float, key_name: str | None, req: ChatRequest,
                     served: Served, answered: Any) -> StreamingResponse:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        job.on_text = lambda delta: loop.call_soon_threadsafe(events.put_nowait, ("text", delta))
        job.on_done = lambda r: loop.call_soon_threadsafe(events.put_nowait, ("done", r))
        submit(job)  # a full queue is refused before the stream starts
        created = int(time.time())
        include_usage = bool((req.stream_options or {}).get("include_usage"))

        async def events_out() -> AsyncIterator[str]:
            status, result, error = 200, None, None
            try:
                yield chunk(cid, created, req.model, {"role": "assistant", "content": ""})
                deadline = started + spec.limits.timeout_s
                while True:
                    kind, value = await asyncio.wait_for(events.get(), max(0.0, deadline - time.perf_counter()))
                    if kind == "text":
                        yield chunk(cid, created, req.model, {"content": value})
                        continue
                    if isinstance(value, BaseException):
                        status, error = 500, "the server failed to answer this request"
                        log.error("generation failed", exc_info=value)
                        yield "data: " + json.dumps({"error": {"message": error, "type": "server_error",
                                                               "param": None, "code": None}}) + "\n\n"
                        break
                    result = value
                    answered(result)
                    yield chunk(cid, created, req.model, {}, result.finish_reason, **extension(result, served))
                    if include_usage:
                        yield "data: " + json.dumps({"id": cid, "object": "chat.completion.chunk",
                                                     "created": created, "model": req.model, "choices": [],
                                                     "usage": usage(result)}) + "\n\n"
                    break
                yield "data: [DONE]\n\n"
            except TimeoutError:
                job.cancelled = True
                status, error = 504, f"no answer within {spec.limits.timeout_s:g} s"
                yield "data: " + json.dumps({"error": {"message": error, "type": "timeout", "param": None,
                                                       "code": "timeout"}}) + "\n\n"
            except asyncio.CancelledError:  # the client went away
                job.cancelled = True
                status, error = 499, "client closed the stream"
                raise
            finally:
                record(cid, started, key_name, req.model, served, status, req, result, error, stream=True)

        return StreamingResponse(events_out(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                          **version_header(served)})

    class FeedbackRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        id: str = Field(min_length=1)
        label: str | None = None
        answer: str | dict[str, Any] | list[Any] | None = None
        reviewer: str | None = None
        comment: str | None = None

    def logged_request(request_id: str) -> Any:
        """The request log's row ``request_id`` (written rows only: the queue is flushed first)."""
        import sqlite3

        from taskfit.monitoring.requests import read_request

        request_log.flush()
        db = sqlite3.connect(spec.log.path)
        try:
            return read_request(db, request_id)
        finally:
            db.close()

    project_seen: dict[str, Any] = {}  # the project's taskfit.yaml as last read: (mtime, size) -> labels

    def project_labels(model: str | None, kind: str) -> tuple[Path | None, list[str], str | None]:
        """(the project's taskfit.yaml, its task.labels, why it could not be read): the project
        beside the request log (where `taskfit serve DIR` logs and `taskfit data from-log DIR`
        reads the corrections), when its task is the served model's; read again when it changes,
        so a label added to task.labels is accepted without a restart."""
        path = spec.log.path.parent / "taskfit.yaml"
        try:
            st = path.stat()
        except OSError:
            return None, [], None
        key = (str(path), st.st_mtime_ns, st.st_size)
        if project_seen.get("key") != key:
            from taskfit.config import load_config

            try:
                task = load_config(path).task
                project_seen.update(key=key, task=task, error=None)
            except Exception as exc:  # mid-edit, say: the served labels still hold
                project_seen.update(key=key, task=None, error=str(getattr(exc, "message", exc)).splitlines()[0])
        task = project_seen["task"]
        if task is None:
            return path, [], project_seen["error"]
        if task.name != model or task.kind != kind:
            return None, [], None
        return path, list(task.labels or []), None

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> Response:
        """A correction of one answered request: ``id`` (the chat completion's ``id``), ``label``
        (classify) or ``answer`` (the rest; an extract record as an object), ``reviewer`` (default:
        the key's name). Kept beside the request log as `taskfit review import` keeps a reviewed
        queue: `taskfit data from-log` turns it into training data."""
        from taskfit.lifecycle.reviews import correction_of

        try:
            key_name = caller(request)
            if request_log is None or review_store is None:
                raise ApiError(404, "this server keeps no request log (serve.yaml log.path), so it has nothing "
                                    "to attach feedback to", code="no_request_log")
            try:
                body = FeedbackRequest.model_validate_json(await read_body(request))
            except ValidationError as exc:
                message, param = _describe(exc)
                raise ApiError(400, message, param=param) from None
            if (body.label is None) == (body.answer is None):
                raise ApiError(400, "send the right answer as exactly one of \"label\" (classify) or \"answer\"",
                               param="label", code="missing_correction")
            logged = await run_in_threadpool(logged_request, body.id)
            if logged is None:
                raise ApiError(404, f"id: no request {body.id!r} in the request log (send the chat completion's "
                                    "id)", param="id", code="request_not_found")
            if not allowed(key_name, logged.model or ""):
                raise ApiError(403, f"this API key may not use model {logged.model!r}", "permission_error",
                               param="id", code="model_not_allowed")
            value = body.label if body.label is not None else body.answer
            served = engine.models.get(logged.model or "")
            if (body.label is not None and served is not None and served.task is not None
                    and not get_task(served.task.kind).scores_labels):
                raise ApiError(400, f"label: {served.name} is a {served.task.kind} model, which has no labels: send "
                                    "the right answer as \"answer\"", param="label", code="missing_correction")
            try:
                if served is not None and served.task is not None:  # the answer as the kind writes it
                    kind, task, config, unread = get_task(served.task.kind), served.task, None, None
                    if task.labels:
                        # A label the project knows: the served version's, its fallback (an out-of-scope
                        # request the fallback served right), or one the project's taskfit.yaml lists now
                        # (a label added since this version was trained). data from-log quarantines a
                        # label outside the project's task.labels until it is added there.
                        config, listed, unread = await run_in_threadpool(project_labels, logged.model, task.kind)
                        extra = [lab for lab in [served.fallback, *listed] if lab and lab not in task.labels]
                        task = task.model_copy(update={"labels": [*task.labels, *dict.fromkeys(extra)]})
                    if isinstance(value, str) and not value.strip():  # (a qa data file's empty cell is the refusal)
                        refusal = f" (a refusal as {task.refusal!r})" if task.kind == "qa" else ""
                        raise ValueError(f"empty: send the right answer{refusal}")
                    correction = answer_spelling(kind, task)(kind.target_text(task, value))
                    if task.labels and correction not in task.labels:
                        raise ValueError(unknown_label(correction, task.labels, served, config, unread))
                    # a correction training could not take is refused now, not kept for data
                    # from-log to quarantine ("Billing" is the label billing; a record, valid JSON)
                    kind.answer_check(task)(Example(id=logged.id, input=logged.text or "",
                                                    target=correction, context=logged.context))
                else:
                    correction = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                if not logged.answered or logged.served is None:
                    raise ValueError("the request was not answered: there is nothing to correct")
                comment = body.comment
                if comment and request_log.redact:  # kept as the request log keeps text: redacted
                    from taskfit.data import pii

                    comment = pii.redact(comment, privacy=request_log.privacy_of(logged.model))
                record_ = correction_of(logged.id, logged.model, logged.served, logged.text, logged.context,
                                        logged.created, body.reviewer or key_name, None, correction, "feedback",
                                        comment)
            except ValueError as exc:
                param = "reviewer" if str(exc).startswith("no reviewer") else ("label" if body.label else "answer")
                how = (": send \"reviewer\" in the body, or call with an API key (serve.yaml keys), whose name is "
                       "the reviewer" if param == "reviewer" else "")
                raise ApiError(400, f"{param}: {str(exc).removeprefix('answer: ')}{how}", param=param) from None
            await run_in_threadpool(review_store.add, [record_])
            return JSONResponse({"id": logged.id, "object": "feedback", "model": logged.model,
                                 "verdict": record_.verdict, "correction": record_.correction,
                                 "reviewer": record_.reviewer}, status_code=201)
        except ApiError as exc:
            return exc.response()

    def unknown_label(label: str, allowed: list[str], served: Any, config: Path | None, unread: str | None) -> str:
        """The 400 of a correction to a label the project does not know, naming the ones it does."""
        from taskfit.tasks.classify import closest_label

        near = closest_label(label, allowed)
        sources = ["the served version's task.labels"] + ([f"its fallback {served.fallback!r}"] if served.fallback else [])
        if config is not None and unread is None:
            sources.append(f"task.labels in {config}")
        where = (f"add it to task.labels in {config} (read again when it changes)" if config is not None else
                 f"add it to task.labels in the project's taskfit.yaml beside the request log ({spec.log.path.parent})")
        return (f"{label!r} is not a label the project knows ({', '.join(sources)}): allowed: {', '.join(allowed)}"
                + (f"; did you mean {near!r}?" if near else "")
                + (f"; {config} could not be read: {unread}" if unread else "")
                + f"; a new label: {where}")

    def admin(request: Request) -> None:
        if not spec.admin:
            raise ApiError(404, f"no route {request.method} {request.url.path}", code="not_found")
        key_name = caller(request)
        if key_name is not None and key_name not in spec.admin_keys:
            raise ApiError(403, "this API key may not manage adapters", "permission_error", code="not_admin")

    class AdapterRequest(AdapterSpec):
        name: str

    class LoraLoad(BaseModel):  # vLLM's POST /v1/load_lora_adapter
        model_config = ConfigDict(extra="ignore")
        lora_name: str
        lora_path: Path

    class LoraUnload(BaseModel):  # vLLM's POST /v1/unload_lora_adapter (lora_int_id is ignored)
        model_config = ConfigDict(extra="ignore")
        lora_name: str

    async def body_of(request: Request, model: type[BaseModel]) -> Any:
        try:
            return model.model_validate_json(await read_body(request))
        except ValidationError as exc:
            message, param = _describe(exc)
            raise ApiError(400, message, param=param) from None

    async def add(name: str, spec_: AdapterSpec, param: str) -> Served:
        if not MODEL_NAME.match(name):
            raise ApiError(400, "invalid model name: letters, digits and . _ : - only", param=param)
        if spec_.registry is not None:
            raise ApiError(400, "registry: an adapter that follows the registry is named in serve.yaml; "
                                "load a run directory here (path)", param="registry")
        try:
            return await run_in_threadpool(engine.add_adapter, name, spec_)
        except TaskfitError as exc:
            raise ApiError(400, str(exc)) from None

    async def remove(name: str) -> None:
        if follower is not None and follower.follows(name):
            raise ApiError(409, f"{name} follows the registry; move its alias (taskfit promote, taskfit "
                                "rollback) instead", code="follows_registry")
        try:
            await run_in_threadpool(engine.remove_adapter, name)
        except KeyError:
            raise ApiError(404, f"no adapter {name!r} is loaded", code="model_not_found") from None
        except TaskfitError as exc:
            raise ApiError(409, str(exc), code="busy") from None

    # The admin routes raise ApiError; the handler above turns it into OpenAI's error shape.
    @app.post("/admin/adapters")
    async def load_adapter(request: Request) -> Response:
        admin(request)
        body = await body_of(request, AdapterRequest)
        served = await add(body.name, AdapterSpec(**body.model_dump(exclude={"name"})), "name")
        return JSONResponse(describe(served), status_code=201)

    @app.delete("/admin/adapters/{name}")
    async def unload_adapter(name: str, request: Request) -> Response:
        admin(request)
        await remove(name)
        return JSONResponse({"id": name, "object": "model", "deleted": True})

    @app.post("/v1/load_lora_adapter")
    async def load_lora_adapter(request: Request) -> Response:
        """vLLM's route: {lora_name, lora_path} (a run directory or its adapter); 200 with the model."""
        admin(request)
        body = await body_of(request, LoraLoad)
        return JSONResponse(describe(await add(body.lora_name, AdapterSpec(path=body.lora_path), "lora_name")))

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(request: Request) -> Response:
        """vLLM's route: {lora_name}; 200 once it is unloaded."""
        admin(request)
        body = await body_of(request, LoraUnload)
        await remove(body.lora_name)
        return JSONResponse({"id": body.lora_name, "object": "model", "deleted": True})

    return app


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)
