"""The ``taskfit`` command. Each command parses, calls one library function, and prints.

Errors from the library arrive here as :class:`TaskfitError` and leave as one short message on
stderr and the error's exit code: never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from taskfit.errors import TaskfitError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fit a small language model to one narrow task, and prove whether it helps.")
# Piped or captured output (CI logs, `| tee`) gets a width that fits the scorecard on one line.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def _friendly(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TaskfitError as exc:
            # the words are printed as they are: `pip install -e '.[tracking]'` is not markup
            err.print(f"[bold red]error:[/bold red] {escape(exc.message)}", highlight=False, soft_wrap=True)
            if exc.hint:
                err.print(f"[yellow]hint:[/yellow] {escape(exc.hint)}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@_friendly
def models() -> None:
    """List the models you can name in taskfit.yaml without downloading anything."""
    from taskfit.models import list_models

    table = Table("name", "description", "licence", "file")
    for item in list_models():
        if isinstance(item, tuple):
            table.add_row(item[0], f"[red]unavailable[/red]: {item[1]}", "", "")
        else:
            table.add_row(item.name, item.description, item.licence, f"{item.path}/{item.gguf_file}")
    out.print(table)
    out.print("Any Hugging Face id or local model directory works too (model.name in taskfit.yaml).")


@app.command()
@_friendly
def init(directory: Path = typer.Argument(..., help="Project directory to create."),
         task: Optional[str] = typer.Option(None, "--task", help="classify | extract | qa | generate "
                                            "(default classify; with --from, read from the data)"),
         from_: Optional[Path] = typer.Option(None, "--from", help="A CSV, TSV, JSONL, Parquet or Excel (.xlsx) file: "
                                              "propose the task, columns and labels or schema from it."),
         input_: Optional[str] = typer.Option(None, "--input", help="--from: the input column."),
         target: Optional[str] = typer.Option(None, "--target", help="--from: the answer column."),
         context: Optional[str] = typer.Option(None, "--context", help="--from: qa's passage column."),
         tokens: bool = typer.Option(True, help="--from: count the answers' tokens with the model's tokenizer "
                                     "to size eval.max_new_tokens."),
         force: bool = typer.Option(False, help="Overwrite an existing taskfit.yaml.")) -> None:
    """Write a commented taskfit.yaml for one task kind, or for the task a data file holds (--from)."""
    from taskfit.config import ModelSpec
    from taskfit.errors import ConfigError
    from taskfit.models.registry import load_tokenizer
    from taskfit.progress import RichReporter
    from taskfit.project import init_from_file, init_project, still_to_write

    if from_ is None:
        if input_ or target or context:
            raise ConfigError("--input, --target and --context name columns of the --from file",
                              hint="pass --from FILE too, or drop them")
        path = init_project(directory, task or "classify", force=force)  # type: ignore[arg-type]
        out.print(f"wrote {path}: edit the task section, put your data in {directory / 'data'}, "
                  f"then run `taskfit run {directory}`")
        return
    tokenizer = (load_tokenizer(ModelSpec.model_fields["name"].default, status=RichReporter(err).status)
                 if tokens else None)
    path, proposal = init_from_file(directory, from_, input=input_, target=target, context=context,
                                    task=task, force=force, tokenizer=tokenizer)
    for line in proposal.summary():
        out.print(line, highlight=False, soft_wrap=True)
    out.print(f"wrote {path}: check it with `taskfit data check {directory}`, {still_to_write(proposal)[:-1]}, then "
              f"run `taskfit run {directory}`", highlight=False, soft_wrap=True)


data_app = typer.Typer(no_args_is_help=True, help="Check and prepare the data before any training; add reviewed "
                                                  "requests (from-log) or synthetic drafts (synth).")
app.add_typer(data_app, name="data")


def _project_config(project: Path):
    from taskfit.config import load_config

    path = project / "taskfit.yaml" if project.is_dir() else project
    return load_config(path), path.parent


def _print_card(card) -> None:
    out.print(card.rows_summary(), highlight=False)
    if card.counts.get("distinct_look_alikes"):
        out.print(f"{card.counts['distinct_look_alikes']} look-alike rows kept as distinct examples (words of their "
                  "own, or an answer of their own written in their text)", highlight=False)
    layouts = card.templates
    if layouts.get("top"):
        out.print(f"{layouts['layouts']} layouts (templates) of 2+ rows hold {layouts['rows_in_layouts']} of "
                  f"{layouts['rows']} rows; the largest holds {layouts['top'][0]['rows']}", highlight=False)
    if card.labels:
        table = Table("label", "rows", title="labels", caption=f"imbalance ratio {card.imbalance_ratio}")
        for lab, n in sorted(card.labels.items(), key=lambda kv: -kv[1]):
            table.add_row(lab, str(n))
        out.print(table)
    if card.tokens:
        t = card.tokens
        out.print(f"tokens per row: mean {t['mean']}, p95 {t['p95']}, max {t['max']}; {t['over_max']} over "
                  f"{t['max_seq_length']}; {100 * t['loss_token_share']:.1f}% of tokens carry loss", highlight=False)
    _print_privacy_and_warnings(card, quarantined=10)


def _print_quarantined(rows: list[dict]) -> None:
    """Quarantined rows with their reasons, those with the same reason on one line: six reviews
    that answer with one new label read once, with the rows it holds back."""
    by_reason: dict[str, list[str]] = {}
    for q in rows:
        by_reason.setdefault(q["reason"], []).append(q["source"])
    for reason, sources in by_reason.items():
        which = sources[0] if len(sources) == 1 else f"{len(sources)} rows ({', '.join(sources)})"
        out.print(f"  quarantined {which}: {reason}", highlight=False, soft_wrap=True)


def _print_privacy_and_warnings(card, quarantined: int) -> None:
    """The data card's personal-data line, its first ``quarantined`` quarantined rows, and its warnings."""
    p = card.privacy
    out.print(f"personal data in {p['rows_with_personal_data']} rows "
              f"({', '.join(f'{k} {v}' for k, v in p['findings'].items()) or 'none'}); "
              f"credentials in {p['rows_with_secrets']} rows", highlight=False)
    if p.get("keep_fields"):
        kept = ", ".join(f"{k} {n}" for k, n in p["answers_kept"].items())
        out.print(f"answers redaction would have changed, kept verbatim (data.privacy.keep_fields): "
                  f"{kept or 'none'}", highlight=False, soft_wrap=True)
    _print_quarantined(card.quarantine.get("first", [])[:quarantined])
    for w in card.warnings:  # a warning quotes YAML ([date, total]), not rich markup
        out.print(f"[yellow]warning:[/yellow] {escape(w)}", highlight=False, soft_wrap=True)


