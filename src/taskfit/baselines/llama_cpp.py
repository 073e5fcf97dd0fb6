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

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from taskfit.baselines.label_tree import label_choice
from taskfit.baselines.model import LabelPrompts, Prompts, answer_room
from taskfit.config import TaskSpec
from taskfit.decoding import Generated, Row, Sampling, answer_grammar
from taskfit.errors import ConfigError
from taskfit.records import Example, LabelChoice, Prediction
from taskfit.tasks import get_task


def require_llama() -> Any:
    """The bindings' ``Llama`` class, or the error that says how to install them (raised before
    anything is loaded)."""
    try:
        from llama_cpp import Llama
    except ImportError:
        raise ConfigError("the llama.cpp engine needs llama-cpp-python, which is not installed",
                          hint='pip install -e ".[llama]" (it compiles llama.cpp, about 6 minutes on 2 cores; `bash scripts/setup.sh --tests` does it too)') from None
    return Llama


def load_llama(base: Path, lora: Path | None, n_ctx: int, threads: int | None = None) -> Any:
    Llama = require_llama()
    from taskfit.machine import cpu_cores

    threads = threads or cpu_cores()  # every core by default (the bindings' own default is half of them)
    # Flash attention: without it, llama.cpp's attention over a cache several sequences share
    # gives a sequence read beside others other logits than it alone (0.5-0.8 nats measured on the
    # embedded model, more at times); with it, the same logits.
    with _plain_weights() if _has_amx() else contextlib.nullcontext():
        return Llama(model_path=str(base), lora_path=str(lora) if lora else None, n_ctx=n_ctx,
                     n_threads=threads, n_threads_batch=threads, flash_attn=True, verbose=False)


def _has_amx() -> bool:
    """Whether the processor reports Intel's AMX tiles (Sapphire Rapids and later)."""
    try:
        return "amx_int8" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@contextlib.contextmanager
def _plain_weights() -> Iterator[None]:
    """Models loaded meanwhile keep their weights in plain buffers, not llama.cpp's "extra buffer
    types" (weights repacked for AMX or wider vector kernels): on a processor with AMX
    (llama-cpp-python 0.3.36 built here, an Intel Xeon with AMX-INT8 under Linux 6.18) the first
    decode of the embedded Q4_1 model crashed the process with a segmentation fault, and loaded so
    it did not. The bindings take no such argument, so their default parameters are wrapped."""
    import llama_cpp.llama as bindings

    default = bindings.llama_cpp.llama_model_default_params

    def plain() -> Any:
        params = default()
        params.use_extra_bufts = False
        return params

    bindings.llama_cpp.llama_model_default_params = plain
    try:
        yield
    finally:
        bindings.llama_cpp.llama_model_default_params = default


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

    def __init__(self, llm: Any, lanes: int, n_ctx: int | None = None):
        import ctypes
        import weakref

        import llama_cpp
        from llama_cpp import _internals

        self.llm = llm  # kept alive while its weights are in use here
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        self.lanes = max(1, min(lanes, int(llama_cpp.llama_max_parallel_sequences())))
        params.n_seq_max = self.lanes
        params.kv_unified = True  # one cache the sequences share cells of
        if n_ctx is not None:
            params.n_ctx = n_ctx
        self.n_ctx = int(params.n_ctx)
        params.n_batch = params.n_ubatch = self.n_batch = min(self.n_ctx, 512)
        self.ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        if llm._lora_adapter is not None:
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(llm._lora_adapter)
            scales = (ctypes.c_float * 1)(llm.lora_scale)
            if llama_cpp.llama_set_adapters_lora(self.ctx.ctx, adapters, 1, scales):
                raise ConfigError(f"llama.cpp could not apply the LoRA {llm.lora_path} to a new context")
        self.vocab = llm.n_vocab()
        # the tokens of the last read whose cells are kept for the next: LlamaDecoder's shared
        # start in sequence 0, the scorer's last prompt in every sequence
        self.shared: list[int] = []
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

    def held(self, prompt: Sequence[int]) -> int:
        """How many of ``prompt``'s first tokens have their cells kept (``shared``); never its last
        token, which is read again: its logits are wanted."""
        return len(os.path.commonprefix([self.shared, list(prompt[:len(prompt) - 1])]))

    def share(self, source: int, target: int, start: int, end: int) -> None:
        """Let sequence ``target`` read ``source``'s cells at positions ``start`` to ``end`` (the
        cells gain a sequence id; nothing is copied)."""
        import llama_cpp

        llama_cpp.llama_memory_seq_cp(self.ctx.memory, source, target, start, end)

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
        keep = lanes.held(prompt)  # the tokens of the last prompt this one begins with: their cells stay
        lanes.remove(-1, keep)
        lanes.shared = []
        every = range(lanes.lanes)
        first = lanes.decode([(t, keep + i, every, keep + i == n - 1) for i, t in enumerate(prompt[keep:])])[0]
        lanes.shared = list(prompt)
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
            self._context = None


