"""The registry's bookkeeping without a model: versions keep what they were registered with,
aliases move with an append-only history, rollbacks walk back past what earlier rollbacks undid,
a move that raced another is refused, Holm's adjustment of the gate's per-class tests, and the
gate's decision over the fixed and recent held-out sets."""

from __future__ import annotations

import pytest

from taskfit.errors import ConfigError
from taskfit.lifecycle.promote import Gate, held_out_test, holm
from taskfit.records import EvalResult, Example, Prediction
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


def _set(label, gold, new, production):
    """One held-out set's test: rows with gold labels, and each version's answers."""
    rows = [Example(id=str(i), input=f"ticket {i}", target=g) for i, g in enumerate(gold)]

    def scored(name, answers):
        per = [float(a == g) for a, g in zip(answers, gold)]
        preds = [Prediction(example_id=str(i), output=a, valid=True, latency_s=0.0,
                             prompt_tokens=0, completion_tokens=0) for i, a in enumerate(answers)]
        return EvalResult(candidate=name, metrics={"accuracy": sum(per) / len(per)}, n=len(per), per_example=per), preds

    return held_out_test(label, "classify", rows, scored("new", new), scored("production", production))


def test_the_gate_asks_for_a_significant_gain_on_one_set_and_no_loss_anywhere():
    gold = ["billing"] * 10 + ["refund"] * 10
    same = _set("fixed", gold, gold, gold)  # both right everywhere: no difference
    # recent: production misroutes 8 product questions that the new version gets right
    recent_gold = ["product_question"] * 8 + ["billing"] * 4
    gained = _set("recent", recent_gold, recent_gold, ["technical_issue"] * 8 + ["billing"] * 4)
    assert gained.main_better and not gained.reasons()
    assert Gate((same, gained)).passed
    assert "beats production on the recent held-out set" in Gate((same, gained)).verdict("triage")

    # no gain anywhere: refused, saying so with both sets' figures
    flat = Gate((same, _set("recent", recent_gold, recent_gold, recent_gold)))
    assert not flat.passed
    (reason,) = flat.reasons()
    assert reason.startswith("not significantly better than production on the fixed or recent held-out set")
    assert "fixed held-out set: accuracy 100.0%" in reason and "recent held-out set" in reason

    # a gain on the recent set does not buy a loss on the fixed one (main metric, or one class)
    worse = _set("fixed", gold, ["billing"] * 10 + ["billing"] * 10, gold)
    refused = Gate((worse, gained))
    assert not refused.passed and any(r.startswith("worse on accuracy: fixed held-out set") for r in refused.reasons())
    assert any("worse on class refund of the fixed held-out set" in r for r in refused.reasons())
    assert refused.to_json()["passed"] is False and refused.to_json()["held_out"][1]["better"] is True

    # without a recent set: significantly better on the fixed set
    assert Gate((_set("fixed", gold, gold, ["billing"] * 20),)).passed
    assert not Gate((same,)).passed
