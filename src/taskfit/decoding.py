"""Decoding shared by evaluation and serving: several prompts at once (one forward pass per step
for the whole batch), greedy or sampled, each sequence optionally held to a grammar.

Constrained decoding uses llguidance (guidance-ai's Rust engine, also behind llama.cpp's and
vLLM's structured outputs): it has no dependencies, runs on CPU, builds a JSON-schema grammar in
milliseconds, and computes each step's allowed-token mask in well under a millisecond. We chose it
over xgrammar (its Linux wheel pulls the 1 GB triton package even on CPU) and
lm-format-enforcer (its transformers integration does not import under transformers 5).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Sequence

from taskfit.models.compat import cache_arg, cache_of

if TYPE_CHECKING:
    from taskfit.models.prefix import PrefixCache


@lru_cache(maxsize=4)
def _ll_tokenizer(tokenizer: Any) -> Any:
    import llguidance.hf

    return llguidance.hf.from_tokenizer(tokenizer)  # ~0.5 s, so once per tokenizer


# The separators an answer's JSON is written with (task.json_style): ``json.dumps``'s defaults
# (spaced), or none around them (compact). Training targets are written with the task's (see
# :func:`json_answer`), so the grammar that holds an answer to the schema allows exactly them.
SEPARATORS = {"spaced": (", ", ": "), "compact": (",", ":")}


def json_schema_grammar(schema: dict[str, Any], style: str = "spaced") -> str:
    """The llguidance grammar of JSON that satisfies ``schema``, written as :func:`json_answer`
    writes it in the same ``style`` (task.json_style): object keys in the order the schema lists
    them (llguidance emits properties in that order; keys the schema does not name come after),
    the style's separators between items and after keys (``", "`` and ``": "`` spaced, ``","`` and
    ``":"`` compact), and no other whitespace (a small model otherwise pads with newlines until
    the token budget runs out). A schema's own ``x-guidance`` options still override these."""
    import llguidance

    item, key = SEPARATORS[style]
    return llguidance.LLMatcher.grammar_from_json_schema(
        json.dumps(schema), defaults={"whitespace_flexible": False, "item_separator": item, "key_separator": key})


def _schema_order(schema: Any, value: Any) -> Any:
    if isinstance(value, dict) and isinstance(schema, dict):
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        keys = [k for k in props if k in value] + [k for k in value if k not in props]
        return {k: _schema_order(props.get(k), value[k]) for k in keys}
    if isinstance(value, list) and isinstance(schema, dict) and isinstance(schema.get("items"), dict):
        return [_schema_order(schema["items"], v) for v in value]
    return value


def json_answer(schema: dict[str, Any] | None, value: Any, style: str = "spaced") -> str:
    """``value`` as the text of an answer held to ``schema``: keys in the schema's order (nested
    objects and array items too), the separators of ``style`` (task.json_style), non-ASCII kept.
    Training targets of ``extract`` are written this way, so the answer a model learnt is one
    :func:`json_schema_grammar` of the same style allows, token for token."""
    return json.dumps(_schema_order(schema or {}, value), ensure_ascii=False, separators=SEPARATORS[style])


def answer_grammar(task: Any) -> str | None:
    """The grammar a task's answer is held to when decoding is constrained: the schema's JSON
    for ``extract``, one of the labels for ``classify``, none for ``qa`` and ``generate``. The
    one function behind evaluation, the training-time validation metric and both serving
    engines, so every path enforces the same answers."""
    from taskfit.tasks import get_task  # the task kinds build their grammars with this module

    return get_task(task.kind).grammar(task)


def grammar_is_json(grammar: str) -> bool:
    return '"json_schema"' in grammar


def choice_grammar(options: Sequence[str]) -> str:
    import llguidance

    return llguidance.grammar_from("choice", json.dumps(list(options)))


JSON_CLOSERS = '"}]'
# JSON: within this many tokens of what the shortest finish of the record needs, each step allows
# only the tokens after which the record can still be finished within the budget.
WATCH_TOKENS = 24
RECHECK_EVERY = 4  # further than twice that from the end, the shortest finish is worked out every this many steps


# The smallest JSON values, and the item separator, in the order the shortest finish prefers them
# where they take as many tokens: null before an empty string keeps a field absent rather than blank.
SMALLEST = ("null", '""', "0", "false", "[]", "{}", ",")


