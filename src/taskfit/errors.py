"""The exception hierarchy and its exit codes.

Errors propagate to one boundary (the CLI, later the HTTP layer), where they become a short message
and an exit code; library code never catches-and-logs-and-returns-None.

    TaskfitError            exit 1   anything taskfit reports to a user in words
    ├── ConfigError         exit 2   taskfit.yaml or a command-line override is wrong
    ├── DataError           exit 3   a data file cannot be read, or no usable rows remain
    │   └── PromptTooLongError       a row cannot be cut to fit train.max_seq_length (also a ValueError)
    ├── ModelError          exit 4   a model cannot be resolved, reached offline, or loaded
    │   └── ChatTemplateError        the model's chat template cannot mask an answer
    ├── ResumeError         exit 5   a checkpoint does not fit the run being resumed
    └── PromotionRefused    exit 7   the promotion gate found the new version worse than production
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


class PromptTooLongError(DataError, ValueError):
    """Rendering cannot cut a row to ``train.max_seq_length``: what is left (template, system
    prompt, answer) is longer on its own.

    It is a ``ValueError`` too, and ``str()`` gives the message alone: callers that know the row
    (training's featurize, a baseline's prompt) catch it and raise it again with the row's place
    and their own hint in front."""

    def __str__(self) -> str:
        return self.message


class ChatTemplateError(ModelError):
    """The model's chat template renders the prompt differently once an answer follows, so the
    answer's tokens cannot be told from the prompt's. Not a ValueError: no caller may read it as a
    row that is too long."""


class PromotionRefused(TaskfitError):
    """``taskfit promote`` to production refused: the new version is significantly worse than the
    production version on the same held-out rows (exit 6 is ``taskfit monitor``'s alert)."""

    exit_code = 7
