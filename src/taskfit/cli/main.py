"""The ``taskfit`` command. Each command parses, calls one library function, and prints.

Errors from the library arrive here as :class:`TaskfitError` and leave as one short message on
stderr and the error's exit code: never a traceback.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
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
            err.print(f"[bold red]error:[/bold red] {exc.message}", highlight=False, soft_wrap=True)
            if exc.hint:
                err.print(f"[yellow]hint:[/yellow] {exc.hint}", highlight=False, soft_wrap=True)
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
         task: str = typer.Option("classify", "--task", help="classify | extract | qa | generate"),
         force: bool = typer.Option(False, help="Overwrite an existing taskfit.yaml.")) -> None:
    """Write a commented taskfit.yaml for one task kind."""
    from taskfit.project import init_project

    path = init_project(directory, task, force=force)  # type: ignore[arg-type]
    out.print(f"wrote {path}: edit the task section, put your data in {directory / 'data'}, "
              f"then run `taskfit run {directory}`")


@app.command()
@_friendly
def check(project: Path = typer.Argument(Path("."), help="Project directory or taskfit.yaml.")) -> None:
    """Validate taskfit.yaml and the data it names, without loading a model."""
    from taskfit.config import load_config
    from taskfit.pipeline import prepare_splits

    path = project / "taskfit.yaml" if project.is_dir() else project
    config = load_config(path)
    train, held_out, loaded = prepare_splits(config, path.parent)
    out.print(f"{path}: valid ({config.task.kind}, {len(config.task.labels or [])} labels, "
              f"model {config.model.name})")
    out.print(f"data: {loaded.summary()}; split {len(train)} train / {len(held_out)} held out")
    for q in loaded.quarantined[:10]:
        out.print(f"  quarantined {q.source}: {q.reason}", highlight=False)


def _print_summary(summary) -> None:
    from taskfit.evaluation.report import HEADER, scorecard_rows
    from taskfit.config import load_config

    config = load_config(summary.run_dir / "config.resolved.yaml")
    table = Table(*HEADER, title="held-out scorecard")
    for row in scorecard_rows(summary.results, config.eval.thresholds):
        table.add_row(*row)
    out.print(table)
    out.print(f"[bold]{summary.verdict}[/bold]")
    out.print(f"report: {summary.report_html}\nrun:    {summary.run_dir}")


@app.command()
@_friendly
def run(project: Path = typer.Argument(Path("."), help="Project directory or taskfit.yaml."),
        threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: all).")) -> None:
    """Run the loop: split, prompt-only baseline, LoRA fine-tune, held-out comparison, report."""
    from taskfit.pipeline import run_project
    from taskfit.progress import RichReporter

    _print_summary(run_project(project, reporter=RichReporter(err), threads=threads))


@app.command()
@_friendly
def quickstart(directory: Path = typer.Argument(Path("quickstart"), help="Where to create the sample project."),
               seed: int = typer.Option(0, help="Seed of the sample data, the split and training."),
               full: bool = typer.Option(False, help="Train and evaluate on every row (slow on CPU)."),
               force: bool = typer.Option(False, help="Overwrite an existing project there."),
               threads: Optional[int] = typer.Option(None, help="CPU threads for torch.")) -> None:
    """Create the sample ticket-triage project and run the whole loop on the embedded model."""
    from taskfit.pipeline import run_project
    from taskfit.progress import RichReporter
    from taskfit.quickstart import make_quickstart_project

    path = make_quickstart_project(directory, seed=seed, full=full, force=force)
    err.print(f"sample project written to {path.parent} (2,400 generated support tickets, 8 queues)")
    _print_summary(run_project(path, reporter=RichReporter(err), threads=threads))


def _quiet_libraries() -> None:
    """Our own bars and status lines say what is happening; the libraries' per-tensor bars and
    deprecation notices about their internals only bury them."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def main() -> None:
    _quiet_libraries()
    app()


if __name__ == "__main__":
    sys.exit(main())
