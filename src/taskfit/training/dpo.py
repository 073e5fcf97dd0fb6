"""Direct preference optimisation on (prompt, chosen, rejected) pairs, through a LoRA adapter.

The pairs are rendered by the same :func:`taskfit.rendering.render` as every other path, and the
loss reads logits only at the answers' positions, like SFT. The reference model is the policy as
it starts (the base, or the SFT adapter named by ``train.dpo.start_from``); its log-probabilities
do not change during training, so they are computed once, before the first step, instead of
keeping a second model in memory and running it at every step.

The task's own figure, the share of held-out pairs where the model prefers ``chosen`` (preference
accuracy), is measured before and after. The model prefers the answer with the higher mean
log-probability per answer token. Summed log-probabilities are reported too, but they mostly
measure length: on HH-RLHF harmless pairs the embedded model's summed figure picks the shorter
answer in about nine pairs of ten whatever they say, and a reply's summed log-probability falls
by tens of nats per sentence, far more than preference training moves it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from taskfit.config import TaskSpec, TrainSpec
from taskfit.errors import DataError
from taskfit.records import Example, PreferencePair
from taskfit.rendering import Rendered, render
from taskfit.training.batching import chunk_by_tokens, collate, length_grouped_batches, micro_batch_tokens
from taskfit.training.forward import completion_logps
from taskfit.training.loop import LoopResult, StepStats, fit
from taskfit.training.tracking import Tracker
from taskfit.training.methods import make_trainable
from taskfit.training.parallel import Parallel


def _cut(tokenizer: Any, text: str, tokens: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= tokens else tokenizer.decode(ids[:tokens])


def _keep_tail(tokenizer: Any, prompt: str, drop: int) -> str:
    """The prompt without its first ``drop`` tokens: in a dialogue the latest turns, which the
    replies answer, are the ones to keep."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[min(drop, len(ids) - 1):])


