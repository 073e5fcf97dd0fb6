"""``taskfit init``: write a commented ``taskfit.yaml`` for one task kind, or for the task a data
file holds (``--from``)."""

from __future__ import annotations

import functools
import os
import re
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import yaml

from taskfit.config import DataSpec, EvalSpec, ProjectConfig, TaskKind, load_config, parse_config
from taskfit.data.infer import Proposal, budget_for, propose
from taskfit.errors import ConfigError

_COMMON = """\

model:
  # A name from `taskfit models` (the embedded default needs no download), a Hugging Face id,
  # or a local directory holding a transformers model.
  name: smollm2-135m

data:
  train: data/train.jsonl   # JSONL, CSV, TSV, Parquet or Excel (.xlsx)
  eval: null                # optional fixed eval file; otherwise held out from train
  format: auto              # auto | messages | prompt_completion | alpaca | sharegpt | preference | chat_log
  columns: null             # for tables: {input: text, target: label}; qa adds context: passage
  group_by: null            # a column or meta key (customer, thread): never split across train/eval;
                            # template: each layout (one shop's receipts) on one side
  eval_fraction: 0.15       # share held out (stratified by label for classify)
  seed: 0                   # same seed, same split
  max_train_examples: null  # cap the rows trained on (stratified); null = all
  max_eval_examples: null   # cap the held-out rows scored; null = all
  dedup:                    # look-alikes by MinHash LSH over character shingles: copies removed,
                            # different answers written in the text kept, other ones conflicts
    near: true
    shingle: 5
    num_perm: 128
    threshold: 0.8          # estimated Jaccard similarity
    containment: 0.9        # or the shorter text almost inside the longer (re-sends, quotes)
    template: 0.65          # first and last lines alike, digits masked: one layout (in the data card)
  privacy:
    action: redact          # redact (<EMAIL>) | mask (****om) | keep
    allow_secrets: false    # training refuses unredacted credentials unless this is true
    regions: [US, GB]       # a phone number with no phone word before it and no +prefix must be valid here
    phone_context: []       # words marking a phone number besides tel, phone, mobile, fax, call...: [H/P]
    keep_fields: []         # answer fields that are not personal data, kept verbatim (extract: [date])
  too_long: truncate        # rows over train.max_seq_length: truncate | drop
  max_line_bytes: 1000000   # a longer line is quarantined
  min_per_class: 10         # classify: warn about smaller classes

train:
  method: lora              # lora | qlora (4-bit base, CUDA only) | full | dpo (preference pairs)
  classify_head: false      # classify: a linear head over the text instead of a written label (lora only)
  head_pooling: mean        # what the head reads: mean of the hidden states | last (the last token's)
  lora:
    r: 16                   # rank; 8-64 is the usual range
    alpha: 32               # scale = alpha / r
    dropout: 0.0            # on the LoRA input; 0.05 costs 1.7x the training time on a CPU
    target_modules: all-linear   # or a list such as [q_proj, v_proj]
    use_dora: false         # weight-decomposed LoRA
    use_rslora: false       # scale = alpha / sqrt(r)
  qlora:
    quant_type: nf4         # nf4 | fp4
    double_quant: true
    compute_dtype: bfloat16
  dpo:
    beta: 0.1               # lower lets the model move further from the reference
    start_from: null        # an SFT adapter (or its run directory) to start from; null = the base
  learning_rate: null       # init writes the kind's measured rate; null = 2e-4 lora/qlora, 2e-5 full, 5e-5 dpo
  epochs: 1                 # passes over the training rows (the best validation's weights are kept)
  batch_size: 8
  max_seq_length: 256       # longer inputs are cut to fit, identically in training and evaluation
  warmup_ratio: 0.05
  validation_share: 0.1     # of the training rows, held back to validate on (never the eval split)
  validation_max_rows: 200
  eval_every: 50            # validate every N steps and at each epoch's end
  metric_sample: 48         # validation rows scored with the task's own metric (generating kinds decode them)
  early_stopping_patience: 3   # validations without improvement before stopping; 0 = never
  checkpoint_every: 50      # resumable checkpoints (taskfit train --resume); 0 = none
  keep_checkpoints: 2
  packing: false            # pack short rows into shared sequences (no cross-row attention)
  micro_batch_tokens: null  # tokens per forward pass; null = 128 on CPU (512 for a head), 8192 on a GPU
  gradient_checkpointing: false   # less memory, about a third slower
  device: auto              # auto | cpu | cuda
  dtype: auto               # auto = bfloat16 on capable GPUs; float32 on CPU, bf16 products where native
  threads: null             # CPU threads; null = every core
  seed: 0

baselines:
  few_shot_k: 4             # training examples shown in the few-shot prompt
  retriever: hybrid         # bm25 | embeddings (MiniLM, offline) | hybrid (both, rank-fused)
  documents: null           # qa: folder of .txt/.md files for the RAG baseline
  chunk_words: 120
  top_k: 3
  endpoint: null            # a hosted model to beat, e.g.:
  #   base_url: https://api.openai.com/v1
  #   model: gpt-4o-mini
  #   api_key_env: OPENAI_API_KEY
  #   price_per_million_input_tokens: 0.15
  #   price_per_million_output_tokens: 0.60
  #   timeout_s: 60
  #   concurrency: 4        # requests in flight

eval:
  # Acceptance thresholds, shares in [0, 1]: minima, except unsupported_rate,
  # invented_field_rate and ece, which are maxima. The scorecard marks each pass or fail.
  thresholds: {thresholds}
  generation_sample: 24     # classify, extract: rows decoded freely to measure how often raw output is valid
  confidence_threshold: null   # classify: below it the answer becomes `fallback`
  fallback: null            # e.g. needs_human
  constrained: true         # extract: decode under the JSON schema
  max_new_tokens: 96
  batch_size: 8             # rows answered together (same answers, faster); cost from this throughput
  latency_rows: 16          # rows answered again one at a time: a lone request's latency p50/p95
  max_rows: null            # evaluate on the first N held-out rows only
  style_sample: 32          # generate: base-model replies the style classifier learns to tell apart
  price_per_hour: 0.0       # USD per hour of this machine, for cost per 1,000 queries
  queries_per_month: null   # expected traffic: advise gives the month's cost and the break-even
  forgetting:               # what the fine-tune cost outside the task: base and fine-tune on a general probe
    enabled: true
    items: 64               # probe questions read (at most 128; each ~80 tokens per model)
    max_drop: 0.05          # the verdict warns when the share answered right falls more than this
"""


