"""After the first deploy: the registry of versions and aliases (``taskfit promote``,
``taskfit rollback``, ``taskfit registry``) and the server that follows it; reviewing served requests
and turning them into the next training set.

:mod:`~taskfit.lifecycle.reviews` keeps the review state (what was queued, every correction),
:mod:`~taskfit.lifecycle.queue` picks requests worth a person's time and reads their verdicts back,
:mod:`~taskfit.lifecycle.from_log` turns reviewed requests into a data snapshot.
"""

from taskfit.errors import PromotionRefused
from taskfit.lifecycle.promote import Promotion, promote_project, rollback_project
from taskfit.lifecycle.registry import Move, Registry, Version

__all__ = ["Move", "Promotion", "PromotionRefused", "Registry", "Version", "promote_project", "rollback_project"]
