"""Label scoring as a best-first search over a prefix tree of the labels' tokens.

A label's score is the log-probability of its completion (its tokens and the end-of-turn token)
after the prompt. Labels share prefixes (``pto_request``, ``pto_request_status``, ``pto_used``),
so their completions form a tree and a label's score is the sum along its path. A prefix's
log-probability bounds every label below it, and the probabilities of the labels below a prefix
sum to at most the prefix's: so the tree is searched best-first, and a node is read (its
children's log-probabilities computed) only while it could still hold the best label or enough
probability to move the confidence.

The prompts of a batch of rows are read once, left-padded, into one key/value cache. Each step
of the search then feeds, for every row at once, the nodes it reads: one token per node, at the
position its depth gives it, under a 4-D attention mask that lets a node see its row's prompt and
its own ancestors (read in an earlier step or in the same one) and nothing else. The cache only
grows: nothing is copied, nothing is read twice, and a step is one forward pass for the whole
batch whatever the number of labels. A node with a single label below it (the rest of
``accept_reservations``) is read with the rest of that label in the same step. A step is as wide
as the row that needs the most nodes (at most ``STEP_WIDTH``, at least ``READ_AHEAD``); the other
rows fill what would be padding with their likeliest unread nodes, read ahead, and a row that is
done leaves the batch and its rows of the cache.

A row's search stops when (a) its best complete label scores at least every unread node's bound:
the argmax is then exactly that of scoring every label; and (b) counting the unread labels at
their subtrees' bound moves the confidence (a softmax over the labels' scores) by at most
``tolerance``: the confidence returned is that count, a lower bound at most ``tolerance`` below
the exact one (an understatement errs towards the fallback). ``tolerance=0`` reads every node and
gives every label's exact score.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any, Sequence

from taskfit.models.compat import cache_arg, cache_of
from taskfit.records import LabelChoice

CONFIDENCE_TOLERANCE = 0.01  # the confidence returned is at most this far below the exact one
STEP_WIDTH = 32  # nodes a row reads in one step at most
READ_AHEAD = 8  # nodes a searching row reads in a step at least: fewer passes for a few more tokens


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

    def chain(self, v: int) -> list[int]:
        """``v`` and, when one label lies below it, the rest of that label's nodes to read."""
        out = [v]
        while self.leaves[v] == 1 and self.label[self.children[v][0]] < 0:
            v = self.children[v][0]
            out.append(v)
        return out


def _gap(best: float, found: float, unread: float) -> float:
    """How far below the exact confidence the one counted with the unread labels at their bound
    can be: the best label's share of the labels scored, less its share with ``unread`` added."""
    if found <= 0.0:
        return 1.0
    unread = max(unread, 0.0)
    return math.exp(best) * unread / (found * (found + unread))


class _Row:
    """One row's search: the labels scored, the unread nodes (a heap by bound), the cache column
    of each node read."""

    def __init__(self, columns: range, length: int):
        self.prompt_columns = columns  # the prompt's columns of the cache (left-padded)
        self.length = length  # prompt tokens: a node's position is length + depth - 1
        self.logp: dict[int, float] = {0: 0.0}
        self.totals: dict[int, float] = {}
        self.frontier: list[tuple[float, int]] = []  # (-log-probability, node), unread
        self.column: dict[int, int] = {}

    @property
    def unread(self) -> float:
        return sum(math.exp(-n) for n, _ in self.frontier)

    def found(self, tree: LabelTree, v: int, logp: float) -> None:
        self.logp[v] = logp
        if tree.label[v] >= 0:
            self.totals[tree.label[v]] = logp
        else:
            heapq.heappush(self.frontier, (-logp, v))

    def pick(self, tree: LabelTree, limit: int, tolerance: float | None = None) -> list[int]:
        """Take up to ``limit`` nodes to read off the top of the frontier, each with its chain
        (the last one cut to fit: the rest of it is found when its parent is read). With
        ``tolerance``, only the nodes the row needs: the fewest after which it would stop if
        each were one label as likely as its bound, so none is read that an exact search could
        skip (none once the row is done); without, the likeliest, read ahead."""
        best = max(self.totals.values(), default=-math.inf)
        found = sum(math.exp(t) for t in self.totals.values())
        unread = self.unread
        picked: list[int] = []
        while self.frontier and len(picked) < limit:
            logp = -self.frontier[0][0]
            if tolerance is not None and logp <= best and _gap(best, found, unread) <= tolerance:
                break
            picked.extend(tree.chain(heapq.heappop(self.frontier)[1])[:limit - len(picked)])
            best, found, unread = max(best, logp), found + math.exp(logp), unread - math.exp(logp)
        return picked


