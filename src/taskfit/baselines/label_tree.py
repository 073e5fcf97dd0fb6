"""Label scoring as a search over a prefix tree of the labels' tokens.

A label's score is the log-probability of its completion (its tokens and the end-of-turn token)
after the prompt. Labels share prefixes (``pto_request``, ``pto_request_status``, ``pto_used``),
so their completions form a tree and a label's score is the sum along its path. A prefix's
log-probability bounds every label below it, and the probabilities of the labels below a prefix
sum to at most the prefix's: so a node is read (its children's log-probabilities computed) only
while it could still hold the best label or enough probability to move the confidence.

The prompts of a batch of rows are read once into one key/value cache: the tokens they all
begin with (the system prompt, the chat template's header) once for all, then the rest of each.
Each step then feeds, for every row at once, the nodes it reads: one token per node, at the
position its depth gives it, under a 4-D attention mask that lets a node see its row's prompt and
its own ancestors (read in an earlier step or in the same one) and nothing else. The cache only
grows (no copy of it per label or node), nothing is read twice, and a step is one forward pass for
the whole batch.

What a step reads is planned from what the rows have found so far (:func:`plan`):

- each searching row first takes the unread nodes it *needs*: the fewest, likeliest first, after
  which it would stop if each turned out one label as likely as its bound (the best case; an
  unsure model's labels hold far less than their prefixes, and the row needs more once it has
  read them). A row takes at most its share of ``NEED_TOKENS`` of them in a step, and plans again
  with what they show;
- the step is as wide as the row that needs the most (at least ``READ_AHEAD_TOKENS`` tokens in
  all, at most ``STEP_TOKENS``: the logits a step holds are its tokens times the vocabulary); a
  row fills its share with the nodes below those it needs, breadth first (the rest of a label, so
  a likely label is read whole in one step), then with its likeliest other nodes. A pass costs
  the model's weights read once whatever its width, so what would be padding or a later pass of
  its own is read ahead; a row that is done leaves the batch and its rows of the cache;
- with ``tolerance=0`` every node is needed: each row reads its whole tree, breadth first under
  each node, in as few steps as ``STEP_TOKENS`` allows (one, one row at a time, for a few hundred
  nodes).

A row's search stops when (a) its best complete label scores at least every unread node's bound:
the argmax is then exactly that of scoring every label; and (b) counting the unread labels at
their subtrees' bound moves the confidence (a softmax over the labels' scores) by at most
``tolerance``: the confidence returned is that count, a lower bound at most ``tolerance`` below
the exact one (an understatement errs towards the fallback). ``tolerance=0`` reads every node and
gives every label's exact score. Rows of a batch stop at different steps; the plan only decides
how many nodes are read together, never which answer a row gets.
"""

from __future__ import annotations

import heapq
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from taskfit.models.compat import cache_arg, cache_of
from taskfit.records import LabelChoice

if TYPE_CHECKING:
    from taskfit.models.prefix import PrefixCache

CONFIDENCE_TOLERANCE = 0.01  # the confidence returned is at most this far below the exact one
STEP_TOKENS = 1024  # tokens (rows x nodes) a step feeds at most: its logits are this times the vocabulary
NEED_TOKENS = 512  # of which nodes the rows need at most: a row plans again with what they show
READ_AHEAD_TOKENS = 16  # tokens a step feeds at least while a row searches: a pass has a cost of its own


def label_choice(totals: Sequence[float]) -> LabelChoice:
    """The best label and its confidence from every label's log-probability."""
    return Searched(dict(enumerate(totals)), 0.0).choice()


@dataclass(frozen=True)
class Searched:
    """What the search found for one row: the exact score of each label it completed, and a bound
    on the probability of the labels it did not (the sum of their subtrees' bounds)."""

    totals: dict[int, float]  # label index -> log-probability of its completion
    unread: float  # probability bound of the labels not in ``totals``

    def choice(self) -> LabelChoice:
        best = max(self.totals, key=self.totals.__getitem__)
        top = self.totals[best]
        mass = sum(math.exp(t - top) for t in self.totals.values()) + self.unread * math.exp(-top)
        return LabelChoice(best, 1.0 / mass)