@dataclass(frozen=True)
class _Shortest:
    """Token ids by what they write, for finishing a JSON record in the fewest tokens."""

    in_string: tuple[int, ...]  # letters no JSON literal starts with: allowed only inside a string
    quote_closers: tuple[int, ...]  # only closing characters, starting with a quote; longest first
    bracket_closers: tuple[int, ...]  # only closing characters, starting with } or ]; longest first
    by_text: dict[str, int]  # a token's text (as it decodes, spaces included) → its id
    plain: Any  # bool per token: no quote, backslash, bracket, brace, comma or colon in it
    tail: tuple[str, ...]  # per token: its text from its first quote or backslash on ("" without one)


@lru_cache(maxsize=4)
def _shortest_ids(tokenizer: Any) -> _Shortest:
    import numpy as np

    by_text: dict[str, int] = {}
    closers: list[tuple[int, int, str]] = []
    plain = np.zeros(len(tokenizer), dtype=bool)
    tail: list[str] = []
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i])
        by_text.setdefault(text, i)
        cut = min((k for k in (text.find('"'), text.find("\\")) if k >= 0), default=-1)
        tail.append(text[cut:] if cut >= 0 else "")
        plain[i] = not set(text) & set('"\\,:{}[]')
        if (core := text.strip()) and set(text) <= set(JSON_CLOSERS + " "):
            closers.append((-len(core), i, core))
    closers.sort()
    return _Shortest(in_string=tuple(by_text[t] for t in ("x", "q", "z", "X", "Q", "Z") if t in by_text),
                     quote_closers=tuple(i for _, i, core in closers if core[0] == '"'),
                     bracket_closers=tuple(i for _, i, core in closers if core[0] in "}]"),
                     by_text=by_text, plain=plain, tail=tuple(tail))


def _bits(matcher: Any, size: int) -> Any:
    """The allowed-token bitmask of ``matcher``'s next step, as booleans over ``size`` tokens."""
    import numpy as np
    from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

    mask = allocate_token_bitmask(1, size)
    fill_next_token_bitmask(matcher, mask)
    return np.unpackbits(mask.view(np.uint8), bitorder="little")[:size].astype(bool)


def _spell(m: Any, text: str, ids: _Shortest, size: int) -> list[int] | None:
    """The tokens that write ``text`` from ``m``'s state (walking on ``m``, a copy), each the
    longest allowed token that begins what is left; None where the grammar allows no such token."""
    tokens: list[int] = []
    while text:
        bits = _bits(m, size)
        k = next((k for k in range(len(text), 0, -1)
                  if (i := ids.by_text.get(text[:k])) is not None and bits[i]), 0)
        if not k:
            return None
        tokens.append(ids.by_text[text[:k]])
        m.consume_token(tokens[-1])
        text = text[k:]
    return tokens


def _finish(m: Any, ids: _Shortest, size: int, limit: int) -> tuple[int | None, int | None]:
    """The fewest tokens that finish the record from ``m``'s state (None when more than
    ``limit``) and the first of them (None when it is complete), walking on ``m`` (a copy):
    forced tokens as they come; inside a string, the longest closer allowed; elsewhere a closing
    bracket, else whichever of the smallest values and the separator (``SMALLEST``, with or
    without the space before it) takes the fewest tokens; any allowed token where none fits."""
    import numpy as np

    count, first = 0, None
    while count <= limit:
        if m.is_accepting():
            return count, first
        forced = m.compute_ff_tokens()
        if forced:
            m.consume_tokens(forced)
        else:
            bits = _bits(m, size)
            inside = any(bits[i] for i in ids.in_string)
            pick = next((i for i in (ids.quote_closers if inside else ids.bracket_closers) if bits[i]), None)
            spelt = [] if inside or pick is not None else \
                [t for t in (_spell(m.deep_copy(), pre + v, ids, size) for v in SMALLEST for pre in ("", " ")) if t]
            if spelt:
                forced = min(spelt, key=len)  # the first of the shortest: SMALLEST's order breaks ties
            else:
                if pick is None:
                    hits = np.flatnonzero(bits)
                    if not len(hits):
                        return None, first
                    pick = int(hits[0])
                forced = [pick]
            for t in forced:
                m.consume_token(t)
        first = forced[0] if first is None else first
        count += len(forced)
    return None, first