def template(kind: TaskKind, values: dict[str, Any] | None = None, header: Sequence[str] = ()) -> str:
    """The commented ``taskfit.yaml`` text for a task kind.

    ``values`` maps dotted keys of the template (``task.labels``, ``data.columns``) to the values
    to write in place of the template's, keeping every comment; ``header`` lines are written
    first, as comments. Raises ``AssertionError`` if the text would not read back as ``values``.
    """
    from taskfit.tasks import get_task, kinds

    try:
        task = get_task(kind)
    except ValueError:
        raise ConfigError(f"--task: got {kind!r}; allowed: {', '.join(kinds())}") from None
    thresholds = "".join(f"\n    {k}: {v}" for k, v in task.thresholds.items()) or " {}"
    text = task.template + _COMMON.replace("{thresholds}", thresholds)
    own = getattr(task, "train", {})  # the kind's measured training settings (optional)
    values = {**{f"train.{key}": value for key, value in own.items()}, **(values or {})}
    for dotted, value in values.items():
        text = _set_value(text, dotted, value)
    doc = yaml.safe_load(text)
    for dotted, value in values.items():
        got = functools.reduce(lambda d, k: d[k], dotted.split("."), doc)
        if got != value:
            raise AssertionError(f"template: {dotted} reads back as {got!r}, not {value!r}")
    return "".join(f"# {line}\n" if line else "#\n" for line in header) + text


