"""``taskfit data synth``: drafts of new examples from a model, checked, then put before a person.

1. **Ask.** ``--n N`` requests to the endpoint ``synth.endpoint`` (else ``baselines.endpoint``):
   any OpenAI-compatible chat endpoint, ``taskfit serve`` included. Each asks for one draft and
   shows the task (``task.success``, the system prompt) and ``synth.shots`` real *training* rows,
   redacted as ``data prepare`` redacts them (held-out rows are never shown: a draft written from
   one would carry the held-out row into training). For ``classify`` the N drafts are shared among
   the labels (``synth.quotas``: even, or balance towards the labels with the fewest rows), the
   rows shown are of the label asked for, and the draft's label is decoded under an enum of that
   one label. ``synth.paraphrase`` of the requests instead ask to rewrite one training row's input
   in other words, its answer kept. Request k of a batch is sampled at ``synth.temperature`` with
   seed ``synth.seed + (drafts asked in earlier batches) + k``, which also picks the rows shown; so
   a second batch asks with new seeds. The draft is decoded under a JSON schema
   (``response_format``): ``{"input", "answer"}`` (qa: with ``"context"``), the answer held to the
   kind's answer schema (:func:`taskfit.tasks.base.answer_schema`); a rewrite is ``{"input"}``.
2. **Check.** Every draft ends in exactly one place, so that

       drafts asked = passed (waiting for review) + rejected for: schema, invalid label, house rules,
                      duplicate of a real row, of a held-out row, of another draft, privacy

   *schema*: the reply is not a JSON object of that shape, or the answer fails the task's check
   (extract: ``task.schema``); *invalid label*: classify, the label is not in ``task.labels`` or not
   the one asked for; *house rules*: generate, the reply breaks ``task.reply`` (its length,
   required or forbidden phrases, patterns), as a served reply would; *privacy*: the draft holds
   a credential, or personal data that redaction by ``data.privacy`` would change (a model can
   repeat real people's data it was trained on; values of ``data.privacy.keep_fields`` are not
   personal data by the project's word); *duplicates*: the
   data checks' exact and look-alike rules (:mod:`taskfit.data.admit`) against the real training
   rows, the held-out rows, and every draft of this and earlier batches that passed.
3. **Review.** The drafts that passed go on a review page (``review.html``, the review queue's
   page: accept or reject each, with the reviewer's name) and sheet (``review.csv``) in
   ``<project>/data/synthetic/<batch>/``, beside ``drafts.jsonl`` (every draft: its request, the
   reply, the reason it was rejected) and ``synth.json`` (settings, counts, tokens and cost).
4. **Import.** ``taskfit review import`` of the filled-in sheet appends each decision, with its
   reviewer, to ``data/synthetic/decisions.jsonl`` and writes ``data/synthetic/accepted.jsonl``
   anew: the drafts whose latest decision is *accept*, marked ``meta.synthetic`` with their
   lineage. That file is the only synthetic data training reads, and only with
   ``data.synthetic: include`` (:func:`taskfit.data.prepare.synthetic_rows`); a draft nobody
   accepted is never trained on, and no synthetic row is ever held out.
"""

from __future__ import annotations

import html
import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from taskfit.config import EndpointSpec, ProjectConfig
from taskfit.data.prepare import ACCEPTED, SYNTHETIC
from taskfit.errors import ConfigError, DataError, TaskfitError
from taskfit.records import Example

# Why a draft does not reach the review page: one reason each, so that the counts add up.
SCHEMA, INVALID_LABEL, PRIVACY = "schema", "invalid label", "privacy"
HOUSE_RULES = "house rules"  # generate: a reply that breaks task.reply (length, phrases, patterns)
DUP_REAL, DUP_HELD, DUP_DRAFT = "duplicate of a real row", "duplicate of a held-out row", "duplicate of another draft"
REASONS = (SCHEMA, INVALID_LABEL, HOUSE_RULES, DUP_REAL, DUP_HELD, DUP_DRAFT, PRIVACY)
REAL, HELD, DRAFT = "real", "held-out", "draft"  # where a row a draft may repeat comes from
_REPEATS = {REAL: DUP_REAL, HELD: DUP_HELD, DRAFT: DUP_DRAFT}
NEW, PARAPHRASE = "new", "paraphrase"
DRAFTS, DECISIONS, INFO = "drafts.jsonl", "decisions.jsonl", "synth.json"
PENDING, REJECTED = "pending", "rejected"
VERDICTS = ("accept", "reject")
COLUMNS = ["item", "draft_id", "input", "answer", "verdict", "reviewer", "comment"]


