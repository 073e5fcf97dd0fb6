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
from taskfit.errors import ConfigError, DataError, PromptTooLongError
from taskfit.baselines.protocol import in_batches
from taskfit.models.compat import cache_arg, cache_of
from taskfit.records import Example, Prediction
from taskfit.rendering import answer_room, label_completions, Rendered, render

Shots = Callable[[Example], Sequence[Example]]
# A context hook returns the context to answer from, and details to record (chunk citations).
Contexts = Callable[[Example], tuple[str, dict[str, Any]]]
MAX_PROMPT_TOKENS = 2048  # a few-shot prompt drops its least similar shots to stay under this
FIRST_WAVE = 8  # labels in the first best-first scoring wave


def _prompt(tokenizer: Any, task: TaskSpec, example: Example, max_length: int, shots: Shots | None,
            room: int) -> Rendered:
    """Render ``example``; few-shot examples are dropped, least similar first, until it fits."""
    chosen = list(shots(example)) if shots else []
    while True:
        try:
            r = render(tokenizer, task, example, max_length=max_length if not chosen else None, shots=chosen,
                       answer_room=room)
        except PromptTooLongError as exc:
            raise DataError(f"{example.source or f'row id {example.id}'}: {exc.message}", hint=exc.hint) from None
        if not chosen or len(r.ids) <= MAX_PROMPT_TOKENS:
            return r
        chosen.pop()


def prompt_ids(tokenizer: Any, task: TaskSpec, example: Example, max_length: int, room: int,
               shots: Shots | None = None) -> list[int]:
    """The prompt ids an answer is generated after: ``example`` rendered as in training, cut to
    fit ``max_length`` (the run's ``train.max_seq_length``) with ``room`` (:func:`answer_room`)
    left for the answer. Evaluation, the validation metric and the server all ask with these."""
    return _prompt(tokenizer, task, example, max_length, shots, room).ids


def label_choice(labels: Sequence[str], totals: Sequence[float]) -> tuple[int, float]:
    """The best label's index and its confidence: a softmax over the labels' log-probabilities."""
    best = max(range(len(totals)), key=totals.__getitem__)
    return best, 1.0 / sum(math.exp(t - totals[best]) for t in totals)


class Prompts:
    """The prompt a local predictor answers after (:func:`prompt_ids`), cut to leave ``room``
    tokens for the answer: what the generating predictors and the label scorers share."""

    def __init__(self, tokenizer: Any, task: TaskSpec, max_length: int, room: int, shots: Shots | None = None):
        self.tokenizer = tokenizer
        self.task = task
        self.max_length = max_length
        self.room = room
        self.shots = shots

    def prompt_ids(self, example: Example) -> list[int]:
        return prompt_ids(self.tokenizer, self.task, example, self.max_length, self.room, self.shots)


class LabelPrompts(Prompts):
    """What every label scorer shares (transformers here, llama.cpp in
    :mod:`taskfit.baselines.llama_cpp`): each label's completion (its tokens and the end-of-turn
    token), and prompts cut to leave room for the longest of them, exactly as training cut them."""

    def __init__(self, tokenizer: Any, task: TaskSpec, max_length: int, shots: Shots | None = None):
        self.completions = label_completions(tokenizer, task)
        super().__init__(tokenizer, task, max_length, max(map(len, self.completions)), shots)

    def label_prediction(self, example: Example, scores: Callable[[list[int]], list[float]]) -> Prediction:
        """The best label for ``example`` by ``scores`` (a label scorer's), with its confidence and cost."""
        labels = self.task.labels or []
        start = time.perf_counter()
        prompt = self.prompt_ids(example)
        best, confidence = label_choice(labels, scores(prompt))
        return Prediction(example_id=example.id, output=labels[best], valid=True,
                          latency_s=time.perf_counter() - start, prompt_tokens=len(prompt),
                          completion_tokens=len(self.completions[best]), confidence=confidence)