def _set_value(text: str, dotted: str, value: Any) -> str:
    """``text`` with the template's value at ``dotted`` replaced by ``value`` in YAML.

    The key's line and its continuation lines (indented deeper: a folded prompt, a wrapped list,
    a nested mapping) are replaced; the comment at the end of the key's line is kept when the new
    value fits on that line, and the comments around it are untouched."""
    lines = text.split("\n")
    parts = dotted.split(".")
    at = -1
    for depth, part in enumerate(parts):
        indent = " " * (2 * depth)
        for i in range(at + 1, len(lines)):
            line = lines[i]
            if line.startswith(indent + part + ":"):
                at = i
                break
            body = line.lstrip(" ")
            if body and not body.startswith("#") and len(line) - len(body) < 2 * depth:
                raise AssertionError(f"template: no key {dotted}")  # left the parent section
        else:
            raise AssertionError(f"template: no key {dotted}")
    indent = 2 * (len(parts) - 1)
    end = at + 1
    while end < len(lines) and lines[end].strip() and len(lines[end]) - len(lines[end].lstrip(" ")) > indent:
        end += 1
    scalar = not isinstance(value, (dict, list))
    dumped = yaml.safe_dump({parts[-1]: value}, sort_keys=False, allow_unicode=True, width=96,
                            default_flow_style=False if scalar else None).rstrip("\n").split("\n")
    comment = re.search(r"\s+(#\s.*)$", lines[at]) if end == at + 1 else None
    if comment and len(dumped) == 1:  # keep the comment, in its column when there is room
        column = comment.start(1) - indent
        dumped[0] = dumped[0].ljust(column) if len(dumped[0]) + 2 <= column else dumped[0] + "  "
        dumped[0] += comment.group(1)
    return "\n".join(lines[:at] + [" " * indent + d for d in dumped] + lines[end:])


def init_project(directory: Path, kind: TaskKind, force: bool = False) -> Path:
    """Write ``directory/taskfit.yaml`` for ``kind``; refuse to overwrite unless ``force``."""
    path = directory / "taskfit.yaml"
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists", hint="pass --force to overwrite it")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data").mkdir(exist_ok=True)
    path.write_text(template(kind), encoding="utf-8")
    load_config(path)  # what we write must validate
    return path


# What an inferred project says until its owner writes their own: plain words, true of any data.
_PROPOSED_WORDS: dict[str, tuple[str, str]] = {
    "classify": ("Every row gets the label a careful person would give it.",
                 "Classify the text. Reply with exactly one of these labels: {labels}."),
    "extract": ("Every field the text holds is extracted correctly, and nothing is invented.",
                "Extract the fields the text mentions as one JSON object; leave out the others. "
                "Fields: {fields}."),
    "qa": ("Answers are correct and come from the context, and it says so when the context is silent.",
           "Answer the question using only the context. If the context does not contain the answer, "
           "say exactly: {refusal}."),
    "generate": ("Replies read like the reference replies in the data.", "Reply to the message."),
    "dpo": ("Replies are the kind people preferred in the pairs.", "Write the assistant's next reply."),
}
# Fewer training rows a label than this, and an inferred classify project trains the fine-tune that
# writes the label (classify_head: false) instead of the kind's classification head: a head learns
# each label from its rows alone, where the written label starts from what its name means. Measured
# with the same split, epochs (2) and learning rate (1e-3): clinc150, about 7 rows a label (1,000
# rows, 151 intents): head 48.0%, written label 83.8%; a 123-row support CSV of 5 labels, about 21
# a label (a newcomer's walkthrough, 18 held out): head 27.8%, written label 72.2% (McNemar p=0.008);
# the quickstart's tickets, about 54 a label: head 93.3%, written label 68.7% (one epoch). 40 lies
# between the last two; it is not fitted.
HEAD_MIN_ROWS_PER_LABEL = 40
# Above this many labels, an inferred classify prompt does not list them ({labels}): clinc150's
# 151 labels take about 600 of the embedded model's tokens, so no row fits the default 256.
LISTED_LABELS = 30
# Base names that say nothing about the task: the project is then named after the folder.
_GENERIC_STEMS = {"train", "training", "data", "dataset", "all", "full", "export", "rows"}


def _project_name(file: Path, directory: Path | None = None) -> str:
    """``task.name`` (the served model's name): the file's stem, or where that says nothing (``train``,
    ``data``) the project's folder (else the file's)."""
    generic = file.stem.lower() in _GENERIC_STEMS
    stem = file.stem if not generic else (directory.resolve().name if directory else file.resolve().parent.name)
    return re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-") or "my-task"


