"""Moving off hosted fine-tuning: an OpenAI fine-tuning file (chat and preference formats) and
exported chat-completion logs import as a project's data, every row kept or quarantined with a
reason; `taskfit data check FILE` and `taskfit init DIR --from FILE` read them as they are."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taskfit.cli.main import app
from taskfit.config import TaskSpec, load_config
from taskfit.data.formats import convert, detect_format

SYSTEM = "You route customer support tickets to one queue: billing, refund, shipping, account_access."


def _chat(user, answer, *more, system=SYSTEM, **row):
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": answer}, *more]
    return {"messages": messages, **row}


# A fine-tuning file as OpenAI's documentation writes one: system/user/assistant rows, content
# parts, the weight key on multi-turn rows, tools; the quarantine reason of each row that cannot
# be one input and one answer (None: imported).
SFT_ROWS = [
    (_chat("I was charged twice for my March invoice.", "billing"), None),
    (_chat("Please send my money back for the broken kettle.", "refund"), None),
    (_chat("My parcel has been stuck in Leeds for a week.", "shipping"), None),
    (_chat("I cannot log in since the password reset.", "account_access"), None),
    (_chat("The 2FA code never arrives on my phone.", "account_access"), None),
    (_chat("Why is there a second card payment this month?", "billing"), None),
    (_chat("The courier left my box at the wrong address.", "shipping"), None),
    (_chat("The shoes do not fit, I want my money back.", "refund"), None),
    ({"messages": [{"role": "developer", "content": SYSTEM},
                   {"role": "user", "content": [{"type": "text", "text": "Where is order "},
                                                {"type": "text", "text": "#4471? Tracking shows nothing."}]},
                   {"role": "assistant", "content": "shipping"}]}, None),
    # Learnt: the first answer (weight 1); the follow-up trains nothing and does not change it.
    (_chat("The invoice total is wrong, VAT was added twice.", "billing",
           {"role": "user", "content": "Are you sure?"}, {"role": "assistant", "content": "Yes.", "weight": 0}), None),
    (_chat("Refund me for the cancelled subscription please.", "refund", system=None), None),
    # OpenAI's own multi-turn example: the learnt answer replies to the turns before it.
    ({"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi, quick question"},
                   {"role": "assistant", "content": "billing", "weight": 0},
                   {"role": "user", "content": "It is about my card being declined"},
                   {"role": "assistant", "content": "billing", "weight": 1}]},
     "the learnt answer follows 3 earlier turns"),
    (_chat("My account is locked.", "account_access", {"role": "user", "content": "And my parcel is late."},
           {"role": "assistant", "content": "shipping"}), "2 assistant answers are learnt"),
    (_chat("Was I double charged?", "billing", {"role": "user", "content": "ok"},
           {"role": "assistant", "content": "refund", "weight": 0.5}), "weight: got 0.5"),
    ({"messages": [{"role": "user", "content": "Track order 991"},
                   {"role": "assistant", "content": None,
                    "tool_calls": [{"id": "call_1", "type": "function",
                                    "function": {"name": "track", "arguments": "{\"order\": 991}"}}]}],
      "tools": [{"type": "function", "function": {"name": "track", "parameters": {"type": "object"}}}],
      "parallel_tool_calls": False}, "field 'tools': function calling (1 tool definition)"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/receipt.png"}}]},
                   {"role": "assistant", "content": "billing"}]}, "content part of type 'image_url'"),
    ({"messages": [{"role": "user", "content": "Where is my refund?"},
                   {"role": "assistant", "content": "refund", "weight": 0}]}, "every assistant message has weight 0"),
]

# OpenAI's preference (DPO) file, as its documentation writes it (`tools: []` and
# `parallel_tool_calls` included).
DPO_ROWS = [
    ({"input": {"messages": [{"role": "user", "content": "Can you tell me how cold San Francisco is today?"}],
                "tools": [], "parallel_tool_calls": True},
      "preferred_output": [{"role": "assistant", "content": "It is about 14 °C with morning fog; take a jacket."}],
      "non_preferred_output": [{"role": "assistant", "content": "It is cold."}]}, None),
    ({"input": {"messages": [{"role": "system", "content": "Answer in one friendly sentence."},
                             {"role": "user", "content": "Do you ship to Norway?"}]},
      "preferred_output": [{"role": "assistant", "content": "Yes, we ship to Norway within five working days."}],
      "non_preferred_output": [{"role": "assistant", "content": "Shipping policy section 4.2 applies."}]}, None),
    ({"input": {"messages": [{"role": "user", "content": "Can I pay by invoice?"}]},
      "preferred_output": [{"role": "assistant", "content": "Yes, invoices are due within 30 days of delivery."}],
      "non_preferred_output": [{"role": "assistant", "content": "Maybe."}]}, None),
    ({"input": {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                             {"role": "user", "content": "What about returns?"}]},
      "preferred_output": [{"role": "assistant", "content": "You can return items within 30 days."}],
      "non_preferred_output": [{"role": "assistant", "content": "No."}]}, "the answers follow 2 earlier turns"),
    ({"input": {"messages": [{"role": "user", "content": "Weather in Oslo?"}],
                "tools": [{"type": "function", "function": {"name": "weather"}}]},
      "preferred_output": [{"role": "assistant", "content": "Let me check."}],
      "non_preferred_output": [{"role": "assistant", "content": "Cold."}]}, "field 'input.tools': function calling"),
    ({"input": {"messages": [{"role": "user", "content": "Is there a student discount?"}]},
      "preferred_output": [{"role": "assistant", "content": "Yes, 10% with a valid student card."}],
      "non_preferred_output": [{"role": "assistant", "content": "Yes, 10% with a valid student card. "}]},
     "'preferred_output' and 'non_preferred_output' are identical"),
]


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row, _ in rows), encoding="utf-8")
    return path


def _invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def _counts(output: str) -> tuple[int, int, int]:
    read, kept, quarantined = re.search(r"(\d+) rows read = (\d+) kept \+ (\d+) quarantined", output).groups()
    return int(read), int(kept), int(quarantined)


def _check_reasons(output: str, path: Path, rows) -> None:
    """Each row expected in quarantine is listed with its line and reason; no other row is."""
    listed = dict(re.findall(rf"quarantined \S*{re.escape(path.name)}:(\d+): (.*)", output))
    expected = {str(n): why for n, (_, why) in enumerate(rows, 1) if why}
    assert sorted(listed) == sorted(expected), output
    for line, why in expected.items():
        assert why in listed[line], (line, listed[line])


@pytest.mark.parametrize("rows, kind", [(SFT_ROWS, "classify"), (DPO_ROWS, "generate")])
def test_an_openai_training_file_checks_and_inits_as_it_is(tmp_path, rows, kind):
    path = _write(tmp_path / "openai_training.jsonl", rows)
    kept = sum(why is None for _, why in rows)
    bare = _invoke("data", "check", path, "--no-tokens")
    assert bare.exit_code == 0, bare.output
    assert _counts(bare.output) == (len(rows), kept, len(rows) - kept)
    _check_reasons(bare.output, path, rows)

    init = _invoke("init", tmp_path / "project", "--from", path)
    assert init.exit_code == 0, init.output
    config = load_config(tmp_path / "project" / "taskfit.yaml")
    assert config.task.kind == kind
    if kind == "classify":
        assert sorted(config.task.labels) == ["account_access", "billing", "refund", "shipping"]
    else:
        assert config.train.method == "dpo" and config.data.format == "preference"
    checked = _invoke("data", "check", tmp_path / "project", "--no-tokens")
    assert checked.exit_code == 0, checked.output
    assert _counts(checked.output) == (len(rows), kept, len(rows) - kept)
    _check_reasons(checked.output, path, rows)


@pytest.mark.parametrize("system", [SYSTEM, "Route the ticket to one {queue}; reply {labels} only."])
def test_init_proposes_the_system_prompt_the_rows_were_trained_under(tmp_path, system):
    """A served request without a system message is rendered with task.system_prompt: init writes
    the rows' own there (braces and all), not a prompt the fine-tune never saw."""
    rows = [(_chat(_user(row), _answer(row), system=system), None)
            for row, why in SFT_ROWS[:8]] + [(_chat("Refund the duplicate charge.", "refund", system=None), None)]
    path = _write(tmp_path / "hosted.jsonl", rows)
    init = _invoke("init", tmp_path / "project", "--from", path)
    assert init.exit_code == 0, init.output
    assert "8 of 9 rows carry one system prompt" in " ".join(init.output.split())
    assert "write task.success in your own words" in " ".join(init.output.split())
    assert load_config(tmp_path / "project" / "taskfit.yaml").task.system_text == system