@data_app.command("check")
@_friendly
def data_check(project: Path = typer.Argument(Path("."), help="Project directory or taskfit.yaml, or a bare "
                                              "data file (CSV, TSV, JSONL, Parquet, .xlsx): its mapping is inferred."),
               tokens: bool = typer.Option(True, help="Count tokens with the model's tokenizer."),
               task: Optional[str] = typer.Option(None, "--task", help="Bare file: the task kind."),
               input_: Optional[str] = typer.Option(None, "--input", help="Bare file: the input column."),
               target: Optional[str] = typer.Option(None, "--target", help="Bare file: the answer column."),
               context: Optional[str] = typer.Option(None, "--context", help="Bare file: qa's passage column.")) -> None:
    """Validate taskfit.yaml and audit the data; write data_card.md and data_card.json. On a bare
    data file, check the config `taskfit init --from` would write, without writing anything."""
    from taskfit.data.card import write_card
    from taskfit.data.prepare import check_data, data_lines
    from taskfit.data.read import SUFFIXES
    from taskfit.errors import ConfigError
    from taskfit.models.registry import load_tokenizer
    from taskfit.progress import RichReporter

    bare = project.suffix.lower() in SUFFIXES and not project.is_dir()
    reporter = RichReporter(err)
    if bare:
        from taskfit.config import ModelSpec
        from taskfit.project import inferred_config

        tokenizer = load_tokenizer(ModelSpec.model_fields["name"].default, status=reporter.status) if tokens else None
        config, proposal = inferred_config(project, input=input_, target=target, context=context, task=task,
                                           tokenizer=tokenizer)
        root = project.parent
        out.print(f"no taskfit.yaml: inferred the mapping from {project}, as `taskfit init DIR --from "
                  f"{project}` would", highlight=False, soft_wrap=True)
        for line in proposal.summary():
            out.print(line, highlight=False, soft_wrap=True)
    else:
        if task or input_ or target or context:
            raise ConfigError("--task, --input, --target and --context are for a bare data file",
                              hint="a project's mapping is in its taskfit.yaml (task.kind, data.columns)")
        config, root = _project_config(project)
        tokenizer = load_tokenizer(config.model.name, status=reporter.status) if tokens else None
    with reporter.bar("checking data", data_lines(config, root)) as advance:
        card = check_data(config, root, tokenizer=tokenizer, on_row=advance)
    _print_card(card)
    if bare:
        out.print(f"nothing written (no project); `taskfit init DIR --from {project}` writes this config",
                  highlight=False, soft_wrap=True)
        return
    paths = write_card(card, root)
    out.print(f"data card: {paths['card_md']}")


@data_app.command("prepare")
@_friendly
def data_prepare(project: Path = typer.Argument(Path("."), help="Project directory or taskfit.yaml."),
                 out_dir: Optional[Path] = typer.Option(None, "--out", help="Where to write (default DIR/prepared).")) -> None:
    """Write the cleaned, redacted, split JSONL that training and evaluation read, with the card."""
    from taskfit.data.prepare import data_lines, prepare_data, write_prepared
    from taskfit.models.registry import load_tokenizer
    from taskfit.progress import RichReporter

    config, root = _project_config(project)
    reporter = RichReporter(err)
    tokenizer = load_tokenizer(config.model.name, status=reporter.status)
    with reporter.bar("preparing rows", data_lines(config, root)) as advance:
        prepared = prepare_data(config, root, tokenizer=tokenizer, on_row=advance)
    paths = write_prepared(prepared, out_dir or root / "prepared")
    _print_card(prepared.card)
    out.print(f"{len(prepared.train)} train rows → {paths['train']}\n{len(prepared.eval)} eval rows → "
              f"{paths['eval']}\ndata card: {paths['card_md']}", highlight=False)


@data_app.command("from-log")
@_friendly
def data_from_log(project: Path = typer.Argument(Path("."), help="Project directory or taskfit.yaml."),
                  log: Optional[Path] = typer.Option(None, "--log", help="The request log (default "
                                                                        "DIR/requests.sqlite); its reviews.sqlite holds the corrections."),
                  model: Optional[str] = typer.Option(None, help="The served model's name (default task.name).")) -> None:
    """Turn reviewed requests (never unreviewed ones) into a data snapshot: validated, redacted,
    de-duplicated against the project's data, split into training rows and a recent held-out set."""
    from taskfit.lifecycle.from_log import from_log_project

    result = from_log_project(project, log=log, model=model)
    out.print(result.sentence(), highlight=False, soft_wrap=True)
    shown = result.card.quarantine.get("first", [])[:10]
    _print_quarantined(shown)
    if result.quarantined > len(shown):
        out.print(f"  and {result.quarantined - len(shown)} more quarantined: "
                  f"{result.snapshot.root / 'quarantine.jsonl'} holds every one with its reason",
                  highlight=False, soft_wrap=True)
    if result.conflicts:
        err.print(f"[yellow]warning:[/yellow] {result.conflicts} corrections contradict a near-identical row of "
                  "the project's data (data_card.md lists them): decide which is right", highlight=False)
    snap = result.snapshot
    out.print(f"snapshot {snap.root}{' (unchanged: the same reviews made it before)' if result.unchanged else ''}"
              f"\ntraining rows: {snap.train}\nrecent held-out: {snap.recent_held_out}\ndata card: "
              f"{snap.root / 'data_card.md'}", highlight=False)


@data_app.command("synth")
@_friendly
def data_synth(project: Path = typer.Argument(Path("."), help="Project directory or taskfit.yaml."),
               n: int = typer.Option(..., "--n", "-n", help="Drafts to ask for (one request each).")) -> None:
    """Ask a model for N drafts of new examples and put those that pass the data checks before a person.

    The endpoint is synth.endpoint (else baselines.endpoint): any OpenAI-compatible chat endpoint,
    `taskfit serve` included. Each request shows a few real training rows (never held-out ones) and
    is decoded under a JSON schema of the draft; classify drafts are shared among the labels
    (synth.quotas), and synth.paraphrase of them rewrite a real input instead. Every draft is
    checked (JSON shape and the task's answer check, the label asked for, personal data and
    credentials, duplicates of real, held-out and earlier drafts) and counted: drafts asked = passed
    + rejected by reason. Those that pass go on DIR/data/synthetic/BATCH/review.html; none is
    trained on until a person accepts it (`taskfit review import`) and data.synthetic is include."""
    from taskfit.lifecycle.synth import synth_project

    result = synth_project(project, n)
    out.print(result.sentence(), highlight=False, soft_wrap=True)
    if result.quotas:
        out.print("asked per label: " + ", ".join(f"{lab} {k}" for lab, k in result.quotas.items())
                  + f"; {result.info['paraphrases']} rewrites of real inputs", highlight=False, soft_wrap=True)
    for d in [d for d in result.drafts if d.reason is not None][:10]:
        out.print(f"  rejected {d.id}: {d.reason}: {d.detail}", highlight=False, soft_wrap=True)
    usage = result.info["usage"]
    out.print(f"tokens: {usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion "
              f"(${usage['cost_usd']:.4f}); seeds {result.info['seeds'][0]}-{result.info['seeds'][1]}",
              highlight=False)
    out.print(f"drafts:      {result.paths['drafts']}\nreview page: {result.paths['html']}\nspreadsheet: "
              f"{result.paths['csv']}\nthen: taskfit review import {project} VERDICTS.csv", highlight=False)


def _print_scorecard(card) -> None:
    from rich.table import Column

    # Candidate names are never cut; on a narrow terminal the other columns fold their text
    # instead of ending it with an ellipsis (scorecard.md has the table whole).
    header = [Column(card.header[0], no_wrap=True)] + [Column(h, overflow="fold") for h in card.header[1:]]
    table = Table(*header, title="held-out scorecard")
    for row in card.rows():
        table.add_row(*row)
    out.print(table)
    for title, header, rows in card.extra_tables():
        extra = Table(*header, title=title)
        for row in rows:
            extra.add_row(*row)
        out.print(extra)
    for warning in card.warnings:
        out.print(f"[yellow]{escape(warning)}[/yellow]", soft_wrap=True)
    for line in card.reviews + card.notes:
        out.print(line, highlight=False)
    out.print(f"[bold]{card.verdict}[/bold]")


