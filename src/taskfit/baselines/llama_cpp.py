"""The exported artifact as a candidate: the base model's GGUF with the GGUF LoRA, run by llama.cpp
(llama-cpp-python, the optional ``llama`` extra).

It answers exactly as the transformers candidate does, through llama.cpp's kernels: the same
rendered prompt (token ids from the same tokenizer), label scoring for ``classify`` (every
label's log-probability after the prompt, from llama.cpp's logits), and greedy generation
otherwise, held to the task's answer grammar for ``extract`` by the same llguidance grammar and
:class:`~taskfit.decoding.Constraint` as transformers decoding (a logits processor; llama.cpp's
own GBNF converter would allow other whitespace and key orders than the model was trained on).
Its evaluation says whether the exported file behaves like the model that was trained.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from taskfit.baselines.label_tree import label_choice
from taskfit.baselines.model import LabelPrompts, Prompts, answer_room
from taskfit.config import TaskSpec
from taskfit.decoding import answer_grammar
from taskfit.errors import ConfigError
from taskfit.records import Example, LabelChoice, Prediction
from taskfit.tasks import get_task


def load_llama(base: Path, lora: Path | None, n_ctx: int, threads: int | None = None) -> Any:
    try:
        from llama_cpp import Llama
    except ImportError:
        raise ConfigError("the llama.cpp engine needs llama-cpp-python, which is not installed",
                          hint='pip install -e ".[llama]" (it compiles llama.cpp: about 14 minutes on 2 cores)') from None
    from taskfit.machine import cpu_cores

    threads = threads or cpu_cores()  # every core by default (the bindings' own default is half of them)
    return Llama(model_path=str(base), lora_path=str(lora) if lora else None, n_ctx=n_ctx,
                 n_threads=threads, n_threads_batch=threads, verbose=False)


def _last_logits(llm: Any) -> Any:
    """Log-probabilities of the next token after what ``llm`` has read (llama.cpp keeps the last
    position's logits; the bindings do not copy them out unless every position's are kept)."""
    import numpy as np

    row = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).astype(np.float64)
    top = row.max()
    return row - (top + np.log(np.exp(row - top).sum()))


class LlamaCppScorer(LabelPrompts):
    """Label scoring on llama.cpp (a :class:`~taskfit.baselines.protocol.LabelScorer`): each
    label's log-probability (its tokens and the end-of-turn token) after the prompt; the prompt
    is read once, then each label from the prompt's cache; every label is scored, one prompt at
    a time."""

    def __init__(self, llm: Any, tokenizer: Any, task: TaskSpec, max_length: int):
        super().__init__(tokenizer, task, max_length)
        self.llm = llm

    def choose(self, prompts: Sequence[list[int]]) -> list[LabelChoice]:
        return [label_choice(self.scores(p)) for p in prompts]

    def scores(self, prompt: list[int]) -> list[float]:
        """Every label's log-probability after ``prompt``, in label order."""
        llm = self.llm
        llm.reset()
        llm.eval(prompt)
        n = len(prompt)
        first = _last_logits(llm)
        totals = []
        for completion in self.completions:
            total = float(first[completion[0]])
            llm.n_tokens = n  # back to the end of the prompt (llama.cpp drops the rest of its cache)
            for token, following in zip(completion, completion[1:]):
                llm.eval([token])
                total += float(_last_logits(llm)[following])
            totals.append(total)
        return totals


def grammar_processor(tokenizer: Any, grammar: str, n_prompt: int, budget: int) -> Any:
    """A llama.cpp logits processor that holds what follows the first ``n_prompt`` tokens to
    ``grammar`` (an llguidance grammar such as :func:`~taskfit.decoding.answer_grammar`'s),
    through the same :class:`~taskfit.decoding.Constraint` as transformers decoding, with the
    same steering towards closing the JSON in the last tokens of ``budget``. One per request."""
    import numpy as np
    from llama_cpp import LogitsProcessorList

    from taskfit.decoding import JSON_CLOSERS, Constraint, grammar_is_json

    constraint = Constraint(tokenizer, grammar, budget=budget,
                            closers=JSON_CLOSERS if grammar_is_json(grammar) else None)
    consumed = [n_prompt]  # tokens of the sequence the grammar has seen

    def hold(input_ids: Any, scores: Any) -> Any:
        for token in input_ids[consumed[0]:]:  # the tokens sampled since the last call
            constraint.consume(int(token))
        consumed[0] = len(input_ids)
        allowed = constraint.allowed(len(input_ids) - n_prompt, scores.shape[-1], "cpu").numpy()
        return np.where(allowed, scores, -np.inf).astype(scores.dtype)

    return LogitsProcessorList([hold])


class LlamaCppPredictor(Prompts):
    def __init__(self, name: str, llm: Any, tokenizer: Any, task: TaskSpec, max_length: int,
                 max_new_tokens: int, constrained: bool = True):
        super().__init__(tokenizer, task, max_length, answer_room(tokenizer, task, max_new_tokens))
        self.name = name
        self.llm = llm
        self.max_new_tokens = max_new_tokens
        labels = get_task(task.kind).scores_labels
        self.scorer = LlamaCppScorer(llm, tokenizer, task, max_length) if labels else None
        self.grammar = answer_grammar(task) if constrained and not labels else None

    def _batch(self, examples: list[Example]) -> Iterator[Prediction]:
        from taskfit.tasks import parse

        if self.scorer is not None:
            yield from self.scorer.predict(examples)
            return
        for ex in examples:
            start = time.perf_counter()
            prompt = self.prompt_ids(ex)
            self.llm.reset()
            hold = (grammar_processor(self.tokenizer, self.grammar, len(prompt), self.max_new_tokens)
                    if self.grammar else None)
            out = self.llm.create_completion(prompt=prompt, max_tokens=self.max_new_tokens, temperature=0.0,
                                             logits_processor=hold)
            answer, valid = parse(self.task, out["choices"][0]["text"].strip())
            yield Prediction(example_id=ex.id, output=answer, valid=valid, latency_s=time.perf_counter() - start,
                             prompt_tokens=len(prompt), completion_tokens=out["usage"]["completion_tokens"])