def test_init_keeps_its_own_prompt_when_no_system_prompt_holds_most_rows(tmp_path):
    rows = [(_chat(_user(row), _answer(row), system=f"You are agent {n}."), None) for n, (row, _) in enumerate(SFT_ROWS[:8])]
    path = _write(tmp_path / "hosted.jsonl", rows)
    init = _invoke("init", tmp_path / "project", "--from", path)
    assert init.exit_code == 0, init.output
    assert "8 different system prompts in 8 of 8 rows, none in most" in " ".join(init.output.split())
    assert "You are agent" not in load_config(tmp_path / "project" / "taskfit.yaml").task.system_text


def _user(row):
    return next(m["content"] for m in row["messages"] if m["role"] == "user")


def _answer(row):
    return next(m["content"] for m in row["messages"] if m["role"] == "assistant")


def test_what_an_imported_chat_row_holds():
    task = TaskSpec(kind="classify", success="-", system_prompt="Route: {labels}",
                    labels=["billing", "refund", "shipping", "account_access"])
    parts = convert(SFT_ROWS[8][0], task, "auto", None, "f:9", "r9")
    assert (parts.system, parts.input, parts.target) == (SYSTEM, "Where is order #4471? Tracking shows nothing.",
                                                         "shipping")
    first_learnt = convert(SFT_ROWS[9][0], task, "auto", None, "f:10", "r10")
    assert (first_learnt.input, first_learnt.target) == ("The invoice total is wrong, VAT was added twice.", "billing")
    pair = convert(DPO_ROWS[1][0], TaskSpec(kind="generate", success="-", system_prompt="-"), "auto", None, "f:2", "p")
    assert (pair.system, pair.prompt) == ("Answer in one friendly sentence.", "Do you ship to Norway?")
    assert pair.chosen.startswith("Yes, we ship") and pair.rejected.startswith("Shipping policy")