def _print_summary(summary, project: Path) -> None:
    out.print("[bold]data[/bold]")  # what `taskfit data check` says in full, in brief
    out.print(summary.data_card.rows_summary(), highlight=False)
    out.print(summary.data_card.split_summary(), highlight=False, soft_wrap=True)
    _print_privacy_and_warnings(summary.data_card, quarantined=3)
    _print_scorecard(summary.scorecard)
    c = summary.comparison
    out.print(f"scorecard: {c.markdown}\nreport:    {c.report_html}\nrun:       {summary.run_dir} "
              f"({summary.training.how})", highlight=False)
    _print_next(project, summary.scorecard.keep, summary.scorecard)


def _project_dir(project: Path) -> Path:
    return project.parent if project.name == "taskfit.yaml" else project


def _print_next(project: Path, keep: Optional[str], card=None) -> None:
    """How to serve what the verdict keeps; with its ``card``, said to be below the task's bar
    where the verdict says it misses eval.thresholds or (qa) has not shown that it answers."""
    from taskfit.evaluation.compare import is_finetuned, refuse_all_warning, threshold_warning
    from taskfit.serve.classical import SERVABLE
    from taskfit.tasks.base import ENDPOINT

    where = _project_dir(project)
    if keep is None:
        return
    if is_finetuned(keep):
        from taskfit.config import load_config

        loaded = load_config(where / "taskfit.yaml")
        try:
            _, task, version = _production(where, loaded.task.name, loaded.retrain.name)
        except TaskfitError as exc:  # several names registered: say so, the run itself is done
            out.print(f"next: {exc}", highlight=False, soft_wrap=True)
            return
        line = (f"next: `taskfit serve {where}` serves the latest finished run" if version is None else
                f"next: `taskfit serve {where}` serves {task}@production (version {version[:12]}), not this run "
                f"until `taskfit promote {where} --as {task}` moves production to it")
    elif keep in SERVABLE:
        line = (f"next: `taskfit serve {where} --candidate {keep}` serves it (`taskfit promote {where} {keep} "
                "--as NAME` registers it as a version)")
    elif keep == ENDPOINT:
        line = "next: keep calling the endpoint: no local candidate beats it on these held-out rows"
    else:  # prompt-only, few-shot: the base model and what the application sends it
        sent = ("the task's prompt and the most similar training rows shown before each request "
                "(baselines.few_shot_k of them, retrieved as the scorecard's were), which your application sends"
                if keep == "few-shot" else "the task's prompt, which your application sends")
        line = (f"next: {keep} has no weights of its own: it is the base model with {sent} (`taskfit serve --base "
                "MODEL` serves the base model)")
    if card is not None and keep != ENDPOINT and (threshold_warning(card) or refuse_all_warning(card)):
        line += "; it is below the task's bar, as the verdict says: serve it to try it, not yet to rely on it"
    out.print(line, highlight=False, soft_wrap=True)


def _mind_the_verdict(project: Path, serving: str) -> None:
    """A warning on stderr when the project's scorecard keeps another candidate than ``serving``
    (a fine-tune's name, or a classical candidate's)."""
    from taskfit.evaluation.compare import is_finetuned
    from taskfit.workflows.evaluate import kept_by_verdict

    kept = kept_by_verdict(_project_dir(project))
    if kept is None:
        return
    keep, verdict, path = kept
    if keep == serving or (is_finetuned(keep) and is_finetuned(serving)):
        return
    err.print(f"[yellow]warning: the scorecard keeps {escape(keep)}, not {escape(serving)} "
              f"({escape(str(path))}): {escape(verdict)}[/yellow]", soft_wrap=True)


def _print_results(results, project: Path) -> None:
    from taskfit.tasks import main_metric

    for r in results:
        main = main_metric(r.kind)
        out.print(f"{r.candidate}: {main} {100 * r.metrics[main]:.1f}% on {r.n} rows "
                  f"(p50 {1000 * r.metrics['latency_p50_s']:.0f} ms)", highlight=False)
    out.print(f"next: `taskfit compare {_project_dir(project)}` for the scorecard and the verdict", highlight=False)


@app.command()
@_friendly
def baseline(project: Path = typer.Argument(Path("."), help="Project directory or taskfit.yaml."),
             only: Optional[list[str]] = typer.Option(None, "--only", help="Evaluate just this baseline "
                                                      "(repeatable): prompt-only, few-shot, rag, tfidf-logreg, "
                                                      "embeddings-logreg, endpoint."),
             threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: all).")) -> None:
    """Evaluate every applicable baseline on the held-out split (cached: a rerun resumes)."""
    from taskfit.workflows import baseline_project
    from taskfit.progress import RichReporter

    _print_results(baseline_project(project, reporter=RichReporter(err), only=only, threads=threads), project)


@app.command("eval")
@_friendly
def eval_(project: Path = typer.Argument(Path("."), help="Project directory or taskfit.yaml."),
          run_dir: Optional[Path] = typer.Option(None, "--run", help="A finished training run (its directory); "
                                                                     "default: the project's latest finished run."),
          name: Optional[str] = typer.Option(None, help="Candidate name in the scorecard (default fine-tuned, or "
                                                        "fine-tuned-head for a head run; -synthetic after it for a "
                                                        "run trained with synthetic rows, then -gguf with --engine "
                                                        "llama-cpp or -merged with --merged; a name not starting "
                                                        "with fine-tuned gets fine-tuned- before it)."),
          engine: str = typer.Option("transformers", help="transformers, or llama-cpp: the exported GGUF "
                                                          "(base + GGUF LoRA) run by llama.cpp."),
          merged: bool = typer.Option(False, "--merged", help="Evaluate the adapter folded into the base "
                                                              "(as `taskfit export --merged` ships it)."),
          threads: Optional[int] = typer.Option(None, help="CPU threads (default: all).")) -> None:
    """Evaluate a trained run on the same held-out split as the baselines (cached: a rerun resumes)."""
    from taskfit.progress import RichReporter
    from taskfit.workflows import eval_project

    _print_results([eval_project(project, run_dir, reporter=RichReporter(err), name=name, threads=threads,
                                 engine=engine, merged=merged)], project)


review_app = typer.Typer(help="Human review: two candidates' answers side by side (export), served "
                                "requests worth a person's time (queue), or synthetic drafts (`taskfit data "
                                "synth`); import reads any of them back.",
                         no_args_is_help=True)
app.add_typer(review_app, name="review")


@review_app.command("export")
@_friendly
def review_export(project: Path = typer.Argument(Path("."), help="Project directory or taskfit.yaml."),
                  a: str = typer.Option(..., "--a", help="First candidate (e.g. fine-tuned)."),
                  b: str = typer.Option(..., "--b", help="Second candidate (e.g. few-shot)."),
                  n: int = typer.Option(50, "--n", "-n", help="Items to review (a seeded random sample)."),
                  out_dir: Optional[Path] = typer.Option(None, "--out", help="Where to write (default: the evaluation directory's review/).")) -> None:
    """Write review.html and review.csv (sides shuffled, names hidden) and the key that un-blinds them."""
    from taskfit.workflows import review_export_project

    paths = review_export_project(project, a, b, n, out_dir)
    key = json.loads(paths["key"].read_text(encoding="utf-8"))
    out.print(f"{len(key['items'])} items, drawn from the {key['rows'] - key['agreed']} held-out rows {a} and {b} "
              f"answered differently ({key['agreed']} of {key['rows']} answered alike are left out: they can "
              "only tie)", highlight=False, soft_wrap=True)
    out.print(f"review page: {paths['html']}\nspreadsheet: {paths['csv']}\nkey (keep it, do not send it): "
              f"{paths['key']}\nthen: taskfit review import {project} VERDICTS.csv", highlight=False)


