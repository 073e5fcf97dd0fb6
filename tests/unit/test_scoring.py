"""Label scoring: the prefix-tree search over a batch's cache gives what scoring every label's full
completion after the prompt, one forward pass each, gives."""

from __future__ import annotations

import math
import random

import pytest
import torch

from taskfit.baselines import LabelScoringPredictor
from taskfit.baselines import label_tree
from taskfit.baselines.label_tree import CONFIDENCE_TOLERANCE, LabelTree, label_choice, run
from taskfit.records import Example

# Labels that share prefixes (billing / billing_dispute / billing_error), some the start of
# others, of different token lengths: the tree has branches, chains and inner nodes that end a label.
LABELS = ["billing", "bill", "billing_dispute", "billing_error", "shipping", "shipping_delay", "ship",
          "technical_issue", "account", "refund", "refund_request", "refunds", "other"]
TEXTS = ["The app crashes when I open reports", "refund my order", "invoice", "hello there",
         "I cannot log in to my account since the update last Tuesday, please help", "where is my parcel"]


def _naive_scores(model, prompt, completions):
    out = []
    for c in completions:
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([prompt + c])).logits[0].float(), dim=-1)
        out.append(sum(float(logp[len(prompt) + j - 1, tok]) for j, tok in enumerate(c)))
    return out


@pytest.fixture()
def shared_prefixes(classify_task):
    return classify_task.model_copy(update={"labels": LABELS})


def _scorer(tiny, task, **kw):
    return LabelScoringPredictor("base", tiny.model, tiny.tokenizer, task, max_length=256, **kw)


def test_the_labels_share_prefixes_and_differ_in_length(tiny, shared_prefixes):
    scorer = _scorer(tiny, shared_prefixes)
    assert len({len(c) for c in scorer.completions}) > 2
    billing, dispute, error = (scorer.completions[LABELS.index(n)] for n in ("billing", "billing_dispute", "billing_error"))
    assert dispute[:len(billing) - 1] == billing[:-1]  # "billing" ends where "billing_dispute" goes on
    assert dispute[:len(billing)] == error[:len(billing)] and dispute != error  # and branches after


def test_with_no_tolerance_every_label_is_scored_exactly_in_a_batch_of_prompts(tiny, shared_prefixes):
    scorer = _scorer(tiny, shared_prefixes, tolerance=0.0)
    prompts = [scorer.prompt_ids(Example(id=str(i), input=t, target="")) for i, t in enumerate(TEXTS)]
    assert len({len(p) for p in prompts}) > 1  # different lengths: left padding is exercised
    for prompt, found in zip(prompts, scorer.search(prompts)):
        slow = _naive_scores(tiny.model, prompt, scorer.completions)
        assert sorted(found.totals) == list(range(len(LABELS))) and found.unread == 0.0
        for i, s in enumerate(slow):
            assert found.totals[i] == pytest.approx(s, abs=1e-4)


@pytest.mark.parametrize("tolerance", [0.01, 0.3])
def test_best_first_gives_the_full_scoring_argmax_and_confidence_within_tolerance(tiny, shared_prefixes, tolerance):
    scorer = _scorer(tiny, shared_prefixes, tolerance=tolerance)
    prompts = [scorer.prompt_ids(Example(id=str(i), input=t, target="")) for i, t in enumerate(TEXTS)]
    searched = scorer.search(prompts)
    skipped = 0
    for prompt, found, choice in zip(prompts, searched, scorer.choose(prompts)):
        full = label_choice(_naive_scores(tiny.model, prompt, scorer.completions))
        assert choice.best == full.best
        assert full.confidence - tolerance - 1e-6 <= choice.confidence <= full.confidence + 1e-6
        skipped += len(LABELS) - len(found.totals)
    if tolerance == 0.3:
        assert skipped > 0  # some labels were never read, and it did not change the answer


