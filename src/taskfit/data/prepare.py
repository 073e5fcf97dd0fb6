"""``data check`` and ``data prepare``: the audit, the data card, the clean split files.

``check_data`` streams the files and reports; ``prepare_data`` also keeps the rows, redacts
personal data and secrets, makes the leak-free split and writes what training and evaluation read.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from taskfit.config import PrivacySpec, ProjectConfig, ReplyRules
from taskfit.data import pii
from taskfit.data.lookalike import COPY, CONFLICT, Layouts, LookAlikes, decisive
from taskfit.data.read import lines_in
from taskfit.data.redaction import keeps, redact_row
from taskfit.data.scan import TEMPLATE, Quarantined, ScanResult, layout_previews, scan
from taskfit.data.split import (fingerprint, grouped_split, is_synthetic, stratified_split, stratified_subsample,
                                widened)
from taskfit.errors import DataError
from taskfit.records import Example, PreferencePair


@dataclass
class DataCard:
    """Everything ``data_card.md`` and ``data_card.json`` say."""

    task: str
    kind: str
    files: list[dict[str, Any]]
    counts: dict[str, int]
    labels: dict[str, int] = field(default_factory=dict)
    # classify: answers written in another case or spacing than their label, read as it
    respelled: list[dict[str, Any]] = field(default_factory=list)
    imbalance_ratio: float | None = None
    small_classes: list[str] = field(default_factory=list)
    size: dict[str, Any] = field(default_factory=dict)
    system_prompts: dict[str, Any] = field(default_factory=dict)
    tokens: dict[str, Any] = field(default_factory=dict)
    privacy: dict[str, Any] = field(default_factory=dict)
    # extract: per field, the kept rows filling it whose value their text does not write
    unwritten: dict[str, Any] = field(default_factory=dict)
    # generate: the kept replies (a pair's chosen one) that break task.reply, in all and per rule
    house_rules: dict[str, Any] = field(default_factory=dict)
    exact_duplicates: list[str] = field(default_factory=list)  # the first rows removed as exact duplicates (file:line)
    near_duplicates: list[dict[str, Any]] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    distinct_look_alikes: list[dict[str, Any]] = field(default_factory=list)
    templates: dict[str, Any] = field(default_factory=dict)
    quarantine: dict[str, Any] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def rows_summary(self) -> str:
        """The sentence whose counts must add up: read = kept + quarantined + duplicates."""
        c = self.counts
        return (f"{c['read']} rows read = {c['kept']} kept + {c['quarantined']} quarantined + "
                f"{c['exact_duplicates']} exact duplicates + {c['near_duplicates']} near-duplicates removed")

    def left_out(self) -> list[str]:
        """The kept rows the row caps left out of each side, in words ("1444 train rows by
        data.max_train_examples"); [] when none (or before a split)."""
        return [f"{self.split[key]} {side} rows by data.max_{side}_examples" for key, side in
                (("train_left_out", "train"), ("eval_left_out", "eval")) if self.split.get(key)]

    def split_summary(self) -> str:
        """The split in words, with the kept rows the row caps left out ("" before a split)."""
        sp = self.split
        if not sp:
            return ""
        left = self.left_out()
        leaks = self.counts.get("eval_rows_dropped_as_leaks")
        return (f"split: {sp['train']} train / {sp['eval']} eval"
                + (f"; left out (a stratified sample kept): {' and '.join(left)}" if left else "")
                + (f"; {leaks} held-out rows dropped as copies of (or conflicts with) training rows, as "
                   "redacted" if leaks else ""))


def reason_kind(reason: str) -> str:
    """The part of a quarantine reason that names its kind ("not UTF-8", "field 'id'", "answer"),
    without the row's particulars: rows are counted by it. It ends at the first colon outside
    brackets ("... (lines 3-6: a quote opened and not closed?)" is one kind)."""
    depth = 0
    for at, char in enumerate(reason):
        depth += (char in "([{") - (char in ")]}")
        if char == ":" and depth <= 0:
            return reason[:at]
    return reason


def commonest_quarantine(quarantined: list[Quarantined]) -> str:
    """The commonest quarantine reason in words, with how many rows it hit and its first row
    ("" when nothing was quarantined)."""
    if not quarantined:
        return ""
    kind, n = Counter(reason_kind(q.reason) for q in quarantined).most_common(1)[0]
    first = next(q for q in quarantined if reason_kind(q.reason) == kind)
    return (f"the commonest quarantine reason is '{kind}', on {n} of {len(quarantined)} quarantined rows "
            f"(first {first.source}: {first.reason})")


def _percentile(values: list[int], q: float) -> int:
    if not values:
        return 0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


# A field whose value its row's text writes in at least this many rows for each one it does not
# is one the text nearly always writes: the rows that do not are warned of (build_card).
RARELY_UNWRITTEN = 20

# A snapshot card's size verdict: its rows are added to the project's (build_card's ``addition``).
ADDED = "added to the project's rows"


def build_card(config: ProjectConfig, scans: list[ScanResult],
               split: tuple[list[int], list[int]] | None = None, addition: bool = False) -> DataCard:
    """Fold one or more scans (train, and a fixed eval file) into a card with plain-words
    warnings. ``split``: the layouts of the rows trained on and held out, once prepare has split
    them (else the card counts layouts per file). ``addition``: the rows are added to the
    project's own (a snapshot of reviewed requests), so the warnings about a training set's size
    and its small classes, which its rows alone would raise, are not given."""
    task, data = config.task, config.data
    kind = "preferences" if any(s.kind == "preferences" for s in scans) else "examples"
    counts = {
        "read": sum(s.read for s in scans), "kept": sum(s.kept for s in scans),
        "quarantined": sum(len(s.quarantined) for s in scans),
        "exact_duplicates": sum(s.exact_duplicates for s in scans),
        "near_duplicates": sum(len(s.near_duplicates) for s in scans),
        "conflicting_labels": sum(len(s.conflicts) for s in scans),
        "distinct_look_alikes": sum(s.distinct for s in scans),
        "breaking_house_rules": sum(s.broken_rows for s in scans),
    }
    card = DataCard(task=task.name, kind=task.kind if kind == "examples" else "preference",
                    files=[{"path": s.path, "read": s.read, "kept": s.kept, "empty_rows": s.empty_rows}
                           for s in scans], counts=counts)
    warnings = card.warnings
    labels: Counter = sum((s.labels for s in scans), Counter())
    if task.labels and kind == "examples":
        card.labels = {lab: labels.get(lab, 0) for lab in task.labels or []}
        present = [v for v in card.labels.values() if v]
        fallback = config.eval.fallback
        if addition and fallback and labels.get(fallback):  # reviewed requests that should have fallen back
            card.labels[fallback] = labels[fallback]
        card.imbalance_ratio = round(max(present) / min(present), 2) if present else None
        card.small_classes = [lab for lab, n in card.labels.items() if n < data.min_per_class] if not addition else []
        if card.small_classes:
            warnings.append(f"{len(card.small_classes)} classes have fewer than {data.min_per_class} rows "
                            f"({', '.join(card.small_classes)}): the model will rarely predict them, and "
                            "their held-out scores will be noise. Add examples or merge classes.")
        if card.imbalance_ratio and card.imbalance_ratio > 10:
            warnings.append(f"the largest class is {card.imbalance_ratio}x the smallest: accuracy will "
                            "hide poor small classes; read macro-F1 and the per-class scores.")
    respelled: Counter = sum((s.respelled for s in scans), Counter())
    card.respelled = [{"written": w, "label": lab, "rows": n} for (w, lab), n in respelled.most_common()]
    if respelled:
        shown = ", ".join(f"{w!r} → {lab!r} ({n})" for (w, lab), n in respelled.most_common(6))
        more = f" and {len(respelled) - 6} more spellings" if len(respelled) > 6 else ""
        what, keep = (("their label in another case or spacing", "To keep two spellings apart, list each in "
                       "task.labels.") if task.labels else
                      ("the refusal in another case or punctuation", "The model learns task.refusal as written."))
        warnings.append(f"{sum(respelled.values())} rows write {what} and were read as it: {shown}{more}. {keep}")
    empty = sum(s.empty_answers for s in scans)
    if empty:
        first = next(src for s in scans for src in s.empty_noted)
        warnings.append(f"{empty} rows have an empty answer cell, read as task.refusal (the passage does not hold "
                        f"the answer; first {first}): fill the cell where the passage does answer the question, "
                        "or the model learns to refuse it.")
    from taskfit.tasks import size_guidance

    size_key = "preference" if kind == "preferences" else task.kind
    minimum, recommended = size_guidance(size_key)  # from common fine-tuning practice
    # the rows trained on come from data.train alone: a fixed eval file's rows are held out
    fixed_eval = scans[1].kept if data.eval and len(scans) > 1 else None
    usable = counts["kept"] - (fixed_eval or 0)
    verdict = ("below the minimum" if usable < minimum else
               "enough to start" if usable < recommended else "good")
    caps = {key: value for key, value in (("data.max_train_examples", data.max_train_examples),
                                          ("data.max_eval_examples", data.max_eval_examples),
                                          ("eval.max_rows", config.eval.max_rows)) if value is not None}
    card.size = {"rows": usable, "fixed_eval_rows": fixed_eval,
                 "caps": caps, "minimum": minimum, "recommended": recommended, "verdict": verdict}
    quarantined = [q for s in scans for q in s.quarantined]
    if addition:
        card.size["verdict"] = ADDED
    elif usable < minimum:
        why = commonest_quarantine(quarantined) if counts["quarantined"] * 2 >= counts["read"] else ""
        warnings.append(f"{usable} usable {'training ' if fixed_eval is not None else ''}rows is below the "
                        f"{minimum} that {size_key} tasks need at least ({recommended}+ recommended)"
                        f"{'; ' + why if why else ''}.")
    not_utf8 = [q for q in quarantined if reason_kind(q.reason) == "not UTF-8"]
    if not_utf8:
        files = ", ".join(sorted({q.source.rsplit(":", 1)[0] for q in not_utf8}))
        warnings.append(f"{len(not_utf8)} rows are not UTF-8 and were quarantined (first {not_utf8[0].source}): "
                        f"{files} was probably saved as Windows-1252 or Latin-1. Re-save it as UTF-8 (in "
                        "Excel: Save As, CSV UTF-8; or iconv -f cp1252 -t utf-8) to keep those rows.")
    prompts: Counter = sum((s.system_prompts for s in scans), Counter())
    card.system_prompts = {"variants": len(prompts),
                           "top": [{"rows": n, "prompt": pii.redact(p[:120], privacy=data.privacy)}
                                   for p, n in prompts.most_common(3)]}
    if len(prompts) > 1:
        warnings.append(f"{len(prompts)} different system prompts: the model learns a different "
                        "behaviour per prompt, and serving will use one. Use one system prompt "
                        "(task.system_prompt) for every row.")
    lengths = [n for s in scans for n in s.lengths]
    if lengths:
        limit, room = config.train.max_seq_length, room_words(config.task.kind, config.eval.max_new_tokens)
        over = sum(n > limit for n in lengths)
        total = sum(s.rendered_tokens for s in scans)
        answer = sum(s.answer_tokens for s in scans)
        card.tokens = {"mean": round(sum(lengths) / len(lengths), 1), "p50": _percentile(lengths, 50),
                       "p95": _percentile(lengths, 95), "max": max(lengths),
                       "max_seq_length": limit, "over_max": over, "policy": data.too_long,
                       "loss_token_share": round(answer / total, 4) if total else 0.0,
                       "total": total}
        _answer_budget(config, scans, card.tokens, warnings)
        if answer == 0:
            warnings.append("no token carries loss: every answer is masked. Training would learn "
                            "nothing; check that rows end with the assistant's answer.")
        if over:
            # a length that holds 95% of all rows, or where the limit does already, every row (up to a multiple of 32)
            p95 = _percentile(lengths, 95)
            share, fits = ("95% of the rows", p95) if p95 > limit else ("every row", max(lengths))
            warnings.append(f"{over} rows need more than train.max_seq_length={limit} tokens (their prompt "
                            f"with the answer, or the room a cut prompt keeps for one: {room}); "
                            f"they will be {'cut to fit, their input from its end' if data.too_long == 'truncate' else 'dropped'} "
                            f"(data.too_long). train.max_seq_length: {-(-fits // 32) * 32} would hold {share} whole.")
        # Cutting the input leaves at least one of its tokens: a row whose template, system prompt
        # and answer alone take max_seq_length cannot be cut to fit, and training stops on it.
        unfittable = sum(n + 1 >= limit for s in scans for n in s.fixed_lengths)
        if unfittable and data.too_long == "truncate":
            named = sorted((x for s in scans for x in s.fixed_longest if x[0] + 1 >= limit), reverse=True)
            where = ", ".join(f"{src} ({n} tokens)" for n, src in named[:10])
            more = f" and {unfittable - len(named[:10])} more" if unfittable > 10 else ""
            warnings.append(f"{unfittable} rows cannot fit train.max_seq_length={limit} even with their "
                            f"input cut, since the system prompt and the answer (or the room a cut prompt "
                            f"keeps for it: {room}) alone take that many "
                            f"tokens: {where}{more}. Training would stop at the first; raise "
                            f"train.max_seq_length, {_shorter_answers(config)}, or set data.too_long: drop.")
    pii_counts: Counter = sum((s.pii_counts for s in scans), Counter())
    secret_rows = [src for s in scans for src in s.secret_rows]
    total = lambda name: sum((getattr(s, name) for s in scans), Counter())  # noqa: E731
    filled, kept = total("answer_fields"), total("answers_kept")
    card.privacy = {"rows_with_personal_data": sum(s.pii_rows for s in scans),
                    "findings": dict(pii_counts), "rows_with_secrets": len(secret_rows),
                    "secret_rows": secret_rows[:50], "action": data.privacy.action,
                    "keep_fields": list(data.privacy.keep_fields), "answers": counts["kept"],
                    "answers_changed": dict(total("answers_changed").most_common()),
                    "answers_kept": {k: kept[k] for k in filled if keeps(k, data.privacy.keep_fields)},
                    "answer_numbers_kept": dict(total("answer_numbers_kept").most_common()),
                    "answer_numbers_inside": dict(total("answer_numbers_inside").most_common())}
    if card.privacy["answers_changed"]:
        warnings.append(answers_changed_warning(card.privacy))
    numbers = card.privacy["answer_numbers_kept"]
    if numbers:
        warnings.append(f"answer numbers that look like personal data are kept as they are, and so are their "
                        f"occurrences in the inputs, since no placeholder can stand in a number: "
                        f"{', '.join(f'{k} {n}' for k, n in numbers.items())}. If they are personal data, "
                        "leave those fields out of the answers.")
    unused = [k for k in data.privacy.keep_fields if not any(keeps(f, [k]) for f in filled)]
    if unused and counts["kept"]:
        warnings.append(f"data.privacy.keep_fields names {', '.join(unused)}, which no answer fills.")
    if secret_rows:
        left = sum(s.unredacted_secret_rows for s in scans) if data.privacy.action != "keep" else 0
        warnings.append(f"{len(secret_rows)} rows contain credentials (API keys, tokens, private keys). "
                        "A model can repeat what it was trained on: `taskfit data prepare` redacts them, "
                        "and training refuses them unredacted"
                        + (f" ({left} keep one in a field of data.privacy.keep_fields)." if left else "."))
    if pii_counts:
        warnings.append(f"personal data found in {card.privacy['rows_with_personal_data']} rows "
                        f"({', '.join(f'{k} {v}' for k, v in pii_counts.most_common())}); data.privacy."
                        f"action = {data.privacy.action}.")
    card.near_duplicates = [asdict(n) for s in scans for n in s.near_duplicates[:50]]
    card.exact_duplicates = [src for s in scans for src in s.exact_noted]
    filled_rows: Counter = sum((s.field_rows for s in scans), Counter())
    unwritten: Counter = sum((s.unwritten for s in scans), Counter())
    card.unwritten = {name: {"rows": unwritten[name], "of": filled_rows[name],
                             "first": [src for s in scans for src in s.unwritten_noted.get(name, [])][:3]}
                      for name, _ in unwritten.most_common()}
    # A field its text nearly always writes, but for a few rows: those few are likely typed in
    # from elsewhere (invented, or from another document), which the model then learns to do.
    rare = [(name, u) for name, u in card.unwritten.items() if u["rows"] * RARELY_UNWRITTEN <= u["of"]]
    if rare:
        warnings.append("answer values their row's text does not write, in fields the text nearly always "
                        "writes: " + "; ".join(f"{name} {u['rows']} of {u['of']} (first {', '.join(u['first'])})"
                                               for name, u in rare)
                        + ". A model learns to write such values without reading them: check they are not "
                          "invented or copied from another document (a number written in words, or a date "
                          "written otherwise, is listed too; the card's table has every field).")
    _house_rules(card, task.reply, scans)
    card.conflicts = [asdict(n) for s in scans for n in s.conflicts[:50]]
    card.distinct_look_alikes = [asdict(n) for s in scans for n in s.distinct_notes]
    if counts["conflicting_labels"]:
        warnings.append(f"{counts['conflicting_labels']} near-identical inputs carry different answers that "
                        "their text does not explain (a label, or a value not written in the row): the model "
                        "is taught two answers to one question. Decide which is right.")
    layouts = scans[0].layout_index
    if layouts is not None:
        train, held = split or (list(scans[0].layouts), list(scans[1].layouts) if len(scans) > 1 else None)
        card.templates = _templates(config, layouts, train, held, warnings)
    reasons = Counter(reason_kind(q.reason) for q in quarantined)
    card.quarantine = {"rows": counts["quarantined"], "by_reason": dict(reasons.most_common(20)),
                       "first": [{"source": q.source, "reason": q.reason} for s in scans for q in s.quarantined[:20]]}
    return card


def _answer_budget(config: ProjectConfig, scans: list[ScanResult], tokens: dict[str, Any], warnings: list[str]) -> None:
    """The answers longer than the answer budget (eval.max_new_tokens, for the kinds that
    generate one): counted in the card's tokens, with the longest, and warned of: a generation
    stops at the budget, so such an answer is cut in evaluation and serving, and scored as cut."""
    from taskfit.data.infer import budget_for
    from taskfit.tasks import get_task

    if get_task(config.task.kind).scores_labels:  # a label's tokens are its budget
        return
    budget = config.eval.max_new_tokens
    longest, where = max((s.longest_answer for s in scans), key=lambda a: a[0])
    over = sum(n > budget for s in scans for n in s.answer_lengths)
    tokens.update(max_new_tokens=budget, answer_max=longest, answers_over_budget=over)
    if over:
        warnings.append(f"{over} answers need more than eval.max_new_tokens={budget} tokens (with the end of turn); "
                        f"the longest takes {longest} ({where}). Generation stops at eval.max_new_tokens, so "
                        f"those answers would be cut in evaluation and serving, and scored as cut: set "
                        f"eval.max_new_tokens: {budget_for(longest)} (the longest with a quarter to spare), or "
                        "shorten those answers.")


def _house_rules(card: DataCard, rules: ReplyRules, scans: list[ScanResult]) -> None:
    """The card's replies that break the house rules (task.reply), per rule with what the rule
    says and the first rows, and a warning: they are references, trained on and scored against."""
    broken: Counter = sum((s.broken_rules for s in scans), Counter())
    if not broken:
        return
    quoted = lambda phrases: ", ".join(json.dumps(p, ensure_ascii=False) for p in phrases)  # noqa: E731
    said = {"too short": f"min_words: {rules.min_words}", "too long": f"max_words: {rules.max_words}",
            "missing required phrase": f"must_include: {quoted(rules.must_include)}",
            "forbidden phrase": f"must_not_include: {quoted(rules.must_not_include)}",
            "pattern not matched": f"patterns: {quoted(rules.patterns)}"}
    card.house_rules = {"rows": card.counts["breaking_house_rules"], "of": card.counts["kept"],
                        "replies": "chosen replies" if card.kind == "preference" else "replies",
                        "rules": {rule: {"rows": n, "rule": said[rule],
                                         "first": [src for s in scans for src in s.broken_noted.get(rule, [])][:3]}
                                  for rule, n in broken.most_common()}}
    h = card.house_rules
    card.warnings.append(
        f"{h['rows']} of {h['of']} kept {h['replies']} break the house rules (task.reply) they are scored by: "
        + "; ".join(f"{rule} ({r['rule']}) {r['rows']} (first {', '.join(r['first'])})" for rule, r in h["rules"].items())
        + ". They are trained on as the house style, and those held out are the references candidates are "
          "scored against. Mend or remove those rows, or change task.reply if a rule is wrong (they are "
          "not quarantined: the card's table lists them by rule).")


TEMPLATES_SHOWN = 10
DOMINANT_SHARE = 0.5


def _templates(config: ProjectConfig, layouts: Layouts, train: list[int], held: list[int] | None,
               warnings: list[str]) -> dict[str, Any]:
    """The card's layouts section (those with two rows or more), and a warning when one layout
    makes up most of the held-out rows (of all rows, before there is a split)."""
    on_train, on_held = Counter(train), Counter(held or [])
    rows = on_train + on_held
    shared = {k: n for k, n in rows.items() if n >= 2}
    top = sorted(shared, key=lambda k: (-shared[k], k))[:TEMPLATES_SHOWN]
    if held:
        biggest = max(on_held, key=lambda k: (on_held[k], -k))
        n, of, where = on_held[biggest], len(held), "held-out rows"
    else:
        biggest = top[0] if top else -1
        n, of, where = shared.get(biggest, 0), sum(rows.values()), "rows"
    previews = layout_previews(layouts, list(dict.fromkeys(top + [biggest])) if n >= 2 else top,
                               config.task, config.data)
    if n >= 2 and n > DOMINANT_SHARE * of:
        then = ("held-out scores mostly measure that layout" if held else
                "a split holds out mostly that layout, and held-out scores mostly measure it")
        warnings.append(f"one layout (a template: one shop, one sender) holds {n} of {of} {where} "
                        f"({100 * n / of:.0f}%; it reads: \"{previews[biggest][:100]}\"): {then}. Add rows of "
                        "other layouts, or set data.group_by: template to hold out whole layouts and measure "
                        "how the model does on layouts it has not seen.")
    return {"threshold": layouts.threshold, "layouts": len(shared), "rows_in_layouts": sum(shared.values()),
            "rows": sum(rows.values()), "held_out": None if held is None else len(held),
            "top": [{"layout": k, "rows": shared[k], "train": on_train[k],
                     "held_out": None if held is None else on_held[k], "preview": previews[k]} for k in top]}


def answers_changed_warning(privacy: dict[str, Any]) -> str:
    """The warning for answers redaction rewrites, naming the fields, their counts and the
    setting that keeps them ("" when it rewrites none)."""
    changed = privacy.get("answers_changed") or {}
    if not changed:
        return ""
    names = ", ".join(dict.fromkeys([*privacy.get("keep_fields", []), *changed]))
    return (f"answers changed by redaction: {', '.join(f'{k} {n}' for k, n in changed.items())} (of "
            f"{privacy['answers']} answers); the model is trained and scored on placeholders (<EMAIL>, "
            "<PHONE>) where the data had the values, and learns to answer with them. If the values are "
            "personal data, that is what you want; if they are not (an order number read as a phone number, "
            f"a company's own address), add the fields to data.privacy.keep_fields (keep_fields: [{names}]): "
            "they are then kept verbatim in the answers and wherever they occur in the inputs.")


def _load_tokenizer(config: ProjectConfig, status: Callable[[str], None] | None):
    from taskfit.models.registry import load_tokenizer

    return load_tokenizer(config.model.name, status=status)


def data_file(project_dir: Path, name: str) -> Path:
    """A data file named in ``taskfit.yaml`` (relative to the project), as the user finds it:
    `init --from` writes ``../tickets.csv``, and a quarantined row reads ``tickets.csv:124``
    rather than ``DIR/../tickets.csv:124``."""
    return Path(os.path.normpath(project_dir / name))


def _data_paths(config: ProjectConfig, project_dir: Path) -> list[Path]:
    """data.train, and data.eval where the config names one."""
    return [data_file(project_dir, f) for f in [config.data.train] + ([config.data.eval] if config.data.eval else [])]


def data_lines(config: ProjectConfig, project_dir: Path) -> int | None:
    """Where the progress of :func:`check_data` and :func:`prepare_data` ends (their ``on_row``
    adds up to it): the data files' :func:`~taskfit.data.read.lines_in`, or None if one of them
    cannot be known before reading it."""
    counts = [lines_in(path) for path in _data_paths(config, project_dir)]
    return None if None in counts else sum(counts)


def check_data(config: ProjectConfig, project_dir: Path, tokenizer: Any = None,
               on_row: Callable[[int], None] | None = None) -> DataCard:
    """Stream the data files named in ``config`` and return the card (nothing is written).
    ``on_row``: the scans' progress (:func:`~taskfit.data.scan.scan`), of every file."""
    layouts = _layouts(config)
    scans = [scan(path, config.task, config.data, tokenizer=tokenizer, on_row=on_row,
                  room=_room(config, tokenizer), layouts=layouts) for path in _data_paths(config, project_dir)]
    card = build_card(config, scans)
    documents = config.baselines.documents
    if documents and not (project_dir / documents).is_dir():  # told now, not after a model has loaded
        card.warnings.append(f"baselines.documents: {project_dir / documents} is not a folder, so the rag "
                             "baseline cannot run: point it at a folder of .txt or .md files, or set it to null.")
    return card


def _layouts(config: ProjectConfig) -> Layouts | None:
    """One layout index for a project's files (a layout has one number in train and eval)."""
    data = config.data
    return Layouts(data.dedup) if data.dedup.near or data.group_by == TEMPLATE else None


@dataclass
class Prepared:
    train: list[Example | PreferencePair]
    eval: list[Example | PreferencePair]
    card: DataCard
    quarantined: list[Quarantined]
    unredacted_secret_rows: int
    privacy: PrivacySpec  # the settings the rows were redacted with (the quarantine file's too)


def _group_key(rec: Example | PreferencePair, key: str, layout: dict[str, int]) -> str:
    if key == TEMPLATE:
        return f"layout-{layout[rec.id]}"
    value = rec.meta.get(key)
    if value is None:
        raise DataError(f"{rec.source}: data.group_by is '{key}' but this row has no such column or meta key",
                        hint="give every row that column, or remove data.group_by")
    return str(value)


def prepare_data(config: ProjectConfig, project_dir: Path, tokenizer: Any = None,
                 on_row: Callable[[int], None] | None = None) -> Prepared:
    """Validate, deduplicate, redact (:mod:`taskfit.data.redaction`) and split; nothing is written
    (see :func:`write_prepared`). ``on_row``: the scans' progress, of data.train and of a fixed
    data.eval alike, as :func:`check_data` reports it (both end at :func:`data_lines`)."""
    data, task = config.data, config.task
    layouts = _layouts(config)
    train_scan = scan(data_file(project_dir, data.train), task, data, tokenizer=tokenizer, keep=True, on_row=on_row,
                      room=_room(config, tokenizer), layouts=layouts)
    scans = [train_scan]
    rows = train_scan.examples
    layout = {r.id: k for r, k in zip(rows, train_scan.layouts)}
    if tokenizer is not None and data.too_long == "drop":
        rows = [r for r, n in zip(rows, train_scan.lengths) if n <= config.train.max_seq_length]
    # Rows of data.train marked synthetic are never split: they join the training rows below, or
    # are left out (data.synthetic), so the held-out rows are the same either way.
    marked = [r for r in rows if is_synthetic(r)]
    rows = [r for r in rows if not is_synthetic(r)]
    leaked = wider = 0
    if data.eval:
        eval_scan = scan(data_file(project_dir, data.eval), task, data, tokenizer=tokenizer, keep=True, id_prefix="eval-",
                         on_row=on_row, room=_room(config, tokenizer), layouts=layouts)
        scans.append(eval_scan)
        layout.update((r.id, k) for r, k in zip(eval_scan.examples, eval_scan.layouts))
        held = eval_scan.examples
        drafted = [r for r in held if is_synthetic(r)]
        if drafted:
            raise DataError(f"{drafted[0].source}: {len(drafted)} rows of {data.eval} are marked meta.synthetic; "
                            "held-out rows must be real, or the scores measure the drafting model",
                            hint="move them to data.train (data.synthetic: include trains on them), or remove "
                                 "the mark from rows a person wrote")
        held, leaked = drop_leaks(rows, held, config)
        overlap = {r.id for r in rows} & {r.id for r in held}
        if overlap:
            raise DataError(f"{len(overlap)} row ids are in both {data.train} and {data.eval}, "
                            f"e.g. {sorted(overlap)[:3]}",
                            hint="give every row a unique id, or let taskfit split one file")
        train, test = rows, held
    else:
        if len(rows) < 4:
            why = commonest_quarantine(train_scan.quarantined)
            raise DataError(f"{data.train}: only {len(rows)} usable rows of {train_scan.read} read; at least 4 "
                            f"are needed to split{'; ' + why if why else ''}",
                            hint="fix those rows (`taskfit data check` lists every quarantined row and "
                                 "writes the data card), or add rows")
        if data.group_by:
            train, test = grouped_split(rows, data.eval_fraction, data.seed,
                                        [_group_key(r, data.group_by, layout) for r in rows])
        else:
            train, test = stratified_split(rows, data.eval_fraction, data.seed)
            wider = widened(rows, data.eval_fraction)
    uncapped = len(train), len(test)
    train = stratified_subsample(train, data.max_train_examples, data.seed)
    test = stratified_subsample(test, data.max_eval_examples, data.seed)
    capped_eval = len(test)  # the cap's count: leaks dropped below are counted as leaks, not twice
    if not data.eval:
        # Duplicates were removed on the rows as written; redaction can make two of them one (a
        # message sent twice with another e-mail address): a held-out row that copies a row trained
        # on, once redacted, would score the model on what it was taught (a walkthrough's replies:
        # 5 of 10 held-out rows). The rows trained on are the capped ones.
        test, leaked = drop_leaks(train, test, config)
    split = ([layout[r.id] for r in train], [layout[r.id] for r in test]) if layouts is not None else None
    # The real rows sub-sampled as they would be without any synthetic row, then those added.
    synthetic, synthetic_counts = synthetic_rows(config, project_dir, marked, train, test)
    train = train + synthetic
    card = build_card(config, scans, split)
    card.counts.update(synthetic_counts)
    if wider:
        card.warnings.append(f"the held-out split takes {uncapped[1]} of {sum(uncapped)} rows, {wider} more than "
                             f"data.eval_fraction {data.eval_fraction} asks: one row of each of its {uncapped[1]} "
                             "classes, so that every class is scored; those rows are not trained on.")
    if data.synthetic == "include" and not synthetic:
        card.warnings.append(f"data.synthetic is include, but there is no accepted synthetic row ({SYNTHETIC / ACCEPTED} "
                             "holds the drafts a person accepted: `taskfit data synth`, then `taskfit review "
                             "import`): training uses the real rows only.")
    if data.too_long == "drop" and tokenizer is not None:
        card.counts["dropped_too_long"] = len(train_scan.examples) - len(
            [n for n in train_scan.lengths if n <= config.train.max_seq_length])
    card.counts["eval_rows_dropped_as_leaks"] = leaked
    card.split = {"train": len(train), "eval": len(test), "seed": data.seed,
                  "group_by": data.group_by, "fixed_eval_file": data.eval,
                  "synthetic_train": len(synthetic),
                  # kept rows left out by data.max_train_examples / max_eval_examples (stratified samples kept)
                  "train_left_out": uncapped[0] - (len(train) - len(synthetic)), "eval_left_out": uncapped[1] - capped_eval,
                  "train_fingerprint": fingerprint(train), "eval_fingerprint": fingerprint(test)}
    return Prepared(train=train, eval=test, card=card, quarantined=[q for s in scans for q in s.quarantined],
                    unredacted_secret_rows=sum(s.unredacted_secret_rows for s in scans), privacy=data.privacy)


SYNTHETIC = Path("data") / "synthetic"  # taskfit data synth's batches, relative to the project
ACCEPTED = "accepted.jsonl"  # the drafts a person accepted: the only synthetic rows training reads


def synthetic_rows(config: ProjectConfig, project_dir: Path, marked: list, train: list,
                   held: list) -> tuple[list[Example], dict[str, int]]:
    """The synthetic rows to train on, after the real ``train`` rows, and their counts for the
    card: with ``data.synthetic: include``, the rows of data.train marked synthetic (``marked``)
    and the accepted drafts (:data:`ACCEPTED`), checked against the task as it is now, redacted by
    ``data.privacy`` as real rows are, less those that copy or contradict a held-out row
    (``held``); with ``exclude``, none. Drafts not accepted by a person are never read."""
    from taskfit.tasks import get_task

    path = project_dir / SYNTHETIC / ACCEPTED
    accepted = read_rows(path, config.task) if path.is_file() else []
    if config.data.synthetic == "exclude":
        return [], {"synthetic_excluded": len(marked) + len(accepted)}
    check = get_task(config.task.kind).answer_check(config.task)
    real = {r.id for r in train} | {r.id for r in held}
    drafts = []
    for rec in accepted:
        if not isinstance(rec, Example) or not is_synthetic(rec):
            raise DataError(f"{rec.source}: not a synthetic draft (no meta.synthetic)",
                            hint=f"{path} is written by `taskfit review import`; put real rows in data.train")
        if rec.id in real:
            raise DataError(f"{rec.source}: id {rec.id!r} is also a real row's id",
                            hint="give the real rows other ids, or remove this line")
        try:
            check(rec)
        except ValueError as exc:
            raise DataError(f"{rec.source}: {exc}",
                            hint="the task changed since this draft was accepted: remove the line, or set "
                                 "data.synthetic: exclude") from None
        drafts.append(redact_row(rec, config.task, config.data.privacy).record)
    rows = marked + drafts
    # drop_leaks removes rows of its second list that copy or contradict a row of its first.
    kept, leaked = drop_leaks(held, rows, config)
    return kept, {"synthetic_train": len(kept), "synthetic_dropped_as_leaks": leaked}


def drop_leaks(train: list, held: list, config: ProjectConfig) -> tuple[list, int]:
    """Remove held-out rows that leak a training row: a look-alike that copies it, or that
    conflicts with it (the model was taught the other answer to the same text). A look-alike
    whose answer differs and is written in its own text is a distinct example, and stays."""
    looks = LookAlikes(config.data.dedup, config.task)
    for rec in train:
        looks.add(looks.row(rec))
    kept = []
    for rec in held:
        verdict = decisive(looks.judge(looks.row(rec)))
        if verdict is None or verdict.kind not in (COPY, CONFLICT):
            kept.append(rec)
    return kept, len(held) - len(kept)


def record_to_row(rec: Example | PreferencePair) -> dict[str, Any]:
    """The JSONL row ``prepare`` writes: chat ``messages`` (or a preference pair) with id and meta."""
    if isinstance(rec, PreferencePair):
        row: dict[str, Any] = {"id": rec.id, "prompt": rec.prompt, "chosen": rec.chosen, "rejected": rec.rejected}
        if rec.system:
            row["system"] = rec.system
    else:
        messages = ([{"role": "system", "content": rec.system}] if rec.system is not None else [])
        user = rec.input if rec.context is None else rec.input
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": rec.target}]
        row = {"id": rec.id, "messages": messages}
        if rec.context is not None:
            row["context"] = rec.context
    if rec.meta:
        row["meta"] = rec.meta
    return row


def read_rows(path: Path, task: Any) -> list[Example | PreferencePair]:
    """The records a JSONL file of :func:`record_to_row`'s rows holds (a prepared split, a data
    snapshot's rows), in its order; a row that does not convert is a DataError naming its line."""
    from taskfit.data.formats import convert

    rows = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                rows.append(convert(obj, task, "preference" if "chosen" in obj else "messages", None,
                                    f"{path}:{line_no}", f"{path.stem}-{line_no}"))
            except ValueError as exc:
                raise DataError(f"{path}:{line_no}: {exc}",
                                hint="this file is written by taskfit; write it again rather than edit it") from None
    return rows


def write_prepared(prepared: Prepared, out_dir: Path) -> dict[str, Path]:
    """Write train.jsonl, eval.jsonl, quarantine.jsonl, data_card.json and data_card.md."""
    from taskfit.data.card import write_card

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"train": out_dir / "train.jsonl", "eval": out_dir / "eval.jsonl",
             "quarantine": out_dir / "quarantine.jsonl"}
    for name in ("train", "eval"):
        with paths[name].open("w", encoding="utf-8") as f:
            for rec in getattr(prepared, name):
                f.write(json.dumps(record_to_row(rec), ensure_ascii=False) + "\n")
    with paths["quarantine"].open("w", encoding="utf-8") as f:
        for q in prepared.quarantined:
            f.write(json.dumps({"source": q.source, "reason": q.reason,
                                "raw": pii.redact(q.raw.rstrip("\n"), privacy=prepared.privacy)},
                               ensure_ascii=False) + "\n")
    paths.update(write_card(prepared.card, out_dir))
    return paths


def room_words(kind: str, max_new_tokens: int | None = None) -> str:
    """What the room a cut prompt keeps for the answer is, in words: the longest label where the
    kind scores labels (eval.max_new_tokens does not enter it), else the answer budget."""
    from taskfit.tasks import get_task

    labels = kind != "preference" and get_task(kind).scores_labels  # a card of preference pairs has no task kind's
    return ("the longest label" if labels else
            "eval.max_new_tokens" + (f"={max_new_tokens}" if max_new_tokens is not None else ""))


def _shorter_answers(config: ProjectConfig) -> str:
    """How to make the answer's part of a row shorter, in words: a kind that scores labels never
    writes more than its longest label, so eval.max_new_tokens does not enter it."""
    from taskfit.tasks import get_task

    return ("shorten the system prompt or the longest labels" if get_task(config.task.kind).scores_labels
            else "lower eval.max_new_tokens, shorten those answers")


def _room(config: ProjectConfig, tokenizer: Any) -> int:
    """The tokens a cut prompt leaves for the answer (0 when no tokenizer counts lengths)."""
    from taskfit.rendering import answer_room

    return answer_room(tokenizer, config.task, config.eval.max_new_tokens) if tokenizer is not None else 0
