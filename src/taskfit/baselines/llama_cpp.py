"""The exported artifact as a candidate: the base model's GGUF with the GGUF LoRA, run by llama.cpp
(llama-cpp-python, the optional ``llama`` extra).

It answers exactly as the transformers candidate does, through llama.cpp's kernels: the same
rendered prompt (token ids from the same tokenizer), label scoring for ``classify`` (every
label's log-probability after the prompt, from llama.cpp's logits), and greedy generation
otherwise, held to the task's JSON schema for ``extract`` by llama.cpp's own grammar engine. Its
evaluation says whether the exported file behaves like the model that was trained.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from taskfit.baselines.model import _prompt, label_choice, label_completions, label_prompt, longest_label
from taskfit.config import TaskSpec
from taskfit.errors import ConfigError
from taskfit.records import Example, Prediction


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


class LlamaCppScorer:
    """Label scoring on llama.cpp: each label's log-probability (its tokens and the end-of-turn
    token) after the prompt; the prompt is read once, then each label from the prompt's cache."""

    def __init__(self, llm: Any, tokenizer: Any, task: TaskSpec):
        self.llm = llm
        self.completions = label_completions(tokenizer, task)

    def scores(self, prompt: list[int]) -> list[float]:
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


class LlamaCppPredictor:
    def __init__(self, name: str, llm: Any, tokenizer: Any, task: TaskSpec, max_length: int,
                 max_new_tokens: int, constrained: bool = True):
        self.name = name
        self.llm = llm
        self.tokenizer = tokenizer
        self.task = task
        self.max_length = max_length
        self.max_new_tokens = max_new_tokens
        self.scorer = LlamaCppScorer(llm, tokenizer, task) if task.kind == "classify" else None
        self._longest = longest_label(tokenizer, task) if task.kind == "classify" else None
        self.grammar = None
        if constrained and task.kind == "extract":
            from llama_cpp import LlamaGrammar

            self.grammar = LlamaGrammar.from_json_schema(json.dumps(task.schema_ or {}), verbose=False)

    def predict(self, examples: Iterable[Example]) -> Iterator[Prediction]:
        from taskfit.tasks import parse

        labels = self.task.labels or []
        for ex in examples:
            start = time.perf_counter()
            if self.task.kind == "classify":
                prompt = label_prompt(self.tokenizer, self.task, ex, self.max_length, None, self._longest)
                best, confidence = label_choice(labels, self.scorer.scores(prompt))
                yield Prediction(example_id=ex.id, output=labels[best], valid=True,
                                 latency_s=time.perf_counter() - start, prompt_tokens=len(prompt),
                                 completion_tokens=len(self.scorer.completions[best]), confidence=confidence)
                continue
            prompt = _prompt(self.tokenizer, self.task, ex, self.max_length, None).ids
            self.llm.reset()
            out = self.llm.create_completion(prompt=prompt, max_tokens=self.max_new_tokens, temperature=0.0,
                                             grammar=self.grammar)
            answer, valid = parse(self.task, out["choices"][0]["text"].strip())
            yield Prediction(example_id=ex.id, output=answer, valid=valid, latency_s=time.perf_counter() - start,
                             prompt_tokens=len(prompt), completion_tokens=out["usage"]["completion_tokens"])