@review_app.command("import")
@_friendly
def review_import(project: Path = typer.Argument(..., help="Project directory or taskfit.yaml."),
                  verdicts: Path = typer.Argument(..., help="The CSV a review page downloaded, or its review.csv "
                                                  "filled in (a blind review's or a review queue's)."),
                  key: Optional[Path] = typer.Option(None, help="Blind review: review_key.json (default: beside "
                                                               "the export)."),
                  reviewer: Optional[str] = typer.Option(None, help="Review queue and synthetic drafts: who "
                                                                    "reviewed, for rows whose reviewer column is empty."),
                  log: Optional[Path] = typer.Option(None, "--log", help="Review queue: the request log (default "
                                                                        "DIR/requests.sqlite); its reviews.sqlite keeps the corrections.")) -> None:
    """Read verdicts back: a blind review's (`taskfit compare` shows the win rate), a review
    queue's (stored as corrections with the reviewer's name, for `taskfit data from-log`), or a
    synthetic batch's (accepted drafts go to data/synthetic/accepted.jsonl, which training reads
    with data.synthetic: include)."""
    from taskfit.evaluation.review import sheet_columns

    columns = sheet_columns(verdicts)
    if "draft_id" in columns:
        from taskfit.lifecycle.synth import import_drafts

        done = import_drafts(project, verdicts, reviewer=reviewer)
        out.print(f"stored {done.accepted + done.rejected} decisions ({done.accepted} accepted, {done.rejected} "
                  f"rejected) by {', '.join(done.reviewers)} in {done.decisions_path}; {done.skipped} drafts not "
                  f"judged stay unreviewed", highlight=False, soft_wrap=True)
        out.print(f"{done.total_accepted} accepted drafts in {done.accepted_path}; training reads them with "
                  "data.synthetic: include", highlight=False, soft_wrap=True)
        return
    if "request_id" in columns:
        from taskfit.lifecycle.queue import import_queue, quality_sentence

        result = import_queue(project, verdicts, reviewer=reviewer, log=log)
        out.print(f"stored {result.stored} corrections ({result.correct} correct, {result.wrong} wrong) by "
                  f"{', '.join(result.reviewers)} in {result.store}; {result.skipped} rows unsure or not judged "
                  f"stay unreviewed (those marked unsure come first in the next `taskfit review queue`)",
                  highlight=False, soft_wrap=True)
        if result.unknown_labels:
            from taskfit.config import load_config
            from taskfit.tasks.classify import closest_label

            labels = load_config(project).task.labels or []
            listed = ", ".join(f"{lab} ({n}{'; did you mean ' + repr(near) + '?' if near else ''})"
                               for lab, n in result.unknown_labels.most_common()
                               for near in [closest_label(lab, labels)])
            err.print(f"[yellow]warning:[/yellow] labels not in task.labels: {escape(listed)}; `taskfit data "
                      "from-log` quarantines them until task.labels has them", highlight=False, soft_wrap=True)
        out.print(quality_sentence(result.quality), highlight=False)
        out.print(f"next: taskfit data from-log {project}", highlight=False)
        return
    from taskfit.workflows import review_import_project

    out.print(review_import_project(project, verdicts, key).sentence(), highlight=False, soft_wrap=True)


@review_app.command("queue")
@_friendly
def review_queue(project: Path = typer.Argument(Path("."), help="Project directory or taskfit.yaml."),
                 n: Optional[int] = typer.Option(None, "--n", "-n", help="Requests to pick (default review.queue_size, 50)."),
                 since: Optional[str] = typer.Option(None, help="Only requests since: an ISO date or time, or a span "
                                                                "back from now (2d, 12h)."),
                 log: Optional[Path] = typer.Option(None, "--log", help="The request log (default DIR/requests.sqlite)."),
                 model: Optional[str] = typer.Option(None, help="The served model's name (default task.name)."),
                 out_dir: Optional[Path] = typer.Option(None, "--out", help="Where to write (default "
                                                                           "DIR/review/queue-BATCH).")) -> None:
    """Pick served requests worth a person's time (a random sample, then the doubtful ones spread
    over the kinds of request; never one twice) and write review.html and review.csv."""
    from taskfit.lifecycle.queue import RANDOM, queue_project, quality_sentence

    result = queue_project(project, n=n, since=since, log=log, model=model, out_dir=out_dir)
    reasons = result.reasons()
    again = f", {result.random_again} already queued joined it" if result.random_again else ""
    out.print(f"queued {len(result.picks)} of {result.eligible} answered requests (batch {result.batch}): "
              f"{reasons.get(RANDOM, 0)} drawn at random{again}; "
              + ", ".join(f"{'spread over kinds of request (no other reason)' if why == 'spread' else why} {k}"
                          for why, k in reasons.most_common() if why != RANDOM),
              highlight=False, soft_wrap=True)
    if result.repeats:
        out.print(f"{result.repeats} more {'repeats' if result.repeats == 1 else 'repeat'} the input, context and answer of a "
                  "request queued now or before: left out (judged once)", highlight=False, soft_wrap=True)
    out.print(quality_sentence(result.quality), highlight=False)
    out.print(f"review page: {result.paths['html']}\nspreadsheet: {result.paths['csv']}\nthen: taskfit review "
              f"import {project} VERDICTS.csv", highlight=False)


@app.command()
@_friendly
def compare(project: Path = typer.Argument(Path("."), help="Project directory or taskfit.yaml."),
            rows: Optional[int] = typer.Option(None, "--rows", min=1, help="The candidates scored on the first N "
                                               "held-out rows (as eval.max_rows or `taskfit advise` scored them).")) -> None:
    """Print and save the scorecard of every evaluated candidate, with paired tests and a verdict."""
    from taskfit.workflows import Workspace, compare_project
    from taskfit.progress import RichReporter

    ws = Workspace.open(project, RichReporter(err), allow_secrets=True)
    result = compare_project(ws.on_first(rows) if rows and rows < len(ws.eval_rows) else ws)
    _print_scorecard(result.scorecard)
    out.print(f"scorecard: {result.markdown}\nreport:    {result.report_html}", highlight=False)
    if not rows:
        _print_next(project, result.scorecard.keep, result.scorecard)


@app.command()
@_friendly
def advise(project: Path = typer.Argument(Path("."), help="Project directory or taskfit.yaml."),
           threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: all)."),
           allow_secrets: bool = typer.Option(False, "--allow-secrets",
                                              help="Train even on data with unredacted credentials.")) -> None:
    """Which approach to pick (prompt-only, few-shot, RAG, classical, fine-tune): the cheap
    candidates and a short learning curve, scored on a sample of the held-out rows, with the
    rows, time and cost the pick needs. Cached: a second advise costs the data check."""
    from taskfit.progress import RichReporter
    from taskfit.workflows import advise_project

    summary = advise_project(project, reporter=RichReporter(err), threads=threads, allow_secrets=allow_secrets)
    advice = summary.advice
    for section in advice.sections:
        out.print(f"[bold]{escape(section.title)}[/bold]")
        for paragraph in section.paragraphs:
            out.print(f"  {escape(paragraph)}", highlight=False, soft_wrap=True)
        if section.table:
            table = Table(*section.table[0])
            for row in section.table[1]:
                table.add_row(*row)
            out.print(table)
    out.print(f"[bold]{escape(advice.headline)}[/bold]", soft_wrap=True)
    out.print(f"advice:    {summary.markdown}\nscorecard: {summary.comparison.markdown}\n"
              f"report:    {summary.comparison.report_html}", highlight=False)


