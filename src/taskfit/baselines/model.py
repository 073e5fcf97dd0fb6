"""A local language model as a candidate: label scoring for classify, generation otherwise.

Scoring labels instead of generating text guarantees a valid label and gives a confidence. The
prompt is read once; its key/value cache is repeated for the K labels, so ranking costs one prompt
pass plus one short batched pass over the label tokens (about the cost of generating one token).

Both predictors take two optional hooks, which is how the baselines differ while the model and
the scorer stay the same: ``shots`` (solved training examples shown first: few-shot) and
``contexts`` (retrieved document chunks put in the prompt: RAG).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

from taskfit.config import TaskSpec
from taskfit.records import Example, Prediction
from taskfit.rendering import Rendered, render

Shots = Callable[[Example], Sequence[Example]]
# A context hook returns the context to answer from, and details to record (chunk citations).
Contexts = Callable[[Example], tuple[str, dict[str, Any]]]
MAX_PROMPT_TOKENS = 2048  # a few-shot prompt drops its least similar shots to stay under this


def _prompt(tokenizer: Any, task: TaskSpec, example: Example, max_length: int, shots: Shots | None,
            target: str | None = None) -> Rendered:
    """Render ``example``; few-shot examples are dropped, least similar first, until it fits."""
    chosen = list(shots(example)) if shots else []
    while True:
        r = render(tokenizer, task, example, target=target,
                   max_length=max_length if not chosen else None, shots=chosen)
        if not chosen or len(r.ids) <= MAX_PROMPT_TOKENS:
            return r
        chosen.pop()


class LabelScoringPredictor:
    """Classify by the sequence log-probability of each label plus the end-of-turn token."""

    def __init__(self, name: str, model: Any, tokenizer: Any, task: TaskSpec, max_length: int,
                 shots: Shots | None = None):
        if not task.labels:
            raise ValueError("label scoring needs a classify task with labels")
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.task = task
        self.max_length = max_length
        self.shots = shots
        probe = Example(id="probe", input="probe", target="")
        # The label's tokens after the assistant header do not depend on the prompt (the header
        # ends with a newline), so they are computed once.
        self.completions = [render(tokenizer, task, probe, target=lab).completion
                            for lab in task.labels]
        self._longest = max(task.labels, key=lambda lab: len(tokenizer(lab)["input_ids"]))

    def prompt_ids(self, example: Example) -> list[int]:
        r = _prompt(self.tokenizer, self.task, example, self.max_length, self.shots, target=self._longest)
        return r.ids[: r.n_prompt]

    def scores(self, prompt: list[int]) -> list[float]:
        """Sum of log-probabilities of each label's completion after ``prompt``."""
        import torch

        k = len(self.completions)
        with torch.inference_mode():
            device = self.model.get_output_embeddings().weight.device
            out = self.model(torch.tensor([prompt], device=device), use_cache=True)
            first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
            totals = [float(first[c[0]]) for c in self.completions]
            longest = max(len(c) for c in self.completions)
            if longest > 1:
                pad = self.tokenizer.pad_token_id
                # Feed every completion but its last token; position j predicts token j + 1.
                # Right padding only affects positions after a completion ends, which are unread.
                batch = torch.tensor([c[:-1] + [pad] * (longest - len(c)) for c in self.completions],
                                     device=device)
                cache = out.past_key_values
                cache.batch_repeat_interleave(k)
                logp = torch.log_softmax(self.model(batch, past_key_values=cache).logits.float(), dim=-1)
                for i, c in enumerate(self.completions):
                    for j in range(1, len(c)):
                        totals[i] += float(logp[i, j - 1, c[j]])
        return totals

    def predict(self, examples: Iterable[Example]) -> Iterator[Prediction]:
        labels = self.task.labels or []
        for ex in examples:
            start = time.perf_counter()
            prompt = self.prompt_ids(ex)
            totals = self.scores(prompt)
            best = max(range(len(totals)), key=totals.__getitem__)
            top = totals[best]
            norm = sum(math.exp(t - top) for t in totals)
            yield Prediction(example_id=ex.id, output=labels[best], valid=True,
                             latency_s=time.perf_counter() - start, prompt_tokens=len(prompt),
                             completion_tokens=len(self.completions[best]),
                             confidence=1.0 / norm)


class GenerativePredictor:
    """Greedy generation, held to the task's JSON schema for ``extract`` when ``constrained``;
    the answer is parsed and marked valid or not by the task kind."""

    def __init__(self, name: str, model: Any, tokenizer: Any, task: TaskSpec, max_length: int,
                 max_new_tokens: int, constrained: bool = False, shots: Shots | None = None,
                 contexts: Contexts | None = None):
        from taskfit.decoding import choice_grammar, json_schema_grammar

        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.task = task
        self.max_length = max_length
        self.max_new_tokens = max_new_tokens
        self.shots = shots
        self.contexts = contexts
        self.grammar = None
        if constrained and task.kind == "extract":
            self.grammar = json_schema_grammar(task.schema_ or {})
        elif constrained and task.kind == "classify":
            self.grammar = choice_grammar(task.labels or [])

    def predict(self, examples: Iterable[Example]) -> Iterator[Prediction]:
        from taskfit.decoding import generate
        from taskfit.tasks import parse

        for ex in examples:
            start = time.perf_counter()
            details: dict[str, Any] = {}
            if self.contexts is not None:
                context, details = self.contexts(ex)
                ex = dataclasses.replace(ex, context=context)
                details["context"] = context
            r = _prompt(self.tokenizer, self.task, ex, self.max_length, self.shots)
            out = generate(self.model, self.tokenizer, r.ids, self.max_new_tokens, self.grammar)
            answer, valid = parse(self.task, out.text)
            yield Prediction(example_id=ex.id, output=answer, valid=valid,
                             latency_s=time.perf_counter() - start, prompt_tokens=out.prompt_tokens,
                             completion_tokens=out.completion_tokens, details=details)