def plan(rows: Sequence[_Row], tree: LabelTree, tolerance: float, width: int, ahead: int = 0) -> list[list[int]]:
    """The nodes each row reads in the next step: those it needs (at most ``width``), then, up
    to the widest row's count (and at least ``ahead``), its likeliest others, read ahead in what
    would otherwise be padding or a pass of its own. A done row reads nothing."""
    reads = [row.pick(tree, width, tolerance) for row in rows]
    step = max(max(map(len, reads)), min(ahead, width))
    for row, nodes in zip(rows, reads):
        if nodes:
            nodes.extend(row.pick(tree, step - len(nodes)))
    return reads


def search(model: Any, tree: LabelTree, prompts: Sequence[list[int]], pad_id: int,
           tolerance: float = CONFIDENCE_TOLERANCE, step_width: int = STEP_WIDTH,
           stats: dict[str, int] | None = None) -> list[Searched]:
    """Search ``tree`` after each of ``prompts`` (read together as one batch); see the module's
    docstring. A step reads at most ``step_width`` nodes a row. ``stats``, when given, counts
    the forward passes and the tokens they fed (padding included)."""
    import numpy as np
    import torch

    device = model.get_output_embeddings().weight.device
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    rows = [_Row(range(width - len(p), width), len(p)) for p in prompts]
    counts = stats if stats is not None else {}
    counts["passes"], counts["tokens"] = counts.get("passes", 0) + 1, counts.get("tokens", 0) + ids.numel()
    firsts = tree.children[0]
    with torch.inference_mode():
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(device), use_cache=True, logits_to_keep=1)
        cache = cache_of(out)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        first = first[:, torch.tensor([tree.token[c] for c in firsts], device=device)].tolist()
        for row, lp in zip(rows, first):
            for c, value in zip(firsts, lp):
                row.found(tree, c, value)
        columns = width  # the cache's length
        live = list(rows)  # the rows still searching, in the cache's batch order
        while True:
            reads = plan(live, tree, tolerance, step_width, READ_AHEAD)
            keep = [i for i, nodes in enumerate(reads) if nodes]
            if not keep:
                break
            if len(keep) < len(live):  # a done row leaves the batch and its cache
                cache.batch_select_indices(torch.tensor(keep, device=device))
                live, reads = [live[i] for i in keep], [reads[i] for i in keep]
            # Rows read as many nodes as the widest where they have that many left to read; a row
            # with fewer fills its share of the step with padding that attends to itself only.
            step = max(map(len, reads))
            ids = np.full((len(live), step), pad_id, dtype=np.int64)
            positions = np.zeros((len(live), step), dtype=np.int64)
            allowed = np.zeros((len(live), 1, step, columns + step), dtype=bool)
            fanout = max(len(tree.children[v]) for nodes in reads for v in nodes)
            picks = np.zeros((len(live), step, fanout), dtype=np.int64)  # the children's tokens
            for i, (row, nodes) in enumerate(zip(live, reads)):
                for j, v in enumerate(nodes):
                    row.column[v] = columns + j
                allowed[i, 0, :, row.prompt_columns.start:row.prompt_columns.stop] = True
                for j, v in enumerate(nodes):
                    ids[i, j] = tree.token[v]
                    positions[i, j] = row.length + tree.depth[v] - 1
                    allowed[i, 0, j, [row.column[a] for a in tree.ancestors[v]]] = True
                    picks[i, j, :len(tree.children[v])] = [tree.token[c] for c in tree.children[v]]
                allowed[i, 0, np.arange(step), columns + np.arange(step)] = True  # itself
            bias = torch.zeros(allowed.shape, dtype=model.dtype)
            bias.masked_fill_(torch.from_numpy(~allowed), torch.finfo(model.dtype).min)
            out = model(input_ids=torch.from_numpy(ids).to(device), attention_mask=bias.to(device),
                        position_ids=torch.from_numpy(positions).to(device), use_cache=True,
                        **{cache_arg(): cache})
            cache = cache_of(out)
            columns += step
            counts["passes"] += 1
            counts["tokens"] += ids.size
            logits = out.logits.float()
            logp = (logits.gather(-1, torch.from_numpy(picks).to(device))
                    - torch.logsumexp(logits, dim=-1, keepdim=True)).tolist()
            for row, nodes, lp in zip(live, reads, logp):
                read = set(nodes)
                for v, values in zip(nodes, lp):  # a chain's nodes come after their parent
                    for c, value in zip(tree.children[v], values):
                        if c in read:
                            row.logp[c] = row.logp[v] + value
                        else:
                            row.found(tree, c, row.logp[v] + value)
    return [Searched(row.totals, row.unread) for row in rows]