# Logged chat completions: the stored-completion objects of OpenAI's API written as one
# {"request", "response"} per line (docs/data.md shows the few lines that write it), and
# OpenPipe's request-log export {"input", "output", "tags"}.
def _completion(cid, answer, finish="stop", model="ft:gpt-4o-mini-2024-07-18:acme::abc123"):
    return {"id": cid, "object": "chat.completion", "created": 1767225600, "model": model,
            "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                         "message": {"role": "assistant", "content": answer, "refusal": None}}],
            "usage": {"prompt_tokens": 41, "completion_tokens": 2, "total_tokens": 43}}


LOG_ROWS = [
    ({"request": {"model": "ft:gpt-4o-mini-2024-07-18:acme::abc123",
                  "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Charged twice?"}]},
      "response": _completion("chatcmpl-A1", "billing")}, None),
    ({"request": {"messages": [{"role": "system", "content": SYSTEM},
                               {"role": "user", "content": "Parcel lost in transit"}]},
      "response": _completion("chatcmpl-A2", "shipping")}, None),
    ({"input": {"model": "ft:gpt-4o-mini-2024-07-18:acme::abc123",
                "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Reset my 2FA"}]},
      "output": _completion("c7670af0", "account_access"), "tags": {"prompt_id": "triage"}}, None),
    ({"request": {"messages": [{"role": "user", "content": "I want my money back"}]},
      "response": _completion("chatcmpl-A3", "ref", finish="length")}, "cut at the token limit"),
    ({"request": {"messages": [{"role": "user", "content": "Track 991"}], "tools": [{"type": "function"}]},
      "response": _completion("chatcmpl-A4", "shipping")}, "field 'request.tools': function calling"),
    ({"request": {"messages": [{"role": "user", "content": "Say something rude"}]},
      "response": {"id": "chatcmpl-A5", "choices": [{"index": 0, "finish_reason": "stop", "message": {
          "role": "assistant", "content": None, "refusal": "I can't help with that."}}]}}, "the model refused"),
]


