"""The Predictor protocol and the candidates that answer a task without fine-tuning."""

from taskfit.baselines.protocol import Predictor
from taskfit.baselines.model import LabelScoringPredictor, generate_answers

__all__ = ["LabelScoringPredictor", "Predictor", "generate_answers"]
