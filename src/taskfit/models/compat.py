"""What differs between the transformers releases taskfit supports (``transformers>=5.0,<6``)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=None)
def cache_arg() -> str:
    """The ``forward`` keyword, and output field, of a key/value cache: transformers 5.24 renamed
    ``past_key_values`` to ``cache`` (the old name warns, and goes in 5.40)."""
    import transformers
    from packaging.version import Version

    return "cache" if Version(transformers.__version__) >= Version("5.24.0.dev0") else "past_key_values"


def cache_of(output: Any) -> Any:
    """The key/value cache a forward pass with ``use_cache=True`` returned."""
    return getattr(output, cache_arg())
