"""The registry's bookkeeping without a model: versions keep what they were registered with,
aliases move with an append-only history, rollbacks walk back past what earlier rollbacks undid,
a move that raced another is refused, and Holm's adjustment of the gate's per-class tests."""

from __future__ import annotations

import pytest

from taskfit.errors import ConfigError
from taskfit.lifecycle.promote import holm
from taskfit.lifecycle.registry import Registry, Version, parse_ref


def _registry(tmp_path, *ids):
    registry = Registry(tmp_path / "registry.sqlite")
    for vid in ids:
        registry.add(Version(name="triage", id=vid, kind="classical", path=registry.version_dir("triage", vid),
                             figures={"main": "accuracy", "metrics": {"accuracy": 0.5}}))
    return registry


def test_versions_are_kept_as_registered_and_found_by_a_unique_prefix(tmp_path):
    registry = _registry(tmp_path, "aaa111", "aab222")
    again = registry.add(Version(name="triage", id="aaa111", kind="adapter", path=tmp_path, figures={}))
    assert again.kind == "classical" and again.figures["metrics"]["accuracy"] == 0.5
    assert registry.version("triage", "aab").id == "aab222"
    assert registry.version("triage", "aa") is None  # ambiguous
    assert registry.versions("triage")[0].path == tmp_path / "registry" / "triage" / "aaa111"
    assert Registry(tmp_path / "registry.sqlite").names() == ["triage"]  # reopened: nothing migrated twice


def test_rollback_goes_back_past_what_earlier_rollbacks_undid(tmp_path):
    registry = _registry(tmp_path, "v1", "v2", "v3", "v4")
    assert registry.previous("triage") is None
    for v in ("v1", "v2", "v3"):
        registry.move("triage", "production", v, action="promote", by="a", reason=None)
    registry.move("triage", "candidate", "v4", action="promote", by="a", reason=None)
    assert registry.previous("triage") == "v2"
    registry.move("triage", "production", "v2", action="rollback", by="a", reason=None)
    assert registry.previous("triage") == "v1"
    registry.move("triage", "production", "v1", action="rollback", by="a", reason=None)
    assert registry.previous("triage") is None
    registry.move("triage", "production", "v3", action="promote", by="a", reason=None)
    assert registry.previous("triage") == "v1"
    assert [(m.from_version, m.to_version) for m in registry.history("triage") if m.alias == "production"] == [
        (None, "v1"), ("v1", "v2"), ("v2", "v3"), ("v3", "v2"), ("v2", "v1"), ("v1", "v3")]


def test_a_move_that_raced_another_is_refused(tmp_path):
    registry = _registry(tmp_path, "v1", "v2")
    registry.move("triage", "production", "v1", action="promote", by="a", reason=None, expect=None)
    with pytest.raises(ConfigError, match="moved to v1 while this command ran"):
        registry.move("triage", "production", "v2", action="promote", by="b", reason=None, expect=None)
    with pytest.raises(ConfigError, match="no version"):
        registry.move("triage", "production", "v9", action="promote", by="b", reason=None)
    assert registry.alias("triage", "production") == "v1" and len(registry.history("triage")) == 1


def test_references_name_a_registered_model_and_an_alias():
    assert parse_ref("triage@production") == ("triage", "production")
    for bad in ("triage", "triage@prod", "../x@candidate", "@production"):
        with pytest.raises(ConfigError):
            parse_ref(bad)


def test_holm_adjusts_step_down_and_keeps_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([]) == [] and holm([0.5]) == [0.5]
