"""``taskfit review queue``: served requests worth a person's time, and their verdicts read back.

The queue has two parts. A **random sample** (``review.random_share`` of it), drawn uniformly from
the traffic, estimates production quality without bias: the share of its reviewed requests that
were served correctly. The **targeted** rest is the requests most likely wrong, in this order:
a shadow version disagreed (when the log marks it), the output was invalid for the task (an
extract record off the schema, a reply breaking the house rules), a qa refusal, a classify
fallback, then the least confident first; spread over the input space (k-means on TF-IDF into
``review.clusters`` groups, taken in turn, best first in each), so one kind of request cannot
fill the queue. A request is never queued twice: the review store remembers every one.

The export is the blind review's page and sheet (:mod:`taskfit.evaluation.review`): one answer per
request, marked correct or wrong, with the right answer when wrong. Why a request was picked, and
whether it is in the random sample, stays in the store, so the reviewer judges every request alike.
"""

from __future__ import annotations

import html
import random
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from taskfit.errors import ConfigError, DataError
from taskfit.lifecycle.reviews import Queued, ReviewStore, correction_of, store_path
from taskfit.monitoring.requests import LoggedRequest

COLUMNS = ["item", "request_id", "input", "answer", "note", "verdict", "correction", "reviewer", "comment"]
VERDICT_CHOICES = ("correct", "wrong", "unsure")
RANDOM = "random sample"
UNSURE = "left unsure before"
# Reasons for a targeted pick, most urgent first.
REASONS = ("shadow disagreement", "invalid output", "refusal", "fallback", "low confidence", "spread")


def reason_of(request: LoggedRequest, task: Any) -> str:
    """Why a request deserves review: the first of :data:`REASONS` that applies."""
    from taskfit.tasks import parse

    if request.shadow_agreed is False:
        return "shadow disagreement"
    if request.answer is not None and not parse(task, request.answer)[1]:
        return "invalid output"
    if task.kind == "qa" and request.answer is not None:
        from taskfit.tasks.qa import is_refusal

        if is_refusal(task, request.answer):
            return "refusal"
    if request.fallback:
        return "fallback"
    if request.confidence is not None:
        return "low confidence"
    return "spread"


def _priority(request: LoggedRequest, reason: str) -> tuple[int, float, float]:
    """Sort key: the reason's rank, then the least confident, then the newest."""
    return REASONS.index(reason), 1.0 if request.confidence is None else request.confidence, -request.created


def clusters(texts: Sequence[str], k: int, seed: int) -> list[int]:
    """Each text's group: k-means on TF-IDF (word unigrams and bigrams), at most ``k`` groups."""
    k = min(k, len(set(texts)))
    if k <= 1:
        return [0] * len(texts)
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectors = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1).fit_transform(texts)
    return [int(c) for c in KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(vectors)]


@dataclass(frozen=True)
class Pick:
    request: LoggedRequest
    reason: str
    random: bool
    cluster: int | None = None


def pick(requests: Sequence[LoggedRequest], task: Any, n: int, random_share: float, k: int, seed: int,
         queued: dict[str, Queued]) -> tuple[list[Pick], list[str], int]:
    """The queue from ``requests`` (answered ones only): ``round(n * random_share)`` drawn at random,
    the rest targeted (see the module docstring); never a request in ``queued``. Returns the picks,
    the already-queued requests the random draw took again (they join the random sample without
    being queued twice, so the sample stays uniform over the traffic), and the requests the
    targeted part left out as repeats of one queued now or before (the same model, input, context
    and answer: a client's retry, a common question), which a reviewer would judge again; of each
    such input the most urgent request is the one that may be picked."""
    answered = [r for r in requests if r.answered and r.answer is not None]
    rng = random.Random(seed)
    population = [r for r in answered if not (r.id in queued and queued[r.id].random)]
    drawn = rng.sample(population, min(len(population), round(n * random_share)))
    again = [r.id for r in drawn if r.id in queued]
    picks = [Pick(r, RANDOM, True) for r in drawn if r.id not in queued]
    taken = {r.id for r in drawn} | set(queued)
    candidates = [r for r in answered if r.id not in taken]
    wanted = n - len(picks)
    if wanted <= 0 or not candidates:
        return picks, again, 0
    models = {r.model for r in answered}  # another model's queue is another task's judgement
    before = {(q.model, q.input, q.context, q.served) for q in queued.values() if q.model in models}
    seen = before | {_shown(r) for r in drawn}
    ranked = sorted(((_priority(r, why), r, why) for r in candidates for why in [reason_of(r, task)]),
                    key=lambda m: m[0])
    unique, left = [], []
    for member in ranked:
        (left if _shown(member[1]) in seen else unique).append(member)
        seen.add(_shown(member[1]))
    groups = clusters([r.text or "" for _, r, _ in unique], k, seed)
    by_group: dict[int, list[tuple[tuple, LoggedRequest, str]]] = {}
    for member, g in zip(unique, groups):
        by_group.setdefault(g, []).append(member)
    for members in by_group.values():
        members.sort(key=lambda m: m[0])
    # Groups in the order of their most urgent request; one request from each group per round.
    order = sorted(by_group, key=lambda g: by_group[g][0][0])
    depth = 0
    while wanted > 0 and any(depth < len(by_group[g]) for g in order):
        for g in order:
            if wanted > 0 and depth < len(by_group[g]):
                _, r, why = by_group[g][depth]
                picks.append(Pick(r, why, False, g))
                wanted -= 1
        depth += 1
    judged = before | {_shown(p.request) for p in picks}  # queued before, or now
    return picks, again, sum(_shown(r) in judged for _, r, _ in left)