class Constraint:
    """One sequence held to a grammar: the tokens allowed next, and the grammar advanced by each
    token chosen. One instance per generated sequence.

    With a JSON grammar and a token ``budget``, the budget never cuts a record open. Each step
    works out the fewest tokens that still finish the record (:func:`_finish`: an open string
    closed, each remaining required key with the smallest value its schema allows, ``null``
    first, open objects and arrays closed); once the budget left is within ``WATCH_TOKENS`` of
    that, a step allows only the tokens after which the record can still be finished in time (at
    the end, only the shortest finish's). Until then the model writes freely, and a record of many
    required keys starts to close early enough to write them all rather than being cut after the
    first few. :attr:`shortest` is the fewest tokens the whole record takes
    (:func:`shortest_answer`), which a smaller budget cannot hold.

    A step's mask is kept until a token is consumed, so that :meth:`forced` and the pick after it
    compute it once.
    """

    def __init__(self, tokenizer: Any, grammar: str, budget: int | None = None):
        import llguidance

        self.lltok = _ll_tokenizer(tokenizer)
        self.matcher = llguidance.LLMatcher(self.lltok, grammar)
        if self.matcher.is_error():
            raise ValueError(f"grammar rejected: {self.matcher.get_error()}")
        self.budget = budget
        self.closing = _shortest_ids(tokenizer) if budget and grammar_is_json(grammar) else None
        self._kept: tuple[int, int, Any] | None = None  # (n_generated, vocab, mask) of the last step asked
        # tokens the shortest whole record takes (JSON with a budget), worked out once per grammar
        self.shortest = shortest_answer(tokenizer, grammar) if self.closing is not None else None
        self._needed: tuple[int, int | None] = (0, self.shortest)  # (step, tokens) the shortest finish last took

    def allowed(self, n_generated: int, vocab: int, device: Any) -> Any:
        """A boolean mask over the model's ``vocab`` of the tokens the grammar allows next."""
        kept = self._kept
        if kept is not None and kept[:2] == (n_generated, vocab):  # one device per sequence
            return kept[2]
        allowed = self._allowed(n_generated, vocab, device)
        self._kept = (n_generated, vocab, allowed)
        return allowed

    def forced(self, n_generated: int, vocab: int, device: Any) -> int | None:
        """The token the grammar allows next when it allows exactly one (after a JSON key's
        opening quote, the rest of the key and its colon), else None: the pick that every
        decoding would make, so that the model need not be run for it."""
        allowed = self.allowed(n_generated, vocab, device)
        hits = allowed.nonzero()
        return int(hits[0, 0]) if len(hits) == 1 else None

    def _allowed(self, n_generated: int, vocab: int, device: Any) -> Any:
        import torch

        bits = _bits(self.matcher, self.lltok.vocab_size)
        if self.closing is not None:
            bits = self._in_time(bits, self.budget - n_generated, n_generated)
        allowed = torch.from_numpy(bits[:vocab]).to(device)
        if allowed.numel() < vocab:  # the model's vocabulary is padded past the tokenizer's
            allowed = torch.cat([allowed, allowed.new_zeros(vocab - allowed.numel())])
        return allowed

    def _in_time(self, bits: Any, left: int, n_generated: int) -> Any:
        """Of the allowed tokens ``bits``, those after which the record can still be finished
        within the ``left`` tokens of the budget, once that is within ``WATCH_TOKENS`` of the
        shortest finish. A plain token (no quote, bracket, brace, comma or colon: more of a string
        or a number) leaves the shortest finish as it is; inside a string, the tokens that end or
        escape it are tried one per text from the quote on (``."`` and ``?"`` end it alike);
        outside one, every other allowed token is tried."""
        import numpy as np

        ids, size = self.closing, self.lltok.vocab_size
        step, last = self._needed
        if last is not None and last + 2 * WATCH_TOKENS < left and n_generated - step < RECHECK_EVERY:
            return bits  # far from the end: worked out again every few steps, not at each
        needed, first = _finish(self.matcher.deep_copy(), ids, size, left + WATCH_TOKENS)
        self._needed = (n_generated, needed)
        if needed is not None and needed + WATCH_TOKENS < left:
            return bits
        keep = np.zeros_like(bits)
        if needed is not None and needed < left:
            hits = np.flatnonzero(bits)
            plain = ids.plain[hits]
            keep[hits[plain]] = True  # the same shortest finish after them, one token later
            inside = any(bits[i] for i in ids.in_string)
            tried: dict[str, bool] = {}
            for t in hits[~plain]:
                key = ids.tail[t] if inside else str(t)
                if key not in tried:
                    m = self.matcher.deep_copy()
                    m.consume_token(int(t))
                    # a token that opens a string needs room for some text in it too: an empty
                    # string where there is no more room is a null written longer
                    opens = not inside and any(_bits(m, size)[i] for i in ids.in_string)
                    cost = _finish(m, ids, size, left)[0]
                    tried[key] = cost is not None and 1 + cost + opens <= left
                keep[t] = tried[key]
        if first is not None and first < len(keep):
            keep[first] = True  # the shortest finish's next token: always in time when anything is
        return keep if keep.any() else bits

    def consume(self, token: int) -> None:
        self.matcher.consume_token(token)
        self._kept = None