def featurize_pairs(tokenizer: Any, task: TaskSpec, pairs: Sequence[PreferencePair],
                    max_length: int) -> list[tuple[Rendered, Rendered]]:
    """Each pair as (chosen, rejected) token ids under the same prompt. A pair too long to fit
    loses the start of its prompt (the oldest turns of a dialogue), and an answer too long to
    fit beside what remains is cut to half of ``max_length`` tokens (as TRL's
    ``max_completion_length`` does), so one long row does not stop the run."""
    out = []
    for pair in pairs:
        where = pair.source or f"row id {pair.id}"
        prompt, answers = pair.prompt, [pair.chosen, pair.rejected]

        def sides(prompt: str, answers: list[str], limit: int | None = None) -> list[Rendered]:
            return [render(tokenizer, task, Example(id=pair.id, input=prompt, target=a, system=pair.system),
                           target=a, max_length=limit) for a in answers]

        whole = sides(prompt, answers)
        over = max(len(r.ids) for r in whole) - max_length
        if over <= 0:  # the common case: it fits as it is
            out.append((whole[0], whole[1]))
            continue
        prompt_tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if over + 16 > prompt_tokens:  # the prompt alone cannot give enough: cut the answers
            answers = [_cut(tokenizer, a, max_length // 2) for a in answers]
            over = max(len(r.ids) for r in sides(prompt, answers)) - max_length
        if over > 0:
            prompt = _keep_tail(tokenizer, prompt, over + 2)
        try:
            rendered = sides(prompt, answers, max_length)
        except ValueError as exc:
            raise DataError(f"{where}: {exc}", hint="raise train.max_seq_length") from None
        out.append((rendered[0], rendered[1]))
    return out


def _flatten(pairs: Sequence[tuple[Rendered, Rendered]]) -> list[Rendered]:
    return [side for pair in pairs for side in pair]


def pair_logps(model: Any, tokenizer: Any, pairs: Sequence[tuple[Rendered, Rendered]],
               parallel: Parallel | None = None) -> Any:
    """[n, 2] summed log-probabilities of (chosen, rejected) for each pair."""
    batch = collate(_flatten(pairs), tokenizer.pad_token_id)
    return completion_logps(model, batch, 2 * len(pairs), parallel).view(-1, 2)


def all_pair_logps(model: Any, tokenizer: Any, pairs: Sequence[tuple[Rendered, Rendered]],
                   batch_size: int, parallel: Parallel | None = None,
                   advance: Callable[..., None] | None = None) -> Any:
    """[n, 2] summed answer log-probabilities (chosen, rejected), ``batch_size`` pairs a pass;
    ``advance(n)`` is told of each pass's pairs (a progress bar)."""
    import torch

    model.eval()
    parts = []
    with torch.no_grad():
        for i in range(0, len(pairs), batch_size):
            parts.append(pair_logps(model, tokenizer, pairs[i:i + batch_size], parallel).cpu())
            if advance is not None:
                advance(len(parts[-1]))
    return torch.cat(parts) if parts else torch.zeros(0, 2)


def dpo_loss(policy: Any, reference: Any, beta: float, loss: str = "sigmoid", lengths: Any = None) -> Any:
    """The preference loss over a batch of [n, 2] summed answer log-probabilities (chosen, rejected).

    ``sigmoid`` (DPO): -log σ(β[(π_c − ref_c) − (π_r − ref_r)]).
    ``ipo`` (Azar et al. 2023, eq. 17): (h − 1/(2β))², with h the same difference of log-ratios
    but each side's log-ratio divided by its answer tokens (``lengths``, [n, 2]). TRL's
    DPOTrainer averages per token for loss_type="ipo" too (and only for it): the squared loss on
    summed log-ratios grows with answer length, and the IPO authors' reported results use the
    per-token form."""
    import torch.nn.functional as F

    if loss == "ipo":
        ratios = (policy - reference) / lengths.to(policy.device).clamp(min=1)
        return ((ratios[:, 0] - ratios[:, 1] - 1 / (2 * beta)) ** 2).mean()
    margin = (policy[:, 0] - reference[:, 0]) - (policy[:, 1] - reference[:, 1])
    return -F.logsigmoid(beta * margin).mean()


def answer_lengths(pairs: Sequence[tuple[Rendered, Rendered]]) -> Any:
    """[n, 2] answer tokens of (chosen, rejected) for each pair."""
    import torch

    return torch.tensor([[len(c.completion), len(r.completion)] for c, r in pairs],
                        dtype=torch.float32).view(-1, 2)


def preference_accuracy(logps: Any, lengths: Any | None = None) -> float:
    """Share of pairs whose chosen answer the model prefers: the higher mean log-probability per
    answer token with ``lengths``, the higher summed log-probability without."""
    if not len(logps):
        return float("nan")
    scores = logps / lengths if lengths is not None else logps
    return float((scores[:, 0] > scores[:, 1]).float().mean())


class DpoObjective:
    metric_name = "preference_accuracy"

    def __init__(self, model: Any, tokenizer: Any, task: TaskSpec, spec: TrainSpec, parallel: Parallel,
                 train: Sequence[PreferencePair], validation: Sequence[PreferencePair] = (),
                 advance: Callable[..., None] | None = None):
        self.model, self.tokenizer, self.spec = model, tokenizer, spec
        self.parallel = parallel  # under FSDP, the root the model runs through
        self.pairs = featurize_pairs(tokenizer, task, train, spec.max_seq_length)
        self.val_pairs = featurize_pairs(tokenizer, task, validation, spec.max_seq_length)
        self.validation_rows = len(self.val_pairs)
        # The reference: the policy before its first step.
        self.ref = all_pair_logps(model, tokenizer, self.pairs, spec.batch_size, parallel, advance)
        self.val_ref = all_pair_logps(model, tokenizer, self.val_pairs, spec.batch_size, parallel, advance)
        self.val_lengths = answer_lengths(self.val_pairs)
        self.lengths = answer_lengths(self.pairs)  # IPO's per-token average
        # Length grouping and micro-batch sizes go by the longer side of each pair.
        self._longer = [max(c, r, key=lambda x: len(x.ids)) for c, r in self.pairs]

    def batches(self, epoch: int) -> list[list[int]]:
        return length_grouped_batches(self._longer, self.spec.batch_size, self.spec.seed, epoch)

    def units(self, batch: list[int]) -> int:
        return len(batch)

    def chunks(self, batch: list[int]) -> list[list[int]]:
        # A pair is read as two rows; its size is twice its longer side.
        return chunk_by_tokens(batch, [2 * len(r.ids) for r in self._longer], micro_batch_tokens(self.spec))

    def loss_sum(self, chunk: list[int]) -> StepStats:
        flat = collate(_flatten([self.pairs[i] for i in chunk]), self.tokenizer.pad_token_id)
        policy = completion_logps(self.model, flat, 2 * len(chunk), self.parallel).view(-1, 2)
        ref = self.ref[chunk].to(policy.device)
        loss = dpo_loss(policy, ref, self.spec.dpo.beta, self.spec.dpo.loss, self.lengths[chunk])
        return StepStats(loss_sum=loss * len(chunk),
                         read_tokens=flat.read_tokens, loss_tokens=len(flat.targets))

    def validate(self) -> dict[str, float | None]:
        logps = all_pair_logps(self.model, self.tokenizer, self.val_pairs, self.spec.batch_size, self.parallel)
        loss = float(dpo_loss(logps, self.val_ref, self.spec.dpo.beta, self.spec.dpo.loss, self.val_lengths))
        return {"val_loss": loss, "metric": preference_accuracy(logps, self.val_lengths)}


def train_dpo(model: Any, tokenizer: Any, task: TaskSpec, spec: TrainSpec,
              train: Sequence[PreferencePair], validation: Sequence[PreferencePair] = (), *,
              held_out: Sequence[PreferencePair] = (), run_dir: Path | None = None,
              resume_from: Path | None = None, adapter: Path | None = None,
              on_step: Callable[[int, int, float], None] | None = None,
              on_validate: Callable[[dict[str, Any]], None] | None = None,
              status: Callable[[str], None] | None = None, tracker: Tracker | None = None,
              on_read: Callable[[str], None] | None = None) -> tuple[Any, LoopResult, dict[str, float] | None]:
    """DPO through a LoRA adapter (a fresh one, or ``adapter`` continued). Returns the model, what
    happened, and the preference accuracy on ``held_out`` before and after (None without it).
    ``on_read`` is told how far the passes over the pairs before and after training are
    ("pairs read before training 240/1270"), for the progress shown while they run."""
    from taskfit.training.fsdp import join  # imports torch: not at import time

    model = make_trainable(model, spec, adapter)
    parallel = join(model, spec)
    say = status or (lambda message: None)
    held = featurize_pairs(tokenizer, task, held_out, spec.max_seq_length)
    say(f"scoring {len(held)} held-out pairs before training, and the reference log-probabilities "
        f"of {len(train) + len(validation)} training and validation pairs (once)")
    advance = _counter("pairs read before training", len(held) + len(train) + len(validation), on_read)
    before = all_pair_logps(model, tokenizer, held, spec.batch_size, parallel, advance) if held else None
    objective = DpoObjective(model, tokenizer, task, spec, parallel, train, validation, advance)
    result = fit(model, objective, spec, len(objective.pairs), parallel=parallel,
                 run_dir=run_dir, resume_from=resume_from, on_step=on_step, on_validate=on_validate, tracker=tracker)
    if not held:
        return model, result, None
    say(f"scoring {len(held)} held-out pairs after training")
    after = all_pair_logps(model, tokenizer, held, spec.batch_size, parallel,
                           _counter("held-out pairs scored", len(held), on_read))
    lengths = answer_lengths(held)
    if run_dir is not None and parallel.ranks.main:
        write_held_out_pairs(run_dir / "held_out_pairs.csv", [p.id for p in held_out], before, after, lengths)
    return model, result, held_out_report(before, after, lengths)


def _counter(what: str, total: int, on_read: Callable[[str], None] | None) -> Callable[..., None] | None:
    """``advance(n)`` that tells ``on_read`` "WHAT done/total"."""
    if on_read is None:
        return None
    done = [0]

    def advance(n: int = 1) -> None:
        done[0] += n
        on_read(f"{what} {done[0]}/{total}")
    return advance


def write_held_out_pairs(path: Path, ids: Sequence[str], before: Any, after: Any, lengths: Any) -> None:
    """Each held-out pair's answer lengths and log-probabilities before and after, to see which
    pairs moved and recompute any figure on a subset."""
    import csv

    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["id", "chosen_tokens", "rejected_tokens", "chosen_logp_before", "rejected_logp_before",
                      "chosen_logp_after", "rejected_logp_after"])
        for i, pid in enumerate(ids):
            out.writerow([pid, int(lengths[i, 0]), int(lengths[i, 1]),
                          *(f"{float(x):.4f}" for x in (*before[i], *after[i]))])
    tmp.replace(path)


def held_out_report(before: Any, after: Any, lengths: Any) -> dict[str, float]:
    """Preference accuracy (per answer token) before and after on the same held-out pairs, with
    which way pairs moved and the exact McNemar p-value of that change (only pairs that flipped
    change the figure); the same by summed log-probability, with the share of pairs (of unequal
    lengths) where the summed figure picked the shorter answer before training; and the
    implicit-reward accuracy DPO itself optimises (the chosen side's log-probability rose more
    than the rejected side's). ``lengths``: [n, 2] answer tokens of (chosen, rejected)."""
    from taskfit.stats import mcnemar

    def prefers(logps: Any) -> Any:
        return logps[:, 0] > logps[:, 1]

    was, now = prefers(before / lengths), prefers(after / lengths)
    summed_was, summed_now = prefers(before), prefers(after)
    unequal = lengths[:, 0] != lengths[:, 1]
    shorter = (lengths[:, 0] < lengths[:, 1])[unequal]
    moved = after - before
    return {"preference_accuracy_before": float(was.float().mean()),
            "preference_accuracy_after": float(now.float().mean()),
            "flipped_to_chosen": int((~was & now).sum()), "flipped_to_rejected": int((was & ~now).sum()),
            "p_value": mcnemar(now.float().tolist(), was.float().tolist()),
            "summed_preference_accuracy_before": float(summed_was.float().mean()),
            "summed_preference_accuracy_after": float(summed_now.float().mean()),
            "summed_flipped_to_chosen": int((~summed_was & summed_now).sum()),
            "summed_flipped_to_rejected": int((summed_was & ~summed_now).sum()),
            "summed_picks_shorter": float((summed_was[unequal] == shorter).float().mean()) if len(shorter)
            else float("nan"),
            "reward_accuracy": float((moved[:, 0] > moved[:, 1]).float().mean()),
            "pairs": len(before)}
