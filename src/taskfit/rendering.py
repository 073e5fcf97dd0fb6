"""The one function that turns an example into tokens, for training, evaluation and serving.

A prompt rendered one way in training and another way at inference is the most reported cause of
"my fine-tune outputs gibberish". Every path in taskfit calls :func:`render`, so the prompt tokens
a model is trained on are the tokens it is later asked with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

from taskfit.config import TaskSpec
from taskfit.errors import ChatTemplateError, PromptTooLongError
from taskfit.records import Example


@dataclass(frozen=True)
class Rendered:
    """Token ids of one rendered example.

    ``ids[:n_prompt]`` is the prompt (system + user turns + the assistant header); the rest, when a
    target was given, is the assistant's answer up to and including the end-of-turn token: the
    only tokens that carry loss in training and the ones scored in label ranking. ``messages`` are
    the prompt's chat messages after the cut: what a client of an exported model (Ollama, say,
    which applies the chat template but cuts nothing) sends to be asked as training asked.
    """

    ids: list[int]
    n_prompt: int
    truncated: bool = False
    messages: list[dict[str, str]] = dataclasses.field(default_factory=list)
    text: str | None = None  # the text as shown, after any cut: the context for qa, else the input

    @property
    def completion(self) -> list[int]:
        return self.ids[self.n_prompt:]


def user_text(example: Example, text: str | None = None) -> str:
    """The user turn: the input (or ``text``, a cut version of it), after the context for qa."""
    text = example.input if text is None else text
    return text if example.context is None else f"Context:\n{example.context}\n\nQuestion: {text}"


def messages_for(task: TaskSpec, example: Example, text: str | None = None,
                 shots: Sequence[Example] = ()) -> list[dict[str, str]]:
    """The chat messages of an example's prompt (no assistant turn). ``shots`` are solved
    examples shown first, as earlier user/assistant turns (the few-shot baseline)."""
    system = example.system if example.system is not None else task.system_text
    turns = [m for shot in shots for m in ({"role": "user", "content": user_text(shot)},
                                           {"role": "assistant", "content": shot.target})]
    return [{"role": "system", "content": system}, *turns,
            {"role": "user", "content": user_text(example, text)}]


def template_ids(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> list[int]:
    """The model's chat template applied to ``messages``, as token ids (the template writes its
    own special tokens)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _end_of_turn(tokenizer: Any, completion: list[int]) -> list[int]:
    """Cut the completion after the end-of-turn token (the template's trailing newline is not
    part of the answer, and nothing after it is generated at inference)."""
    eos = tokenizer.eos_token_id
    if eos in completion:
        return completion[: completion.index(eos) + 1]
    return completion + [eos]


def render(tokenizer: Any, task: TaskSpec, example: Example, target: str | None = None,
           max_length: int | None = None, shots: Sequence[Example] = (), answer_room: int = 0) -> Rendered:
    """Render ``example`` (with ``target`` as the assistant's answer, if given) into token ids.

    When the prompt and ``max(answer, answer_room)`` tokens would exceed ``max_length``, text is
    cut from its end until they fit: the context for qa (so the question survives), the user's
    text otherwise. ``answer_room`` makes the cut independent of the answer: training (which
    knows the answer) and evaluation and serving (which do not) pass the same room
    (:func:`taskfit.baselines.model.answer_room`) and so cut a prompt at the same token. The
    same cut happens in every path because they all call this function.
    """
    cut_context = example.context is not None
    text = example.context if cut_context else example.input
    truncated = False
    while True:
        shown = dataclasses.replace(example, context=text) if cut_context else example
        messages = messages_for(task, shown, None if cut_context else text, shots)
        prompt = template_ids(tokenizer, messages, generation_prompt=True)
        ids = prompt
        if target is not None:
            full = template_ids(tokenizer, messages + [{"role": "assistant", "content": target}],
                                 generation_prompt=False)
            if full[: len(prompt)] != prompt:
                raise ChatTemplateError(
                    f"the chat template of {getattr(tokenizer, 'name_or_path', 'this model') or 'this model'} "
                    "renders the prompt differently when an assistant answer follows, so taskfit cannot "
                    "tell the answer's tokens from the prompt's",
                    hint="use a model whose template renders the prompt the same with and without the "
                         "answer (the instruct models `taskfit models` lists do), or fix chat_template "
                         "in its tokenizer_config.json")
            ids = prompt + _end_of_turn(tokenizer, full[len(prompt):])
        needed = len(prompt) + max(len(ids) - len(prompt), answer_room)
        if max_length is None or needed <= max_length:
            return Rendered(ids=ids, n_prompt=len(prompt), truncated=truncated, messages=messages, text=text)
        text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        keep = len(text_ids) - (needed - max_length) - 1
        if keep <= 0:
            fixed = len(prompt) - len(text_ids) + max(len(ids) - len(prompt), answer_room)
            parts = "chat template, system prompt" + (", question" if cut_context else "") + (
                " and the room kept for the answer")
            raise PromptTooLongError(
                f"max_seq_length={max_length} is too short: even with its {'context' if cut_context else 'input'} "
                f"cut, the row takes about {fixed} tokens ({parts}: "
                f"{max(len(ids) - len(prompt), answer_room)} tokens)",
                hint=f"raise train.max_seq_length above {fixed}, lower eval.max_new_tokens, or shorten "
                     "task.system_prompt")
        # A cut inside a character's bytes decodes to a replacement character, whose re-encoding can
        # be longer than what was cut: drop it, and always shorten, so the loop ends.
        shorter = tokenizer.decode(text_ids[:keep]).rstrip("\ufffd")
        text = shorter if len(shorter) < len(text) else text[:-1]
        truncated = True


def label_completions(tokenizer: Any, task: TaskSpec) -> list[list[int]]:
    """The tokens of each label's answer, end-of-turn token included. They follow the assistant
    header (which ends with a newline), so they do not depend on the prompt: computed once."""
    probe = Example(id="probe", input="probe", target="")
    return [render(tokenizer, task, probe, target=lab).completion for lab in task.labels or []]


def answer_room(tokenizer: Any, task: TaskSpec, max_new_tokens: int) -> int:
    """Tokens a prompt that must be cut leaves free for the answer, in training and at inference
    alike (see :func:`taskfit.rendering.render`): the longest label's answer where the kind scores
    labels, else the kind's answer budget (``eval.max_new_tokens`` for extract, qa, generate)."""
    from taskfit.config import EvalSpec
    from taskfit.tasks import get_task

    kind = get_task(task.kind)
    if kind.scores_labels:
        return max(map(len, label_completions(tokenizer, task)))
    return kind.answer_budget(task, EvalSpec(max_new_tokens=max_new_tokens), tokenizer)


def classifier_ids(tokenizer: Any, example: Example, max_length: int) -> list[int]:
    """The token ids a classification head (``train.classify_head``) reads: the example's input
    text alone (no chat template, system prompt or label text), tokenized as the tokenizer does by
    default and cut to ``max_length`` tokens as the tokenizer cuts. It is what
    ``pipeline("text-classification", truncation=True, max_length=max_length)`` feeds the merged
    export, so training, evaluation, serving and the export read the same tokens. Raises
    ``ValueError`` for a text that gives no tokens."""
    ids = tokenizer(example.input, truncation=True, max_length=max_length)["input_ids"]
    if not ids:
        raise ValueError("the input text gives no tokens")
    return ids