SHORTEST_LIMIT = 4096  # a record whose shortest form takes more tokens than this counts as none (None)


@lru_cache(maxsize=32)
def shortest_answer(tokenizer: Any, grammar: str) -> int | None:
    """The fewest tokens a whole JSON record held to ``grammar`` takes (each field at its smallest,
    ``null`` where allowed), None for a grammar that is not JSON: a token budget below it cuts
    every record, so evaluation and serving refuse such a budget up front, and
    :class:`Constraint` starts from it."""
    import llguidance

    if not grammar_is_json(grammar):
        return None
    lltok = _ll_tokenizer(tokenizer)
    return _finish(llguidance.LLMatcher(lltok, grammar), _shortest_ids(tokenizer), lltok.vocab_size, SHORTEST_LIMIT)[0]


@dataclass(frozen=True)
class Sampling:
    """How one sequence is decoded: greedy when ``temperature`` is 0, else sampled (nucleus
    ``top_p``, reproducible with ``seed``); ends at the end-of-turn token, at a ``stop`` string
    (not included in the text) or after ``max_tokens``; held to ``grammar`` when given."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    grammar: str | None = None


@dataclass(frozen=True)
class Generated:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"  # stop (end of turn or a stop string), length, cancelled


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of ``text`` may not be shown yet while streaming: the start
    of a stop string, or a character still being decoded from several tokens."""
    if text.endswith("\ufffd"):
        return 1
    return max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


class Row:
    """The state of one sequence in a batch: how its next token is picked (greedy, sampled,
    held to a grammar), its text so far and when it ends. Both engines' decoders keep one per
    sequence."""

    def __init__(self, tokenizer: Any, prompt: list[int], sampling: Sampling, device: Any):
        import torch

        self.prompt = prompt
        self.sampling = sampling
        self.tokens: list[int] = []  # the answer's tokens (without the end-of-turn token)
        self.fed = 0  # of them, those the model has read (the decoder's cache holds them)
        self.produced = 0  # tokens generated, the end-of-turn token included
        self.text = ""
        self.shown = 0
        self.finish: str | None = None
        self.constraint = (Constraint(tokenizer, sampling.grammar, budget=sampling.max_tokens)
                           if sampling.grammar else None)
        self.generator = None
        if sampling.temperature > 0:
            self.generator = torch.Generator(device=device)
            if sampling.seed is not None:
                self.generator.manual_seed(sampling.seed)
            else:
                self.generator.seed()

    def pick(self, logits: Any) -> int:
        import torch

        if self.constraint is not None:
            logits = logits.masked_fill(~self.constraint.allowed(len(self.tokens), logits.shape[-1],
                                                                 logits.device), float("-inf"))
        if self.generator is None:
            return int(logits.argmax())
        probs = torch.softmax(logits / self.sampling.temperature, dim=-1)
        if self.sampling.top_p < 1.0:
            sorted_p, order = probs.sort(descending=True)
            outside = sorted_p.cumsum(-1) - sorted_p >= self.sampling.top_p  # keeps at least one
            probs = probs.index_fill(0, order[outside], 0.0)
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def take_forced(self, tokenizer: Any, eos: set[int], vocab: int, device: Any) -> str:
        """Take the tokens the grammar forces next, one after another, while it allows exactly one
        (greedy decoding only: a sampled sequence draws every token, so that its seed gives the same
        reply); return the text that may now be shown. The decoder then reads them with the token
        picked before them in one pass (:attr:`fed` tells which it has read), instead of one pass a
        token: a JSON reply's keys, quotes and colons cost no pass of their own. The reply is the
        one picking each token would give, since a lone allowed token is every pick's (up to the
        float rounding of reading several tokens in one pass). The transformers :class:`Decoder`
        does this; the llama.cpp engine reads a token a pass, as llama.cpp's own completion does
        when an exported model is evaluated, so that what it serves is what was evaluated."""
        delta = ""
        while self.constraint is not None and self.generator is None and self.finish is None:
            token = self.constraint.forced(len(self.tokens), vocab, device)
            if token is None:
                break
            delta += self.add(token, tokenizer, eos)
        return delta

    def add(self, token: int, tokenizer: Any, eos: set[int]) -> str:
        """Take ``token``; return the text that may now be shown (for streaming)."""
        self.produced += 1
        if self.constraint is not None:
            self.constraint.consume(token)
        if token in eos:
            self.finish = "stop"
        else:
            self.tokens.append(token)
            self.text = tokenizer.decode(self.tokens, skip_special_tokens=True).lstrip()
            hits = [i for i in (self.text.find(s) for s in self.sampling.stop if s) if i >= 0]
            if hits:
                self.text = self.text[: min(hits)]
                self.finish = "stop"
            elif len(self.tokens) >= self.sampling.max_tokens:  # a record the grammar holds complete ended
                complete = self.constraint is not None and self.constraint.matcher.is_accepting()
                self.finish = "stop" if complete else "length"
        end = len(self.text) if self.finish else len(self.text) - _held_back(self.text, self.sampling.stop)
        delta = self.text[self.shown:end] if end > self.shown else ""
        self.shown = max(self.shown, end)
        return delta


