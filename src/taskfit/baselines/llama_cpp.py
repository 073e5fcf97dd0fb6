"""The exported artifact as a candidate: the base model's GGUF with the GGUF LoRA, run by llama.cpp
(llama-cpp-python, the optional ``llama`` extra), and the label scorer the llama.cpp serving
engine shares with it.

It answers exactly as the transformers candidate does, through llama.cpp's kernels: the same
rendered prompt (token ids from the same tokenizer), label scoring for ``classify`` (every
label's log-probability after the prompt, from llama.cpp's logits, all labels read in one batched
decode: :class:`LlamaCppScorer` over :class:`Lanes`), and greedy generation otherwise, held to the
task's answer grammar for ``extract`` by the same llguidance grammar and
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
                          hint='pip install -e ".[llama]" (it compiles llama.cpp, about 6 minutes on 2 cores; `bash scripts/setup.sh --tests` does it too)') from None
    from taskfit.machine import cpu_cores

    threads = threads or cpu_cores()  # every core by default (the bindings' own default is half of them)
    return Llama(model_path=str(base), lora_path=str(lora) if lora else None, n_ctx=n_ctx,
                 n_threads=threads, n_threads_batch=threads, verbose=False)


def _log_probs(logits: Any, vocab: int) -> Any:
    """llama.cpp's logits for one position (a float pointer) as log-probabilities (numpy, float64)."""
    import numpy as np

    row = np.ctypeslib.as_array(logits, shape=(vocab,)).astype(np.float64)
    top = row.max()
    return row - (top + np.log(np.exp(row - top).sum()))


def _last_logits(llm: Any) -> Any:
    """Log-probabilities of the next token after what ``llm`` has read (llama.cpp keeps the last
    position's logits; the bindings do not copy them out unless every position's are kept)."""
    return _log_probs(llm._ctx.get_logits(), llm.n_vocab())


class Lanes:
    """A llama.cpp context of its own over ``llm``'s weights and LoRA that holds up to ``lanes``
    sequences in one key/value cache of as many cells as ``llm``'s context, read in batched
    decodes: a cell holds one token that several sequences may share (a prompt read once for every
    label), so those cells bound the tokens of all sequences together. What the label scorer is
    built on."""

    def __init__(self, llm: Any, lanes: int):
        import ctypes
        import weakref

        import llama_cpp
        from llama_cpp import _internals

        self.llm = llm  # kept alive while its weights are in use here
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        self.lanes = max(1, min(lanes, int(llama_cpp.llama_max_parallel_sequences())))
        params.n_seq_max = self.lanes
        params.kv_unified = True  # one cache the sequences share cells of
        self.n_ctx = int(params.n_ctx)
        params.n_batch = params.n_ubatch = self.n_batch = min(self.n_ctx, 512)
        self.ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        if llm._lora_adapter is not None:
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(llm._lora_adapter)
            scales = (ctypes.c_float * 1)(llm.lora_scale)
            if llama_cpp.llama_set_adapters_lora(self.ctx.ctx, adapters, 1, scales):
                raise ConfigError(f"llama.cpp could not apply the LoRA {llm.lora_path} to a new context")
        self.vocab = llm.n_vocab()
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, self.lanes)
        self._free = weakref.finalize(self, llama_cpp.llama_batch_free, self._batch)

    def decode(self, entries: Sequence[tuple[int, int, Sequence[int], bool]]) -> list[Any]:
        """Read ``entries`` (token, position, sequence ids, whether its next-token log-probabilities
        are wanted), at most a batch's worth a call; the wanted rows, in order (numpy, float64)."""
        import llama_cpp

        batch, wanted = self._batch, []
        for start in range(0, len(entries), self.n_batch):
            chunk = entries[start:start + self.n_batch]
            batch.n_tokens = len(chunk)
            for i, (token, pos, seqs, logits) in enumerate(chunk):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, len(seqs), logits
                for k, seq in enumerate(seqs):
                    batch.seq_id[i][k] = seq
            if (code := llama_cpp.llama_decode(self.ctx.ctx, batch)) != 0:
                raise RuntimeError(f"llama.cpp could not read {len(chunk)} tokens (llama_decode returned {code}"
                                   f"{': no room left in its cache' if code == 1 else ''})")
            wanted += [_log_probs(llama_cpp.llama_get_logits_ith(self.ctx.ctx, i), self.vocab)
                       for i, (*_, logits) in enumerate(chunk) if logits]
        return wanted

    def remove(self, seq: int = -1, start: int = 0) -> None:
        """Forget sequence ``seq``'s tokens (every sequence's with -1) from position ``start`` on."""
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self.ctx.memory, seq, start, -1)

    def close(self) -> None:
        self.ctx.close()
        self._free()