# ---- the requests ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    """One draft asked of the endpoint."""

    number: int  # 1, 2, ... within the batch
    seed: int  # the request's sampling seed, which also picked the rows shown
    kind: str  # new | paraphrase
    label: str | None  # classify: the label the draft must carry
    shown: tuple[Example, ...]  # real training rows shown as examples
    source: Example | None = None  # paraphrase: the training row whose input is rewritten

    def describe(self) -> dict[str, Any]:
        return {"number": self.number, "seed": self.seed, "kind": self.kind, "label": self.label,
                "shown": [r.id for r in self.shown], "paraphrase_of": self.source.id if self.source else None}


def quotas(labels: Sequence[str], counts: Counter, n: int, how: str) -> dict[str, int]:
    """Drafts per label: ``even`` (the remainder to the labels with the fewest training rows), or
    ``balance`` (each next draft to the label with the fewest rows counting those drafted)."""
    order = {lab: k for k, lab in enumerate(labels)}
    if how == "even":
        base, extra = divmod(n, len(labels))
        fewest = sorted(labels, key=lambda lab: (counts[lab], order[lab]))[:extra]
        return {lab: base + (lab in fewest) for lab in labels}
    given = Counter({lab: 0 for lab in labels})
    for _ in range(n):
        given[min(labels, key=lambda lab: (counts[lab] + given[lab], order[lab]))] += 1
    return {lab: given[lab] for lab in labels}


def plan(config: ProjectConfig, train: Sequence[Example], n: int, first_seed: int) -> list[Request]:
    """The batch's ``n`` requests (module docstring, step 1), from the real training rows."""
    from taskfit.tasks import get_task

    synth, task = config.synth, config.task
    rows = sorted(train, key=lambda r: r.id)
    if get_task(task.kind).scores_labels:
        share = quotas(task.labels or [], Counter(r.target for r in rows), n, synth.quotas)
        left = dict(share)
        labels: list[str | None] = []
        while len(labels) < n:  # the labels in turn: the review page shows them mixed
            for lab in task.labels or []:
                if left[lab] > 0:
                    labels.append(lab)
                    left[lab] -= 1
        pools = {lab: [r for r in rows if r.target == lab] for lab in share}
    else:
        labels, pools = [None] * n, {None: rows}
    rewrites = set(random.Random(first_seed).sample(range(n), round(n * synth.paraphrase)))
    rewritten: set[str] = set()
    requests = []
    for k, label in enumerate(labels):
        seed = first_seed + k
        rng = random.Random(seed)
        pool = pools[label]
        source = None
        if k in rewrites and pool:
            source = rng.choice([r for r in pool if r.id not in rewritten] or pool)
            rewritten.add(source.id)
        others = [r for r in pool if source is None or r.id != source.id]
        shown = tuple(rng.sample(others, min(synth.shots, len(others))))
        requests.append(Request(k + 1, seed, PARAPHRASE if source else NEW, label, shown, source))
    return requests