class LabelTree:
    """The labels' completions as a prefix tree. Node 0 is the root (the prompt's last token,
    read with the prompt); every other node is one token, ``depth`` tokens after the prompt; a
    label's last node (its end-of-turn token) is never read, only scored."""

    def __init__(self, completions: Sequence[Sequence[int]]):
        self.token, self.parent, self.depth, self.label = [-1], [-1], [0], [-1]
        self.children: list[list[int]] = [[]]
        index: dict[tuple[int, ...], int] = {(): 0}
        for lab, completion in enumerate(completions):
            for k in range(1, len(completion) + 1):
                prefix = tuple(completion[:k])
                if prefix not in index:
                    index[prefix] = len(self.token)
                    self.token.append(completion[k - 1])
                    self.parent.append(index[prefix[:-1]])
                    self.depth.append(k)
                    self.label.append(-1)
                    self.children.append([])
                    self.children[index[prefix[:-1]]].append(index[prefix])
            self.label[index[tuple(completion)]] = lab
        self.leaves = [0] * len(self.token)  # labels below each node
        for v in reversed(range(len(self.token))):  # children come after their parent
            self.leaves[v] = (self.label[v] >= 0) + sum(self.leaves[c] for c in self.children[v])
        self.ancestors = [[] for _ in self.token]  # below the root, nearest first
        for v in range(1, len(self.token)):
            p = self.parent[v]
            self.ancestors[v] = ([p] + self.ancestors[p]) if p > 0 else []

    def below(self, v: int) -> list[int]:
        """The nodes to read below ``v``, breadth first: each comes after its parent, so any
        first part of the list can be read in the same step as ``v``."""
        out, level = [], [v]
        while level:
            level = [c for u in level for c in self.children[u] if self.children[c]]
            out.extend(level)
        return out

def _gap(best: float, found: float, unread: float) -> float:
    """How far below the exact confidence the one counted with the unread labels at their bound
    can be: the best label's share of the labels scored, less its share with ``unread`` added."""
    if found <= 0.0:
        return 1.0
    unread = max(unread, 0.0)
    return math.exp(best) * unread / (found * (found + unread))


class _Row:
    """One row's search: the log-probability of each node found, the labels scored, the unread
    nodes (a heap by bound)."""

    def __init__(self) -> None:
        self.logp: dict[int, float] = {0: 0.0}
        self.totals: dict[int, float] = {}
        self.frontier: list[tuple[float, int]] = []  # (-log-probability, node), unread

    @property
    def unread(self) -> float:
        return sum(math.exp(-n) for n, _ in self.frontier)

    def found(self, tree: LabelTree, v: int, logp: float) -> None:
        self.logp[v] = logp
        if tree.label[v] >= 0:
            self.totals[tree.label[v]] = logp
        else:
            heapq.heappush(self.frontier, (-logp, v))

    def read(self, tree: LabelTree, nodes: Sequence[int], values: Sequence[Sequence[float]]) -> None:
        """Take in what reading ``nodes`` gave: each one's children's log-probabilities given
        it. A node read in the same step as its parent comes after it in ``nodes``."""
        read = set(nodes)
        for v, given in zip(nodes, values):
            for c, value in zip(tree.children[v], given):
                if c in read:
                    self.logp[c] = self.logp[v] + value
                else:
                    self.found(tree, c, self.logp[v] + value)

    def done(self, tolerance: float) -> bool:
        """Whether the row can stop: its best label beats every unread node's bound and the
        unread labels, at their bound, move the confidence by at most ``tolerance`` (with no
        tolerance: every node is read)."""
        if not self.frontier or tolerance == 0:
            return not self.frontier
        best = max(self.totals.values(), default=-math.inf)
        found = sum(math.exp(t) for t in self.totals.values())
        return -self.frontier[0][0] <= best and _gap(best, found, self.unread) <= tolerance

    def pick(self, tree: LabelTree, limit: int, tolerance: float | None = None, whole: bool = False) -> list[int]:
        """Take up to ``limit`` nodes to read off the top of the frontier, with ``whole`` each
        with the nodes below it (the last cut to fit: the rest are found when their parents are
        read). With ``tolerance``, only the nodes the row needs: the fewest after which it would
        stop if each were one label as likely as its bound (none once it is done); without, the
        likeliest, read ahead. Which nodes are read never decides a row's answer: it stops by
        :meth:`done` alone."""
        best = max(self.totals.values(), default=-math.inf)
        found = sum(math.exp(t) for t in self.totals.values())
        unread = self.unread
        picked: list[int] = []
        while self.frontier and len(picked) < limit:
            logp = -self.frontier[0][0]
            if tolerance is not None and logp <= best and _gap(best, found, unread) <= tolerance:
                break
            v = heapq.heappop(self.frontier)[1]
            picked.extend(([v] + tree.below(v))[:limit - len(picked)] if whole else [v])
            best, found, unread = max(best, logp), found + math.exp(logp), unread - math.exp(logp)
        return picked