@app.command()
@_friendly
def run(project: Path = typer.Argument(Path("."), help="Project directory or taskfit.yaml."),
        threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: all)."),
        allow_secrets: bool = typer.Option(False, "--allow-secrets",
                                           help="Train even on data with unredacted credentials."),
        resume: bool = typer.Option(False, "--resume", help="Insist on continuing an interrupted run (running "
                                                            "again continues one anyway).")) -> None:
    """The whole loop: data check, every applicable baseline, training, evaluation, comparison.

    Every stage is cached: running it again continues where it stopped and costs nothing where
    nothing changed; `taskfit compare` afterwards prints the same scorecard."""
    from taskfit.progress import RichReporter
    from taskfit.workflows import run_project

    _print_summary(run_project(project, reporter=RichReporter(err), threads=threads,
                               allow_secrets=allow_secrets, resume=resume), project)


@app.command()
@_friendly
def train(project: Path = typer.Argument(Path("."), help="Project directory or taskfit.yaml."),
          resume: bool = typer.Option(False, "--resume", help="Continue the newest unfinished run "
                                      "from its last checkpoint (or the run named by --run)."),
          run_dir: Optional[Path] = typer.Option(None, "--run", help="The run directory to resume."),
          threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: all)."),
          allow_secrets: bool = typer.Option(False, "--allow-secrets",
                                             help="Train even on data with unredacted credentials.")) -> None:
    """Train by train.method (lora, qlora, full, dpo) and save the adapter with its model card."""
    from taskfit.progress import RichReporter, Silent
    from taskfit.training.parallel import Ranks
    from taskfit.workflows import train_project

    main = Ranks.from_env().main  # under `accelerate launch`, only the first process reports
    summary = train_project(project, reporter=RichReporter(err) if main else Silent(), threads=threads,
                            allow_secrets=allow_secrets, resume=run_dir if run_dir else resume)
    if not main:
        return
    t = summary.training
    out.print(f"trained {t['steps']} steps ({t['epochs']} epochs), {t['trained_tokens']} tokens in "
              f"{t['seconds']} s ({t['tokens_per_second']} tokens/s)", highlight=False)
    if t.get("best_validation"):
        b = t["best_validation"]
        metric = f", metric {b['metric']:.3f}" if b.get("metric") is not None else ""
        out.print(f"kept step {b['step']}: validation loss {b['val_loss']:.4f}{metric}"
                  f"{' (stopped early)' if t['stopped_early'] else ''}", highlight=False)
    if t.get("held_out"):
        h = t["held_out"]
        out.print(f"held-out preference accuracy (mean log-probability per answer token): "
                  f"{h['preference_accuracy_before']:.3f} before, {h['preference_accuracy_after']:.3f} after "
                  f"({h['pairs']} pairs: {h['flipped_to_chosen']} flipped to chosen, "
                  f"{h['flipped_to_rejected']} to rejected, McNemar p={h['p_value']:.3g}); "
                  f"by summed log-probability {h['summed_preference_accuracy_before']:.3f} -> "
                  f"{h['summed_preference_accuracy_after']:.3f}; chosen gained more log-probability than "
                  f"rejected on {h['reward_accuracy']:.3f}",
                  highlight=False)
    out.print(f"artifact: {summary.artifact}\nrun:      {summary.run_dir}")


def _run_of(path: Path) -> Path:
    """A run directory given as itself, or a project given as its directory (its latest finished
    run, said on stderr)."""
    if not (path / "taskfit.yaml").is_file():
        return path
    from taskfit.workflows.workspace import latest_run_dir

    run = latest_run_dir(path)
    err.print(f"using the latest finished run: {run}", highlight=False)
    return run


@app.command()
@_friendly
def export(run_dir: Path = typer.Argument(Path("."), help="A project (its latest finished run is taken), "
                                                            "a finished run directory, or its adapter; "
                                                            "--format promptfoo: the project."),
           merged: bool = typer.Option(False, "--merged", help="Fold the adapter into the base model."),
           format_: Optional[str] = typer.Option(None, "--format", help="gguf-lora: the adapter as a GGUF LoRA "
                                                                         "for llama.cpp and Ollama; promptfoo: the "
                                                                         "held-out set, the task's checks and the "
                                                                         "candidates as a promptfoo configuration."),
           base_gguf: Optional[Path] = typer.Option(None, "--base-gguf", help="gguf-lora: the base model's GGUF "
                                                                              "(default: the embedded model's)."),
           run: Optional[Path] = typer.Option(None, "--run", help="promptfoo: the run `taskfit serve` will serve "
                                                                  "(default: the latest finished run)."),
           serve_url: Optional[str] = typer.Option(None, "--serve-url", help="promptfoo: where `taskfit serve` "
                                                   "answers (default http://127.0.0.1:8000/v1)."),
           out_dir: Optional[Path] = typer.Option(None, "--out", help="Where to write (default RUN/merged or "
                                                                      "RUN/gguf; promptfoo: the evaluation "
                                                                      "directory's promptfoo/).")) -> None:
    """Export a trained adapter (--merged, or --format gguf-lora), or the project's evaluation as a
    promptfoo configuration (--format promptfoo)."""
    from taskfit.errors import ConfigError
    from taskfit.progress import RichReporter

    if format_ == "promptfoo":
        _export_promptfoo(run_dir, run, out_dir, serve_url)
        return
    if run is not None or serve_url is not None:
        raise ConfigError("--run and --serve-url are for --format promptfoo",
                          hint="name the run to export as the argument: taskfit export RUN_DIR ...")
    status = RichReporter(err).status
    run_dir = _run_of(run_dir)
    if format_ == "gguf-lora":
        from taskfit.training.gguf_lora import export_gguf_lora

        path = export_gguf_lora(run_dir, out_dir, base=base_gguf, status=status)
        out.print(f"GGUF LoRA: {path / 'adapter.gguf'} (base: {(path / 'base.txt').read_text().strip()}); "
                  f"Ollama: cd {path} && ollama create NAME -f Modelfile")
        return
    if format_ is not None:
        raise ConfigError(f"--format {format_}: the formats are gguf-lora and promptfoo (or --merged)")
    if not merged:
        raise ConfigError("choose an export: --merged, --format gguf-lora or --format promptfoo",
                          hint="the adapter itself is already in the plain PEFT layout in RUN/adapter")
    from taskfit.training.artifacts import export_merged

    path = export_merged(run_dir, out_dir, status=status)
    out.print(f"merged model: {path}")


def _export_promptfoo(project: Path, run: Optional[Path], out_dir: Optional[Path], serve_url: Optional[str]) -> None:
    from taskfit.errors import ConfigError
    from taskfit.progress import RichReporter
    from taskfit.workflows.evaluate import export_promptfoo_project

    if not (project / "taskfit.yaml").is_file() and project.name != "taskfit.yaml":
        raise ConfigError(f"{project}: --format promptfoo exports a project's evaluation: name the project "
                          "directory", hint="name a run with --run RUN")
    result = export_promptfoo_project(project, run=run, out=out_dir, serve_url=serve_url, reporter=RichReporter(err))
    from urllib.parse import urlparse

    serve = f"taskfit serve --adapter {result.served}={result.run}" if run is not None else f"taskfit serve {project}"
    port = urlparse(result.serve_url).port
    serve += f" --port {port}" if port not in (None, 8000) else ""
    out.print(f"promptfoo config: {result.paths['config']} ({result.rows} held-out rows in {result.paths['tests']})\n"
              f"providers: taskfit serve as {result.served} at {result.serve_url}"
              + (f", the endpoint baseline {result.endpoint}" if result.endpoint else "")
              + f"\nthen: {serve}, and in another shell: cd {result.paths['config'].parent} && promptfoo eval",
              highlight=False, soft_wrap=True)


