"""Resolving a model name (embedded GGUF, Hugging Face id, local dir), loading, caching, licence."""

from taskfit.models.registry import (
    EMBEDDED,
    LoadedModel,
    ModelInfo,
    list_models,
    load_model,
    resolve,
)

__all__ = ["EMBEDDED", "LoadedModel", "ModelInfo", "list_models", "load_model", "resolve"]