@pytest.mark.parametrize("tolerance", [0.0, CONFIDENCE_TOLERANCE])
def test_batched_predictions_equal_one_at_a_time(tiny, shared_prefixes, tolerance):
    """The same labels; the same confidences with no tolerance, and otherwise within it (each is
    at most ``tolerance`` below the exact one, whatever a batch read ahead)."""
    exs = [Example(id=str(i), input=t, target="billing") for i, t in enumerate(TEXTS)]
    alone = list(_scorer(tiny, shared_prefixes, tolerance=tolerance).predict(exs))
    together = list(_scorer(tiny, shared_prefixes, batch_size=4, tolerance=tolerance).predict(exs))
    assert [p.example_id for p in together] == [e.id for e in exs]
    assert [p.output for p in together] == [p.output for p in alone]
    for a, b in zip(alone, together):
        assert b.confidence == pytest.approx(a.confidence, abs=tolerance or 1e-4)
        assert (b.prompt_tokens, b.completion_tokens) == (a.prompt_tokens, a.completion_tokens)
    # A batch's time is shared among its rows: the first four rows cost the same.
    assert len({p.latency_s for p in together[:4]}) == 1 and together[4].latency_s > 0


def test_evaluation_reads_a_batched_scorer_s_rows_by_prompt_length_and_keeps_their_order(tiny, shared_prefixes,
                                                                                          tmp_path):
    """A batch is one padded pass: evaluation hands the rows over by prompt length (less padding)
    and still returns each row's answer in the examples' order, the answers one at a time give."""
    from taskfit.evaluation.runner import run_cached

    exs = [Example(id=str(i), input=t, target="billing") for i, t in enumerate(TEXTS)]
    scorer = _scorer(tiny, shared_prefixes, batch_size=2)
    handed, predict = [], scorer.predict

    def spy(rows):
        rows = list(rows)
        handed.extend(ex.id for ex in rows)
        return predict(rows)

    scorer.predict = spy
    preds, cached = run_cached(scorer, exs, tmp_path / "predictions.jsonl", "key")
    length = {ex.id: len(scorer.prompt_ids(ex)) for ex in exs}
    assert [length[i] for i in handed] == sorted(length.values()) and handed != [ex.id for ex in exs]
    assert [p.example_id for p in preds] == [ex.id for ex in exs] and cached == 0
    alone = list(_scorer(tiny, shared_prefixes).predict(exs))
    assert [p.output for p in preds] == [p.output for p in alone]


def test_predictions_are_valid_labels_with_confidence(tiny, classify_task):
    scorer = _scorer(tiny, classify_task)
    exs = [Example(id=str(i), input=f"ticket number {i}", target="billing") for i in range(5)]
    preds = list(scorer.predict(exs))
    assert [p.example_id for p in preds] == [e.id for e in exs]
    for p in preds:
        assert p.output in classify_task.labels and p.valid
        assert 0.0 < p.confidence <= 1.0 and p.prompt_tokens > 0 and p.latency_s > 0


def test_label_choice_is_a_softmax_over_the_labels():
    choice = label_choice([math.log(0.2), math.log(0.6), math.log(0.2)])
    assert choice.best == 1 and choice.confidence == pytest.approx(0.6)