@app.command()
@_friendly
def serve(config: Optional[Path] = typer.Argument(None, help="A project (its latest finished run is served "
                                                                 "under the task's name) or a serve.yaml; optional."),
          adapter: list[str] = typer.Option([], "--adapter", help="NAME=RUN_DIR: serve a trained run "
                                                                 "under NAME (repeatable)."),
          base: Optional[str] = typer.Option(None, help="The base model (default: the adapters' own)."),
          host: Optional[str] = typer.Option(None, help="Interface to bind (default 127.0.0.1)."),
          port: Optional[int] = typer.Option(None, help="Port (default 8000)."),
          candidate: Optional[str] = typer.Option(None, "--candidate", help="With a project: serve this candidate "
                                                  "under the task's name instead of the latest run: "
                                                  "tfidf-logreg or embeddings-logreg (as `taskfit baseline` "
                                                  "fitted it; no language model is loaded)."),
          merged: bool = typer.Option(False, "--merged", help="Fold the single adapter into the base."),
          engine: Optional[str] = typer.Option(None, help="transformers (default) or llama-cpp (GGUF base + "
                                                          "GGUF LoRAs; pip install -e '.\\[llama]')."),
          shadow: bool = typer.Option(False, "--shadow", help="With a project's registry: NAME@candidate answers "
                                      "every request in the background (logged, never returned)."),
          canary: Optional[float] = typer.Option(None, "--canary", help="With a project's registry: this share "
                                                 "of callers (0-1, sticky) is answered by NAME@candidate."),
          threads: Optional[int] = typer.Option(None, help="CPU threads.")) -> None:
    """Serve the base model, trained adapters and fitted classical models with OpenAI's chat-completions API.

    A project with a registry (`taskfit promote`) is served as NAME@production, and follows it:
    a promotion or a rollback is served without a restart."""
    from taskfit.errors import ConfigError
    from taskfit.progress import RichReporter
    from taskfit.serve import load_serve_config, serve as run_server

    adapters, classical = {}, {}
    project_log = project_registry = project_dtype = None
    project = config is not None and (config / "taskfit.yaml").is_file()
    if candidate is not None and not project:
        raise ConfigError(f"--candidate {candidate}: name a project directory too (taskfit serve DIR --candidate "
                          f"{candidate})", hint="in serve.yaml, list fitted classical models under classical:")
    if project:  # a project: its latest finished run, or the candidate named
        from taskfit.config import load_config

        project_config = load_config(config / "taskfit.yaml")
        task = project_config.task.name
        project_dtype = project_config.train.dtype  # served in the precision it was evaluated in
        project_log = {"path": str((config / "requests.sqlite").resolve())}  # where `taskfit monitor DIR` reads
        registry, registered, version = _production(config, task, project_config.retrain.name)
        chosen = None
        if candidate not in (None, "fine-tuned"):  # a name it cannot serve is said before anything else
            from taskfit.serve.classical import project_candidate

            chosen = project_candidate(config, candidate)
        if version is not None and candidate is not None:
            err.print(f"[yellow]warning:[/yellow] --candidate {escape(candidate)} serves that candidate, not "
                      f"{registered}@production (version {version[:12]} in {registry}), and follows no promotion "
                      "or rollback; leave --candidate out to serve production", highlight=False, soft_wrap=True)
            registry, version = None, None
        if version is not None:
            err.print(f"serving {registered}@production from {registry} (version {version[:12]})"
                      + (f" as model {task} (task.name)" if registered != task else "")
                      + "; a promotion or rollback is served without a restart", highlight=False)
            project_registry = {"path": str(registry)}
            adapters[task] = {"registry": f"{registered}@production", "shadow": shadow, "canary": canary}
        elif candidate in (None, "fine-tuned"):
            adapters[task] = {"path": str(_run_of(config).resolve())}
            _mind_the_verdict(config, "fine-tuned")
        else:
            classical[task] = chosen
            _mind_the_verdict(config, candidate)
        config = None
    if (shadow or canary) and candidate is not None:
        raise ConfigError("--shadow and --canary run NAME@candidate beside NAME@production, which --candidate "
                          "does not serve", hint="leave --candidate out")
    if (shadow or canary) and project_registry is None:
        raise ConfigError("--shadow and --canary run NAME@candidate beside NAME@production: name a project "
                          "with a registry (`taskfit promote`)", hint="in serve.yaml: registry: NAME@production "
                                                                      "with shadow: true or canary: 0.1")
    for item in adapter:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--adapter {item!r}: expected NAME=RUN_DIR")
        adapters[name] = {"path": str(Path(path).resolve())}
    spec = load_serve_config(config, {"adapters": adapters, "classical": classical, "base": base, "host": host,
                                      "port": port, "merged": merged or None, "engine": engine,
                                      "threads": threads, "log": project_log, "registry": project_registry,
                                      "dtype": project_dtype})
    run_server(spec, status=RichReporter(err).status)


def _production(project: Path, task: str, named: Optional[str] = None) -> tuple[Path, str, Optional[str]]:
    """The project's registry, the name it serves (``named``: retrain.name, when set; else
    ``task`` or the one name registered: :meth:`Registry.project_name`) and the version
    NAME@production points at (None: not set)."""
    from taskfit.lifecycle import Registry
    from taskfit.lifecycle.promote import registry_path

    path = registry_path(project).resolve()
    if not path.is_file():
        return path, named or task, None
    with Registry(path) as registry:
        name = named or registry.project_name(task)
        return path, name, registry.alias(name, "production")


@app.command("serve-key")
@_friendly
def serve_key(name: str = typer.Argument(..., help="Who will hold the key (logged with each request)."),
              models: str = typer.Option("*", help="Comma-separated model names the key may call; * = all.")) -> None:
    """Make an API key: print it once, and the serve.yaml entry that holds only its hash."""
    import yaml

    from taskfit.serve import hash_key, new_key

    key = new_key()
    allowed = "*" if models.strip() == "*" else [m.strip() for m in models.split(",") if m.strip()]
    err.print("API key (shown once; give it to the caller):", highlight=False)
    out.print(key, highlight=False)
    err.print("add this under keys: in serve.yaml:", highlight=False)
    err.print(yaml.safe_dump([{"name": name, "sha256": hash_key(key), "models": allowed}], sort_keys=False),
              highlight=False)


