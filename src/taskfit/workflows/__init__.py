"""Project-level workflows: the stage commands (``baseline``, ``train``, ``eval``, ``compare``,
``review``), ``run``, which composes them, and ``advise``, which measures the cheap candidates
and a learning curve before any of them, all over one :class:`Workspace`."""

from taskfit.workflows.advise import AdviseSummary, advise_project
from taskfit.workflows.evaluate import (Candidate, Comparison, baseline_project, compare_project, eval_project,
                                        review_export_project, review_import_project)
from taskfit.workflows.run import RunSummary, run_project
from taskfit.workflows.train import TrainSummary, train_project
from taskfit.workflows.workspace import Workspace

__all__ = ["AdviseSummary", "Candidate", "Comparison", "RunSummary", "TrainSummary", "Workspace", "advise_project",
           "baseline_project", "compare_project", "eval_project", "review_export_project", "review_import_project",
           "run_project", "train_project"]
