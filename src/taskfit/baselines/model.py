"""A local language model as a candidate: label scoring for classify, generation otherwise.

Scoring labels instead of generating text guarantees a valid label and gives a confidence. The
prompts of a batch are read once (the tokens every prompt of the task begins with are read once
per predictor, :class:`taskfit.models.prefix.PrefixCache`, and those the batch's prompts share
once a batch); the labels' tokens, as a prefix tree, are then searched over the prompts'
key/value cache (:mod:`taskfit.baselines.label_tree`).

Both predictors take two optional hooks, which is how the baselines differ while the model and
the scorer stay the same: ``shots`` (solved training examples shown first: few-shot) and
``contexts`` (retrieved document chunks put in the prompt: RAG). Neither prompt is cut to
``train.max_seq_length``, the length a fine-tune is trained at, which neither baseline was: each
drops its least similar shots or chunks, whole, to stay under :data:`MAX_PROMPT_TOKENS`.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any, Callable, Iterable, Iterator, Sequence

from taskfit.config import TaskSpec
from taskfit.errors import ConfigError, DataError, PromptTooLongError
from taskfit.baselines.label_tree import CONFIDENCE_TOLERANCE, LabelTree, Searched, search
from taskfit.baselines.protocol import by_prompt_length
from taskfit.records import in_batches
from taskfit.records import Example, LabelChoice, Prediction
from taskfit.rendering import answer_room, label_completions, Rendered, render
from taskfit.retrieval import Chunk, same_passage

Shots = Callable[[Example], Sequence[Example]]
# A context hook returns the document chunks retrieved for a row, best first.
Contexts = Callable[[Example], Sequence[Chunk]]
MAX_PROMPT_TOKENS = 2048  # a few-shot or RAG prompt drops its least similar shots or chunks to stay under this


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


class Prompts:
    """The prompt a local predictor answers after (:func:`prompt_ids`), cut to leave ``room``
    tokens for the answer: what the generating predictors and the label scorers share. Rows
    are answered ``batch_size`` at a time (:meth:`_batch`); above 1, each row's latency is the
    batch's time shared among its rows: the cost of a query at that throughput, not the wait of
    a single request."""

    def __init__(self, tokenizer: Any, task: TaskSpec, max_length: int, room: int, shots: Shots | None = None,
                 batch_size: int = 1):
        from taskfit.models.prefix import PrefixCache

        self.tokenizer = tokenizer
        self.task = task
        self.max_length = max_length
        self.room = room
        self.shots = shots
        self.batch_size = max(1, batch_size)
        # The tokens every prompt begins with, read once (by the model this predictor runs, whose
        # weights must not change while it is used: a predictor is made for one evaluation).
        self.prefix = PrefixCache.for_task(tokenizer, task)

    def prompt_ids(self, example: Example) -> list[int]:
        return prompt_ids(self.tokenizer, self.task, example, self.max_length, self.room, self.shots)

    def order(self, examples: Sequence[Example]) -> list[Example]:
        """The order to answer ``examples`` in (:func:`~taskfit.baselines.protocol.by_prompt_length`)."""
        return by_prompt_length(self, examples)

    def predict(self, examples: Iterable[Example]) -> Iterator[Prediction]:
        for batch in in_batches(examples, self.batch_size):
            yield from self._batch(batch)

    def _batch(self, examples: list[Example]) -> Iterator[Prediction]:
        raise NotImplementedError


class LabelPrompts(Prompts):
    """What every label scorer shares (transformers here, llama.cpp in
    :mod:`taskfit.baselines.llama_cpp`): each label's completion (its tokens and the end-of-turn
    token), prompts cut to leave room for the longest of them exactly as training cut them, and
    predictions from the scorer's :meth:`choose`."""

    def __init__(self, tokenizer: Any, task: TaskSpec, max_length: int, shots: Shots | None = None,
                 batch_size: int = 1):
        self.completions = label_completions(tokenizer, task)
        super().__init__(tokenizer, task, max_length, max(map(len, self.completions)), shots, batch_size)

    def choose(self, prompts: Sequence[list[int]]) -> list[LabelChoice]:
        """The best label after each prompt, with its confidence (a scorer's own)."""
        raise NotImplementedError

    def _batch(self, examples: list[Example]) -> Iterator[Prediction]:
        labels = self.task.labels or []
        start = time.perf_counter()
        prompts = [self.prompt_ids(ex) for ex in examples]
        choices = self.choose(prompts)
        share = (time.perf_counter() - start) / len(examples)
        for ex, prompt, c in zip(examples, prompts, choices):
            yield Prediction(example_id=ex.id, output=labels[c.best], valid=True, latency_s=share,
                             prompt_tokens=len(prompt), completion_tokens=len(self.completions[c.best]),
                             confidence=c.confidence)


