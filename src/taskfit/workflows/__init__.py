"""Project-level workflows: the stage commands (``baseline``, ``train``, ``eval``, ``compare``,
``review``) and ``run``, which composes them, all over one :class:`Workspace`."""

from taskfit.workflows.evaluate import (Candidate, Comparison, baseline_project, compare_project, eval_project,
                                        review_export_project, review_import_project)
from taskfit.workflows.run import RunSummary, run_project
from taskfit.workflows.train import TrainSummary, train_project
from taskfit.workflows.workspace import Workspace

__all__ = ["Candidate", "Comparison", "RunSummary", "TrainSummary", "Workspace", "baseline_project",
           "compare_project", "eval_project", "review_export_project", "review_import_project", "run_project",
           "train_project"]
