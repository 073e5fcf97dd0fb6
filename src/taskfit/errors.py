"""The exception hierarchy and its exit codes.

Errors propagate to one boundary (the CLI, later the HTTP layer), where they become a short message
and an exit code; library code never catches-and-logs-and-returns-None.

    TaskfitError            exit 1   anything taskfit reports to a user in words
    ├── ConfigError         exit 2   taskfit.yaml or a command-line override is wrong
    ├── DataError           exit 3   a data file cannot be read, or no usable rows remain
    ├── ModelError          exit 4   a model cannot be resolved, reached offline, or loaded
    └── ResumeError         exit 5   a checkpoint does not fit the run being resumed
"""

from __future__ import annotations


class TaskfitError(Exception):
    """An error with a message meant for the user; ``hint`` says what to do about it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(TaskfitError):
    exit_code = 2


class DataError(TaskfitError):
    exit_code = 3


class ModelError(TaskfitError):
    exit_code = 4


class ResumeError(TaskfitError):
    exit_code = 5
