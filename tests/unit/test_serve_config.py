"""serve.yaml: what is refused, and the key command."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from taskfit.cli.main import app
from taskfit.errors import ConfigError
from taskfit.serve import hash_key, load_serve_config


def _load(tmp_path, doc):
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_serve_config(path)


def test_paths_are_relative_to_the_file_and_defaults_are_safe(tmp_path):
    spec = _load(tmp_path, {"adapters": {"triage": "runs/a", "x": {"path": "runs/b", "fallback": "needs_human"}}})
    assert spec.adapters["triage"].path == tmp_path / "runs/a"
    assert spec.adapters["x"].path == tmp_path / "runs/b" and spec.adapters["x"].fallback == "needs_human"
    assert spec.host == "127.0.0.1" and spec.admin is False and spec.log.redact is True
    assert spec.registry.path == tmp_path / "registry.sqlite" and not spec.followed
    spec = _load(tmp_path, {"adapters": {"t": {"registry": "t@production", "shadow": True}},
                            "registry": {"path": "p/registry.sqlite"}})
    assert spec.registry.path == tmp_path / "p/registry.sqlite" and list(spec.followed) == ["t"]
    assert spec.adapters_by_path == {}


@pytest.mark.parametrize("doc, words", [
    ({"host": "0.0.0.0"}, "without keys would serve anyone"),
    ({"merged": True, "adapters": {"a": "r1", "b": "r2"}}, "exactly one adapter"),
    ({"adapters": {"../etc": "r1"}}, "adapters.../etc"),
    ({"limits": {"max_tokns": 5}}, "limits.max_tokns: unknown key"),
    ({"keys": [{"name": "k", "sha256": "not-a-digest"}]}, "keys.0.sha256"),
    ({"admin": True, "keys": [{"name": "k", "sha256": "0" * 64}]}, "admin_keys"),
    ({"adapters": {"t": {"path": "r1", "registry": "t@production"}}}, "either path"),
    ({"adapters": {"t": {"registry": "t@prod"}}}, "not NAME@ALIAS"),
    ({"adapters": {"t": {"path": "r1", "shadow": True}}}, "shadow and canary follow the registry"),
    ({"adapters": {"t": {"registry": "t@candidate", "canary": 0.1}}}, "name the production alias"),
    ({"adapters": {"t": {"registry": "t@production", "shadow": True, "canary": 0.1}}}, "not both"),
    ({"adapters": {"t": {"registry": "t@production", "canary": 1.5}}}, "canary"),
    ({"engine": "llama-cpp", "adapters": {"t": {"registry": "t@production"}}}, "transformers engine"),
])
def test_bad_settings_are_refused_with_the_key_named(tmp_path, doc, words):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, doc)
    assert words in str(err.value)


def test_serve_key_prints_a_key_and_only_its_hash_for_the_file():
    result = CliRunner().invoke(app, ["serve-key", "support-app", "--models", "triage,invoices"])
    assert result.exit_code == 0, result.output
    key = next(line for line in result.output.splitlines() if line.startswith("tf-"))
    entry = yaml.safe_load(result.output[result.output.index("- name:"):])[0]
    assert entry == {"name": "support-app", "sha256": hash_key(key), "models": ["triage", "invoices"]}