def _shown(request: LoggedRequest) -> tuple[str | None, str | None, str | None, str | None]:
    """What a reviewer is shown of a request (and the model it asked): two requests alike in it
    are one judgement."""
    return request.model, request.text, request.context, request.answer


def describe(p: Pick) -> str:
    """The reason as the store keeps it ("low confidence 0.31")."""
    if p.reason in ("low confidence", "fallback") and p.request.confidence is not None:
        return f"{p.reason} {p.request.confidence:.2f}"
    return p.reason


@dataclass(frozen=True)
class QueueResult:
    batch: str
    picks: list[Pick]
    random_again: int  # already-queued requests the random draw took again
    repeats: int  # requests left out of the targeted part as repeats of one shown already (see pick)
    eligible: int  # answered requests in the period
    paths: dict[str, Path]
    store: Path
    quality: tuple[int, int]  # the random sample so far: (reviewed, served correctly)

    def reasons(self) -> Counter:
        return Counter(p.reason for p in self.picks)


def _page_block(labels: Sequence[str] | None):
    from taskfit.evaluation.review import comment_box, radio

    def block(it: dict[str, str]) -> str:
        i = html.escape(it["item"])
        choices = " ".join(radio(i, "verdict", v, v) for v in VERDICT_CHOICES)
        value = html.escape(it["correction"])
        if labels:  # a label from the list, or a new one typed in (data from-log asks about those)
            field = (f'<input name="correction" data-item="{i}" data-field="correction" list="labels" '
                     f'value="{value}" placeholder="the right label, when wrong">')
        else:
            field = (f'<textarea name="correction" data-item="{i}" data-field="correction" rows="4">'
                     f'{value}</textarea>')
        note = f'<p class="note">{html.escape(it["note"])}</p>' if it.get("note") else ""
        return (f'<h3>Answer served</h3><pre class="answer">{html.escape(it["answer"])}</pre>{note}'
                f'<p class="choice">{choices}</p><label>Right answer, when wrong: {field}</label>{comment_box(i)}')

    return block


def fallback_note(r: Any) -> str:
    """What a reviewer is told of a reply that was the fallback: the model's own label and its
    confidence (the customer got the fallback, which is what is judged)."""
    if not r.fallback or r.answer is None or r.answer == r.served:
        return ""
    confidence = f", confidence {r.confidence:.2f}" if r.confidence is not None else ""
    return f"the fallback: the model's own label was {r.answer}{confidence}, under the confidence threshold"


def redact_comment(comment: str | None, privacy: Any) -> str | None:
    """A reviewer's free comment as the review store keeps it: redacted as the request log is
    (``data.privacy``), since a reviewer may copy a customer's e-mail or phone number into it."""
    from taskfit.data import pii

    return pii.redact(comment, privacy=privacy) if comment and comment.strip() else comment


def export_queue(out_dir: Path, picks: Sequence[Pick], task: Any, fallback: str | None = None) -> dict[str, Path]:
    """Write ``review.html`` and ``review.csv`` for the picks (shuffled: the order says nothing of
    why a request was picked). The correction starts empty for a label, and as the served answer
    otherwise (to be edited); the labels offered are the task's and the fallback (``fallback``,
    and any the picks were served)."""
    from taskfit.evaluation.review import review_page, shown_input, write_sheet

    items = []
    for k, p in enumerate(picks, 1):
        r = p.request
        items.append({"item": f"Q{k:03d}", "request_id": r.id, "input": shown_input(r.text or "", r.context),
                      "answer": r.served or "", "note": fallback_note(r), "verdict": "", "reviewer": "",
                      "comment": "", "correction": "" if task.labels else (r.served or "")})
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"html": out_dir / "review.html", "csv": out_dir / "review.csv"}
    write_sheet(paths["csv"], COLUMNS, items)
    page = review_page(
        "taskfit review queue", f"Review: {task.name}",
        "For each request, say whether the answer served was correct; when it was wrong, give the right "
        "answer. Mark it unsure to leave it for someone else: the next queue offers it first. Your "
        "corrections become training data once "
        "imported (`taskfit review import`).", items, COLUMNS, _page_block(task.labels), judged="verdict",
        reviewer=True)
    if task.labels:  # and the fallback served: the right answer where the model should have fallen back
        fallbacks = [fallback] + [p.request.served for p in picks if p.request.fallback]
        fallbacks = [f for f in fallbacks if f]
        options = "".join(f'<option value="{html.escape(lab)}">' for lab in dict.fromkeys([*task.labels, *fallbacks]))
        page = page.replace("</body>", f'<datalist id="labels">{options}</datalist></body>')
    paths["html"].write_text(page, encoding="utf-8")
    return paths


