"""The data card: ``data_card.json`` for machines and ``data_card.md`` for people.

Previews in the card are redacted and secrets are referred to by row, never shown.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from taskfit.data.prepare import ADDED, DataCard, room_words


def render_markdown(card: DataCard) -> str:
    c = card.counts
    lines = [f"# Data card: {card.task}", "",
             f"Task kind: **{card.kind}**. Files: " + ", ".join(
                 f"`{f['path']}` ({f['read']} rows"
                 + (f"; {f['empty_rows']} rows of empty cells skipped" if f.get("empty_rows") else "") + ")"
                 for f in card.files),
             "", "## Rows", "",
             card.rows_summary() + ".",
             ""]
    if c.get("distinct_look_alikes") or c.get("near_duplicates"):
        lines.append(f"Look-alikes (inputs near-identical to an earlier row's): a copy (the same answer, inputs that "
                     f"differ trivially: data.dedup.copy_words) is removed as a near-duplicate; "
                     f"{c.get('distinct_look_alikes', 0)} were kept as distinct examples (a template filled in again "
                     "with words of its own, or a different answer written in their own text, or a different free "
                     "reply); any other different answer is a conflict, removed and listed below.")
    if c.get("dropped_too_long"):
        lines.append(f"{c['dropped_too_long']} kept rows were then dropped as too long (data.too_long = drop).")
    if c.get("eval_rows_dropped_as_leaks"):
        lines.append(f"{c['eval_rows_dropped_as_leaks']} eval rows were dropped as copies of training rows "
                     "(or conflicting with one), compared as redacted.")
    if card.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in card.warnings] + [""]
    s = card.size
    judged = (f" (minimum {s['minimum']}, recommended {s['recommended']}+ for this kind of task)."
              if s["verdict"] != ADDED else " (the training set's size is for the project's own card to judge).")
    lines += ["## Size", "", size_sentence(card) + f": {s['verdict']}{judged}", ""]
    if card.labels:
        lines += ["## Labels", "", "| label | rows |", "|---|---|"]
        lines += [f"| {lab} | {n} |" for lab, n in sorted(card.labels.items(), key=lambda kv: -kv[1])]
        lines += ["", f"Imbalance ratio (largest / smallest): {card.imbalance_ratio}.", ""]
    if card.respelled:
        lines += ["Answers read as the task writes them (a label in another case, the refusal in other "
                  "punctuation):", "", "| written | read as | rows |", "|---|---|---|"]
        lines += [f"| {r['written']!r} | {r['label']} | {r['rows']} |" for r in card.respelled] + [""]
    if card.tokens:
        t = card.tokens
        lines += ["## Token lengths (rendered with the model's chat template)", "",
                  "Tokens a row needs: its prompt with its answer, or with the room a cut prompt keeps for an "
                  f"answer where that is longer ({room_words(card.kind)}), as training, "
                  "evaluation and serving decide a cut. "
                  f"mean {t['mean']}, p50 {t['p50']}, p95 {t['p95']}, max {t['max']}; "
                  f"{t['over_max']} rows over max_seq_length={t['max_seq_length']} (policy: {t['policy']}). "
                  f"Share of tokens that carry loss: {100 * t['loss_token_share']:.1f}%.", ""]
    sp = card.system_prompts
    lines += ["## System prompts", "", f"{sp.get('variants', 0)} variant(s)."]
    lines += [f"- {p['rows']} rows: \"{p['prompt']}\"" for p in sp.get("top", [])] + [""]
    p = card.privacy
    lines += ["## Personal data and secrets", "",
              f"{p['rows_with_personal_data']} rows hold personal data: "
              + (", ".join(f"{k} {v}" for k, v in p["findings"].items()) or "none") + ". "
              f"{p['rows_with_secrets']} rows hold credentials. Action: **{p['action']}**.", ""]
    counted = lambda d: ", ".join(f"{k} {n}" for k, n in d.items())  # noqa: E731
    if p.get("keep_fields"):
        lines += [f"Kept verbatim by data.privacy.keep_fields ({', '.join(p['keep_fields'])}), in the answers "
                  "and wherever they occur in the inputs; answers whose value redaction would have changed: "
                  f"{counted(p.get('answers_kept', {})) or 'none'}.", ""]
    if p.get("answers_changed"):
        lines += [f"Answers changed by redaction, in the answer and the input alike: "
                  f"{counted(p['answers_changed'])} (of {p['answers']} answers).", ""]
    if p.get("answer_numbers_inside"):
        lines += [f"Answer numbers the text writes only inside personal data (the 1 of a phone number "
                  f"+1 415 555 0134), redacted there with it: the answer keeps the number: "
                  f"{counted(p['answer_numbers_inside'])}.", ""]
    if p.get("answer_numbers_kept"):
        lines += [f"Answer numbers that look like personal data, kept as they are (no placeholder can stand "
                  f"in a number): {counted(p['answer_numbers_kept'])}.", ""]
    if p["secret_rows"]:
        lines += ["Rows with credentials (values never shown): " + ", ".join(f"`{r}`" for r in p["secret_rows"][:20]), ""]
    if card.templates.get("top"):
        t = card.templates
        held = t["held_out"] is not None
        lines += ["## Layouts (templates)", "",
                  f"{t['layouts']} layouts have two rows or more, {t['rows_in_layouts']} of {t['rows']} rows "
                  f"(inputs alike at {t['threshold']} with digits masked). `data.group_by: template` keeps each "
                  "on one side of the split.", "",
                  "| layout | rows | train | held out | what its rows share |" if held else "| layout | rows | what its rows share |",
                  "|---|---|---|---|---|" if held else "|---|---|---|"]
        lines += [f"| {x['layout']} | {x['rows']} | " + (f"{x['train']} | {x['held_out']} | " if held else "")
                  + x["preview"][:200].replace("|", "\\|") + " |" for x in t["top"]]
        lines.append("")
    if card.conflicts:
        lines += ["## Conflicting answers (near-identical inputs, different answers the text does not explain)", "",
                  "| kept row | answer | removed row | answer | similarity |", "|---|---|---|---|---|"]
        lines += [f"| `{n['kept']}`: {n['kept_preview'][:70]!r} | {n['kept_label']} | `{n['other']}`: "
                  f"{n['other_preview'][:70]!r} | {n['other_label']} | {n['similarity']} |" for n in card.conflicts[:20]]
        lines.append("")
    if card.unwritten:
        lines += ["## Answer values the text does not write", "",
                  "Per field: the kept rows whose value is not written in their own text (as it is, or a number "
                  "with two decimals; a date written otherwise and true/false values count here too).", "",
                  "| field | rows | of rows filling it | first rows |", "|---|---|---|---|"]
        lines += [f"| {name} | {u['rows']} | {u['of']} | {', '.join(f'`{s}`' for s in u['first'])} |"
                  for name, u in card.unwritten.items()] + [""]
    if card.house_rules:
        h = card.house_rules
        lines += ["## Replies that break the house rules (task.reply)", "",
                  f"{h['rows']} of {h['of']} kept {h['replies']} break a rule a served reply is held to: trained on "
                  "as the house style, and scored against when held out. They are kept.", "",
                  "| rule | task.reply | rows | first rows |", "|---|---|---|---|"]
        lines += [f"| {rule} | " + r["rule"].replace("|", "\\|") + f" | {r['rows']} | "
                  f"{', '.join(f'`{s}`' for s in r['first'])} |" for rule, r in h["rules"].items()] + [""]
    if card.exact_duplicates:
        lines += [f"## Exact duplicates (first {min(10, len(card.exact_duplicates))})", "",
                  "Each repeats an earlier row word for word (after normalising case and spacing) and was removed:", ""]
        lines += [f"- `{src}`" for src in card.exact_duplicates[:10]] + [""]
    if card.near_duplicates:
        lines += ["## Near-duplicates (first 10)", ""]
        lines += [f"- `{n['other']}` ≈ `{n['kept']}` (similarity {n['similarity']})" for n in card.near_duplicates[:10]]
        lines.append("")
    if card.distinct_look_alikes:
        lines += ["## Look-alikes kept as distinct examples (first 10)", ""]
        lines += ["Each row's input (what makes them look alike), then the answers that set them apart:", ""]
        lines += [f"- `{n['other']}` ≈ `{n['kept']}` (similarity {n['similarity']}): {n['other_preview'][:100]!r} "
                  f"vs {n['kept_preview'][:100]!r}; answers {n['other_label']!r} vs {n['kept_label']!r}"
                  for n in card.distinct_look_alikes[:10]]
        lines.append("")
    q = card.quarantine
    if q.get("rows"):
        lines += ["## Quarantine", "", "| reason | rows |", "|---|---|"]
        lines += [f"| {r} | {n} |" for r, n in q["by_reason"].items()]
        lines += ["", "First rows:"] + [f"- `{x['source']}`: {x['reason']}" for x in q["first"][:10]] + [""]
    if card.split:
        sp2 = card.split
        recent = sp2.get("seed") is None and "recent_share" in sp2  # a from-log snapshot's
        head = (f"{sp2['train']} train / {sp2['eval']} recent held-out (by a hash of each request's text, "
                f"review.recent_share {sp2['recent_share']}" if recent else
                f"{sp2['train']} train / {sp2['eval']} eval (seed {sp2['seed']}")
        lines += ["## Split", "", head
                  + (f", grouped by {sp2['group_by']}" if sp2.get("group_by") else "")
                  + (f", fixed eval file {sp2['fixed_eval_file']}" if sp2.get("fixed_eval_file") else "")
                  + f"). Fingerprints: train `{sp2['train_fingerprint'][:16]}`, eval `{sp2['eval_fingerprint'][:16]}`."
                  + (f" Kept rows left out (a stratified sample kept): {' and '.join(card.left_out())}."
                     if card.left_out() else ""), ""]
    return "\n".join(lines)


def size_sentence(card: DataCard) -> str:
    """The usable rows in words: those of data.train apart from a fixed eval file's (the verdict
    judges the first), with the row caps in force."""
    s = card.size
    fixed = s.get("fixed_eval_rows")
    text = (f"{s['rows']} usable rows" if s["verdict"] == ADDED else
            f"{s['rows']} usable training rows (data.train) and {fixed} fixed eval rows (data.eval)" if fixed is not None
            else f"{s['rows']} usable rows (data.train; data.eval_fraction of them are held out for evaluation)")
    caps = s.get("caps") or {}
    if caps:
        text += "; caps in force: " + ", ".join(f"{key} {n}" for key, n in caps.items())
        left = card.left_out()
        text += f" (left out: {' and '.join(left)})" if left else " (the rows beyond a cap are left out)"
    return text


def write_card(card: DataCard, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / "data_card.json"
    md = out_dir / "data_card.md"
    js.write_text(json.dumps(asdict(card), indent=2, ensure_ascii=False), encoding="utf-8")
    md.write_text(render_markdown(card), encoding="utf-8")
    return {"card_json": js, "card_md": md}