class LlamaDecoder:
    """Continuous batching on llama.cpp: the :class:`~taskfit.decoding.Decoder` of the
    transformers engine (the same :meth:`add`, :meth:`step`, callbacks and
    :class:`~taskfit.decoding.Row` per sequence, so sampling, grammars, stop strings and
    streaming behave alike) over :class:`Lanes`, one sequence per request.

    Each step reads one token of every running sequence in one batched decode, so the weights are
    read once for all of them; joining requests are read in one decode between two steps. Lane 0
    holds no request: it keeps the cells of what the last prompts read began with, and new prompts
    share the cells of what they begin with in common with it (the task's system prompt and chat
    header: read once, not once per request) and read the rest, their common start once for all
    of them. Lane 0's other cells are dropped first, so a lone request's cells follow its shared
    start as in a fresh read, as the bindings' own prompt reuse does. Lane 0 and what it holds
    belong to the :class:`Lanes` (``lanes.shared``), so the next batch's decoder over them reads
    the shared start no more than this one. A finished sequence's cells are freed at once.
    :meth:`fits` says whether prompts are sure to fit beside the running sequences (their own
    tokens and up to their ``max_tokens`` each)."""

    def __init__(self, lanes: Lanes, tokenizer: Any, eos: set[int],
                 on_text: Callable[[int, str], None] | None = None,
                 on_done: Callable[[int, Generated], None] | None = None,
                 cancelled: Callable[[int], bool] | None = None):
        self.lanes, self.tokenizer, self.eos = lanes, tokenizer, eos
        self.on_text, self.on_done, self.cancelled = on_text, on_done, cancelled
        self.added = 0
        self.rows: dict[int, Row] = {}
        self.lane: dict[int, int] = {}  # sequence number -> its lane
        self.reserved: dict[int, int] = {}  # sequence number -> cells of its own it may fill at most
        self.logits: dict[int, Any] = {}  # sequence number -> its next token's log-probabilities
        self.active: list[int] = []
        self.joinable = True

    def __len__(self) -> int:
        return len(self.active)

    def fits(self, prompts: Sequence[list[int]], samplings: Sequence[Sampling]) -> int:
        """How many of ``prompts``, in order, can join now (a free lane each, and room in the cache
        for their own tokens and replies beside what the running sequences may still fill)."""
        if not prompts:
            return 0
        used = max(len(self.lanes.shared), len(prompts[-1])) + sum(self.reserved.values())
        lanes = self.lanes.lanes - 1 - len(self.active)
        taken = 0
        for p, s in zip(prompts, samplings):
            used += len(p) - self.lanes.held(p) + s.max_tokens
            if taken == lanes or used > self.lanes.n_ctx:
                break
            taken += 1
        return taken

    def add(self, prompts: Sequence[list[int]], samplings: Sequence[Sampling], adapters: Any = None,
            prefix: Any = None) -> list[int]:
        """Read ``prompts`` (no more than :meth:`fits` allows) and add them to the running batch;
        return their numbers."""
        if not prompts:
            return []
        if self.fits(prompts, samplings) < len(prompts):
            raise ValueError(f"{len(prompts)} prompts do not fit beside the {len(self.active)} running ones")
        # what every new prompt begins with (never a last token)
        lead = min(len(os.path.commonprefix([list(p) for p in prompts])), min(len(p) for p in prompts) - 1)
        keep = self.lanes.held(prompts[0][:lead + 1])  # of it, what lane 0 holds already
        self.lanes.remove(0, keep)  # the rest of lane 0's cells go: the new ones follow these, as in a fresh read
        self.lanes.shared = self.lanes.shared[:keep]
        free = sorted(set(range(1, self.lanes.lanes)) - set(self.lane.values()))
        numbers, lanes = list(range(self.added, self.added + len(prompts))), free[:len(prompts)]
        self.added += len(prompts)
        for i, lane, p, s in zip(numbers, lanes, prompts, samplings):
            if keep:
                self.lanes.share(0, lane, 0, keep)
            self.rows[i] = Row(self.tokenizer, list(p), s, "cpu")
            self.lane[i], self.reserved[i] = lane, len(p) - keep + s.max_tokens
        # One read: the shared start once (lane 0 keeps it for the next prompts), then each rest.
        entries = [(t, k, (0, *lanes), False) for k, t in enumerate(prompts[0][keep:lead], keep)]
        for lane, p in zip(lanes, prompts):
            entries += [(t, k, (lane,), k == len(p) - 1) for k, t in enumerate(p[lead:], lead)]
        try:
            rows = self.lanes.decode(entries)
        except Exception:
            for i in numbers:
                self._drop(i)
            self.lanes.remove(0, keep)
            raise
        self.lanes.shared = list(prompts[0][:lead])
        self.logits.update(zip(numbers, rows))
        self.active += numbers
        return numbers

    def _drop(self, i: int) -> None:
        self.lanes.remove(self.lane.pop(i), 0)
        self.rows.pop(i, None)
        self.reserved.pop(i, None)
        self.logits.pop(i, None)

    def step(self) -> None:
        """Pick each running sequence's next token; finished ones leave; one decode for the rest."""
        import torch

        for i in self.active:
            row = self.rows[i]
            if self.cancelled is not None and self.cancelled(i):
                row.finish = "cancelled"
                continue
            delta = row.add(row.pick(torch.from_numpy(self.logits[i])), self.tokenizer, self.eos)
            if delta and self.on_text is not None:
                self.on_text(i, delta)
        for i in [i for i in self.active if self.rows[i].finish is not None]:
            row = self.rows[i]
            self._drop(i)
            self.active.remove(i)
            if self.on_done is not None:
                self.on_done(i, Generated(text=row.text.strip(), prompt_tokens=len(row.prompt),
                                          completion_tokens=row.produced, finish_reason=row.finish))
        if not self.active:
            return
        entries = [(self.rows[i].tokens[-1], len(self.rows[i].prompt) + len(self.rows[i].tokens) - 1,
                    (self.lane[i],), True) for i in self.active]
        self.logits.update(zip(self.active, self.lanes.decode(entries)))

    def clear(self) -> None:
        """Drop every running sequence (after a failed decode)."""
        for i in list(self.active):
            self._drop(i)
        self.active = []