class LlamaCppScorer(LabelPrompts):
    """Label scoring on llama.cpp (a :class:`~taskfit.baselines.protocol.LabelScorer`): each
    label's log-probability (its tokens and the end-of-turn token) after the prompt, every label
    scored, one prompt at a time, in one batched decode.

    The scorer keeps :class:`Lanes` of its own (as many cells as ``llm``'s context), one sequence
    per label up to llama.cpp's limit on parallel sequences (more labels take turns in groups;
    ``lanes`` caps them, for tests): the prompt is read once, into cells every label's sequence
    shares, then all labels' tokens together, each in its own sequence at the positions after the
    prompt. The next prompt keeps the cells of what it has in common with the last one (the task's
    system prompt and chat header), so only the rest is read."""

    def __init__(self, llm: Any, tokenizer: Any, task: TaskSpec, max_length: int, lanes: int | None = None):
        super().__init__(tokenizer, task, max_length)
        self.llm = llm
        self.max_lanes = min(len(self.completions), lanes or len(self.completions))
        self._context: Lanes | None = None
        self._read: list[int] = []  # the prompt whose cells the scoring context holds

    def choose(self, prompts: Sequence[list[int]]) -> list[LabelChoice]:
        return [label_choice(self.scores(p)) for p in prompts]

    def _groups(self, n_prompt: int) -> list[list[int]]:
        """The labels in turns: at most one per sequence, and no more tokens than the cache holds or
        one decode reads (so no label's tokens are split between two decodes)."""
        groups: list[list[int]] = [[]]
        room = min(self._context.n_ctx - n_prompt, self._context.n_batch)
        used = 0
        for j, completion in enumerate(self.completions):
            need = len(completion) - 1  # the last token is scored, never read
            if groups[-1] and (len(groups[-1]) == self._context.lanes or used + need > room):
                groups.append([])
                used = 0
            groups[-1].append(j)
            used += need
        return groups

    def scores(self, prompt: list[int]) -> list[float]:
        """Every label's log-probability after ``prompt``, in label order."""
        if self._context is None:
            self._context = Lanes(self.llm, self.max_lanes)
        lanes, n = self._context, len(prompt)
        keep = 0  # the tokens of the last prompt this one begins with (their cells stay)
        for a, b in zip(self._read, prompt[:n - 1]):  # the prompt's last token is read again: its logits
            if a != b:
                break
            keep += 1
        lanes.remove(-1, keep)
        self._read = []
        every = range(lanes.lanes)
        first = lanes.decode([(t, keep + i, every, keep + i == n - 1) for i, t in enumerate(prompt[keep:])])[0]
        self._read = list(prompt)
        totals = [0.0] * len(self.completions)
        for group in self._groups(n):
            lanes.remove(-1, n)  # the last group's label tokens
            rows = iter(lanes.decode([(token, n + i, (lane,), True) for lane, j in enumerate(group)
                                      for i, token in enumerate(self.completions[j][:-1])]))
            for j in group:
                completion = self.completions[j]
                totals[j] = float(first[completion[0]]) + sum(float(next(rows)[t]) for t in completion[1:])
        lanes.remove(-1, n)
        return totals

    def close(self) -> None:
        """Free the scoring context."""
        if self._context is not None:
            self._context.close()
            self._context, self._read = None, []


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
