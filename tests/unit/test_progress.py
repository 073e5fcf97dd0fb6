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