@pytest.mark.parametrize("tolerance", [0.0, 0.01])
def test_rows_that_read_different_numbers_of_nodes_share_a_step(tiny, classify_task, tolerance):
    """More first tokens than a step reads, with different numbers of labels below each: each row
    reads its own likeliest nodes first, so in a later step some rows have fewer nodes left to read
    than others read (full scoring of clinc150's 151 intents met this on the embedded model). Each
    row still gets the argmax of scoring every label whole, and with no tolerance every score."""
    heads = ["alarm", "balance", "calendar", "damaged", "exchange", "flight", "gas", "hotel", "insurance", "jump",
             "kitchen", "lost", "meeting", "nutrition", "oil", "pay", "quiz", "recipe", "spelling", "timer",
             "uber", "vaccines", "weather", "yes", "zodiac", "account", "bill", "car", "direct", "expiration",
             "food", "greeting", "how", "income", "jokes", "key", "language", "measurement", "next", "order"]
    tails = ["", "_balance", "_due", "_history", "_status"]
    labels = [h + t for k, h in enumerate(heads) for t in tails[: 1 + k % len(tails)]]
    task = classify_task.model_copy(update={"labels": labels})
    scorer = _scorer(tiny, task, tolerance=tolerance, batch_size=len(TEXTS) * 2)
    prompts = [scorer.prompt_ids(Example(id=str(i), input=t, target="")) for i, t in enumerate(TEXTS * 2)]
    for prompt, found in zip(prompts, scorer.search(prompts)):
        slow = _naive_scores(tiny.model, prompt, scorer.completions)
        assert found.choice().best == label_choice(slow).best
        if tolerance == 0.0:
            assert [found.totals[i] for i in range(len(labels))] == pytest.approx(slow, abs=1e-4)


# The search apart from the model: random label sets and random log-probabilities, many rows.

def _random_labels(rng: random.Random, n: int) -> list[tuple[int, ...]]:
    """``n`` label completions over tokens 1-5, each ending with the end-of-turn token 0: of 1-6
    tokens, most branching off or going on from another's prefix."""
    labels: set[tuple[int, ...]] = set()
    while len(labels) < n:
        word: tuple[int, ...] = ()
        if labels and rng.random() < 0.7:
            other = rng.choice(sorted(labels))[:-1]
            word = other[:rng.randint(0, len(other))]
        word += tuple(rng.randint(1, 5) for _ in range(rng.randint(0 if word else 1, 3)))
        if word and len(word) <= 6:
            labels.add(word + (0,))
    return sorted(labels)


class _Model:
    """Each row's log-probability of every node's children given it: random, with a random share
    of each node's probability leaking to tokens no label goes on with (as an unsure base model's
    does), and now and then one child much likelier than the others (a sure fine-tune's). Records
    what the search reads, and checks it reads each node once, after its parent, while it searches."""

    def __init__(self, tree: LabelTree, rows: int, rng: random.Random):
        self.tree, self.given, self.read = tree, [], [set() for _ in range(rows)]
        for _ in range(rows):
            given = {}
            for v, children in enumerate(tree.children):
                weights = [rng.random() ** 3 for _ in children]
                if children and rng.random() < 0.3:
                    weights[rng.randrange(len(children))] += 10 * sum(weights)
                kept = 1 - rng.random() ** rng.choice([0.3, 1, 4])  # the share no other token takes
                given[v] = [math.log(max(w / sum(weights) * kept, 1e-300)) for w in weights]
            self.given.append(given)
        self.live = list(range(rows))
        self.steps = 0

    def first(self) -> list[list[float]]:
        return [given[0] for given in self.given]

    def exact(self, row: int) -> list[float]:
        """Every label's log-probability, summed along its path."""
        totals = [0.0] * sum(lab >= 0 for lab in self.tree.label)
        for v, lab in enumerate(self.tree.label):
            if lab >= 0:
                while v:
                    p = self.tree.parent[v]
                    totals[lab] += self.given[row][p][self.tree.children[p].index(v)]
                    v = p
        return totals

    def __call__(self, live: list[int], reads: list[list[int]]) -> list[list[list[float]]]:
        assert set(live) <= set(self.live) and live == sorted(live) and all(reads)  # a row that stopped never comes back
        self.live, self.steps = live, self.steps + 1
        for i, nodes in zip(live, reads):
            for v in nodes:
                assert v not in self.read[i] and self.tree.children[v]  # read once, and not a label's last node
                assert self.tree.parent[v] == 0 or self.tree.parent[v] in self.read[i]  # its parent first
                self.read[i].add(v)
        return [[self.given[i][v] for v in nodes] for i, nodes in zip(live, reads)]