# What `init --from` proposes for preference pairs: measured by bench/dpo_hh_rlhf.py (run 6) and the
# README's hh_rlhf_harmless walkthrough at the method's default (docs/benchmarks.md).
DPO_LEARNING_RATE = 1e-3


def proposed_yaml(proposal: Proposal, train: str, directory: Path | None = None) -> str:
    """The commented ``taskfit.yaml`` for ``proposal``, with ``data.train`` set to ``train``: the
    kind's template with the proposed values in place and the reasons at the top."""
    kind = proposal.kind
    reasons = list(proposal.reasons)
    success, prompt = _PROPOSED_WORDS["dpo" if proposal.method == "dpo" else kind]
    values: dict[str, Any] = {"task.name": _project_name(proposal.path, directory), "task.success": success,
                              "task.system_prompt": prompt, "data.train": train,
                              "data.format": proposal.format, "data.columns": proposal.columns}
    if kind == "classify":
        values["task.labels"] = sorted(proposal.labels)
        per_label = proposal.rows * (1 - DataSpec.model_fields["eval_fraction"].default) / len(proposal.labels)
        if per_label < HEAD_MIN_ROWS_PER_LABEL:
            values["train.classify_head"] = False
            reasons.append(f"about {per_label:.0f} training rows a label: the fine-tune learns to write the label "
                           f"(classify_head: false), which starts from what each label's name means; a "
                           f"classification head, trained from {HEAD_MIN_ROWS_PER_LABEL} rows a label up, "
                           f"learns each label from its rows alone (docs/training.md)")
        if len(proposal.labels) > LISTED_LABELS:
            values["task.system_prompt"] = "Classify the text. Reply with its label."
            reasons.append(f"{len(proposal.labels)} labels: the system prompt does not list them, since that "
                           "would cost every row about 4 tokens per label; the fine-tune learns them from "
                           "the rows, while the prompt-only baseline, which cannot, is then no fair test")
    if proposal.system_prompt is not None:
        values["task.system_prompt"] = proposal.system_prompt
    if kind == "extract":
        values["task.schema"] = proposal.schema
        if proposal.system_prompt is None:
            values["task.system_prompt"] = extract_prompt(proposal.schema or {})
    if kind == "generate" and proposal.reply_words is not None:
        # The references set the house rules' lengths, so every one of them complies; a phrase
        # the template forbids stays forbidden unless the references themselves use it.
        values["task.reply.min_words"], values["task.reply.max_words"] = proposal.reply_words
        values["task.reply.must_not_include"] = [p for p in _house_phrases() if not proposal.phrases.get(p)]
        # an opening or sign-off every reference writes is the house style's: every reply must too
        values["task.reply.must_include"] = proposal.reply_phrases
        used = [f"'{p}' ({proposal.phrases[p]} rows)" for p in _house_phrases() if proposal.phrases.get(p)]
        shared = ", ".join(f"'{p}'" for p in proposal.reply_phrases)
        reasons.append(f"house rules from the reference replies: {proposal.reply_words[0]} to "
                       f"{proposal.reply_words[1]} words" + (f"; every one writes {shared}" if shared else "")
                       + (f"; not forbidding {', '.join(used)}, which they use" if used else ""))
    if kind == "extract" and proposal.json_style != "spaced":
        values["task.json_style"] = proposal.json_style
    if proposal.max_new_tokens is not None:
        values["eval.max_new_tokens"] = proposal.max_new_tokens
    if proposal.max_seq_length is not None:
        values["train.max_seq_length"] = proposal.max_seq_length
    if proposal.regions is not None:
        values["data.privacy.regions"] = proposal.regions
    if proposal.method != "lora":
        values["train.method"] = proposal.method
    if proposal.method == "dpo":
        values["train.learning_rate"] = DPO_LEARNING_RATE
        values["train.epochs"] = 1  # what was measured; the generate kind's 3 epochs are for replies (SFT)
        reasons.append(f"preference pairs: learning rate {DPO_LEARNING_RATE:g}; on hh_rlhf_harmless (1,000 pairs, one "
                       "epoch, SmolLM2-135M) it moved the held-out pairs' preference for the chosen reply "
                       "(48.3% to 53.0%, p=0.008) where DPO's usual 5e-5 left it where it was (docs/benchmarks.md)")
    skipped = (f"; {proposal.unreadable} more line(s) not readable, first {proposal.first_unreadable}: data check "
               "quarantines them" if proposal.unreadable else "")
    header = [f"Proposed by `taskfit init --from {proposal.path}` ({proposal.rows} rows read{skipped}):",
              *(f"- {reason}" for reason in reasons),
              *textwrap.wrap("Check it with `taskfit data check` on this folder; " + still_to_write(proposal), 88), ""]
    return template(kind, values, header)