def grammar_processor(tokenizer: Any, grammar: str, n_prompt: int, budget: int) -> Any:
    """A llama.cpp logits processor that holds what follows the first ``n_prompt`` tokens to
    ``grammar`` (an llguidance grammar such as :func:`~taskfit.decoding.answer_grammar`'s),
    through the same :class:`~taskfit.decoding.Constraint` as transformers decoding, so a JSON
    record is finished within ``budget`` the same way. One per request."""
    import numpy as np
    from llama_cpp import LogitsProcessorList

    from taskfit.decoding import Constraint

    constraint = Constraint(tokenizer, grammar, budget=budget)
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
            # no reset: llama.cpp keeps the cells of what this prompt shares with the last one, as
            # the server does (the same reads, so a served lone request answers as evaluated)
            hold = (grammar_processor(self.tokenizer, self.grammar, len(prompt), self.max_new_tokens)
                    if self.grammar else None)
            out = self.llm.create_completion(prompt=prompt, max_tokens=self.max_new_tokens, temperature=0.0,
                                             logits_processor=hold)
            answer, valid = parse(self.task, out["choices"][0]["text"].strip())
            # The end-of-turn token counted as generated, as the transformers decoder and both
            # serving engines count it (llama.cpp's usage leaves it out; no stop strings here).
            ended = out["choices"][0]["finish_reason"] == "stop"
            yield Prediction(example_id=ex.id, output=answer, valid=valid, latency_s=time.perf_counter() - start,
                             prompt_tokens=len(prompt), completion_tokens=out["usage"]["completion_tokens"] + ended)