def plan(rows: Sequence[_Row], tree: LabelTree, tolerance: float) -> list[list[int]]:
    """The nodes each row reads in the next step. The rows still searching share the step's
    tokens: each first takes the nodes it needs (at most its share of ``NEED_TOKENS``; with no
    tolerance, every node, each with those below it); then, up to the widest row's count (at
    least its share of ``READ_AHEAD_TOKENS``, at most of ``STEP_TOKENS``), the nodes below those
    it needs, breadth first, and its likeliest others, read ahead in what would otherwise be
    padding or a pass of its own. A done row reads nothing. Parents come before their children
    in a row's list."""
    exact = tolerance == 0
    reads: list[list[int]] = [[] for _ in rows]
    searching = [i for i, row in enumerate(rows) if not row.done(tolerance)]
    if not searching:
        return reads
    most = max(1, STEP_TOKENS // len(searching))
    need = most if exact else min(most, max(1, NEED_TOKENS // len(searching)))
    for i in searching:
        reads[i] = rows[i].pick(tree, need, None if exact else tolerance, whole=exact)
    step = min(most, max(max(map(len, reads)), -(-READ_AHEAD_TOKENS // len(searching))))
    for i in searching:
        for v in list(reads[i]) if not exact else []:
            reads[i].extend(tree.below(v)[:step - len(reads[i])])
        reads[i].extend(rows[i].pick(tree, step - len(reads[i])))
    return reads


def _read_prompts(model: Any, prompts: Sequence[list[int]], pad_id: int,
                  prefix: PrefixCache | None = None) -> tuple[int, int, int, Any, Any]:
    """Read ``prompts`` into one key/value cache: the tokens they all begin with (a system
    prompt, a chat template's header) once, then the rest of each, right-aligned after them (so
    each prompt's last token is the cache's last column). With ``prefix`` (the task's prefix,
    :class:`taskfit.models.prefix.PrefixCache`), its tokens are not read again but copied from its
    cache. Returns the tokens taken from ``prefix``, the shared tokens' count, the cache's length,
    the cache, and the logits after each prompt."""
    import numpy as np
    import torch

    device = model.get_output_embeddings().weight.device
    base = prefix.length_for(prompts) if prefix is not None else 0
    shared = base
    if len(prompts) > 1:  # one token at least is left to each row, to be read after the shared ones
        shared = max(base, min(len(os.path.commonprefix(list(map(list, prompts)))), min(map(len, prompts)) - 1))
    cache = prefix.cache(model, 1) if base else None
    with torch.inference_mode():
        if shared > base:
            head = model(input_ids=torch.tensor([prompts[0][base:shared]], device=device),
                         position_ids=torch.arange(base, shared, device=device)[None], use_cache=True,
                         logits_to_keep=1, **({cache_arg(): cache} if cache is not None else {}))
            cache = cache_of(head)
        if cache is not None:
            cache.batch_repeat_interleave(len(prompts))
        rest = max(len(p) for p in prompts) - shared
        ids = np.full((len(prompts), rest), pad_id, dtype=np.int64)
        positions = np.zeros((len(prompts), rest), dtype=np.int64)
        allowed = np.zeros((len(prompts), 1, rest, shared + rest), dtype=bool)
        allowed[:, 0, :, :shared] = True
        allowed[:, 0, np.arange(rest), shared + np.arange(rest)] = True  # a padding token sees itself
        for i, p in enumerate(prompts):
            start = rest - (len(p) - shared)
            ids[i, start:] = p[shared:]
            positions[i, start:] = np.arange(shared, len(p))
            allowed[i, 0, start:, shared + start:] = np.tril(np.ones((rest - start, rest - start), dtype=bool))
        out = model(input_ids=torch.from_numpy(ids).to(device), attention_mask=_bias(model, allowed).to(device),
                    position_ids=torch.from_numpy(positions).to(device), use_cache=True, logits_to_keep=1,
                    **({cache_arg(): cache} if cache is not None else {}))
    return base, shared, shared + rest, cache_of(out), out.logits[:, -1]


def _bias(model: Any, allowed: Any) -> Any:
    """An additive attention mask: 0 where ``allowed``, the dtype's lowest value elsewhere."""
    import torch

    bias = torch.zeros(allowed.shape, dtype=model.dtype)
    return bias.masked_fill_(torch.from_numpy(~allowed), torch.finfo(model.dtype).min)


Reader = Callable[[list[int], list[list[int]]], list[list[list[float]]]]


def run(tree: LabelTree, first: Sequence[Sequence[float]], read: Reader, tolerance: float = CONFIDENCE_TOLERANCE,
        stats: dict[str, int] | None = None) -> list[Searched]:
    """The search, apart from the model that reads the nodes. ``first[i]`` holds the
    log-probabilities of the root's children (``tree.children[0]``) after row ``i``'s prompt;
    ``read(rows, nodes)`` reads ``nodes[k]`` after row ``rows[k]``'s prompt (the rows still
    searching, in the order they started; one forward pass for all) and gives, for each node,
    its children's log-probabilities given it. ``stats['early']``, when given, counts the rows
    that stopped while others still searched."""
    rows = [_Row() for _ in first]
    for row, values in zip(rows, first):
        row.read(tree, [0], [values])
    live = list(range(len(rows)))
    while True:
        planned = plan([rows[i] for i in live], tree, tolerance)
        going = [(i, nodes) for i, nodes in zip(live, planned) if nodes]
        if not going:
            break
        if stats is not None:
            stats["early"] = stats.get("early", 0) + len(live) - len(going)
        live, reads = [i for i, _ in going], [nodes for _, nodes in going]
        for i, nodes, values in zip(live, reads, read(live, reads)):
            rows[i].read(tree, nodes, values)
    return [Searched(row.totals, row.unread) for row in rows]


class _Batch:
    """The model's side of a batch's search: the prompts' cache, then a forward pass a step.
    Each node read is one token, at the position its depth gives it, under a 4-D attention mask
    that lets it see its row's prompt and its ancestors and nothing else; a row that is done
    leaves the batch and its rows of the cache."""

    def __init__(self, model: Any, tree: LabelTree, prompts: Sequence[list[int]], pad_id: int, stats: dict[str, int],
                 prefix: PrefixCache | None = None):
        self.model, self.tree, self.pad_id, self.stats = model, tree, pad_id, stats
        base, shared, self.columns, self.cache, last = _read_prompts(model, prompts, pad_id, prefix)
        stats["passes"] = stats.get("passes", 0) + (2 if shared > base else 1)
        stats["tokens"] = stats.get("tokens", 0) + shared - base + len(prompts) * (self.columns - shared)
        self.prompt_columns = [list(range(shared)) + list(range(self.columns - len(p) + shared, self.columns))
                               for p in prompts]
        self.lengths = [len(p) for p in prompts]  # a node's position is length + depth - 1
        self.column: list[dict[int, int]] = [{} for _ in prompts]  # each node's column of the cache
        self.live = list(range(len(prompts)))  # the rows in the cache, in its batch order
        self.first = [values[0] for values in self._logp(last[:, None], [[0] for _ in prompts])]  # the root's children

    def __call__(self, live: list[int], reads: list[list[int]]) -> list[list[list[float]]]:
        import numpy as np
        import torch

        device = self.model.get_output_embeddings().weight.device
        tree = self.tree
        if live != self.live:  # done rows leave the batch and its cache
            self.cache.batch_select_indices(torch.tensor([self.live.index(i) for i in live], device=device))
            self.live = live
        # Rows read as many nodes as the widest where they have that many left to read; a row
        # with fewer fills its share of the step with padding that attends to itself only.
        step = max(map(len, reads))
        ids = np.full((len(live), step), self.pad_id, dtype=np.int64)
        positions = np.zeros((len(live), step), dtype=np.int64)
        allowed = np.zeros((len(live), 1, step, self.columns + step), dtype=bool)
        for k, (i, nodes) in enumerate(zip(live, reads)):
            column = self.column[i]
            for j, v in enumerate(nodes):
                column[v] = self.columns + j
            allowed[k, 0, :, self.prompt_columns[i]] = True
            for j, v in enumerate(nodes):
                ids[k, j] = tree.token[v]
                positions[k, j] = self.lengths[i] + tree.depth[v] - 1
                allowed[k, 0, j, [column[a] for a in tree.ancestors[v]]] = True
        allowed[:, 0, np.arange(step), self.columns + np.arange(step)] = True  # itself
        with torch.inference_mode():
            out = self.model(input_ids=torch.from_numpy(ids).to(device),
                             attention_mask=_bias(self.model, allowed).to(device),
                             position_ids=torch.from_numpy(positions).to(device), use_cache=True,
                             **{cache_arg(): self.cache})
        self.cache = cache_of(out)
        self.columns += step
        self.stats["passes"] += 1
        self.stats["tokens"] += ids.size
        return self._logp(out.logits, reads)

    def _logp(self, logits: Any, reads: list[list[int]]) -> list[list[list[float]]]:
        """Each node's children's log-probabilities from ``logits`` (rows x nodes x vocabulary)."""
        import numpy as np
        import torch

        tree = self.tree
        fanout = max(len(tree.children[v]) for nodes in reads for v in nodes)
        picks = np.zeros((len(reads), logits.shape[1], fanout), dtype=np.int64)  # the children's tokens
        for k, nodes in enumerate(reads):
            for j, v in enumerate(nodes):
                picks[k, j, :len(tree.children[v])] = [tree.token[c] for c in tree.children[v]]
        with torch.inference_mode():
            logits = logits.float()
            logp = (logits.gather(-1, torch.from_numpy(picks).to(logits.device))
                    - torch.logsumexp(logits, dim=-1, keepdim=True)).tolist()
        return [[values[:len(tree.children[v])] for v, values in zip(nodes, row)] for nodes, row in zip(reads, logp)]


def search(model: Any, tree: LabelTree, prompts: Sequence[list[int]], pad_id: int,
           tolerance: float = CONFIDENCE_TOLERANCE, stats: dict[str, int] | None = None,
           prefix: PrefixCache | None = None) -> list[Searched]:
    """Search ``tree`` after each of ``prompts`` (read together as one batch); see the module's
    docstring. ``stats``, when given, counts the forward passes, the tokens they fed (padding
    included; not the tokens copied from ``prefix``'s cache) and the rows that stopped before
    others (:func:`run`)."""
    counts = stats if stats is not None else {}
    batch = _Batch(model, tree, prompts, pad_id, counts, prefix)
    return run(tree, batch.first, batch, tolerance, counts)