def extract_prompt(schema: dict[str, Any]) -> str:
    """The proposed extract instruction, saying what the schema requires: every key (with null
    where the text does not give one, when the schema allows null), some keys, or none."""
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    if required and len(required) == len(properties):
        nullable = any("null" in (p.get("type") if isinstance(p.get("type"), list) else [p.get("type")])
                       for p in properties.values())
        return ("Extract these fields from the text as one JSON object with every key: {fields}."
                + (" Write null for a field the text does not give." if nullable else ""))
    if required:
        return ("Extract the fields the text mentions as one JSON object. Fields: {fields}. Always write "
                f"{', '.join(required)}; leave out the others when the text does not give them.")
    return _PROPOSED_WORDS["extract"][1]


def still_to_write(proposal: Proposal) -> str:
    """What is left to write in the proposed taskfit.yaml before training."""
    if proposal.system_prompt is not None:
        return ("write task.success in your own words before training (task.system_prompt is the rows' own: "
                "change it only with theirs).")
    return "write task.success and task.system_prompt in your own words before training."


def _house_phrases() -> list[str]:
    """The phrases the generate template forbids (``task.reply.must_not_include``)."""
    from taskfit.tasks import get_task

    return list(yaml.safe_load(get_task("generate").template)["task"]["reply"]["must_not_include"])


def propose_from(file: Path, input: str | None = None, target: str | None = None,
                 context: str | None = None, task: str | None = None) -> Proposal:
    """:func:`taskfit.data.infer.propose` with the phrases the generate template forbids watched."""
    return propose(file, input=input, target=target, context=context, task=task, watch=_house_phrases())


def fitted_budget(proposal: Proposal, task: Any, tokenizer: Any) -> tuple[int, int, str] | None:
    """(eval.max_new_tokens to write, the longest answer's tokens with the end of turn, its
    file:line) when the template's budget is too small for the longest of ``proposal``'s answers
    as ``task`` trains them (extract, qa, generate); None when it holds them, or for classify
    (a label's tokens are its budget)."""
    from taskfit.tasks import get_task

    kind = get_task(task.kind)
    if kind.scores_labels or not proposal.longest:
        return None
    counted = [(len(tokenizer(kind.target_text(task, value), add_special_tokens=False)["input_ids"]) + 1, where)
               for where, value in proposal.longest]
    tokens, where = max(counted, key=lambda c: c[0])
    default = EvalSpec.model_fields["max_new_tokens"].default
    if tokens <= default:
        return None
    return budget_for(tokens), tokens, where