@pytest.mark.parametrize("small_steps", [False, True])
def test_the_search_gives_full_scoring_s_argmax_and_confidence_on_random_trees(monkeypatch, small_steps):
    """Many random label sets (shared prefixes, unequal lengths, labels that end where others go
    on) and batches of random rows, unsure and sure: the argmax is always that of scoring every
    label, the confidence at most the tolerance below the exact one and never above it, and with no
    tolerance every label is scored exactly. Rows stop at different steps, and with the tolerance
    fewer nodes are read than the whole tree."""
    if small_steps:  # steps of a few tokens: a row needs many, and the widest row decides each
        monkeypatch.setattr(label_tree, "STEP_TOKENS", 24)
        monkeypatch.setattr(label_tree, "NEED_TOKENS", 12)
        monkeypatch.setattr(label_tree, "READ_AHEAD_TOKENS", 4)
    rng = random.Random(16)
    early, read, nodes = 0, 0, 0
    for trial in range(60):
        labels = _random_labels(rng, rng.randint(2, 40))
        tree = LabelTree(labels)
        batch = rng.choice([1, 2, 5, 12])
        for tolerance in (CONFIDENCE_TOLERANCE, 0.2, 0.9, 0.0):
            model = _Model(tree, batch, random.Random(trial))
            stats: dict[str, int] = {}
            found = run(tree, model.first(), model, tolerance, stats)
            early += stats["early"]
            for row, searched in enumerate(found):
                exact = label_choice(model.exact(row))
                got = searched.choice()
                assert got.best == exact.best
                assert exact.confidence - tolerance - 1e-9 <= got.confidence <= exact.confidence + 1e-9
                if tolerance == 0.0:
                    assert searched.unread == 0.0
                    assert [searched.totals[i] for i in range(len(labels))] == pytest.approx(model.exact(row))
                elif tolerance == CONFIDENCE_TOLERANCE:
                    read += len(model.read[row])
                    nodes += sum(1 for c in tree.children[1:] if c)
    assert early > 0  # rows of a batch stopped while others still searched
    assert read < nodes  # the tolerance let the search skip nodes


def test_random_label_sets_on_a_tiny_model_match_full_scoring(tiny, classify_task, monkeypatch):
    """Random label sets with shared prefixes on a real (tiny) model, a batch whose rows stop at
    different steps (small steps, so they take several): the same argmax as scoring each label's
    whole completion, and a confidence within the tolerance. The tiny model's logits are
    sharpened (its final norm scaled) so that its answers, and where each row stops, depend on
    the prompt more than the random model's do."""
    import copy

    sure = copy.deepcopy(tiny)
    with torch.no_grad():
        sure.model.model.norm.weight.mul_(20)
    monkeypatch.setattr(label_tree, "STEP_TOKENS", 48)
    monkeypatch.setattr(label_tree, "NEED_TOKENS", 24)
    rng = random.Random(7)
    stems = ["card", "cancel", "car", "account", "acc", "pay", "payment", "refund", "transfer", "trans"]
    early = 0
    for _ in range(3):
        labels = sorted({rng.choice(stems) + rng.choice(["", "_status", "_limit", "s", "_history_of_it"])
                         for _ in range(rng.randint(5, 25))})
        task = classify_task.model_copy(update={"labels": labels})
        scorer = _scorer(sure, task, batch_size=8)
        prompts = [scorer.prompt_ids(Example(id=str(i), input=t, target="")) for i, t in enumerate(TEXTS + TEXTS[:2])]
        stats: dict[str, int] = {}
        for prompt, found in zip(prompts, scorer.search(prompts, stats)):
            exact = label_choice(_naive_scores(sure.model, prompt, scorer.completions))
            assert found.choice().best == exact.best
            assert exact.confidence - CONFIDENCE_TOLERANCE - 1e-4 <= found.choice().confidence <= exact.confidence + 1e-4
        early += stats["early"]
    assert early > 0
