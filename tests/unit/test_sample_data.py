"""The quickstart's sample tickets: realistic, seeded, with planted problems to find."""

from __future__ import annotations

from collections import Counter

from taskfit.data.sample import QUEUES, URGENCY, generate_tickets, write_tickets


def test_size_queues_and_urgency():
    rows = generate_tickets(2400, seed=0)
    assert len(rows) == 2400
    assert set(Counter(r["meta"]["queue"] for r in rows)) == set(QUEUES) and len(QUEUES) >= 8
    assert set(r["meta"]["urgency"] for r in rows) == set(URGENCY)
    assert all(r["messages"][1]["content"] == r["meta"]["queue"] for r in rows)


def test_planted_problems_are_present():
    rows = generate_tickets(2400, seed=0)
    planted = Counter(r["meta"].get("planted") for r in rows)
    for kind in ("near_duplicate", "conflicting_label", "pii", "secret"):
        assert planted[kind] > 0, kind
    texts = " ".join(r["messages"][0]["content"] for r in rows)
    assert "@" in texts and ("sk_live_" in texts or "AKIA" in texts or "ghp_" in texts)
    by_id = {r["id"]: r for r in rows}
    conflicts = [r for r in rows if r["meta"].get("planted") == "conflicting_label"]
    assert all(by_id[r["meta"]["duplicate_of"]]["meta"]["queue"] != r["meta"]["queue"] for r in conflicts)


def test_varied_phrasing():
    rows = generate_tickets(2400, seed=0)
    texts = [r["messages"][0]["content"] for r in rows]
    assert len(set(texts)) > 0.95 * len(texts)
    assert any(t.startswith(("Hi", "Hello", "Dear", "Hey")) for t in texts)
    assert any("\n> " in t for t in texts)  # quoted earlier replies


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = write_tickets(tmp_path / "a.jsonl", n=300, seed=3).read_bytes()
    b = write_tickets(tmp_path / "b.jsonl", n=300, seed=3).read_bytes()
    c = write_tickets(tmp_path / "c.jsonl", n=300, seed=4).read_bytes()
    assert a == b and a != c
