"""``taskfit data from-log``: reviewed requests → the next training rows, as a data snapshot.

Only corrections become rows (:mod:`taskfit.lifecycle.reviews`: a reviewer's verdict, or an
application's ``POST /v1/feedback``); a request nobody reviewed never does. Each reviewed request
goes through the data checks' own rules, in this order, and its count lands in exactly one place:

    reviewed = added (training + recent held-out) + quarantined + exact duplicates + near-duplicates

1. **Validated** as a row of the project would be (``data.format`` messages, the task's answer
   check): a correction that is no valid answer is quarantined with the reason; a classify label
   outside ``task.labels`` with the hint to add it to the taxonomy deliberately (a new label is a
   decision, not a typo to learn from). A classify correction to ``eval.fallback`` (not a label)
   is valid: the reply should have fallen back, and the row goes to the recent held-out set only.
2. **Redacted** by ``data.privacy``, input and answer together (:mod:`taskfit.data.redaction`;
   the log is redacted already, a reviewer's answer is not).
3. **De-duplicated** against every row of the project's data files (training and held-out) and
   against each other, by the data check's exact and near-duplicate tests (``data.dedup``); a
   correction that contradicts an existing row with the same or a near-identical input is shown
   as a conflict.
4. **Split**: ``review.recent_share`` of the requests (by a hash of the request's text, normalised,
   so a request and any re-send of it stay on one side, run after run, whatever ids the server
   gave them) form the *recent held-out set*, which measures the next
   comparison on current traffic; the rest are training rows. The project's fixed held-out split
   never takes these rows.

Each row's ``meta`` carries its lineage (request id, model, reviewer, verdict, the answer served,
when it was requested and reviewed). The snapshot holds every reviewed request to date, so it is
complete by itself: ``<project>/data/snapshots/<digest>/`` (the digest is the SHA-256 of its rows,
so the same reviews make the same snapshot) with ``train.jsonl``, ``recent_held_out.jsonl``,
``quarantine.jsonl``, ``data_card.json``, ``data_card.md`` and ``snapshot.json``;
``<project>/data/snapshots/LATEST`` names the newest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from taskfit.errors import ConfigError, DataError

SNAPSHOTS = Path("data") / "snapshots"
LATEST = "LATEST"


@dataclass(frozen=True)
class Snapshot:
    """One written snapshot, as ``taskfit retrain`` reads it."""

    root: Path
    digest: str
    train: Path  # reviewed rows to add to the training rows (prepare's JSONL: messages, id, meta)
    recent_held_out: Path  # reviewed rows to score candidates on, beside the fixed held-out split
    info: dict[str, Any]  # snapshot.json: counts, lineage, settings

    @property
    def short(self) -> str:
        return self.digest[:16]

    def train_rows(self, task: Any) -> list[Any]:
        """The reviewed training rows, as records (Example)."""
        from taskfit.data.prepare import read_rows

        return read_rows(self.train, task)

    def recent_rows(self, task: Any) -> list[Any]:
        """The recent held-out rows, as records (Example)."""
        from taskfit.data.prepare import read_rows

        return read_rows(self.recent_held_out, task)

    @classmethod
    def at(cls, root: Path) -> "Snapshot":
        info = json.loads((root / "snapshot.json").read_text(encoding="utf-8"))
        return cls(root=root, digest=info["digest"], train=root / "train.jsonl",
                   recent_held_out=root / "recent_held_out.jsonl", info=info)


def latest_snapshot(project_dir: Path) -> Snapshot | None:
    """The newest snapshot ``data from-log`` wrote for the project (None: none yet)."""
    pointer = project_dir / SNAPSHOTS / LATEST
    if not pointer.is_file():
        return None
    return Snapshot.at(project_dir / SNAPSHOTS / pointer.read_text(encoding="utf-8").strip())


@dataclass(frozen=True)
class FromLogResult:
    snapshot: Snapshot
    reviewed: int
    train: int
    recent: int
    quarantined: int
    exact_duplicates: int
    near_duplicates: int
    conflicts: int
    unchanged: bool  # the same reviews made this snapshot before
    card: Any
    fell_back: int = 0  # classify corrections to eval.fallback: recent held-out rows only (in ``recent``)

    @property
    def added(self) -> int:
        return self.train + self.recent

    def sentence(self) -> str:
        fell_back = (f", of which {self.fell_back} should have fallen back: held out only, as a classifier "
                     "learns no fallback label" if self.fell_back else "")
        return (f"{self.reviewed} reviewed requests = {self.added} added ({self.train} training, {self.recent} "
                f"recent held-out{fell_back}) + {self.quarantined} quarantined + {self.exact_duplicates} exact "
                f"duplicates + {self.near_duplicates} near-duplicates (each a copy of one of the project's rows or "
                "of another reviewed request)")


def _stamp(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def recent_side(text: str, share: float) -> bool:
    """Whether a reviewed request belongs to the recent held-out set: a hash of its text
    (:func:`split_text`) below ``share``. Stable: the same request, and a re-send of it under
    another id, is on the same side in every snapshot, so a snapshot depends on the traffic alone."""
    h = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < share


def split_text(rec: Any) -> str:
    """What decides a reviewed row's side: its input, normalised (whitespace and case), with its
    qa passage's digest (:func:`taskfit.data.lookalike.input_text`)."""
    from taskfit.data.lookalike import input_text, normalise

    return normalise(input_text(rec))