def project_log(project: Path, log: Path | None, model: str | None) -> tuple[Any, Path, Path, str]:
    """(config, project directory, request log, served model name): the log defaults to
    ``<project>/requests.sqlite`` and the model to task.name, where and as `taskfit serve DIR` serves."""
    from taskfit.config import load_config
    from taskfit.workflows.workspace import config_path

    path = config_path(project)
    config = load_config(path)
    log = log or path.parent / "requests.sqlite"
    return config, path.parent, log, model or config.task.name


def queue_project(project: Path, n: int | None = None, since: str | None = None, log: Path | None = None,
                  model: str | None = None, out_dir: Path | None = None, now: float | None = None) -> QueueResult:
    """``taskfit review queue``: pick, record in the review store, export the page and the sheet
    (default ``<project>/review/queue-<batch>/``)."""
    from taskfit.monitoring.monitor import parse_since
    from taskfit.monitoring.requests import open_log, read_requests

    config, project_dir, log, model = project_log(project, log, model)
    spec = config.review
    n = spec.queue_size if n is None else n
    if n < 1:
        raise ConfigError(f"--n {n}: pick at least one request")
    now = time.time() if now is None else now
    since_ts = parse_since(since, "--since", now) if since else None
    db = open_log(log)
    try:
        requests = read_requests(db, model, since_ts)
    finally:
        db.close()
    if not any(r.answered for r in requests):
        raise DataError(f"{log}: no answered request to {model!r}"
                        + (f" since {datetime.fromtimestamp(since_ts).isoformat(timespec='minutes')}" if since_ts else ""),
                        hint="serve the project (`taskfit serve DIR`) and send it traffic, or widen --since, "
                             "or name the served model with --model")
    with ReviewStore(store_path(log)) as store:
        queued = store.queued()
        # A request reviewed without being queued (POST /v1/feedback) is not put before a reviewer again.
        reviewed = {c.request_id for c in store.corrections()} - set(queued)
        requests = [r for r in requests if r.id not in reviewed]
        stamp = datetime.fromtimestamp(now).strftime("%Y%m%dT%H%M%S")
        taken = {q.batch for q in queued.values()}
        batch = next(name for name in [stamp] + [f"{stamp}-{k}" for k in range(2, len(taken) + 3)]
                     if name not in taken)  # a second queue within the second gets its own name
        # Requests a reviewer left unsure come first, in a new batch: the page promises someone else sees them.
        judged = {c.request_id for c in store.corrections()}  # judged since (an older sheet imported again)
        by_id = {r.id: r for r in requests if r.answered and r.id not in judged}
        unsure = sorted((q for q in queued.values() if q.unsure and q.model == model and q.request_id in by_id),
                        key=lambda q: q.unsure)[:n]
        left = [Pick(by_id[q.request_id], UNSURE, q.random) for q in unsure]
        picks, again, repeats = (pick(requests, config.task, n - len(left), spec.random_share, spec.clusters,
                                      spec.seed, queued) if n > len(left) else ([], [], 0))
        fresh = list(picks)
        picks = left + picks
        if not picks:
            repeated = f" ({repeats} repeat the input and answer of a queued one)" if repeats else ""
            raise DataError(f"{log}: every answered request to {model!r} has been queued already{repeated}",
                            hint="wait for new traffic, or widen --since")
        random.Random(spec.seed).shuffle(picks)
        paths = export_queue(out_dir or project_dir / "review" / f"queue-{batch}", picks, config.task,
                             config.eval.fallback)
        items = {id(p): Queued(request_id=p.request.id, model=model, batch=batch, item=f"Q{k:03d}", queued=now,
                               reason=describe(p), random=p.random, input=p.request.text, context=p.request.context,
                               served=p.request.served, requested=p.request.created)
                 for k, p in enumerate(picks, 1)}
        store.enqueue(items[id(p)] for p in fresh)
        store.requeue(items[id(p)] for p in left)
        store.mark_random(again)
        quality = store.random_sample(model)
    return QueueResult(batch=batch, picks=picks, random_again=len(again), repeats=repeats,
                       eligible=sum(r.answered for r in requests), paths=paths, store=store_path(log),
                       quality=quality)