SPLIT_BELOW = 4  # a lone sequence reads fewer unread tokens than this a pass each, where it pays (Decoder.step)


class Decoder:
    """A running batch of sequences decoded together, which new sequences can join between two
    steps (continuous batching).

    :meth:`add` reads new prompts in one pass (left-padded; only the last position's logits are
    computed) and puts their key/value cache beside the running sequences': the shorter of the two
    caches is padded on the left with masked columns, so a joining request never waits for the
    running ones to finish. Each :meth:`step` then picks every unfinished sequence's next token and
    feeds it in one forward pass for all, with the tokens a grammar forces after it (a JSON key and
    its colon: :meth:`Row.take_forced`) in the same pass. With ``prefix`` (:class:`taskfit.models.prefix.PrefixCache`)
    and prompts that all begin with it, the new rows start from a copy of its cache and read only
    what follows (their padding then lies between the prefix and their own tokens, masked). A
    finished sequence leaves the batch at once (its rows of the cache are dropped), so a short
    answer does not cost the long ones anything. With ``mixed``, each sequence names its LoRA
    adapter (PEFT's mixed-adapter batches; ``"__base__"`` for the bare model).
    ``on_text(i, delta)`` is called with each piece of sequence ``i``'s text as it becomes final
    (streaming), ``on_done(i, generated)`` when it ends; ``cancelled(i)`` drops a sequence whose
    client went away. Sequences are numbered in the order they were added, from 0. A finished
    sequence's state is dropped (a server's batch may run for as long as requests keep joining);
    its result is kept for :meth:`result` only with ``keep_results``.
    """

    def __init__(self, model: Any, tokenizer: Any, mixed: bool = False,
                 on_text: Callable[[int, str], None] | None = None,
                 on_done: Callable[[int, Generated], None] | None = None,
                 cancelled: Callable[[int], bool] | None = None, keep_results: bool = True):
        self.model, self.tokenizer, self.mixed = model, tokenizer, mixed
        self.keep_results = keep_results
        self.on_text, self.on_done, self.cancelled = on_text, on_done, cancelled
        self.device = model.get_output_embeddings().weight.device
        eos = {tokenizer.eos_token_id}
        extra_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        self.eos = eos | set(extra_eos if isinstance(extra_eos, list) else [extra_eos] if extra_eos is not None else [])
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.added = 0  # sequences added so far (the next one's number)
        self.rows: dict[int, Row] = {}  # the running sequences' state
        self.adapters: dict[int, str] = {}
        self.results: dict[int, Generated] = {}  # the finished ones' results (with keep_results)
        self.active: list[int] = []  # the running sequences, in the cache's batch order
        self.cache: Any = None
        self.mask: Any = None  # running sequences x cache columns: 1 where a column is theirs
        self.logits: Any = None  # running sequences x vocabulary: what their next token is picked from
        # whether one token a pass is the cheaper way to read a few (see step)
        dtype = str(model.get_output_embeddings().weight.dtype)
        self._vector_path = self.device.type == "cpu" and dtype == "torch.bfloat16"

    def __len__(self) -> int:
        return len(self.active)

    def fits(self, prompts: Sequence[list[int]], samplings: Sequence[Sampling]) -> int:
        """How many of ``prompts`` can join now: all (the cache grows with the batch)."""
        return len(prompts)

    @property
    def joinable(self) -> bool:
        """Whether new sequences can join now: the cache's layers are plain ones (of any length);
        a sliding-window or quantised cache cannot be padded, so its batch must end first."""
        return self.cache is None or all(type(layer).__name__ == "DynamicLayer"
                                         for layer in getattr(self.cache, "layers", [None]))

    def add(self, prompts: Sequence[list[int]], samplings: Sequence[Sampling],
            adapters: Sequence[str] | None = None, prefix: PrefixCache | None = None) -> list[int]:
        """Read ``prompts`` and add them to the running batch; return their numbers."""
        import torch

        if not prompts:
            return []
        first, self.added = self.added, self.added + len(prompts)
        numbers = list(range(first, self.added))
        self.rows.update((i, Row(self.tokenizer, list(p), s, self.device)) for i, p, s in zip(numbers, prompts, samplings))
        names = list(adapters) if self.mixed else []
        self.adapters.update(zip(numbers, names))
        base = prefix.length_for(prompts) if prefix is not None else 0  # tokens read from the prefix's cache
        width = max(len(p) for p in prompts) - base
        ids = torch.full((len(prompts), width), self.pad, dtype=torch.long, device=self.device)
        mask = torch.zeros((len(prompts), base + width), dtype=torch.long, device=self.device)
        mask[:, :base] = 1
        for i, p in enumerate(prompts):
            ids[i, width - len(p) + base:] = torch.tensor(p[base:], dtype=torch.long)
            mask[i, base + width - len(p) + base:] = 1
        kwargs: dict[str, Any] = {"adapter_names": names} if self.mixed else {}
        with torch.inference_mode():
            past = {cache_arg(): prefix.cache(self.model, len(prompts), **kwargs)} if base else {}
            out = self.model(input_ids=ids, attention_mask=mask,
                             position_ids=(mask.cumsum(-1) - 1).clamp(min=0)[:, base:],
                             use_cache=True, logits_to_keep=1, **past, **kwargs)
        cache, logits = cache_of(out), out.logits[:, -1, :].float()
        if self.cache is None:
            self.cache, self.mask, self.logits = cache, mask, logits
        else:
            self._join(cache, mask, logits)
        self.active += numbers
        return numbers

    def _join(self, cache: Any, mask: Any, logits: Any) -> None:
        """Put a newly read batch's cache below the running one's, the narrower padded on the left."""
        import torch
        import torch.nn.functional as F

        gap = self.mask.shape[1] - mask.shape[1]
        if gap < 0:
            self.mask = F.pad(self.mask, (-gap, 0))
        mask = F.pad(mask, (max(gap, 0), 0))
        for old, new in zip(self.cache.layers, cache.layers):
            if gap < 0:
                old.keys, old.values = (F.pad(t, (0, 0, -gap, 0)) for t in (old.keys, old.values))
            new_keys, new_values = (F.pad(t, (0, 0, max(gap, 0), 0)) for t in (new.keys, new.values))
            old.keys = torch.cat([old.keys, new_keys])
            old.values = torch.cat([old.values, new_values])
        self.mask = torch.cat([self.mask, mask])
        self.logits = torch.cat([self.logits, logits])

    def step(self) -> None:
        """Pick each running sequence's next token; finished ones leave; one forward pass for the rest."""
        import torch

        for j, i in enumerate(self.active):
            row = self.rows[i]
            if self.cancelled is not None and self.cancelled(i):
                row.finish = "cancelled"
                continue
            delta = row.add(row.pick(self.logits[j]), self.tokenizer, self.eos)
            delta += row.take_forced(self.tokenizer, self.eos, self.logits.shape[-1], self.device)
            if delta and self.on_text is not None:
                self.on_text(i, delta)
        keep = [j for j, i in enumerate(self.active) if self.rows[i].finish is None]
        for i in self.active:
            if self.rows[i].finish is not None:
                row, _ = self.rows.pop(i), self.adapters.pop(i, None)
                done = Generated(text=row.text.strip(), prompt_tokens=len(row.prompt), completion_tokens=row.produced,
                                 finish_reason=row.finish)
                if self.keep_results:
                    self.results[i] = done
                if self.on_done is not None:
                    self.on_done(i, done)
        if not keep:
            self.clear()
            return
        if len(keep) < len(self.active):
            index = torch.tensor(keep, device=self.device)
            self.cache.batch_select_indices(index)
            self.mask = self.mask[index]
            self.active = [self.active[j] for j in keep]
            self._trim()
        # Each sequence's tokens not yet read: the one picked, and any the grammar forced after it
        # (Row.take_forced). A lone sequence with a few of them on a CPU holding bfloat16 weights
        # reads them a pass each: there a pass of one token takes the matrix-vector path, about a
        # third of a pass of two or more (measured on the embedded model: 24 against 71-74 ms for
        # 2 to 8 tokens; in float32 46 against 55-65 ms, where reading together always pays).
        new = [self.rows[i].tokens[self.rows[i].fed:] for i in self.active]
        if len(new) == 1 and 1 < len(new[0]) < SPLIT_BELOW and self._vector_path:
            for token in new[0]:
                self._read([[token]])
        else:
            self._read(new)
        for i in self.active:
            self.rows[i].fed = len(self.rows[i].tokens)

    def _read(self, new: list[list[int]]) -> None:
        """One forward pass over each running sequence's ``new`` tokens, right-aligned so that the
        last column is every sequence's last token (a shorter sequence's columns before its tokens
        are masked, as a joining prompt's padding is); the logits of that last column are kept."""
        import torch

        width = max(map(len, new))
        step = torch.full((len(new), width), self.pad, dtype=torch.long, device=self.device)
        added = self.mask.new_zeros((len(new), width))
        for r, tokens in enumerate(new):
            step[r, width - len(tokens):] = torch.tensor(tokens, dtype=torch.long)
            added[r, width - len(tokens):] = 1
        self.mask = torch.cat([self.mask, added], dim=1)
        kwargs = {"adapter_names": [self.adapters[i] for i in self.active]} if self.mixed else {}
        with torch.inference_mode():
            out = self.model(input_ids=step, attention_mask=self.mask,
                             position_ids=(self.mask.cumsum(-1) - 1)[:, -width:].clamp(min=0),
                             use_cache=True, logits_to_keep=1, **{cache_arg(): self.cache}, **kwargs)
        self.cache, self.logits = cache_of(out), out.logits[:, -1, :].float()

    def _trim(self) -> None:
        """Drop the leading columns no running sequence uses (the padding of sequences that have
        left): a batch that requests keep joining would otherwise grow by a column every step."""
        lead = int(self.mask.any(0).int().argmax())
        if lead and self.joinable:
            self.mask = self.mask[:, lead:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[..., lead:, :], layer.values[..., lead:, :]

    def clear(self) -> None:
        """Drop every running sequence (after a failed pass)."""
        self.active, self.rows, self.adapters = [], {}, {}
        self.cache = self.mask = self.logits = None

    def result(self, i: int) -> Generated:
        """Sequence ``i``'s result, once it has finished (with ``keep_results``)."""
        return self.results[i]


def decode_batch(model: Any, tokenizer: Any, prompts: Sequence[list[int]], samplings: Sequence[Sampling],
                 adapters: Sequence[str] | None = None,
                 on_text: Callable[[int, str], None] | None = None,
                 cancelled: Callable[[int], bool] | None = None, prefix: PrefixCache | None = None) -> list[Generated]:
    """Decode several prompts together, to the end (a :class:`Decoder` nothing joins)."""
    decoder = Decoder(model, tokenizer, mixed=adapters is not None, on_text=on_text, cancelled=cancelled)
    decoder.add(prompts, samplings, adapters, prefix)
    while len(decoder):
        decoder.step()
    return [decoder.result(i) for i in range(len(prompts))]


def generate(model: Any, tokenizer: Any, prompt_ids: list[int], max_new_tokens: int,
             grammar: str | None = None) -> Generated:
    """Greedy continuation of ``prompt_ids`` up to the end-of-turn token or ``max_new_tokens``."""
    return decode_batch(model, tokenizer, [prompt_ids], [Sampling(max_tokens=max_new_tokens, grammar=grammar)])[0]
