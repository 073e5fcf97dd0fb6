"""What this process may use of the machine it runs on, for every part that sizes its work by it
(training threads, the llama.cpp engine)."""

from __future__ import annotations

import os


def cpu_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
