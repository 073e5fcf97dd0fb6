"""After the first deploy: the registry of versions and aliases (``taskfit promote``,
``taskfit rollback``, ``taskfit registry``) and the server that follows it."""

from taskfit.errors import PromotionRefused
from taskfit.lifecycle.promote import Promotion, promote_project, rollback_project
from taskfit.lifecycle.registry import Move, Registry, Version

__all__ = ["Move", "Promotion", "PromotionRefused", "Registry", "Version", "promote_project", "rollback_project"]