def _proposed(proposal: Proposal, train: str, directory: Path | None, tokenizer: Any) -> tuple[Proposal, str]:
    """The proposal and its taskfit.yaml, the answer budget fitted to the answers when a
    ``tokenizer`` counts them (:func:`fitted_budget`), and the sequence length to the prompts where
    the budget grew or no row would fit the template's even cut (:func:`_uncuttable`; labels'
    kinds keep the template's: a label is its own budget)."""
    text = proposed_yaml(proposal, train, directory)
    if tokenizer is None:
        return proposal, text
    from taskfit.tasks import get_task

    config = parse_config(yaml.safe_load(text))
    fitted = fitted_budget(proposal, config.task, tokenizer)
    if fitted is None and (get_task(config.task.kind).scores_labels or
                           not _uncuttable(config.task, config.eval.max_new_tokens, tokenizer,
                                           config.train.max_seq_length)):
        return proposal, text
    budget, reasons = config.eval.max_new_tokens, []
    if fitted is not None:
        budget, tokens, where = fitted
        default = EvalSpec.model_fields["max_new_tokens"].default
        reasons.append(f"eval.max_new_tokens {budget}: the longest answer takes {tokens} tokens with the end of "
                       f"turn ({where}), which the default {default} would cut; {budget} holds it with a quarter "
                       "to spare")
    # the prompts with the room every row keeps for its answer: where the budget grew, or where no
    # row fits even with its input cut (a schema of many fields makes a long system prompt)
    longest = _longest_prompt(proposal, config.task, budget, tokenizer)
    limit = config.train.max_seq_length
    length = None
    if longest is not None and longest[0] > limit:
        # every row keeps room for the answer budget: the longest prompt with it, to a multiple of 32
        # (as data check proposes); the template's length would cut those prompts' inputs
        needed, at = longest
        length = -(-needed // 32) * 32
        reasons.append(f"train.max_seq_length {length}: the longest prompt ({at}) with the room every row keeps "
                       f"for the answer (eval.max_new_tokens) takes {needed} tokens; {limit} would cut its input")
    if not reasons:
        return proposal, text
    proposal = replace(proposal, max_new_tokens=budget if fitted is not None else proposal.max_new_tokens,
                       max_seq_length=length, reasons=[*proposal.reasons, *reasons])
    return proposal, proposed_yaml(proposal, train, directory)


def _uncuttable(task: Any, budget: int, tokenizer: Any, limit: int) -> bool:
    """Whether a row cannot fit ``limit`` tokens even with its input cut to nothing: the template,
    the system prompt and the room kept for an answer of ``budget`` tokens take it all (data check
    then says training would stop at the first row)."""
    from taskfit.data.scan import TokenCounter

    ((_, _, fixed, _),) = TokenCounter(tokenizer, task, room=budget).lengths([("", "", None, True, "")])
    return fixed + 1 >= limit


def _longest_prompt(proposal: Proposal, task: Any, budget: int, tokenizer: Any) -> tuple[int, str] | None:
    """(tokens, file:line) of the longest of ``proposal``'s prompts as a row needs them: rendered
    with the system prompt and the room kept for an answer of ``budget`` tokens."""
    from taskfit.data.scan import TokenCounter

    if not proposal.prompts:
        return None
    counter = TokenCounter(tokenizer, task, room=budget)
    needed = counter.lengths([(text, "", None, False, "") for _, text in proposal.prompts])
    return max((n[0], where) for n, (where, _) in zip(needed, proposal.prompts))


def init_from_file(directory: Path, file: Path, input: str | None = None, target: str | None = None,
                   context: str | None = None, task: str | None = None,
                   force: bool = False, tokenizer: Any = None) -> tuple[Path, Proposal]:
    """Propose a task from ``file`` and write it as ``directory/taskfit.yaml``; refuse to overwrite
    unless ``force``. With the model's ``tokenizer``, eval.max_new_tokens is sized to hold the
    longest answer (:func:`fitted_budget`).

    ``data.train`` is the file's path relative to ``directory`` (absolute only where none exists,
    as across Windows drives); the file is not copied: a copy doubles a large file on disk, and
    rows added to the original later would silently never be trained on."""
    path = directory / "taskfit.yaml"
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists", hint="pass --force to overwrite it")
    proposal = propose_from(file, input, target, context, task)
    try:
        train = Path(os.path.relpath(file.resolve(), directory.resolve())).as_posix()
    except ValueError:
        train = str(file.resolve())
    proposal, text = _proposed(proposal, train, directory, tokenizer)
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    load_config(path)  # what we write must validate
    return path, proposal


def inferred_config(file: Path, input: str | None = None, target: str | None = None,
                    context: str | None = None, task: str | None = None,
                    tokenizer: Any = None) -> tuple[ProjectConfig, Proposal]:
    """The config ``init --from`` would write for ``file``, in memory, with ``data.train`` relative
    to the file's own folder (the root to check it from)."""
    proposal = propose_from(file, input, target, context, task)
    proposal, text = _proposed(proposal, file.name, None, tokenizer)
    return parse_config(yaml.safe_load(text), source=f"the config inferred from {file}"), proposal
