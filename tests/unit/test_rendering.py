"""One rendering function for training and evaluation: prompt prefix, answer mask, truncation."""

from __future__ import annotations

import pytest

from taskfit.baselines import LabelScoringPredictor
from taskfit.records import Example
from taskfit.rendering import render
from taskfit.training.sft import featurize


def test_answer_follows_prompt_and_ends_with_end_of_turn(tiny, classify_task):
    tok = tiny.tokenizer
    ex = Example(id="1", input="I was charged twice", target="billing")
    with_answer = render(tok, classify_task, ex, target="billing")
    prompt_only = render(tok, classify_task, ex)
    assert with_answer.ids[: with_answer.n_prompt] == prompt_only.ids
    assert with_answer.completion[-1] == tok.eos_token_id  # the end-of-turn token is trained
    assert tok.decode(with_answer.completion[:-1]) == "billing"
    assert tok.decode(prompt_only.ids).endswith("<|im_start|>assistant\n")


def test_training_and_evaluation_see_the_same_prompt_tokens(tiny, classify_task):
    ex = Example(id="1", input="My parcel never arrived " * 3, target="shipping")
    [train_row] = featurize(tiny.tokenizer, classify_task, [ex], max_length=256)
    scorer = LabelScoringPredictor("x", tiny.model, tiny.tokenizer, classify_task, max_length=256)
    assert scorer.prompt_ids(ex) == train_row.ids[: train_row.n_prompt]
    assert scorer.completions[classify_task.labels.index("shipping")] == train_row.completion


def test_long_input_is_cut_to_fit_identically(tiny, classify_task):
    ex = Example(id="1", input="The export to CSV produces an empty file. " * 40, target="technical_issue")
    r = render(tiny.tokenizer, classify_task, ex, target="technical_issue", max_length=64)
    assert r.truncated and len(r.ids) <= 64
    assert tiny.tokenizer.decode(r.completion[:-1]) == "technical_issue"
    again = render(tiny.tokenizer, classify_task, ex, target="technical_issue", max_length=64)
    assert again.ids == r.ids


def test_too_short_max_length_is_refused(tiny, classify_task):
    ex = Example(id="1", input="hello", target="billing")
    with pytest.raises(ValueError, match="max_seq_length"):
        render(tiny.tokenizer, classify_task, ex, target="billing", max_length=8)


def test_qa_context_is_part_of_the_user_turn(tiny, classify_task):
    ex = Example(id="1", input="When does the shop open?", target="9am", context="The shop opens at 9am.")
    text = tiny.tokenizer.decode(render(tiny.tokenizer, classify_task, ex).ids)
    assert "Context:\nThe shop opens at 9am.\n\nQuestion: When does the shop open?" in text


def test_the_rendered_system_prompt_lists_the_labels_from_task_labels(tiny, classify_task):
    from taskfit.rendering import messages_for

    task = classify_task.model_copy(update={"system_prompt": "Reply with one of: {labels}."})
    ex = Example(id="1", input="I was charged twice", target="billing")
    assert messages_for(task, ex)[0]["content"] == "Reply with one of: " + ", ".join(task.labels) + "."
    text = tiny.tokenizer.decode(render(tiny.tokenizer, task, ex).ids)
    assert "{labels}" not in text and "billing, refund" in text


def test_a_cut_inside_a_multibyte_character_ends_and_fits(tiny, classify_task):
    """A cut that falls inside a character's bytes (the euro sign is three) still ends, with the
    input's cut text a prefix of the input, whatever the length it is cut to."""
    ex = Example(id="1", input="I was charged €164.35 twice, €€ for the desktop app € " * 6, target="billing")
    for max_length in range(64, 112, 3):
        r = render(tiny.tokenizer, classify_task, ex, target="billing", max_length=max_length, answer_room=11)
        assert r.truncated and len(r.ids) <= max_length
        user = r.messages[-1]["content"]
        assert ex.input.startswith(user) and "\ufffd" not in user