class LabelScoringPredictor(LabelPrompts):
    """Classify by the sequence log-probability of each label plus the end-of-turn token: a
    search over the labels' prefix tree (:mod:`taskfit.baselines.label_tree`), with
    ``batch_size`` rows read together. The argmax is that of scoring every label; the confidence
    is at most ``tolerance`` below the exact one (0: every label scored), so two batch sizes,
    which read ahead different nodes, may give confidences up to ``tolerance`` apart."""

    def __init__(self, name: str, model: Any, tokenizer: Any, task: TaskSpec, max_length: int,
                 shots: Shots | None = None, batch_size: int = 1, tolerance: float = CONFIDENCE_TOLERANCE):
        if not task.labels:  # config validation gives every classify task labels; this guards other callers
            raise ConfigError(f"{name}: label scoring needs a classify task with task.labels",
                              hint="set task.kind: classify and list task.labels, or evaluate by generation")
        super().__init__(tokenizer, task, max_length, shots, batch_size)
        self.name = name
        self.model = model
        self.tolerance = tolerance
        self.tree = LabelTree(self.completions)

    def choose(self, prompts: Sequence[list[int]]) -> list[LabelChoice]:
        return [s.choice() for s in self.search(prompts)]

    def search(self, prompts: Sequence[list[int]], stats: dict[str, int] | None = None) -> list[Searched]:
        """What the search found after each prompt: the labels it scored and the rest's bound
        (``stats``: see :func:`taskfit.baselines.label_tree.search`)."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        return search(self.model, self.tree, prompts, pad, self.tolerance, stats, self.prefix)


class GenerativePredictor(Prompts):
    """Greedy generation, held to the task's JSON schema for ``extract`` when ``constrained``;
    the answer is parsed and marked valid or not by the task kind.

    With ``batch_size`` above 1, that many rows are decoded together (one forward pass per step
    for all of them).
    """

    def __init__(self, name: str, model: Any, tokenizer: Any, task: TaskSpec, max_length: int,
                 max_new_tokens: int, constrained: bool = False, shots: Shots | None = None,
                 contexts: Contexts | None = None, batch_size: int = 1):
        from taskfit.decoding import answer_grammar, shortest_answer

        super().__init__(tokenizer, task, max_length, answer_room(tokenizer, task, max_new_tokens), shots,
                         batch_size)
        self.name = name
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.contexts = contexts
        self.grammar = answer_grammar(task) if constrained else None
        shortest = shortest_answer(tokenizer, self.grammar) if self.grammar else None
        if shortest is not None and max_new_tokens < shortest:
            raise ConfigError(f"eval.max_new_tokens: {max_new_tokens} tokens cannot hold a record of task.schema: "
                              f"the shortest, every field at its smallest (null where allowed), takes {shortest} "
                              f"tokens, so every {name} record would be cut",
                              hint=f"set eval.max_new_tokens to at least {shortest}, with room for the values: "
                                   "`taskfit data check` shows the longest answer in tokens")
        self.warned = False  # of chunks dropped: once a predictor (the scorecard counts them all)

    def order(self, examples: Sequence[Example]) -> list[Example]:
        if self.contexts is not None:  # the prompt waits for the retrieval: the given order
            return list(examples)
        return super().order(examples)

    def _batch(self, examples: list[Example]) -> Iterator[Prediction]:
        from taskfit.decoding import Sampling, decode_batch
        from taskfit.tasks import parse

        start = time.perf_counter()
        prompts, details = [], []
        for ex in examples:
            ids, found = self._grounded(ex) if self.contexts is not None else (self.prompt_ids(ex), {})
            prompts.append(ids)
            details.append(found)
        sampling = Sampling(max_tokens=self.max_new_tokens, grammar=self.grammar)
        outs = decode_batch(self.model, self.tokenizer, prompts, [sampling] * len(prompts), prefix=self.prefix)
        share = (time.perf_counter() - start) / len(examples)
        for ex, out, found in zip(examples, outs, details):
            answer, valid = parse(self.task, out.text)
            yield Prediction(example_id=ex.id, output=answer, valid=valid, latency_s=share,
                             prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens,
                             details=found)

    def _grounded(self, ex: Example) -> tuple[list[int], dict[str, Any]]:
        """RAG: the prompt ids of ``ex`` with its retrieved chunks, numbered, as its context, and
        what to record of them. The chunks are shown whole, not cut to ``train.max_seq_length``:
        while the prompt is over :data:`MAX_PROMPT_TOKENS` the lowest-ranked is dropped (counted
        in ``dropped_chunks``, with a warning), and only a single chunk still over it is cut.
        ``context`` is the context the model read, ``citations`` the chunks in it, and
        ``retrieval_hit`` whether one of them is the row's own passage (:func:`same_passage`)."""
        assert self.contexts is not None
        chunks = list(self.contexts(ex))
        retrieved = len(chunks)
        while True:
            context = "\n\n".join(f"[{n}] {c.text}" for n, c in enumerate(chunks, 1))
            shown = dataclasses.replace(ex, context=context)
            r = render(self.tokenizer, self.task, shown, answer_room=self.room)
            if len(r.ids) <= MAX_PROMPT_TOKENS or len(chunks) <= 1:
                break
            chunks.pop()
        if len(r.ids) > MAX_PROMPT_TOKENS:  # one chunk alone over the limit: its end cut, as render cuts a context
            r = _prompt(self.tokenizer, self.task, shown, MAX_PROMPT_TOKENS + self.room, None, self.room)
            context = r.text  # the context as cut
        found: dict[str, Any] = {"citations": [c.id for c in chunks], "context": context}
        if len(chunks) < retrieved:
            found["dropped_chunks"] = retrieved - len(chunks)
            if not self.warned:
                self.warned = True
                warnings.warn(f"{self.name}: {ex.source or f'row id {ex.id}'}: only {len(chunks)} of the "
                              f"{retrieved} chunks retrieved fit in a prompt of {MAX_PROMPT_TOKENS} tokens; "
                              f"{retrieved - len(chunks)} dropped, the lowest-ranked (the scorecard counts the "
                              "rows): lower baselines.top_k or baselines.chunk_words", RuntimeWarning, stacklevel=2)
        if ex.context:  # the row's own passage: was it among the chunks the model read?
            found["retrieval_hit"] = any(same_passage(c.text, ex.context) for c in chunks)
        return r.ids, found
