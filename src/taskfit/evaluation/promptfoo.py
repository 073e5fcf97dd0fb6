"""The held-out set, the task's checks and the candidates as a promptfoo configuration
(``taskfit export --format promptfoo``), for teams whose evaluations run in promptfoo.

Three files are written:

- ``promptfooconfig.yaml``: the providers (``taskfit serve`` and the endpoint baseline, each an
  ``openai:chat:`` provider with its ``apiBaseUrl``), the prompts, and ``tests: file://tests.yaml``;
- ``tests.yaml``: one test per held-out row, the row's text in its vars and the task kind's checks
  of an answer as its assertions (:func:`taskfit.tasks.base.promptfoo_asserts`);
- ``prompts.cjs``: two prompt functions, one per provider, that put the vars into chat messages.

Each candidate is asked as taskfit asks it, rendered here by the functions evaluation uses
(:func:`~taskfit.rendering.messages_for`, :func:`~taskfit.baselines.endpoint.endpoint_messages`):
``taskfit serve`` gets the row's system prompt and input (a qa row's passage as ``context`` in the
request body; no system message for a classification head, which reads the input alone), and the
endpoint the messages the endpoint baseline sends. promptfoo fills the ``{{ var }}`` placeholders
of the prompt functions with the vars' text as it is (they are inside JSON strings, which promptfoo
parses before filling them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml

from taskfit.baselines.endpoint import endpoint_messages
from taskfit.config import EndpointSpec, TaskSpec
from taskfit.records import Example
from taskfit.rendering import messages_for
from taskfit.tasks import get_task
from taskfit.tasks.base import promptfoo_asserts

CONFIG, TESTS, PROMPTS = "promptfooconfig.yaml", "tests.yaml", "prompts.cjs"
TASKFIT, ENDPOINT = "taskfit", "endpoint"  # the providers' labels, and their prompts'
# Where promptfoo finds a key for `taskfit serve` (keys in serve.yaml); a server without keys needs none.
KEY_ENV = "TASKFIT_API_KEY"

PROMPT_FUNCTIONS = """\
// The messages each candidate is asked with, as taskfit asks it; written by
// `taskfit export --format promptfoo`. The texts are in each test's vars, rendered by taskfit:
// `system` and `input` for taskfit serve, `endpoint_system` and `endpoint_input` for the endpoint
// baseline. promptfoo fills each {{ name }} with the var's text as it is.
const message = (role, name) => ({ role, content: `{{ ${name} }}` });

// taskfit serve renders the prompt itself from one user message, after the system message when
// there is one (a classification head reads the input alone), and for qa from the passage sent
// as `context` in the request body.
module.exports.taskfit = ({ vars }) => ({
  prompt: [...(vars.system === undefined ? [] : [message('system', 'system')]), message('user', 'input')],
  config: vars.context === undefined ? {} : { passthrough: { context: vars.context } },
});

module.exports.endpoint = () => [message('system', 'endpoint_system'), message('user', 'endpoint_input')];
"""


def promptfoo_tests(task: TaskSpec, rows: Sequence[Example], served: TaskSpec, head: bool,
                    endpoint: EndpointSpec | None) -> list[dict[str, Any]]:
    """One promptfoo test per row: its vars (the texts each candidate is asked with, and the gold
    answer as ``expected``) and the kind's assertions. ``served`` is the task the served run
    renders with; ``head``: a classification head, asked without a system message."""
    kind = get_task(task.kind)
    tests = []
    for ex in rows:
        vars_: dict[str, str] = {"input": ex.input, "expected": ex.target}
        if not head:
            vars_["system"] = messages_for(served, ex)[0]["content"]
        if ex.context is not None:
            vars_["context"] = ex.context
        if endpoint is not None:
            system, user = endpoint_messages(endpoint, task, ex)
            vars_.update(endpoint_system=system["content"], endpoint_input=user["content"])
        tests.append({"description": ex.id, "vars": vars_, "assert": promptfoo_asserts(kind, task, ex),
                      "metadata": {"taskfit_id": ex.id}})
    return tests


def promptfoo_config(task: TaskSpec, rows: int, serve_url: str, endpoint: EndpointSpec | None,
                     max_new_tokens: int) -> dict[str, Any]:
    """The configuration naming the prompts, the providers and the tests file: ``taskfit serve``
    at ``serve_url`` answering ``task.name`` (no max_tokens: it answers within the run's answer
    budget, as evaluated) and, when configured, the endpoint baseline as evaluation asks it
    (temperature 0, ``eval.max_new_tokens``)."""
    prompts = [{"id": f"file://{PROMPTS}:{TASKFIT}", "label": TASKFIT}]
    providers: list[dict[str, Any]] = [{
        "id": f"openai:chat:{task.name}", "label": TASKFIT, "prompts": [TASKFIT],
        "config": {"apiBaseUrl": serve_url, "apiKeyEnvar": KEY_ENV, "apiKeyRequired": False,
                   "omitDefaults": True, "temperature": 0}}]
    if endpoint is not None:
        prompts.append({"id": f"file://{PROMPTS}:{ENDPOINT}", "label": ENDPOINT})
        providers.append({
            "id": f"openai:chat:{endpoint.model}", "label": ENDPOINT, "prompts": [ENDPOINT],
            "config": {"apiBaseUrl": endpoint.base_url, "apiKeyEnvar": endpoint.api_key_env, "temperature": 0,
                       "max_tokens": max_new_tokens}})
    return {"description": f"taskfit {task.name} ({task.kind}): {rows} held-out rows", "prompts": prompts,
            "providers": providers, "tests": f"file://{TESTS}"}


def write_promptfoo(out: Path, task: TaskSpec, rows: Sequence[Example], serve_url: str, served: TaskSpec,
                    head: bool, endpoint: EndpointSpec | None, max_new_tokens: int) -> dict[str, Path]:
    """Write the three files into ``out``; returns their paths by name (config, tests, prompts)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"config": out / CONFIG, "tests": out / TESTS, "prompts": out / PROMPTS}
    docs = {"config": promptfoo_config(task, len(rows), serve_url, endpoint, max_new_tokens),
            "tests": promptfoo_tests(task, rows, served, head, endpoint)}
    for name, doc in docs.items():
        paths[name].write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120),
                               encoding="utf-8")
    paths["prompts"].write_text(PROMPT_FUNCTIONS, encoding="utf-8")
    return paths