@app.command()
@_friendly
def monitor(project: Path = typer.Argument(Path("."), help="Project directory or taskfit.yaml."),
            since: Optional[str] = typer.Option(None, help="Only requests since: an ISO date or time, or a span "
                                                           "back from now (2d, 12h); default monitor.since."),
            window: Optional[str] = typer.Option(None, help="Window length (30m, 12h, 1d, 2w); default "
                                                            "monitor.window (1d)."),
            log: Optional[Path] = typer.Option(None, "--log", help="The request log (default "
                                                                  "DIR/requests.sqlite, where `taskfit serve DIR` logs)."),
            model: Optional[str] = typer.Option(None, help="The served model's name (default task.name)."),
            out_dir: Optional[Path] = typer.Option(None, "--out", help="Where to write monitor.html and "
                                                                       "monitor.json (default DIR/monitor).")) -> None:
    """Read the request log against the training data: traffic, errors, latency, answer mixes and
    input drift per window. Exits 6 when the latest window raises an alert (for cron or CI)."""
    from taskfit.monitoring import ALERT_EXIT_CODE, monitor_project
    from taskfit.progress import RichReporter

    result = monitor_project(project, since=since, window=window, log=log, model=model, out_dir=out_dir,
                             reporter=RichReporter(err))
    min_rows = result.settings["min_window_rows"]
    table = Table("window", "requests", "4xx", "5xx", "p50 ms", "p95 ms", "fallback", "drift")
    for w in result.windows[-10:]:
        table.add_row(w.label, str(w.requests), str(w.client_errors), str(w.server_errors),
                      "-" if w.latency_p50_ms is None else f"{w.latency_p50_ms:.0f}",
                      "-" if w.latency_p95_ms is None else f"{w.latency_p95_ms:.0f}",
                      "-" if w.fallback_rate is None else f"{100 * w.fallback_rate:.1f}%", w.verdict(min_rows))
    out.print(table)
    if result.unnamed:
        n = result.unnamed
        out.print(f"{n} more request{'s' if n > 1 else ''} in the period named no model the log could read "
                  "(refused first: a missing or wrong key, a body that is not a JSON object, one over the size "
                  "limit): not in the table", highlight=False, soft_wrap=True)
    if result.latest.mix:
        out.print(f"answers in the latest window: {result.latest.mix_text()}", highlight=False, soft_wrap=True)
    for s in result.latest.signals:
        verdict = "[red]DRIFT[/red]" if s.drift else "ok"
        figure = f"p={s.statistic:.3g}" if s.p_value is not None else f"{s.statistic:.3g}"  # a p-value said so
        out.print(f"{verdict} {s.name}: {s.test} {figure} (drift {s.rule})"
                  + (f", PSI {s.psi:.3f} ({s.band})" if s.psi is not None else ""), highlight=False)
    if result.shadow is not None:
        sh = result.shadow
        agreement = "-" if sh.agreement is None else f"{100 * sh.agreement:.1f}%"
        latency = "" if sh.latency_p50_ms is None else (f"; p50 {sh.latency_p50_ms:.0f} ms against production's "
                                                        f"{sh.production_p50_ms:.0f} ms")
        out.print(f"shadow {sh.candidate[:12]}: agrees with production on {sh.agree} of {sh.answers} answers "
                  f"({agreement}), {sh.failed} failed{latency}", highlight=False)
    out.print(f"report: {result.html_path}\njson:   {result.json_path}", highlight=False)
    if result.alerts:
        for alert in result.alerts:
            err.print(f"[bold red]alert:[/bold red] {alert.reason}", highlight=False, soft_wrap=True)
        raise typer.Exit(ALERT_EXIT_CODE)
    if not result.latest.judged:
        err.print(f"no alert; the latest window has {result.latest.answered} answered requests, fewer than "
                  f"monitor.min_window_rows ({min_rows}): its drift is not judged", highlight=False)


def _when(at: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def _main_figure(version) -> str:
    f = version.figures
    if not f.get("main") or f["main"] not in f.get("metrics", {}):
        return "-"
    return f"{f['main']} {100 * f['metrics'][f['main']]:.1f}% ({f.get('n')} rows)"


@app.command()
@_friendly
def promote(project: Path = typer.Argument(Path("."), help="Project directory or taskfit.yaml."),
            run: Optional[str] = typer.Argument(None, help="A finished run directory, or a fitted classical "
                                                "candidate (tfidf-logreg, embeddings-logreg); default: the "
                                                "project's latest finished run."),
            name: str = typer.Option(..., "--as", help="The registered name (served as this model name)."),
            alias: str = typer.Option("production", help="production (gated) or candidate (shadow or canary)."),
            force: bool = typer.Option(False, "--force", help="Promote even when the gate refuses (needs --reason)."),
            reason: Optional[str] = typer.Option(None, help="Why: kept in the history."),
            by: Optional[str] = typer.Option(None, help="Who promotes (default: your login name).")) -> None:
    """Register a version and point NAME@ALIAS at it. To production only when it beats the current
    production version on the same held-out rows (the fixed set, or the recent one of reviewed
    traffic) and is worse on no set, class or field (paired tests; exit 7 when refused)."""
    from taskfit.lifecycle import promote_project
    from taskfit.progress import RichReporter

    if run is None:
        from taskfit.workflows.workspace import config_path, latest_run_dir

        err.print(f"using the latest finished run: {latest_run_dir(config_path(project).parent)}", highlight=False)
    from taskfit.baselines.classical import read_card
    from taskfit.lifecycle.promote import resolve_source
    from taskfit.workflows.workspace import config_path

    source = resolve_source(config_path(project).parent, run)  # a classical model by its name, wherever it is
    _mind_the_verdict(project, (read_card(source.path) or {}).get("name", source.path.name)
                      if source.kind == "classical" else "fine-tuned")
    result = promote_project(project, run, name, alias, force=force, reason=reason, by=by,
                             reporter=RichReporter(err))
    v = result.version
    if result.move is None:
        out.print(f"{name}@{alias} is already {v.short}: nothing moved", highlight=False)
        return
    if result.gate is not None:
        out.print(f"gate: {result.gate.summary()}", highlight=False, soft_wrap=True)
        for line in result.gate.reasons():
            out.print(f"[yellow]overridden:[/yellow] {escape(line)}", highlight=False, soft_wrap=True)
    was = f" (was {result.move.from_version[:12]})" if result.move.from_version else ""
    forced = f", forced: {result.move.reason}" if result.forced else ""
    out.print(f"{name}@{alias} -> {v.short}{was}{forced}; {_main_figure(v)}; files: {v.path}", highlight=False,
              soft_wrap=True)
    _short_of(result)
    if alias == "production" and not result.move.from_version:
        # a server follows the registry it found when it started: one started before it existed does not
        out.print(f"next: `taskfit serve {project}` serves {name}@production and follows its later moves "
                  "without a restart; a server started before this first promote still serves what it "
                  "started with: restart it", highlight=False, soft_wrap=True)
    elif alias == "candidate":
        out.print(f"next: a running `taskfit serve {project}` answers with {name}@candidate beside production "
                  f"only where serve.yaml sets shadow or canary for {name} (or `--shadow`, `--canary`); without, it serves "
                  f"production alone. `taskfit monitor {project}` reads the shadow's agreement",
                  highlight=False, soft_wrap=True)
    elif result.first_adapter:
        out.print(f"next: a running `taskfit serve {project}` follows {name}@{alias} now; this is {name}'s first "
                  "adapter version, so a server started on classical versions alone loads the base language model "
                  "first (its requests wait the seconds that takes). `taskfit rollback "
                  f"{project} {name}` undoes production's last move", highlight=False, soft_wrap=True)
    else:
        out.print(f"next: a running `taskfit serve {project}` follows {name}@{alias} now; `taskfit registry "
                  f"history {project} {name}` shows every move, `taskfit rollback {project} {name}` undoes "
                  "production's last move", highlight=False, soft_wrap=True)


@app.command()
@_friendly
def retrain(project: Path = typer.Argument(Path("."), help="Project directory or taskfit.yaml."),
            promote_to: Optional[str] = typer.Option(None, "--promote", help="candidate, production (gated) or "
                                                     "none; default retrain.promote (candidate)."),
            kind: Optional[str] = typer.Option(None, help="adapter (a fine-tune by the train: settings) or "
                                               "classical (refit production's classical recipe); default: "
                                               "what production is."),
            continue_: bool = typer.Option(False, "--continue", help="Train production's LoRA adapter further "
                                           "instead of a new one."),
            name: Optional[str] = typer.Option(None, "--as", help="The registered name (default retrain.name, "
                                                                 "else task.name)."),
            by: Optional[str] = typer.Option(None, help="Who promotes (default: your login name)."),
            threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: all)."),
            allow_secrets: bool = typer.Option(False, "--allow-secrets",
                                               help="Train even on data with unredacted credentials.")) -> None:
    """Train on the project's rows plus the latest snapshot's reviewed rows, compare the new version
    with production on the fixed and the recent held-out sets, and promote it as retrain.promote says
    (exit 7 when the gate refuses production)."""
    from taskfit.errors import PromotionRefused
    from taskfit.lifecycle.retrain import retrain_project
    from taskfit.progress import RichReporter

    result = retrain_project(project, promote=promote_to, kind=kind, continue_from_production=continue_,
                             name=name, by=by, reporter=RichReporter(err), threads=threads,
                             allow_secrets=allow_secrets)
    v, snap = result.version, result.snapshot
    out.print(f"{result.how} {v.short} on {result.rows['project']} project rows + {result.rows['reviewed']} "
              f"reviewed rows of snapshot {snap.short}: {result.source.path}", highlight=False, soft_wrap=True)
    for label, card in result.scorecards:
        out.print(f"[bold]{label} held-out set[/bold] ({card.results[0].n} rows)")
        _print_scorecard(card)
    name = v.name
    if result.gate is not None:
        out.print(f"[bold]verdict:[/bold] {escape(result.gate.verdict(name))}", soft_wrap=True)
    if result.refused:
        raise PromotionRefused(f"{name} {v.short} is not promoted to production (production stays "
                               f"{result.production.short})",
                               hint=f"it is registered: `taskfit promote {project} {result.source.path} --as {name} "
                                    "--alias candidate` tries it in shadow; --force --reason TEXT overrides")
    p = result.promotion
    if p is None:
        out.print(f"registered {name} {v.short}; no alias moved (retrain.promote: none)", highlight=False)
    elif p.move is None:
        out.print(f"{name}@{p.alias} is already {v.short}: nothing moved", highlight=False)
    else:
        was = f" (was {p.move.from_version[:12]})" if p.move.from_version else ""
        out.print(f"{name}@{p.alias} -> {v.short}{was}; {_main_figure(p.version)}", highlight=False)
        _short_of(p)


