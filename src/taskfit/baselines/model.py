"""A language model as a classifier: rank the taxonomy's labels by the model's likelihood.

Scoring labels instead of generating text guarantees a valid label and gives a confidence. The
prompt is read once; its key/value cache is repeated for the K labels, so ranking costs one prompt
pass plus one short batched pass over the label tokens (about the cost of generating one token).
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Iterator

from taskfit.config import TaskSpec
from taskfit.records import Example, Prediction
from taskfit.rendering import render


class LabelScoringPredictor:
    """Classify by the sequence log-probability of each label plus the end-of-turn token."""

    def __init__(self, name: str, model: Any, tokenizer: Any, task: TaskSpec, max_length: int):
        if not task.labels:
            raise ValueError("label scoring needs a classify task with labels")
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.task = task
        self.max_length = max_length
        probe = Example(id="probe", input="probe", target="")
        # The label's tokens after the assistant header do not depend on the prompt (the header
        # ends with a newline), so they are computed once.
        self.completions = [render(tokenizer, task, probe, target=lab).completion
                            for lab in task.labels]
        self._longest = max(task.labels, key=lambda lab: len(tokenizer(lab)["input_ids"]))

    def prompt_ids(self, example: Example) -> list[int]:
        r = render(self.tokenizer, self.task, example, target=self._longest, max_length=self.max_length)
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
        import math

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


def generate_answers(model: Any, tokenizer: Any, task: TaskSpec, examples: Iterable[Example],
                     max_length: int, max_new_tokens: int) -> Iterator[tuple[Example, str]]:
    """Greedy, unconstrained decoding: what the model says when nothing holds it to the taxonomy."""
    import torch

    for ex in examples:
        r = render(tokenizer, task, ex, max_length=max_length)
        with torch.inference_mode():
            ids = torch.tensor([r.ids], device=model.get_output_embeddings().weight.device)
            out = model.generate(ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)
        yield ex, tokenizer.decode(out[0, len(r.ids):], skip_special_tokens=True).strip()