@dataclass(frozen=True)
class ImportResult:
    stored: int
    correct: int
    wrong: int
    skipped: int  # unsure or not judged: they stay queued, unreviewed
    reviewers: list[str]
    store: Path
    quality: tuple[int, int]
    unknown_labels: Counter  # classify corrections outside task.labels (data from-log quarantines them)


def import_queue(project: Path, verdicts: Path, reviewer: str | None = None, log: Path | None = None,
                 model: str | None = None) -> ImportResult:
    """``taskfit review import`` of a queue's sheet: each judged row becomes a correction with its
    reviewer (the sheet's column, else ``reviewer``). Every row must name a queued request and a
    valid verdict, or the error names each line that does not; nothing is stored unless every row
    is valid."""
    from taskfit.evaluation.review import read_sheet
    from taskfit.records import Example
    from taskfit.tasks import get_task
    from taskfit.tasks.base import answer_spelling

    config, _, log, model = project_log(project, log, model)
    kind = get_task(config.task.kind)
    spelling, check = answer_spelling(kind, config.task), kind.answer_check(config.task)
    with ReviewStore(store_path(log)) as store:
        queued = store.queued()
        corrections, skipped, unsure = [], 0, []
        bad: list[tuple[str, str | None]] = []  # every row that cannot be taken, said at once: (why, hint)
        for line, row in read_sheet(verdicts, {"request_id", "verdict", "correction"},
                                    "import the CSV that the queue's review.html downloads, or its review.csv "
                                    "filled in"):
            rid = (row.get("request_id") or "").strip()
            q = queued.get(rid)
            if q is None:
                bad.append((f"{verdicts}:{line}: request_id {rid!r} was never queued in {store.path}",
                            "import the sheet of a `taskfit review queue` of this project (or name its log with "
                            "--log)"))
                continue
            verdict = (row.get("verdict") or "").strip().lower()
            if verdict in ("", "unsure"):
                skipped += 1
                if verdict == "unsure":
                    unsure.append(rid)
                continue
            given = row.get("correction")
            try:
                if given and given.strip():
                    given = spelling(given.strip())  # "Billing" is the label billing
                    if not kind.scores_labels:  # a label outside task.labels is kept and warned about below
                        check(Example(id=rid, input=q.input or "", target=given, context=q.context))
                corrections.append(correction_of(rid, q.model, q.served, q.input, q.context, q.requested,
                                                 (row.get("reviewer") or "").strip() or reviewer, verdict,
                                                 given, f"queue {q.batch}", redact_comment(row.get("comment"),
                                                                                          config.data.privacy)))
            except ValueError as exc:
                hint = ("type your name in the page's name box, or pass --reviewer NAME"
                        if "no reviewer" in str(exc) else None)
                bad.append((f"{verdicts}:{line}: {exc}", hint))
        if bad:  # nothing stored: every row is named, so that one round of mending takes them all
            listed = "\n".join(why for why, _ in bad[:20])
            listed += f"\n... and {len(bad) - 20} more" if len(bad) > 20 else ""
            hints = list(dict.fromkeys(h for _, h in bad if h))
            raise DataError(listed if len(bad) == 1 else f"{len(bad)} rows cannot be imported (nothing was stored):\n"
                            + listed, hint="; ".join(hints) or None)
        if not corrections and not unsure:
            raise DataError(f"{verdicts}: no row has a verdict yet (column 'verdict' is empty everywhere)")
        store.mark_unsure(unsure, time.time())  # offered first by the next queue, to someone else
        if corrections:
            store.add(corrections)
        quality = store.random_sample(model)
    # (the fallback is no label, but a correction to it is known: data from-log holds it out)
    labels = set(config.task.labels or []) | ({config.eval.fallback} if config.eval.fallback else set())
    unknown = Counter(c.correction for c in corrections if config.task.labels and c.correction not in labels)
    return ImportResult(stored=len(corrections), correct=sum(c.verdict == "correct" for c in corrections),
                        wrong=sum(c.verdict == "wrong" for c in corrections), skipped=skipped,
                        reviewers=sorted({c.reviewer for c in corrections}), store=store_path(log),
                        quality=quality, unknown_labels=unknown)


def quality_sentence(quality: tuple[int, int]) -> str:
    """The random sample's estimate of production quality, with its 95% Wilson interval."""
    reviewed, correct = quality
    if not reviewed:
        return "random sample: none reviewed yet, so no estimate of production quality"
    from scipy.stats import binomtest

    ci = binomtest(correct, reviewed).proportion_ci(method="wilson")
    return (f"random sample: {correct} of {reviewed} reviewed requests served correctly, "
            f"{100 * correct / reviewed:.0f}% [{100 * ci.low:.0f}%, {100 * ci.high:.0f}%] (95% Wilson)")