def from_log_project(project: Path, log: Path | None = None, model: str | None = None) -> FromLogResult:
    """Turn every reviewed request to the project's model into a data snapshot (module docstring)."""
    from taskfit.data import pii
    from taskfit.data.admit import EXACT, NewRows
    from taskfit.data.card import write_card
    from taskfit.data.prepare import build_card, data_file, record_to_row
    from taskfit.data.redaction import redact_row
    from taskfit.data.scan import Quarantined, ScanResult, count_kept, scan
    from taskfit.data.split import fingerprint
    from taskfit.lifecycle.queue import project_log
    from taskfit.lifecycle.reviews import ReviewStore, store_path

    config, project_dir, log, model = project_log(project, log, model)
    task, data = config.task, config.data
    if config.train.method == "dpo":
        raise ConfigError("data from-log writes labelled examples (input and the right answer); this project "
                          "trains on preference pairs (train.method: dpo)",
                          hint="review and retrain a lora, qlora or full project")
    store = store_path(log)
    if not store.is_file():
        raise DataError(f"{store}: no review store, so no reviewed request",
                        hint="review requests first: `taskfit review queue`, then `taskfit review import`, or "
                             "send corrections to the server's POST /v1/feedback")
    with ReviewStore(store) as reviews:
        corrections = reviews.corrections(model)
    if not corrections:
        raise DataError(f"{store}: no reviewed request to model {model!r}",
                        hint="import a reviewed queue (`taskfit review import`) or send POST /v1/feedback")

    # Every row of the data files, training and held-out, before any sampling: nothing reviewed may
    # repeat one of them. Look-alikes are judged by the data checks' own rule (taskfit.data.lookalike):
    # a copy of a row or a conflict with one is not added; a distinct example (its own answer written
    # in its text, or a template filled in again) is.
    existing = [r for f in [data.train] + ([data.eval] if data.eval else [])
                for r in scan(data_file(project_dir, f), task, data, keep=True, id_prefix="existing-").examples]
    rows = NewRows(config, existing, ["existing"] * len(existing))

    # A classify correction to the fallback (eval.fallback, not one of task.labels) says the served
    # answer should have fallen back: no training row (a classifier learns no fallback label), but a
    # recent held-out row, where the next version is right only if it falls back there too.
    fallback = config.eval.fallback if task.kind == "classify" and config.eval.fallback not in (task.labels or []) \
        else None
    result = ScanResult(path=str(store), kind="examples")
    train, recent, fell_back = [], [], 0
    for c in corrections:
        source = f"review:{c.request_id}"
        result.read += 1
        lineage = {"request_id": c.request_id, "model": c.model, "reviewer": c.reviewer, "verdict": c.verdict,
                   "served": c.served, "requested": _stamp(c.requested), "reviewed": _stamp(c.reviewed),
                   "review": c.source}
        raw = {"id": f"review-{c.request_id}", "context": c.context, "meta": lineage,
               "messages": [{"role": "user", "content": c.input}, {"role": "assistant", "content": c.correction}]}
        try:
            if c.input is None:
                raise ValueError("input: the request log kept no text for this request")
            held = fallback is not None and c.correction == fallback
            rec = rows.record(raw, source, checked=not held)
        except ValueError as exc:
            reason = str(exc)
            if task.labels and "is not in task.labels" in reason:
                reason += ("; if it is a new category, add it to task.labels deliberately (a taxonomy change "
                           "is carried through retraining), then run data from-log again")
            result.quarantined.append(Quarantined(source, reason, json.dumps(raw, ensure_ascii=False)))
            continue
        redaction = redact_row(rec, task, data.privacy)
        rec = redaction.record
        repeat = rows.admit(rec, "reviewed", source)
        if repeat is not None:
            if repeat.kind == EXACT:
                result.exact_duplicates += 1
            else:
                result.near_duplicates.append(repeat.note)
                if repeat.conflict is not None:
                    result.conflicts.append(repeat.conflict)
            continue
        count_kept(result, rec, redaction, task, source)
        fell_back += held
        (recent if held or recent_side(split_text(rec), config.review.recent_share) else train).append(rec)

    card = build_card(config, [result], addition=True)  # rows added to the project's, not a training set alone
    card.split = {"train": len(train), "eval": len(recent), "seed": None, "group_by": None,
                  "fixed_eval_file": None, "recent_share": config.review.recent_share,
                  "train_fingerprint": fingerprint(train), "eval_fingerprint": fingerprint(recent)}
    texts = {name: "".join(json.dumps(record_to_row(r), ensure_ascii=False) + "\n" for r in rows)
             for name, rows in (("train", train), ("recent_held_out", recent))}
    digest = hashlib.sha256((texts["train"] + "\0" + texts["recent_held_out"]).encode()).hexdigest()
    root = project_dir / SNAPSHOTS / digest[:16]
    unchanged = (root / "snapshot.json").is_file()
    if not unchanged:
        info = {"digest": digest, "created": _stamp(time.time()), "model": model, "log": str(log),
                "store": str(store), "reviewed": result.read, "train": len(train), "recent_held_out": len(recent),
                "fell_back": fell_back,
                "quarantined": len(result.quarantined), "exact_duplicates": result.exact_duplicates,
                "near_duplicates": len(result.near_duplicates), "conflicts": len(result.conflicts),
                "recent_share": config.review.recent_share, "data_train": data.train, "data_eval": data.eval,
                "labels": list(task.labels or []),
                "reviewers": sorted({c.reviewer for c in corrections}),
                "request_ids": [c.request_id for c in corrections]}
        tmp = root.with_name(root.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, text in texts.items():
            (tmp / f"{name}.jsonl").write_text(text, encoding="utf-8")
        with (tmp / "quarantine.jsonl").open("w", encoding="utf-8") as f:
            for q in result.quarantined:
                f.write(json.dumps({"source": q.source, "reason": q.reason,
                                    "raw": pii.redact(q.raw, privacy=data.privacy)}, ensure_ascii=False) + "\n")
        write_card(card, tmp)
        (tmp / "snapshot.json").write_text(json.dumps(info, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, root)  # whole or absent: a reader never sees half a snapshot
    (project_dir / SNAPSHOTS / LATEST).write_text(root.name + "\n", encoding="utf-8")
    return FromLogResult(snapshot=Snapshot.at(root), reviewed=result.read, train=len(train), recent=len(recent),
                         quarantined=len(result.quarantined), exact_duplicates=result.exact_duplicates,
                         near_duplicates=len(result.near_duplicates), conflicts=len(result.conflicts),
                         unchanged=unchanged, card=card, fell_back=fell_back)
