"""The Predictor protocol and the candidates that answer a task without fine-tuning."""

from taskfit.baselines.protocol import Predictor
from taskfit.baselines.model import GenerativePredictor, LabelScoringPredictor

__all__ = ["GenerativePredictor", "LabelScoringPredictor", "Predictor"]