def _short_of(promotion) -> None:
    """A warning for each thing a version promoted to production falls short of (the task's
    acceptance thresholds, qa's refusing every question): the gate compares versions, not the
    task's own bar, so it is promoted all the same."""
    for line in promotion.short_of:
        err.print(f"[yellow]warning: {escape(line)}[/yellow]", highlight=False, soft_wrap=True)


registry_app = typer.Typer(no_args_is_help=True, help="The project's registered versions, aliases and their history.")
app.add_typer(registry_app, name="registry")


def _registry(project: Path):
    from taskfit.lifecycle import Registry
    from taskfit.lifecycle.promote import registry_path
    from taskfit.workflows.workspace import config_path

    return Registry.existing(registry_path(config_path(project).parent))


@registry_app.command("list")
@_friendly
def registry_list(project: Path = typer.Argument(Path("."), help="Project directory or taskfit.yaml.")) -> None:
    """Every registered version, with the aliases that point at it."""
    with _registry(project) as registry:
        table = Table("name", "version", "aliases", "kind", "registered", "by", "held-out figures", "labels")
        for v in registry.versions():
            aliases = ", ".join(a for a, vid in sorted(registry.aliases(v.name).items()) if vid == v.id)
            table.add_row(v.name, v.short, aliases or "-", v.kind, _when(v.created), v.created_by or "-",
                          _main_figure(v), str(len(v.labels)) if v.labels else "-")
        out.print(table)


def _dir_and_name(args: list[str], command: str) -> tuple[Path, str]:
    if len(args) not in (1, 2):
        from taskfit.errors import ConfigError

        raise ConfigError(f"`taskfit {command}` takes [DIR] NAME")
    return (Path(args[0]) if len(args) == 2 else Path(".")), args[-1]


@registry_app.command("history")
@_friendly
def registry_history(args: list[str] = typer.Argument(..., metavar="[DIR] NAME",
                                                      help="Project directory (default .) and registered name.")) -> None:
    """Every move of NAME's aliases, oldest first: from, to, who, when, why."""
    project, name = _dir_and_name(args, "registry history")
    with _registry(project) as registry:
        table = Table("#", "when", "alias", "action", "from", "to", "by", "reason", "gate")
        for m in registry.history(name):
            gate = "-" if m.gate is None else ("passed" if m.gate["passed"] else "refused, forced")
            table.add_row(str(m.seq), _when(m.at), m.alias, m.action, (m.from_version or "-")[:12],
                          m.to_version[:12], m.by or "-", escape(m.reason or "-"), gate)
        out.print(table)


@app.command()
@_friendly
def rollback(args: list[str] = typer.Argument(..., metavar="[DIR] NAME",
                                              help="Project directory (default .) and registered name."),
             reason: Optional[str] = typer.Option(None, help="Why: kept in the history."),
             by: Optional[str] = typer.Option(None, help="Who rolls back (default: your login name).")) -> None:
    """Point NAME@production back at the version it held before (a running server follows)."""
    from taskfit.lifecycle import rollback_project

    project, name = _dir_and_name(args, "rollback")
    move = rollback_project(project, name, by=by, reason=reason)
    out.print(f"{name}@production -> {move.to_version[:12]} (was {move.from_version[:12]})", highlight=False)


@app.command()
@_friendly
def quickstart(directory: Path = typer.Argument(Path("quickstart"), help="Where to create the sample project."),
               seed: int = typer.Option(0, help="Seed of the sample data, the split and training."),
               full: bool = typer.Option(False, help="Train and evaluate on every row (slow on CPU)."),
               force: bool = typer.Option(False, help="Overwrite an existing project there."),
               threads: Optional[int] = typer.Option(None, help="CPU threads for torch.")) -> None:
    """Create the sample ticket-triage project and run the whole loop on the embedded model."""
    from taskfit.progress import RichReporter
    from taskfit.quickstart import make_quickstart_project
    from taskfit.workflows import run_project

    path = make_quickstart_project(directory, seed=seed, full=full, force=force, head=True)
    err.print(f"sample project written to {path.parent} (2,400 generated support tickets, 8 queues)")
    _print_summary(run_project(path, reporter=RichReporter(err), threads=threads), path)


def _quiet_libraries() -> None:
    """Our own bars and status lines say what is happening; the libraries' per-tensor bars and
    deprecation notices about their internals only bury them; taskfit's own warnings print as the
    CLI's other warning lines."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    library_format = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        """Our own warnings (a setting that will run slowly...) read as the CLI's other warnings."""
        ours = f"{os.sep}taskfit{os.sep}" in filename
        if ours and not issubclass(category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)):
            err.print(f"[yellow]warning:[/yellow] {escape(str(message))}", highlight=False, soft_wrap=True)
        else:
            library_format(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _one_line_summaries(typer_app: typer.Typer) -> None:
    """Each command's summary in a group's --help as its docstring's first paragraph on one line:
    Typer's rich panel keeps the docstring's line breaks there, and cuts sentences mid-way."""
    import inspect

    for info in typer_app.registered_commands:
        doc = info.help or inspect.getdoc(info.callback) or ""
        if info.short_help is None and doc:
            info.short_help = " ".join(doc.split("\n\n")[0].split())
    for group in typer_app.registered_groups:
        _one_line_summaries(group.typer_instance)


_one_line_summaries(app)


def main() -> None:
    _quiet_libraries()
    app()


if __name__ == "__main__":
    sys.exit(main())