def draft_schema(config: ProjectConfig, request: Request, limits: dict[str, int]) -> dict[str, Any]:
    """The JSON schema a reply is decoded under: the draft's fields, each text no longer than
    ``limits`` says (half as long again as the longest real one), the answer held to the kind's
    answer schema (classify: the label asked for)."""
    from taskfit.tasks import get_task
    from taskfit.tasks.base import answer_schema

    kind = get_task(config.task.kind)
    props: dict[str, Any] = {}
    if kind.takes_context and request.kind == NEW:
        props["context"] = {"type": "string", "minLength": 1, "maxLength": limits["context"]}
    props["input"] = {"type": "string", "minLength": 1, "maxLength": limits["input"]}
    if request.kind == NEW:
        props["answer"] = {"type": "string", "enum": [request.label]} if request.label is not None else \
            answer_schema(kind, config.task)
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def limits_of(rows: Sequence[Example]) -> dict[str, int]:
    """Characters a drafted input (and qa passage) may take: half as long again as the longest
    real one, and at least 200."""
    longest = lambda texts: max((len(t) for t in texts if t), default=0)  # noqa: E731
    return {"input": max(200, longest(r.input for r in rows) * 3 // 2),
            "context": max(200, longest(r.context for r in rows) * 3 // 2)}


def _shown(rec: Example, answer: bool = True) -> str:
    lines = ([f"context: {rec.context}"] if rec.context is not None else []) + [f"input: {rec.input}"]
    return "\n".join(lines + ([f"answer: {rec.target}"] if answer else []))


def messages(config: ProjectConfig, request: Request, schema: dict[str, Any]) -> list[dict[str, str]]:
    """What the endpoint is sent for one request: the task, the rows shown, what to write (the
    reply's shape, and the answer's JSON schema when it is more than text or the label asked for)."""
    task = config.task
    shape = json.dumps({k: f"<{k}>" for k in schema["properties"]})
    answer = schema["properties"].get("answer", {})
    rule = (f" The answer must be valid against this JSON schema: {json.dumps(answer)}."
            if answer and answer.get("type") != "string" else "")
    system = (f"You write examples for training a model on one task.\nWhat the task is for: {task.success}\n"
              f"The model's instruction: {task.system_text}\n"
              "Write the kind of input a real user sends, varied in wording, length and detail. Never copy an "
              "example. Never write real personal data (real people's names, e-mail addresses, phone, account "
              "or card numbers) or passwords and keys.\n"
              f"Reply with one JSON object and nothing else, shaped {shape}.{rule}")
    examples = "\n\n".join(_shown(r) for r in request.shown)
    seen = f"Real examples:\n\n{examples}\n\n" if examples else ""
    if request.source is not None:
        what = (f"Rewrite this input in other words: keep what it says and asks, so that its answer stays "
                f"{json.dumps(request.source.target)}; change the wording and the order of its sentences."
                f"\n\n{_shown(request.source, answer=False)}")
    elif request.label is not None:
        what = f"Write one new example whose answer is {json.dumps(request.label)}, unlike the examples above."
    else:
        what = "Write one new example, unlike the examples above."
    return [{"role": "system", "content": system}, {"role": "user", "content": seen + what}]


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


def ask(config: ProjectConfig, spec: EndpointSpec, where: str, requests: Sequence[Request],
        limits: dict[str, int]) -> list[Reply]:
    """Every request sent (up to ``spec.concurrency`` at once); the replies in the requests' order.
    An endpoint that fails a request stops the batch, before anything is written."""
    from concurrent.futures import ThreadPoolExecutor

    import openai

    from taskfit.baselines.endpoint import endpoint_client

    client = endpoint_client(spec, where)
    synth = config.synth

    def one(request: Request) -> Reply:
        schema = draft_schema(config, request, limits)
        try:
            reply = client.chat.completions.create(
                model=spec.model, messages=messages(config, request, schema), temperature=synth.temperature,
                seed=request.seed, max_tokens=synth.max_tokens,
                response_format={"type": "json_schema", "json_schema": {"name": "draft", "schema": schema}})
        except openai.APIError as exc:
            raise TaskfitError(f"{where}: {spec.base_url} answered request {request.number} with {exc}",
                               hint="check base_url, model and the key; an endpoint must accept response_format "
                                    "json_schema (taskfit serve does); a prompt too long for the "
                                    "model needs fewer synth.shots or a lower synth.max_tokens; nothing of this "
                                    "batch was written") from None
        usage = reply.usage
        return Reply(reply.choices[0].message.content or "", reply.choices[0].finish_reason,
                     usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)

    with ThreadPoolExecutor(max_workers=spec.concurrency) as pool:
        return list(pool.map(one, requests))


# ---- the checks -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Draft:
    id: str
    request: Request
    reply: Reply
    reason: str | None = None  # None: passed every check, waiting for a reviewer
    detail: str = ""
    record: Example | None = None  # the draft as a row (when it got that far)


def _shape(config: ProjectConfig, request: Request, reply: Reply) -> dict[str, Any]:
    """The reply's fields; a ValueError says what is wrong with its shape."""
    cut = " (cut at synth.max_tokens)" if reply.finish_reason == "length" else ""
    try:
        value = json.loads(reply.text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the reply is not JSON ({exc.msg}){cut}") from None
    if not isinstance(value, dict):
        raise ValueError(f"the reply is a JSON {type(value).__name__}, not an object")
    from taskfit.tasks import get_task

    wanted = ["input"] + (["context"] if get_task(config.task.kind).takes_context and request.kind == NEW else [])
    for key in wanted:
        if not isinstance(value.get(key), str) or not value[key].strip():
            raise ValueError(f"field '{key}': missing, empty or not text")
    if request.kind == NEW and "answer" not in value:
        raise ValueError("field 'answer': missing")
    return value


def judge(config: ProjectConfig, rows: Any, batch: str, spec: EndpointSpec, request: Request,
          reply: Reply) -> Draft:
    """One reply checked (module docstring, step 2); a draft that passes joins ``rows`` (a
    :class:`~taskfit.data.admit.NewRows`), so later drafts are compared with it."""
    from taskfit.data.redaction import redact_row
    from taskfit.tasks import get_task

    task = config.task
    kind = get_task(task.kind)
    draft_id = f"synth-{batch}-{request.number:04d}"
    rejected = lambda reason, detail, rec=None: Draft(draft_id, request, reply, reason, detail, rec)  # noqa: E731
    try:
        value = _shape(config, request, reply)
    except ValueError as exc:
        return rejected(SCHEMA, str(exc))
    source = request.source
    answer = value.get("answer") if source is None else source.target
    context = source.context if source is not None else value.get("context")
    meta = {"synthetic": True, "batch": batch, "drafted_by": spec.model, "endpoint": spec.base_url,
            **{k: v for k, v in request.describe().items() if k != "number"},
            "temperature": config.synth.temperature}
    on_answer = INVALID_LABEL if kind.scores_labels else SCHEMA
    try:
        text = answer if source is not None else kind.target_text(task, answer)
        raw = {"id": draft_id, "meta": meta, "context": context,
               "messages": [{"role": "user", "content": value["input"]}, {"role": "assistant", "content": text}]}
        rec = rows.record(raw, f"{batch}:{request.number}")
    except ValueError as exc:
        return rejected(on_answer, str(exc))
    if request.label is not None and rec.target != request.label:
        return rejected(INVALID_LABEL, f"answer: label {rec.target!r}, asked for {request.label!r}", rec)
    if task.kind == "generate":  # the reply must keep the house rules a served reply is held to
        from taskfit.tasks.generate import rule_violations

        broken = rule_violations(task.reply, rec.target)
        if broken:
            return rejected(HOUSE_RULES, f"reply: {', '.join(broken)} (task.reply; {len(rec.target.split())} words)",
                            rec)
    redaction = redact_row(rec, task, config.data.privacy)
    found = sorted({f.kind for f in redaction.findings})
    if any(f.is_secret for f in redaction.findings):
        return rejected(PRIVACY, f"holds a credential ({', '.join(found)})", rec)
    red = redaction.record
    if (red.input, red.context, red.target) != (rec.input, rec.context, rec.target):
        return rejected(PRIVACY, f"holds personal data that data.privacy redacts ({', '.join(found)})", rec)
    repeat = rows.admit(rec, DRAFT, rec.id)
    if repeat is not None:
        other = rows.rows[repeat.owner]
        at = rows.sources[repeat.owner]
        how = ("the same input as" if repeat.note is None else
               f"{'a conflict with' if repeat.conflict is not None else 'a copy of'} (similarity "
               f"{repeat.note.similarity:.2f})")
        return rejected(_REPEATS[repeat.where], f"{how} {other.id}" + (f" ({at})" if at != other.id else ""), rec)
    return Draft(draft_id, request, reply, None, "", rec)


# ---- a batch ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SynthResult:
    batch: str
    root: Path
    drafts: list[Draft]
    quotas: dict[str, int]  # classify: drafts asked per label
    paths: dict[str, Path]
    info: dict[str, Any]

    @property
    def passed(self) -> list[Draft]:
        return [d for d in self.drafts if d.reason is None]

    def reasons(self) -> Counter:
        return Counter(d.reason for d in self.drafts if d.reason is not None)

    def sentence(self) -> str:
        """drafts asked = passed + rejected by reason (the counts add up)."""
        reasons = self.reasons()
        rejected = sum(reasons.values())
        return (f"{len(self.drafts)} drafts asked = {len(self.passed)} passed the checks (waiting for review) + "
                f"{rejected} rejected ({', '.join(f'{r} {reasons.get(r, 0)}' for r in REASONS)})")


def endpoint_of(config: ProjectConfig) -> tuple[EndpointSpec, str]:
    """The drafting endpoint and the config key that declares it."""
    if config.synth.endpoint is not None:
        return config.synth.endpoint, "synth.endpoint"
    if config.baselines.endpoint is not None:
        return config.baselines.endpoint, "baselines.endpoint"
    raise ConfigError("synth.endpoint: no endpoint to draft with (nor baselines.endpoint)",
                      hint="add synth: {endpoint: {base_url: http://127.0.0.1:8000/v1, model: NAME}} to "
                           "taskfit.yaml (any OpenAI-compatible endpoint; `taskfit serve` works)")


def batches(project_dir: Path) -> list[Path]:
    """The project's synthetic batches, oldest first."""
    root = project_dir / SYNTHETIC
    return sorted(p.parent for p in root.glob(f"*/{INFO}")) if root.is_dir() else []


def read_drafts(folder: Path) -> list[dict[str, Any]]:
    path = folder / DRAFTS
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _record(config: ProjectConfig, draft: dict[str, Any], where: str) -> Example:
    """A draft's row as a record; a DataError when it no longer fits the task."""
    from taskfit.data.formats import convert
    from taskfit.tasks import get_task

    try:
        rec = convert(draft["row"], config.task, "messages", None, where, draft["id"])
        get_task(config.task.kind).answer_check(config.task)(rec)
    except ValueError as exc:
        raise DataError(f"{where}: draft {draft['id']}: {exc}",
                        hint="the task changed since it was drafted: reject it, or draft again") from None
    return rec


def _still_valid(config: ProjectConfig, draft: dict[str, Any], folder: Path) -> Example | None:
    """An earlier batch's draft as a record, or None when the task no longer accepts it (it can
    then never be imported, so new drafts need not be compared with it)."""
    try:
        return _record(config, draft, str(folder / DRAFTS))
    except DataError:
        return None


def synth_project(project: Path, n: int, now: float | None = None) -> SynthResult:
    """``taskfit data synth``: ask for ``n`` drafts, check them, and write the batch with its
    review page (module docstring). Nothing of a batch is written unless every request was answered."""
    from taskfit.config import load_config
    from taskfit.data.admit import NewRows
    from taskfit.data.prepare import prepare_data
    from taskfit.workflows.workspace import config_path

    path = config_path(project)
    config = load_config(path)
    project_dir = path.parent
    if n < 1:
        raise ConfigError(f"--n {n}: ask for at least one draft")
    if config.train.method == "dpo":
        raise ConfigError("data synth drafts labelled examples (input and answer); this project trains on "
                          "preference pairs (train.method: dpo)")
    spec, where = endpoint_of(config)
    # Every real row, not only the sub-sample trained and scored on: none may be repeated.
    every = config.model_copy(update={"data": config.data.model_copy(update={
        "max_train_examples": None, "max_eval_examples": None, "synthetic": "exclude"})})
    prepared = prepare_data(every, project_dir)
    train, held = prepared.train, prepared.eval
    earlier = batches(project_dir)
    infos = [json.loads((b / INFO).read_text(encoding="utf-8")) for b in earlier]
    before = [rec for b in earlier for d in read_drafts(b) if d["status"] == PENDING
              and (rec := _still_valid(config, d, b)) is not None]
    now = time.time() if now is None else now
    stamp = datetime.fromtimestamp(now).strftime("%Y%m%dT%H%M%S")
    taken = {b.name for b in earlier}
    batch = next(name for name in [stamp] + [f"{stamp}-{k}" for k in range(2, len(taken) + 3)] if name not in taken)

    first_seed = config.synth.seed + sum(info["asked"] for info in infos)
    requests = plan(config, train, n, first_seed)
    limits = limits_of(train)
    replies = ask(config, spec, where, requests, limits)
    rows = NewRows(config, [*train, *held, *before], [REAL] * len(train) + [HELD] * len(held) + [DRAFT] * len(before))
    drafts = [judge(config, rows, batch, spec, request, reply) for request, reply in zip(requests, replies)]
    share = Counter(r.label for r in requests if r.label is not None)
    return _write(config, project_dir / SYNTHETIC / batch, batch, spec, drafts, dict(share), first_seed, now)


def _write(config: ProjectConfig, root: Path, batch: str, spec: EndpointSpec, drafts: list[Draft],
           share: dict[str, int], first_seed: int, now: float) -> SynthResult:
    from taskfit.data import pii
    from taskfit.data.prepare import record_to_row
    from taskfit.lifecycle.from_log import _stamp

    tmp = root.with_name(root.name + f".tmp-{os.getpid()}")
    tmp.mkdir(parents=True)
    with (tmp / DRAFTS).open("w", encoding="utf-8") as f:
        for d in drafts:
            f.write(json.dumps({"id": d.id, "status": PENDING if d.reason is None else REJECTED, "reason": d.reason,
                                "detail": d.detail, "request": d.request.describe(),
                                # a rejected reply may hold what the privacy check found: kept redacted
                                "reply": d.reply.text if d.reason is None else
                                pii.redact(d.reply.text, privacy=config.data.privacy),
                                "finish_reason": d.reply.finish_reason,
                                "row": record_to_row(d.record) if d.reason is None else None},
                               ensure_ascii=False) + "\n")
    passed = [d for d in drafts if d.reason is None]
    paths = export_drafts(tmp, passed, config, spec)
    prompt = sum(d.reply.prompt_tokens for d in drafts)
    completion = sum(d.reply.completion_tokens for d in drafts)
    info = {"batch": batch, "created": _stamp(now), "endpoint": {"base_url": spec.base_url, "model": spec.model},
            "settings": config.synth.model_dump(mode="json", exclude={"endpoint"}),
            "seeds": [first_seed, first_seed + len(drafts) - 1], "asked": len(drafts), "passed": len(passed),
            "rejected": {r: sum(d.reason == r for d in drafts) for r in REASONS},
            "quotas": share, "paraphrases": sum(d.request.kind == PARAPHRASE for d in drafts),
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "cost_usd": round((prompt * spec.price_per_million_input_tokens
                                         + completion * spec.price_per_million_output_tokens) / 1e6, 6)}}
    (tmp / INFO).write_text(json.dumps(info, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, root)  # whole or absent: a batch is never read half written
    return SynthResult(batch=batch, root=root, drafts=drafts, quotas=share,
                       paths={k: root / p.name for k, p in paths.items()} | {"drafts": root / DRAFTS, "info": root / INFO},
                       info=info)


def _review_block(it: dict[str, str]) -> str:
    from taskfit.evaluation.review import comment_box, radio

    i = html.escape(it["item"])
    choices = " ".join(radio(i, "verdict", v, v) for v in VERDICTS)
    source = (f'<p>Rewritten from this real row:</p><pre class="source">{html.escape(it["source"])}</pre>'
              if it.get("source") else "")
    return (f'{source}<h3>Answer</h3><pre class="answer">{html.escape(it["answer"])}</pre>'
            f'<p class="choice">{choices}</p>{comment_box(i)}')


def export_drafts(out_dir: Path, passed: Sequence[Draft], config: ProjectConfig, spec: EndpointSpec) -> dict[str, Path]:
    """``review.html`` and ``review.csv`` for the drafts that passed the checks, in their order."""
    from taskfit.evaluation.review import review_page, shown_input, write_sheet

    items = [{"item": f"D{k:03d}", "draft_id": d.id, "input": shown_input(d.record.input, d.record.context),
              "answer": d.record.target, "verdict": "", "reviewer": "", "comment": "",
              "source": d.request.source.input if d.request.source is not None else ""}
             for k, d in enumerate(passed, 1)]
    paths = {"html": out_dir / "review.html", "csv": out_dir / "review.csv"}
    write_sheet(paths["csv"], COLUMNS, items)
    paths["html"].write_text(review_page(
        "taskfit synthetic drafts", f"Synthetic drafts: {config.task.name}",
        f"Each item was drafted by a model ({spec.model}) and passed the data checks. Accept a draft only if "
        "its input reads like one a real user would send and its answer is right; reject it otherwise. Only "
        "accepted drafts are ever trained on, once imported (`taskfit review import`) and with "
        "data.synthetic: include.", items, COLUMNS, _review_block, judged="verdict", reviewer=True),
        encoding="utf-8")
    return paths


# ---- the reviewer's decisions -------------------------------------------------------------------
@dataclass(frozen=True)
class DraftsImport:
    accepted: int
    rejected: int
    skipped: int  # not judged: they stay waiting
    reviewers: list[str]
    total_accepted: int  # rows of accepted.jsonl now
    accepted_path: Path
    decisions_path: Path


def import_drafts(project: Path, verdicts: Path, reviewer: str | None = None,
                  now: float | None = None) -> DraftsImport:
    """``taskfit review import`` of a synthetic batch's sheet: each judged row becomes a decision
    with its reviewer (the sheet's column, else ``reviewer``); then accepted.jsonl is written anew
    from every batch's latest decisions. Every row must name a draft that passed the checks and a
    valid verdict, or the error names the line; nothing is stored unless every row is valid."""
    from taskfit.config import load_config
    from taskfit.evaluation.review import read_sheet
    from taskfit.lifecycle.from_log import _stamp
    from taskfit.workflows.workspace import config_path

    path = config_path(project)
    config = load_config(path)
    project_dir = path.parent
    drafts = {d["id"]: (b, d) for b in batches(project_dir) for d in read_drafts(b)}
    now = time.time() if now is None else now
    decisions, skipped = [], 0
    for line, row in read_sheet(verdicts, {"draft_id", "verdict"},
                                "import the CSV that a synthetic batch's review.html downloads, or its review.csv "
                                "filled in"):
        did = (row.get("draft_id") or "").strip()
        if did not in drafts:
            raise DataError(f"{verdicts}:{line}: draft_id {did!r} is in no batch of {project_dir / SYNTHETIC}",
                            hint="import the sheet of a `taskfit data synth` batch of this project")
        folder, draft = drafts[did]
        if draft["status"] != PENDING:
            raise DataError(f"{verdicts}:{line}: draft {did} was rejected by the checks ({draft['reason']}: "
                            f"{draft['detail']}); it is not for review")
        verdict = (row.get("verdict") or "").strip().lower()
        if verdict in ("", "unsure"):
            skipped += 1
            continue
        if verdict not in VERDICTS:
            raise DataError(f"{verdicts}:{line}: verdict {verdict!r}; allowed: accept, reject (or empty to skip it)")
        who = (row.get("reviewer") or "").strip() or (reviewer or "").strip()
        if not who:
            raise DataError(f"{verdicts}:{line}: no reviewer: every decision names who made it",
                            hint="type your name in the page's name box, or pass --reviewer NAME")
        _record(config, draft, str(folder / DRAFTS))  # a draft the task no longer accepts is refused here
        decisions.append({"draft_id": did, "batch": folder.name, "verdict": verdict, "reviewer": who,
                          "reviewed": _stamp(now), "comment": (row.get("comment") or "").strip() or None})
    if not decisions:
        raise DataError(f"{verdicts}: no row has a verdict yet (column 'verdict' is empty everywhere)")
    root = project_dir / SYNTHETIC
    log = root / DECISIONS
    with log.open("a", encoding="utf-8") as f:
        for d in decisions:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    total = write_accepted(config, project_dir, drafts)
    return DraftsImport(accepted=sum(d["verdict"] == "accept" for d in decisions),
                        rejected=sum(d["verdict"] == "reject" for d in decisions), skipped=skipped,
                        reviewers=sorted({d["reviewer"] for d in decisions}), total_accepted=total,
                        accepted_path=root / ACCEPTED, decisions_path=log)


def write_accepted(config: ProjectConfig, project_dir: Path, drafts: dict[str, tuple[Path, dict[str, Any]]]) -> int:
    """Write accepted.jsonl anew: every draft whose latest decision is accept, in batch and draft
    order, with its reviewer in ``meta``; return how many."""
    from taskfit.data.prepare import record_to_row

    root = project_dir / SYNTHETIC
    latest: dict[str, dict[str, Any]] = {}
    for line in (root / DECISIONS).read_text(encoding="utf-8").splitlines():
        if line.strip():
            d = json.loads(line)
            latest[d["draft_id"]] = d
    rows = []
    for did in sorted(d for d, x in latest.items() if x["verdict"] == "accept"):
        if did not in drafts:
            raise DataError(f"{root / DECISIONS}: draft {did} was accepted, but no batch of {root} holds it",
                            hint="restore its batch folder, or remove its lines from decisions.jsonl")
        folder, draft = drafts[did]
        rec = _record(config, draft, str(folder / DRAFTS))
        decision = latest[did]
        rec = replace(rec, meta={**rec.meta, "reviewer": decision["reviewer"], "reviewed": decision["reviewed"]})
        rows.append(json.dumps(record_to_row(rec), ensure_ascii=False) + "\n")
    tmp = root / f"{ACCEPTED}.tmp-{os.getpid()}"
    tmp.write_text("".join(rows), encoding="utf-8")
    os.replace(tmp, root / ACCEPTED)
    return len(rows)