class LabelScoringPredictor(LabelPrompts):
    """Classify by the sequence log-probability of each label plus the end-of-turn token."""

    def __init__(self, name: str, model: Any, tokenizer: Any, task: TaskSpec, max_length: int,
                 shots: Shots | None = None):
        if not task.labels:  # config validation gives every classify task labels; this guards other callers
            raise ConfigError(f"{name}: label scoring needs a classify task with task.labels",
                              hint="set task.kind: classify and list task.labels, or evaluate by generation")
        super().__init__(tokenizer, task, max_length, shots)
        self.name = name
        self.model = model

    def scores(self, prompt: list[int]) -> list[float]:
        """Log-probability of each label's completion (its tokens and the end-of-turn token)
        after ``prompt``.

        Exact best-first search: a label's total can only fall below the log-probability of its
        first token, which the prompt pass already gives. The labels whose first tokens are
        likeliest are scored first; then only labels whose bound still beats the best total
        found. A label never scored cannot win and is given its bound. The argmax is exact, and
        the confidence is a lower bound (it can only be understated, which errs towards the
        fallback). A confident model scores about ``FIRST_WAVE`` labels of a 150-label taxonomy.
        Each wave is one batched pass over the prompt's cache per label length (no padding).
        """
        import torch

        with torch.inference_mode():
            device = self.model.get_output_embeddings().weight.device
            out = self.model(torch.tensor([prompt], device=device), use_cache=True)
            first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
            totals = [float(first[c[0]]) for c in self.completions]
            groups: dict[int, list[int]] = {}
            for i, c in enumerate(self.completions):
                groups.setdefault(c[0], []).append(i)
            order = sorted(groups, key=lambda t: -float(first[t]))
            # Two waves: the likeliest groups (about FIRST_WAVE labels), then every group whose
            # bound still beats the best total found. A confident model stops after the first.
            end = 0
            while end < len(order) and sum(len(groups[t]) for t in order[:end]) < FIRST_WAVE:
                end += 1
            best = float("-inf")
            for wave in (order[:end], order[end:]):
                members = [i for t in wave if float(first[t]) >= best for i in groups[t]]
                if not members:
                    break
                for i, extra in zip(members, self._continue(cache_of(out), members, device)):
                    totals[i] += extra
                best = max(best, *(totals[i] for i in members))
        return totals

    def _continue(self, cache: Any, members: list[int], device: Any) -> list[float]:
        """Sum of log-probabilities of tokens 2.. of each member's completion, batched by length
        (no padding), each batch on its own copy of the prompt's cache."""
        import copy

        import torch

        sums = {i: 0.0 for i in members}
        by_length: dict[int, list[int]] = {}
        for i in members:
            if len(self.completions[i]) > 1:
                by_length.setdefault(len(self.completions[i]), []).append(i)
        for length, rows in sorted(by_length.items()):
            # Feed every completion but its last token; position j predicts token j + 1.
            batch = torch.tensor([self.completions[i][:-1] for i in rows], device=device)
            repeated = copy.deepcopy(cache)
            repeated.batch_repeat_interleave(len(rows))
            logp = torch.log_softmax(self.model(batch, **{cache_arg(): repeated}).logits.float(), dim=-1)
            targets = torch.tensor([self.completions[i][1:] for i in rows], device=device)
            picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).sum(dim=-1)
            for row, i in enumerate(rows):
                sums[i] = float(picked[row])
        return [sums[i] for i in members]

    def predict(self, examples: Iterable[Example]) -> Iterator[Prediction]:
        for ex in examples:
            yield self.label_prediction(ex, self.scores)


class GenerativePredictor(Prompts):
    """Greedy generation, held to the task's JSON schema for ``extract`` when ``constrained``;
    the answer is parsed and marked valid or not by the task kind.

    With ``batch_size`` above 1, that many rows are decoded together (one forward pass per step
    for all of them); each row's latency is then the batch's time shared among its rows: the cost
    of a query at that throughput, not the wait of a single request.
    """

    def __init__(self, name: str, model: Any, tokenizer: Any, task: TaskSpec, max_length: int,
                 max_new_tokens: int, constrained: bool = False, shots: Shots | None = None,
                 contexts: Contexts | None = None, batch_size: int = 1):
        from taskfit.decoding import answer_grammar

        super().__init__(tokenizer, task, max_length, answer_room(tokenizer, task, max_new_tokens), shots)
        self.name = name
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.contexts = contexts
        self.batch_size = max(1, batch_size)
        self.grammar = answer_grammar(task) if constrained else None

    def predict(self, examples: Iterable[Example]) -> Iterator[Prediction]:
        for batch in in_batches(examples, self.batch_size):
            yield from self._batch(batch)

    def _batch(self, examples: list[Example]) -> Iterator[Prediction]:
        from taskfit.decoding import Sampling, decode_batch
        from taskfit.tasks import parse

        start = time.perf_counter()
        prompts, details = [], []
        for ex in examples:
            found: dict[str, Any] = {}
            if self.contexts is not None:
                context, found = self.contexts(ex)
                ex = dataclasses.replace(ex, context=context)
                found["context"] = context
            prompts.append(self.prompt_ids(ex))
            details.append(found)
        sampling = Sampling(max_tokens=self.max_new_tokens, grammar=self.grammar)
        outs = decode_batch(self.model, self.tokenizer, prompts, [sampling] * len(prompts))
        share = (time.perf_counter() - start) / len(examples)
        for ex, out, found in zip(examples, outs, details):
            answer, valid = parse(self.task, out.text)
            yield Prediction(example_id=ex.id, output=answer, valid=valid, latency_s=share,
                             prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens,
                             details=found)
