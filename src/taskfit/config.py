"""``taskfit.yaml`` → typed, validated config.

Every field is documented where it is declared. Unknown keys are refused (a typo must not be
silently ignored), and every error names the key, the value and what is allowed, in one line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from taskfit.errors import ConfigError

TaskKind = str  # a kind registered in taskfit.tasks: classify, extract, qa, generate, or one a user adds


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReplyRules(_Spec):
    """generate: the house rules every reply is checked against (format compliance)."""

    min_words: int | None = Field(None, ge=0, description="At least this many words.")
    max_words: int | None = Field(None, ge=1, description="At most this many words.")
    must_include: list[str] = Field(default_factory=list, description="Phrases every reply contains "
                                                                      "(case-insensitive).")
    must_not_include: list[str] = Field(default_factory=list, description="Phrases no reply contains "
                                                                          "(case-insensitive), e.g. 'as an AI'.")
    patterns: list[str] = Field(default_factory=list, description="Regular expressions every reply matches.")

    @model_validator(mode="after")
    def _valid(self) -> "ReplyRules":
        for pattern in self.patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"task.reply.patterns: {pattern!r} is not a valid regular expression ({exc})")
        if self.min_words is not None and self.max_words is not None and self.min_words > self.max_words:
            raise ValueError("task.reply: min_words is above max_words")
        return self


# ``{name}`` in task.system_prompt is filled from the task itself, so a value is written once in
# taskfit.yaml (the classify template lists its labels only under task.labels). ``{{name}}``
# stands for a literal ``{name}``. Other braces (a JSON example in the prompt) are left alone.
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}|\{(\w+)\}")
_PLACEHOLDERS = {"labels": "classify: task.labels, comma-separated", "refusal": "qa: task.refusal",
                 "fields": "extract: the property names of task.schema, comma-separated"}


def literal_prompt(text: str) -> str | None:
    """``text`` as a task.system_prompt that renders as ``text`` itself (each ``{name}`` written
    ``{{name}}``), or None where it cannot be written so (it holds ``{{name}}`` already)."""
    escaped = _PLACEHOLDER.sub(lambda m: "{{" + (m.group(1) or m.group(2)) + "}}", text)
    rendered = _PLACEHOLDER.sub(lambda m: "{" + m.group(1) + "}" if m.group(1) else m.group(0), escaped)
    return escaped if rendered == text else None


class TaskSpec(_Spec):
    kind: TaskKind = Field(description="What the model must do: classify, extract, qa or generate (or a "
                                       "kind registered with taskfit.tasks.register).")
    name: str = Field("my-task", description="A short name, used in run directory names and as the "
                      "served model's name; `init --from` proposes the file's name, or the project "
                      "folder's where the file's says nothing (train, data).")
    success: str = Field(description="One sentence: what success means for this task.")
    system_prompt: str = Field(description="The instruction every example is rendered with; {labels} "
                                           "stands for task.labels (classify), {refusal} for task.refusal (qa), "
                                           "{fields} for task.schema's property names (extract).")
    labels: list[str] | None = Field(None, description="classify: the fixed taxonomy.")
    schema_: dict[str, Any] | None = Field(
        None, alias="schema", description="extract: the JSON schema every answer must satisfy.")
    json_style: Literal["spaced", "compact"] = Field(
        "spaced", description="extract: how an answer's JSON is written, in the training targets and in "
        "what constrained decoding allows: spaced ({\"a\": 1, \"b\": null}, json.dumps's default) or compact "
        "({\"a\":1,\"b\":null}: no space after ',' or ':', fewer tokens an answer). `init --from` proposes "
        "the form the data's answers are written in.")
    refusal: str = Field(
        "not enough evidence in the provided documents",
        description="qa: the answer when the context does not hold one.")
    reply: ReplyRules = Field(default_factory=ReplyRules, description="generate: house rules for replies.")

    @model_validator(mode="after")
    def _kind_needs(self) -> "TaskSpec":
        from taskfit.tasks import get_task  # the kinds import this module

        get_task(self.kind).check_spec(self)
        self.system_text  # an unknown or inapplicable {placeholder} is a config error
        return self

    @property
    def system_text(self) -> str:
        """The system prompt as every example is rendered with it: ``system_prompt`` with its
        ``{labels}``, ``{refusal}`` and ``{fields}`` filled in. Raises ``ValueError`` naming task.system_prompt
        for any other ``{name}``."""
        properties = (self.schema_ or {}).get("properties")
        values = {"labels": ", ".join(self.labels) if self.labels else None,
                  "refusal": self.refusal if self.kind == "qa" else None,
                  "fields": ", ".join(properties) if self.kind == "extract" and isinstance(properties, dict) else None}

        def fill(match: re.Match) -> str:
            if match.group(1) is not None:
                return "{" + match.group(1) + "}"
            name = match.group(2)
            if name not in values:
                allowed = "; ".join(f"{{{k}}} ({v})" for k, v in _PLACEHOLDERS.items())
                raise ValueError(f"task.system_prompt: unknown placeholder {{{name}}}; allowed: {allowed}; "
                                 f"write {{{{{name}}}}} for a literal {{{name}}}")
            if values[name] is None:
                raise ValueError(f"task.system_prompt: {{{name}}} is for {_PLACEHOLDERS[name]}, and "
                                 f"task.kind is {self.kind}")
            return values[name]

        return _PLACEHOLDER.sub(fill, self.system_prompt)


class ModelSpec(_Spec):
    name: str = Field(
        "smollm2-135m",
        description="A name from `taskfit models`, a Hugging Face id, or a local directory.")


class ColumnMap(_Spec):
    """Which columns of a table (CSV, TSV, Parquet, an Excel sheet, or flat JSONL) play which part."""

    input: str = Field(description="Column with the user's text (the user turn; the question for qa).")
    target: str = Field(description="Column with the answer: label, fields object, answer or reply.")
    context: str | None = Field(None, description="qa: column with the passage to answer from.")
    system: str | None = Field(None, description="Optional column with a per-row system prompt.")
    id: str | None = Field(None, description="Optional column with a stable row id.")


class DedupSpec(_Spec):
    near: bool = Field(True, description="Find look-alike rows with MinHash LSH (datasketch): a copy "
                                         "(same answer) is removed as a near-duplicate, a different answer "
                                         "written in the row's own text is kept as a distinct example, "
                                         "any other different answer is a conflict; and group rows by layout.")
    shingle: int = Field(5, ge=1, le=32, description="Characters per shingle.")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations.")
    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="Estimated Jaccard similarity "
                             "at or above which two inputs look alike (near-identical); two free answers "
                             "(generate replies, preference answers) are near-identical at this Jaccard "
                             "similarity of their words.")
    containment: float = Field(0.9, gt=0.0, le=1.0, description="Share of the shorter input's "
                               "shingles found in the longer one at or above which they look alike "
                               "(re-sends, quoted replies); for free answers, the share of the shorter "
                               "one's words.")
    copy_words: int = Field(3, ge=0, description="Look-alike inputs with the same answer are a copy "
                            "(removed) only when one of them has at most this many words the other lacks (a "
                            "re-print header, a greeting, a changed spelling); when each has more words of its "
                            "own, they are one template filled in twice (two receipts of one shop, each with "
                            "its own items) and both are kept. The same bar decides whether the text can "
                            "explain a different answer: only look-alikes within it can conflict.")
    template: float = Field(0.65, gt=0.0, lt=1.0, description="Estimated Jaccard similarity of inputs "
                            "(their first and last five lines, digits masked) at or above which rows share "
                            "a layout (a template: one shop's receipts, one sender's invoices); the data card "
                            "counts rows per layout, and data.group_by: template splits by it.")


class PrivacySpec(_Spec):
    action: Literal["redact", "mask", "keep"] = Field(
        "redact", description="What prepare does with personal data and secrets: typed "
        "placeholders (<EMAIL>), masks (****89), or keep them.")
    allow_secrets: bool = Field(
        False, description="Allow training on data with unredacted credentials. Leave false.")
    regions: list[str] = Field(
        ["US", "GB"], description="ISO 3166 region codes (GB, not UK) whose national phone numbers count "
        "without other evidence: a number with no phone word before it on its line and no +country prefix "
        "is a phone number only when phonenumbers calls it valid in one of these regions. Name the regions "
        "your data comes from (a Malaysian shop's receipts: MY); [] counts only labelled or +prefixed numbers. "
        "`taskfit init --from` puts first the regions of the data's +prefixed numbers.")
    phone_context: list[str] = Field(
        default_factory=list, description="Words that mark the number after them (on the same line, within "
        "40 characters) as a phone number, besides tel, phone, mobile, cell, fax, call, text, whatsapp, "
        "office, contact... and the common European ones (Telefon, Handy, Mobil, Téléphone, Tél, Portable, "
        "Teléfono, Móvil, Telefono, Cellulare...): e.g. H/P.")

    @field_validator("regions")
    @classmethod
    def _known_regions(cls, value: list[str]) -> list[str]:
        import phonenumbers

        codes = [code.strip().upper() for code in value]
        for code in codes:
            if code not in phonenumbers.SUPPORTED_REGIONS:
                also = " (the United Kingdom is GB)" if code == "UK" else ""
                raise ValueError(f"data.privacy.regions: {code!r} is not a region phonenumbers knows{also}; "
                                 "use ISO 3166 alpha-2 codes such as US, GB, DE, FR, MY, SG, AU")
        return codes

    @field_validator("phone_context")
    @classmethod
    def _words(cls, value: list[str]) -> list[str]:
        words = [w.strip() for w in value]
        if not all(words):
            raise ValueError("data.privacy.phone_context: an empty word would mark every number as a phone number")
        return words

    keep_fields: list[str] = Field(
        default_factory=list,
        description="Answer fields that are not personal data (extract: schema fields, e.g. [date, "
                    "total]; qa and generate: [answer]): redaction keeps their values verbatim in the "
                    "answer and wherever they occur in the input, so the answer stays in the text. "
                    "`data check` names the fields whose answers redaction would change.")

    @model_validator(mode="after")
    def _keeps_something(self) -> "PrivacySpec":
        if self.keep_fields and self.action == "keep":
            raise ValueError("data.privacy.keep_fields: action is keep, so nothing is redacted and there "
                             "is nothing to keep; remove keep_fields or set action to redact or mask")
        return self


class DataSpec(_Spec):
    train: str = Field(description="Training data file (JSONL, CSV, TSV, Parquet or Excel .xlsx), relative to the project.")
    eval: str | None = Field(None, description="Optional fixed eval file; else split from train.")
    format: Literal["auto", "messages", "prompt_completion", "alpaca", "sharegpt", "preference", "chat_log"] = Field(
        "auto", description="Row shape; auto recognises each row by its keys (chat_log: a logged chat "
                            "completion, request and response). Ignored with columns.")
    columns: ColumnMap | None = Field(None, description="Column mapping for tables and flat JSONL.")
    group_by: str | None = Field(
        None, description="A column or meta key (customer, thread, article): rows sharing a value "
                          "never straddle train and eval. `template` (reserved) groups rows by layout "
                          "(data.dedup.template), to measure how the model does on layouts it has not seen.")
    eval_fraction: float = Field(0.15, ge=0.05, le=0.5, description="Share held out for evaluation.")
    seed: int = Field(0, description="Seed of the split and of sub-sampling.")
    max_train_examples: int | None = Field(
        None, gt=0, description="Use at most this many training rows (stratified sub-sample).")
    max_eval_examples: int | None = Field(
        None, gt=0, description="Score at most this many held-out rows (stratified sub-sample).")
    dedup: DedupSpec = DedupSpec()
    privacy: PrivacySpec = PrivacySpec()
    too_long: Literal["truncate", "drop"] = Field(
        "truncate", description="Rows over train.max_seq_length: cut the input to fit, or drop them.")
    max_line_bytes: int = Field(1_000_000, gt=0, description="A longer line is quarantined.")
    min_per_class: int = Field(10, ge=1, description="classify: warn about classes with fewer rows.")
    synthetic: Literal["exclude", "include"] = Field(
        "exclude", description="include: train on the real rows plus the synthetic drafts a person accepted "
        "(`taskfit data synth`, then `taskfit review import`: data/synthetic/accepted.jsonl) and any rows of "
        "data.train marked meta.synthetic; exclude: real rows only. Held-out rows are real either way, and the "
        "same: an include run is evaluated as its own candidate (fine-tuned-synthetic) beside the real-only one.")


class LoraSpec(_Spec):
    r: int = Field(16, gt=0, description="Rank of the LoRA update.")
    alpha: int = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="Dropout on the LoRA input (PEFT's default, 0). On a CPU every adapted layer then draws a "
                    "random mask as large as its input each pass: 0.05 trained the quickstart's head at 85-94 "
                    "tokens/s on 2 cores against 145-162 at 0 (docs/benchmarks.md).")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Modules that get adapters; all-linear = every projection.")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA): slower, sometimes better.")
    use_rslora: bool = Field(False, description="Rank-stabilised scaling, alpha / sqrt(r).")
    layers: int | None = Field(
        None, gt=0, description="Adapters on the top N decoder layers only (empty: every layer). The layers "
                                "below stay frozen, so backward stops above them; a classification head "
                                "(classify_head) reads their output once per row and reuses it in later "
                                "epochs and validations.")


class QLoraSpec(_Spec):
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type of the frozen base.")
    double_quant: bool = Field(True, description="Quantise the quantisation constants too.")
    compute_dtype: Literal["bfloat16", "float16"] = Field(
        "bfloat16", description="Dtype the 4-bit weights are computed in.")


class DpoSpec(_Spec):
    beta: float = Field(0.1, gt=0.0, le=10.0, description="Strength of the pull towards the reference "
                                                          "model (lower: move further).")
    loss: Literal["sigmoid", "ipo"] = Field(
        "sigmoid", description="sigmoid: DPO's logistic loss; ipo: IPO's squared loss (Azar et al. 2023) on "
                               "per-token log-ratios, which pulls the chosen-minus-rejected margin to "
                               "1/(2*beta) instead of pushing it without bound.")
    start_from: str | None = Field(
        None, description="An SFT adapter directory (or the run directory holding one) to start from "
                          "and to use as the reference; empty = the base model.")


_DEFAULT_LR = {"lora": 2e-4, "qlora": 2e-4, "full": 2e-5, "dpo": 5e-5}


class TrainSpec(_Spec):
    method: Literal["lora", "qlora", "full", "dpo"] = Field(
        "lora", description="lora (default), qlora (4-bit base, CUDA only), full (every weight), or "
                            "dpo (preference pairs, through a LoRA adapter).")
    lora: LoraSpec = LoraSpec()
    qlora: QLoraSpec = QLoraSpec()
    dpo: DpoSpec = DpoSpec()
    learning_rate: float | None = Field(
        None, gt=0.0, lt=1.0,
        description="Peak learning rate (AdamW); empty = 2e-4 for lora/qlora, 2e-5 for full, 5e-5 for dpo.")
    epochs: float = Field(1.0, gt=0.0, le=100.0, description="Passes over the training rows.")
    batch_size: int = Field(8, gt=0, le=4096, description="Rows per optimiser step.")
    max_seq_length: int = Field(
        256, ge=16, le=131072,
        description="Tokens per rendered example; longer inputs are cut to fit, in training and "
                    "evaluation alike.")
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0, description="Share of steps warming up.")
    seed: int = Field(0, description="Seed of adapter initialisation and batch order.")
    validation_share: float = Field(
        0.1, ge=0.0, lt=0.5,
        description="Share of the training rows held back to validate during training (never the "
                    "eval split, which stays untouched for the final comparison); 0 = no validation.")
    validation_max_rows: int = Field(200, ge=1, description="At most this many validation rows.")
    eval_every: int = Field(50, ge=0, description="Validate every N optimiser steps (and at each "
                                                  "epoch's end; not N steps in when the epoch's end is "
                                                  "fewer than N/2 steps later); 0 = only at epoch ends.")
    metric_sample: int = Field(
        48, ge=0, description="Validation rows scored with the task's own metric at each validation "
                              "(accuracy for classify, field F1 for extract, answer F1 for qa, ROUGE-L "
                              "for generate, preference accuracy for dpo); 0 = loss only.")
    early_stopping_patience: int = Field(
        3, ge=0, description="Stop after this many validations without improvement; 0 = never stop early.")
    checkpoint_every: int = Field(
        50, ge=0, description="Write a resumable checkpoint every N steps (atomically); 0 = none. A run of "
                              "fewer steps writes none: interrupted, it trains again from step 0.")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept on disk (the newest).")
    loss_per: Literal["token", "row"] = Field(
        "token", description="What a fine-tune's answer loss averages over: every answer token of the batch "
                             "(token: a long answer weighs more, as transformers and TRL average it), or each "
                             "row's own answer tokens first, then the rows (row: a ten-token qa refusal weighs "
                             "what a three-token answer does). The written answer's loss (lora, qlora, full), "
                             "not dpo nor a classification head, which count a row once already.")
    packing: bool = Field(
        False, description="Pack several short rows into one sequence (attention never crosses "
                           "rows). Off by default: length-grouped batches already waste little.")
    micro_batch_tokens: int | None = Field(
        None, ge=16,
        description="Tokens per forward pass: a batch runs in pieces of at most this many (padded) "
                    "tokens with their gradients summed, so memory follows this number, not "
                    "batch_size, and the update is the same. Empty = 128 on CPU (256: ~20% faster, "
                    "~30% more memory), 512 on CPU for a classification head (no vocabulary-sized "
                    "output; 1.4x the speed of 128), 8192 on a GPU.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, about 30% slower.")
    fsdp: bool = Field(
        False, description="With several processes (accelerate launch), shard the model across them "
                           "(FSDP, one decoder layer per unit) instead of keeping a whole copy in each: "
                           "for models that do not fit one GPU. No effect in a single process.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = bfloat16 on GPUs that support it; on a CPU float32 weights, with "
                            "the forward passes of training, validation and evaluation under bfloat16 "
                            "autocast where the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX, as torch "
                            "reports it; 4.5x float32's products on the reference CPU, while emulated bf16 "
                            "is ~11x slower); `taskfit serve DIR` serves in the same precision. float32 = "
                            "float32 throughout.")
    threads: int | None = Field(None, ge=1, description="CPU threads; empty = every core (shared among "
                                                        "data-parallel processes). More threads than cores "
                                                        "warn: torch slows down.")
    report_to: Literal["none", "mlflow", "tensorboard"] = Field(
        "none", description="Also send the run's figures to an experiment tracker (the run directory "
                            "stays the record): mlflow (one MLflow run per taskfit run, named by the run id, "
                            "in MLFLOW_TRACKING_URI or else sqlite:///<project>/mlruns.sqlite), tensorboard "
                            "(event files in <run>/tensorboard/), or none. Needs the tracking extra: "
                            "pip install -e '.[tracking]'.")
    classify_head: bool = Field(
        False, description="classify: train LoRA and a linear head over the text's hidden states "
                           "(train.head_pooling; PEFT's sequence-classification task) on the labels, instead "
                           "of teaching the model to write a label: the input text alone (no system prompt), "
                           "one pass per row, a softmax over every label as the confidence. Evaluated as the candidate "
                           "fine-tuned-head, beside the generative fine-tune's latest evaluation. method "
                           "lora only.")
    head_pooling: Literal["mean", "last"] = Field(
        "mean", description="classify_head: what the head reads: the mean of the text's final hidden states "
                            "(mean) or the last token's (last, transformers' sequence-classification form, "
                            "which its text-classification pipeline loads as is). On the quickstart's tickets, "
                            "one epoch: mean 83.3%, last 54.0% (docs/training.md).")

    @model_validator(mode="after")
    def _head_fits(self) -> "TrainSpec":
        if self.loss_per == "row" and (self.method == "dpo" or self.classify_head):
            raise ValueError("train.loss_per: row averages a written answer's loss per row; "
                             + ("dpo scores each pair once already" if self.method == "dpo" else
                                "a classification head scores each row once already")
                             + ": leave it at token")
        if not self.classify_head:
            return self
        if self.method != "lora":
            raise ValueError(f"train.classify_head: trains a LoRA adapter with its head; method {self.method} "
                             f"is not supported with it (use method: lora, or set classify_head: false to "
                             f"train with method {self.method})")
        if self.packing:
            raise ValueError("train.packing: a classification head reads one row per sequence; set packing: "
                             "false with classify_head")
        if self.fsdp:
            raise ValueError("train.fsdp: not supported with classify_head (data parallel is); set fsdp: false")
        return self

    @property
    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else _DEFAULT_LR[self.method]




class EndpointSpec(_Spec):
    """Any OpenAI-compatible chat endpoint: the stronger hosted model to beat (baselines.endpoint), or
    the model that drafts synthetic examples (synth.endpoint)."""

    base_url: str = Field(description="e.g. https://api.openai.com/v1 or http://localhost:8000/v1")
    model: str = Field(description="The model name the endpoint expects, e.g. gpt-4o-mini, or a hosted "
                                   "fine-tune's id (ft:gpt-4o-mini-2024-07-18:org::abc123).")
    add_instruction: bool = Field(
        True, description="Append what the task kind requires of an answer (the labels, the schema, the "
                          "refusal) to the system prompt, as a general model needs told; false sends the "
                          "rows' system prompt alone, as a hosted fine-tune trained on it was asked.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the key "
                                                           "(the key itself never goes in this file).")
    price_per_million_input_tokens: float = Field(0.0, ge=0.0, description="USD per 1M prompt tokens.")
    price_per_million_output_tokens: float = Field(0.0, ge=0.0, description="USD per 1M completion tokens.")
    timeout_s: float = Field(60.0, gt=0.0, description="Per request.")
    concurrency: int = Field(4, ge=1, le=64, description="Requests in flight at once (answers are "
                                                        "still written in order).")


class BaselineSpec(_Spec):
    few_shot_k: int = Field(4, ge=1, le=32, description="Training examples shown in the few-shot prompt.")
    retriever: Literal["bm25", "embeddings", "hybrid"] = Field(
        "hybrid", description="How few-shot examples and RAG chunks are found: BM25 words, MiniLM "
                              "embeddings (offline), or both fused by reciprocal rank.")
    documents: str | None = Field(
        None, description="qa: a folder of .txt/.md documents, in UTF-8, for the retrieval-augmented baseline "
                          "(relative to taskfit.yaml; a file in another encoding, or empty, is warned of); empty = "
                          "use each row's own context only.")
    chunk_words: int = Field(120, ge=10, le=2000, description="RAG: words per chunk (chunks overlap by a fifth).")
    top_k: int = Field(3, ge=1, le=20, description="RAG: chunks put in the prompt, whole (the lowest-ranked "
                       "dropped, with a warning, only where they take the prompt over 2048 tokens).")
    endpoint: EndpointSpec | None = Field(None, description="An OpenAI-compatible endpoint to compare against.")


class ForgettingSpec(_Spec):
    """The forgetting check (``taskfit eval``, ``taskfit run``): the base and the fine-tuned model
    on a general probe set that ships with taskfit (reading-comprehension items cut from SQuAD 2.0,
    CC BY-SA 4.0; taskfit/probes/SOURCE.md), one teacher-forced pass per item, and how far the
    fine-tuned model's next-token distribution moved from the base's there."""

    enabled: bool = Field(True, description="Measure what the fine-tune cost outside the task when a "
                                            "fine-tuned run is evaluated (about 40 CPU-seconds for "
                                            "SmolLM2-135M at 64 items; docs/evaluation.md); cached "
                                            "with the run's evaluation.")
    items: int = Field(64, ge=8, le=128, description="Probe items scored (the first N of the 128 the "
                                                     "probe holds): more narrows the interval; each costs "
                                                     "a forward pass of about 80 tokens per model.")
    max_drop: float = Field(0.05, ge=0.0, le=1.0, description="The verdict warns when the fine-tuned "
                            "model answers a share of the probe's questions right (greedy, teacher-forced) "
                            "more than this below the base's (0.05 = 5 points).")


class EvalSpec(_Spec):
    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Acceptance thresholds by metric (one the task kind reports: accuracy, macro_f1, "
                    "field_f1, valid_rate, f1, unsupported_rate, rouge_l, format_compliance, ...), each a "
                    "share in [0, 1]: a minimum, except for metrics where lower is better "
                    "(unsupported_rate, invented_field_rate, ece), where it is a maximum.")
    generation_sample: int = Field(
        24, ge=0,
        description="classify and extract (with eval.constrained): rows decoded freely (unconstrained) "
                    "to measure the share of valid answers (labels; JSON that fits the schema).")
    confidence_threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="classify: below this confidence a prediction becomes `fallback`; the scorecard "
                    "reports coverage against accuracy.")
    fallback: str | None = Field(None, description="classify: the answer below the confidence threshold "
                                                   "(e.g. needs_human, or a label such as oos).")
    constrained: bool = Field(True, description="extract: decode under the JSON schema (always valid); "
                                                "false measures the unconstrained model.")
    max_new_tokens: int = Field(96, ge=1, le=4096, description="Tokens generated per answer at most.")
    batch_size: int = Field(
        8, ge=1, le=256,
        description="Rows a local model answers together in evaluation, faster: in float32 the same answers as "
                    "one at a time; under bfloat16 autocast a decoded row can differ (the scorecard warns, "
                    "with the share). The cost per 1,000 queries comes from this pass's throughput; the "
                    "latency a lone request waits is timed apart (eval.latency_rows).")
    latency_rows: int = Field(
        16, ge=0, le=4096,
        description="Held-out rows each local candidate answers again one at a time, after the batched "
                    "pass, for the latency p50/p95 of a lone request (and a check that they get the "
                    "batched answers). 0 = the batched pass's time per row stands for latency.")
    style_sample: int = Field(
        32, ge=0, description="generate: training rows the base model answers, as the 'not our style' "
                              "side of the style-match classifier; 0 = no style score.")
    max_rows: int | None = Field(None, ge=1, description="Evaluate on the first N held-out rows only "
                                                          "(quick looks; the scorecard says so).")
    price_per_hour: float = Field(0.0, ge=0.0, description="USD per hour of the machine a local "
                                                           "candidate runs on, for cost per 1,000 queries "
                                                           "(and, in `taskfit advise`, what training costs).")
    queries_per_month: int | None = Field(
        None, ge=1, description="Queries a month you expect to serve: `taskfit advise` gives the month's cost "
                                "of the approach it recommends and of the hosted endpoint (baselines.endpoint), "
                                "and in how many months training the fine-tune pays for itself against the "
                                "endpoint; empty = not shown.")
    forgetting: ForgettingSpec = ForgettingSpec()

    @model_validator(mode="after")
    def _shares(self) -> "EvalSpec":
        for key, value in self.thresholds.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"eval.thresholds.{key}: must be a share between 0 and 1, got {value}")
        if self.confidence_threshold is not None and not self.fallback:
            raise ValueError("eval.fallback: a confidence_threshold needs a fallback answer (e.g. needs_human)")
        return self


class AdviseSpec(_Spec):
    """``taskfit advise``: how much it measures before it advises. The defaults keep it to a
    fraction of ``taskfit run`` on a CPU (docs/advise.md has the measured times)."""

    eval_rows: int = Field(
        40, ge=10,
        description="Held-out rows every candidate is scored on for the advice: the first N of the split, as "
                    "eval.max_rows takes them (the whole split when it is smaller). More rows: narrower "
                    "intervals, longer scoring.")
    curve_rows: int = Field(
        48, ge=16,
        description="Training rows of the largest learning-curve run: a stratified sample of the training "
                    "split (all of it when it is smaller). Each curve run trains by the train: settings, like "
                    "`taskfit train`.")
    curve_points: list[float] = Field(
        [0.25, 0.5, 1.0],
        description="Shares of curve_rows the learning-curve runs train on, one run each, rising to 1.0; at "
                    "least three (the curve has three parameters).")
    resamples: int = Field(
        200, ge=50, le=5000,
        description="Bootstrap resamples of the held-out rows behind the learning curve's band and the "
                    "interval of the rows needed to reach the threshold.")

    @field_validator("curve_points")
    @classmethod
    def _rising_to_one(cls, value: list[float]) -> list[float]:
        if len(value) < 3 or any(not 0.0 < v <= 1.0 for v in value) or value != sorted(set(value)) \
                or value[-1] != 1.0:
            raise ValueError(f"advise.curve_points: got {value}; give at least three distinct shares in (0, 1], "
                             "rising, the last 1.0 (e.g. [0.25, 0.5, 1.0])")
        return value


_DURATION = r"^\s*\d+(\.\d+)?\s*[mhdw]\s*$"  # 30m, 12h, 1d, 2w


class MonitorSpec(_Spec):
    """``taskfit monitor``: how the request log is cut into windows and when a window raises an
    alert. The tests follow the monitoring tools' practice (Evidently's defaults): two-sample tests
    against a small training set, distances against a large one, and a domain classifier for text."""

    window: str = Field("1d", pattern=_DURATION, description="Length of one window of traffic: a number "
                        "and m, h, d or w (30m, 12h, 1d, 2w). Alerts read the latest window.")
    since: str | None = Field(None, description="Only requests since then: an ISO date or time "
                              "(2026-01-31, 2026-01-31T08:00; local time unless it has an offset) or a "
                              "span back from now (2d, 12h); empty = every request in the log.")
    min_window_rows: int = Field(
        100, ge=10, description="Answered requests a window needs before its drift tests count; fewer are "
                                "shown but never alert (a small window must not cry wolf).")
    p_value: float = Field(0.01, gt=0.0, lt=1.0, description="Significance level of each two-sample test "
                           "(Kolmogorov-Smirnov, chi-square). 0.01, not 0.05: several signals are tested "
                           "per window, and each would cry wolf once in twenty windows at 0.05.")
    large_reference: int = Field(1000, ge=10, description="Reference rows above which distances replace "
                                 "the tests (Wasserstein for numbers, Jensen-Shannon for categories), as "
                                 "Evidently does: on many rows every difference is significant.")
    distance_threshold: float = Field(0.1, gt=0.0, description="Large references: drift when the "
                                      "Wasserstein distance (in reference standard deviations) or the "
                                      "Jensen-Shannon distance exceeds this.")
    psi_warn: float = Field(0.1, gt=0.0, description="Population stability index of a category mix (label mix, "
                            "refusals, empty fields) from which the change is shown as moderate (below: stable).")
    psi_alert: float = Field(0.2, gt=0.0, description="PSI from which a category mix's change is "
                             "significant; a mix drifts when its test finds a difference and its PSI "
                             "reaches this.")
    domain_permutations: int = Field(30, ge=10, le=1000, description="Content drift: how often the domain "
                                     "classifier is refitted with shuffled labels to learn the ROC AUC of chance.")
    domain_percentile: float = Field(99.0, gt=50.0, lt=100.0, description="Content drift when the domain "
                                     "classifier's ROC AUC exceeds this percentile of the AUCs of chance (a "
                                     "normal fitted to the shuffled AUCs). 99, not Evidently's 95: at 95, "
                                     "traffic like the training data drifted in 3 of 40 windows "
                                     "(docs/monitoring.md).")
    domain_min_auc: float = Field(0.55, ge=0.5, lt=1.0, description="...and at least this ROC AUC (on "
                                  "large windows chance is a narrow band, and a barely separable "
                                  "difference is not worth an alert).")
    domain_max_rows: int = Field(1000, ge=50, description="Rows of each side (training, window) the "
                                 "domain classifier reads at most (a seeded sample).")
    max_error_rate: float = Field(0.05, ge=0.0, le=1.0, description="Alert when more than this share of "
                                  "a window's requests failed on the server (status 500 and above).")
    max_latency_p95_ms: float | None = Field(None, gt=0.0, description="Alert when a window's 95th "
                                             "percentile latency exceeds this (ms); empty = no latency alert.")
    max_fallback_rate: float | None = Field(None, ge=0.0, le=1.0, description="classify: alert when more "
                                            "than this share of a window's answers fell back (below the "
                                            "confidence threshold); empty = no fallback alert.")
    seed: int = Field(0, description="Seed of the domain classifier's folds, shuffles and samples.")

    @model_validator(mode="after")
    def _bands(self) -> "MonitorSpec":
        if self.psi_warn > self.psi_alert:
            raise ValueError("monitor.psi_warn: must not be above monitor.psi_alert")
        return self


class ReviewSpec(_Spec):
    """``taskfit review queue`` and ``taskfit data from-log``: which served requests a person
    reviews, and how the reviewed ones become training and recent held-out rows."""

    queue_size: int = Field(50, ge=1, description="Requests one `taskfit review queue` picks (--n).")
    random_share: float = Field(0.2, ge=0.0, le=1.0, description="Share of the queue drawn uniformly at "
                                "random from the traffic (marked random), so the reviewed random sample "
                                "estimates production quality without the bias of the targeted picks.")
    clusters: int = Field(8, ge=1, description="Groups (k-means on TF-IDF) the targeted picks are taken "
                          "from in turn, so one kind of request cannot fill the queue.")
    recent_share: float = Field(0.2, ge=0.0, lt=1.0, description="Share of the reviewed requests "
                                "`taskfit data from-log` keeps as the recent held-out set (chosen by a hash "
                                "of the request's normalised text, so a request and its re-sends stay on one "
                                "side run after run); the rest "
                                "become training rows.")
    seed: int = Field(0, description="Seed of the random sample and the clustering.")


class RetrainSpec(_Spec):
    """``taskfit retrain``: what the retrained version becomes once it is evaluated."""

    promote: Literal["candidate", "production", "none"] = Field(
        "candidate", description="Where the retrained version goes: candidate (NAME@candidate, no gate: to "
                                 "try it in shadow or as a canary), production (NAME@production, through the "
                                 "promotion gate), or none (registered with its figures, no alias moved). "
                                 "`taskfit retrain --promote` overrides it.")
    name: str | None = Field(None, description="The registered name the retrained version is promoted under, "
                                               "and the one `taskfit serve DIR` serves; empty = task.name, or the "
                                               "one name the registry holds when task.name is not registered "
                                               "(`taskfit promote DIR --as triage`).")


class SynthSpec(_Spec):
    """``taskfit data synth``: how drafts of new examples are asked of a model. Each request asks for
    one draft, shows a few real training rows, and is decoded under a JSON schema of the draft."""

    endpoint: EndpointSpec | None = Field(
        None, description="The OpenAI-compatible endpoint that drafts (`taskfit serve` works); empty = "
                          "baselines.endpoint.")
    quotas: Literal["even", "balance"] = Field(
        "even", description="classify: how `--n` drafts are shared among task.labels: even (the remainder to "
                            "the labels with the fewest training rows), or balance (to the labels with the "
                            "fewest training rows first, so that the counts after drafting are as even as they "
                            "can be).")
    shots: int = Field(
        3, ge=0, le=16,
        description="Real training rows shown in each request (classify: rows of the label asked for; held-out "
                    "rows never).")
    paraphrase: float = Field(
        0.25, ge=0.0, le=1.0,
        description="Share of the requests that ask to rewrite the input of one real training row in other "
                    "words (its answer kept) instead of drafting a new example.")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="Sampling temperature of each request.")
    seed: int = Field(
        0, description="Seed of the first request, and of which rows are shown and rewritten; request k of a "
                       "batch has seed + (drafts asked in earlier batches) + k.")
    max_tokens: int = Field(512, ge=16, le=8192, description="Tokens one draft may take.")


class ProjectConfig(_Spec):
    task: TaskSpec
    model: ModelSpec = ModelSpec()
    data: DataSpec
    train: TrainSpec = TrainSpec()
    baselines: BaselineSpec = BaselineSpec()
    eval: EvalSpec = EvalSpec()
    monitor: MonitorSpec = MonitorSpec()
    review: ReviewSpec = ReviewSpec()
    retrain: RetrainSpec = RetrainSpec()
    synth: SynthSpec = SynthSpec()
    advise: AdviseSpec = AdviseSpec()

    @model_validator(mode="after")
    def _thresholds_of_the_kind(self) -> "ProjectConfig":
        from taskfit.tasks import get_task

        known = get_task(self.task.kind).scoring.metrics
        for key in self.eval.thresholds:
            if key not in known:
                raise ValueError(f"eval.thresholds.{key}: not a metric of a {self.task.kind} task; "
                                 f"allowed: {', '.join(sorted(known))}")
        return self

    @model_validator(mode="after")
    def _keep_fields_of_the_kind(self) -> "ProjectConfig":
        from taskfit.tasks import get_task
        from taskfit.tasks.base import answer_fields

        names = answer_fields(get_task(self.task.kind), self.task)
        if names is None:  # the answers' fields come from the data (a schema without properties)
            return self
        for name in self.data.privacy.keep_fields:
            if name not in names:
                allowed = ", ".join(names) if names else f"none, {self.task.kind} answers are never redacted"
                raise ValueError(f"data.privacy.keep_fields: {name!r} is not a field of {self.task.kind} "
                                 f"answers; allowed: {allowed}")
        return self

    @model_validator(mode="after")
    def _head_of_the_kind(self) -> "ProjectConfig":
        from taskfit.tasks import get_task

        if self.train.classify_head and not get_task(self.task.kind).scores_labels:
            raise ValueError(f"train.classify_head: a head answers with one of task.labels; task.kind is "
                             f"{self.task.kind} (classify only)")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", by_alias=True), sort_keys=False,
                              allow_unicode=True)


def _describe(err: dict[str, Any]) -> str:
    """One line for one pydantic error: the dotted key, the value, and what is allowed."""
    key = ".".join(str(p) for p in err["loc"] if p not in ("function-after",))
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        return f"{key}: unknown key (check the spelling; `taskfit init` writes every valid key)"
    if kind == "missing":
        return f"{key}: required but missing"
    if kind == "literal_error":
        allowed = err.get("ctx", {}).get("expected", "")
        return f"{key}: got {value!r}; allowed: {allowed}"
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    shown = repr(value) if not isinstance(value, dict) else "a mapping"
    return f"{key}: got {shown}; {err['msg'][0].lower()}{err['msg'][1:]}"


def parse_config(data: Any, source: str = "taskfit.yaml") -> ProjectConfig:
    """Validate a parsed YAML document; raise :class:`ConfigError` naming every bad key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with task, model, data, train and eval "
                          f"sections, got {type(data).__name__}")
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors()]
        raise ConfigError(f"{source}: " + "; ".join(lines),
                          hint="fix the key(s) named above; `taskfit init` shows a valid file") from None


def load_config(path: Path) -> ProjectConfig:
    """Read and validate ``taskfit.yaml`` at ``path``."""
    if path.is_dir():
        path = path / "taskfit.yaml"
    if not path.exists():
        raise ConfigError(f"{path}: no such file", hint="create one with `taskfit init DIR`")
    from taskfit.data.read import read_text

    try:
        data = yaml.safe_load(read_text(path, ConfigError))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return parse_config(data, source=str(path))