def test_logged_chat_completions_import_as_data(tmp_path):
    path = _write(tmp_path / "completions.jsonl", LOG_ROWS)
    assert {detect_format(row) for row, _ in LOG_ROWS} == {"chat_log"}
    with pytest.raises(ValueError, match="unrecognised row shape"):  # text columns of a table, read by data.columns
        detect_format({"request": "Where is my parcel?", "response": "It ships today."})
    task = TaskSpec(kind="classify", success="-", system_prompt="Route: {labels}",
                    labels=["billing", "refund", "shipping", "account_access"])
    first = convert(LOG_ROWS[0][0], task, "auto", None, "f:1", "row-1")
    assert (first.id, first.system, first.input, first.target) == ("chatcmpl-A1", SYSTEM, "Charged twice?", "billing")
    assert first.meta == {"model": "ft:gpt-4o-mini-2024-07-18:acme::abc123"}
    assert convert(LOG_ROWS[2][0], task, "auto", None, "f:3", "row-3").id == "c7670af0"

    checked = _invoke("data", "check", path, "--no-tokens", "--task", "classify")
    assert checked.exit_code == 0, checked.output
    assert _counts(checked.output) == (6, 3, 3)
    _check_reasons(checked.output, path, LOG_ROWS)

    init = _invoke("init", tmp_path / "project", "--from", path, "--task", "classify")
    assert init.exit_code == 0, init.output
    config = load_config(tmp_path / "project" / "taskfit.yaml")
    assert config.data.format == "chat_log" and sorted(config.task.labels) == ["account_access", "billing", "shipping"]
    project = _invoke("data", "check", tmp_path / "project", "--no-tokens")
    assert _counts(project.output) == (6, 3, 3)
    _check_reasons(project.output, path, LOG_ROWS)


def test_the_documented_lines_write_stored_completions_that_import(tmp_path, loopback, monkeypatch):
    """docs/data.md's lines that write OpenAI's stored chat completions to a file, run against a
    server answering as OpenAI's API documents it: the file they write imports row for row."""
    from fastapi import FastAPI

    stored = {"chatcmpl-S1": ([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Charged twice?"}],
                              "billing"),
              "chatcmpl-S2": ([{"role": "user", "content": "Where is my parcel?"}], "shipping")}
    api = FastAPI()

    @api.get("/v1/chat/completions")
    def completions(model: str | None = None):
        data = [_completion(cid, answer, model=model) for cid, (_, answer) in stored.items()]
        return {"object": "list", "data": data, "first_id": data[0]["id"], "last_id": data[-1]["id"], "has_more": False}

    @api.get("/v1/chat/completions/{cid}/messages")
    def messages(cid: str):
        data = [{"id": f"{cid}-{i}", **m} for i, m in enumerate(stored[cid][0])]
        return {"object": "list", "data": data, "first_id": data[0]["id"], "last_id": data[-1]["id"], "has_more": False}

    monkeypatch.setenv("OPENAI_BASE_URL", loopback(api))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.chdir(tmp_path)
    docs = (Path(__file__).resolve().parents[2] / "docs" / "data.md").read_text(encoding="utf-8")
    (snippet,) = [block for block in re.findall(r"```python\n(.*?)```", docs, re.S) if "completions.jsonl" in block]
    exec(compile(snippet, "docs/data.md", "exec"), {})

    task = TaskSpec(kind="classify", success="-", system_prompt="Route: {labels}", labels=["billing", "shipping"])
    rows = [json.loads(line) for line in (tmp_path / "completions.jsonl").read_text().splitlines()]
    got = [convert(row, task, "auto", None, f"f:{n}", f"r{n}") for n, row in enumerate(rows, 1)]
    assert [(ex.id, ex.system, ex.input, ex.target) for ex in got] == [
        ("chatcmpl-S1", SYSTEM, "Charged twice?", "billing"), ("chatcmpl-S2", None, "Where is my parcel?", "shipping")]
