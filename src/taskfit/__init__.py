"""taskfit: fit a small language model to one narrow task, and prove whether it beats the
cheaper alternatives."""

from taskfit.config import ProjectConfig, load_config
from taskfit.errors import ConfigError, DataError, ModelError, TaskfitError
from taskfit.records import EvalResult, Example, Prediction

__version__ = "0.1.0"
__all__ = ["ConfigError", "DataError", "EvalResult", "Example", "ModelError", "Prediction",
           "ProjectConfig", "TaskfitError", "load_config", "__version__"]
