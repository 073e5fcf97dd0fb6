"""Progress where no bar can be drawn: a log file or CI gets plain lines while long work runs."""

from __future__ import annotations

import io

from rich.console import Console

from taskfit import progress


def test_a_bar_written_to_a_log_file_is_plain_lines_while_it_runs(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    reporter = progress.RichReporter(Console(file=out, force_terminal=False, width=200))
    with reporter.bar("training", total=120) as advance:
        for step in range(120):
            clock[0] += 1.0  # a step a second: a line every 30 s
            advance(info=f"loss {2 - step / 100:.2f}")
    lines = out.getvalue().splitlines()
    assert lines[0] == "training: started (120 to do)"
    assert lines[1] == "training: at 30/120 after 30 s, about 1 min 30 s left loss 1.71"
    assert len(lines) == 6 and lines[-1] == "training: done, 120/120 after 2 min 00 s loss 0.81"
    assert "\x1b" not in out.getvalue() and "━" not in out.getvalue()  # no escape codes, no bar


def test_the_time_left_is_not_guessed_from_a_first_row_that_carried_the_warm_up(monkeypatch):
    """prompt-only on a helpdesk export printed "at 1/40 after 39 s, about 25 min 14 s left" and was
    done 28 s later: the first row carried the model's warm-up. The time left is taken at the pace
    since the first rows were done, and not said before there is a pace."""
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    reporter = progress.RichReporter(Console(file=out, force_terminal=False, width=200))
    with reporter.bar("evaluating prompt-only", total=40) as advance:
        clock[0] += 39.0
        advance()  # the first row, after the warm-up
        for _ in range(39):
            clock[0] += 0.7
            advance()
    lines = out.getvalue().splitlines()
    assert lines[1] == "evaluating prompt-only: at 1/40 after 39 s", lines
    assert lines[-1] == "evaluating prompt-only: done, 40/40 after 1 min 06 s"

    out = io.StringIO()
    reporter = progress.RichReporter(Console(file=out, force_terminal=False, width=200))
    clock[0] = 0.0
    with reporter.bar("evaluating prompt-only", total=100) as advance:
        clock[0] += 39.0
        advance()
        for _ in range(60):
            clock[0] += 1.0
            advance()
    # at 31/100 after 69 s: 30 rows in the 30 s since the first, 69 to go at that pace
    assert "evaluating prompt-only: at 31/100 after 1 min 09 s, about 1 min 09 s left" in out.getvalue().splitlines()
