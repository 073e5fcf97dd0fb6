"""BM25 retrieval (the few-shot and RAG baselines' lexical half) finds the matching text, and says
nothing on the user's terminal while it does."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from taskfit.baselines.classical import SentenceEmbeddings
from taskfit.retrieval import Bm25Index, Embedder, EmbeddingIndex, chunk_documents, embedder, same_passage


def test_bm25_finds_the_text_sharing_the_query_words():
    index = Bm25Index(["refund my order please", "the app crashes at login", "where is my parcel"])
    assert index.search("app crashes", 2)[0] == 1
    assert index.search("the of and", 2) == []  # only stopwords: nothing to match on
    assert Bm25Index(["a", "the of"]).search("a", 1) == []  # texts of stopwords only: an empty index


def test_bm25_prints_no_debug_lines_once_the_root_logger_is_configured():
    """bm25s sets its own logger to DEBUG; a library's logging.warning configures the root logger,
    after which its debug lines would reach the terminal (seen in a `taskfit run`)."""
    code = ("import logging; logging.warning('configured'); from taskfit.retrieval import Bm25Index; "
            "Bm25Index(['refund my order', 'app crashes']).search('refund', 1)")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert "WARNING:root:configured" in err and "DEBUG" not in err


def test_training_texts_are_embedded_once_for_the_retriever_and_embeddings_logreg(monkeypatch):
    """The few-shot retriever and embeddings-logreg embed the same training inputs with the real
    MiniLM: the second finds them remembered; what is asked later (a query, a request) is
    embedded each time and never kept."""
    monkeypatch.setattr("taskfit.retrieval._EMBEDDER", Embedder())
    encoder = embedder().encoder
    asked: list[str] = []
    real = encoder.encode
    monkeypatch.setattr(encoder, "encode", lambda texts, **kw: (asked.extend(texts), real(texts, **kw))[1])
    train = ["refund my order please", "the app crashes at login", "where is my parcel", "refund my order please"]

    index = EmbeddingIndex(train)
    assert asked == train[:3]  # each distinct text once
    x = SentenceEmbeddings().fit_transform(train)
    assert asked == train[:3] and np.array_equal(x, index.vectors)
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert index.search("my parcel has not come", 1) == [2]
    SentenceEmbeddings().transform(["my parcel has not come"])
    assert asked[3:] == ["my parcel has not come"] * 2  # queries are not remembered
    assert "my parcel has not come" not in embedder()._vectors


def test_the_remembered_embeddings_are_bounded(monkeypatch):
    monkeypatch.setattr("taskfit.retrieval._EMBEDDER", Embedder())
    monkeypatch.setattr(Embedder, "REMEMBERED", 2)
    embedder().encode(["one", "two", "three"], remember=True)
    assert list(embedder()._vectors) == ["two", "three"]  # the oldest dropped first
    assert embedder().encode([]).shape == (0, 384)


def test_a_chunk_is_the_rows_passage_when_they_overlap_by_half_the_shorter():
    """RAG's retrieval hit: a passage shorter than a chunk can be found (it was never a hit when
    the whole chunk had to lie inside the passage), as can a chunk inside a long passage or one
    straddling its edge; a few words in common are not the passage."""
    passage = "Staff may carry over five days of annual leave into the next year."
    before = "Expenses are paid monthly. Receipts must be kept for six years."
    after = "Parental leave is sixteen weeks at full pay, then ten weeks at half pay."
    assert same_passage(f"{before} {passage} {after}", passage)  # the passage inside a longer chunk
    assert same_passage("staff may carry over five days of annual", passage)  # a chunk inside the passage
    assert same_passage(f"{before} Staff may carry over five days of annual", passage)  # most of it, across an edge
    assert same_passage(passage.upper().replace(" ", "  "), passage)  # case and spacing aside
    assert not same_passage(f"{before} Staff may carry {after}", passage)  # three words in common
    assert not same_passage(after, passage) and not same_passage("", passage)
    assert not same_passage("Annual leave", passage)  # a heading's chunk: two words are not the passage
    assert same_passage(f"{before} Closed on Sundays.", "closed on sundays")  # a passage of three words


def test_a_document_that_is_not_utf8_is_warned_of_with_its_byte_and_what_to_do(tmp_path):
    """A walkthrough's Windows-1252 policy file became "Caf\ufffd ... \ufffd10" in every rag prompt with
    no word: the warning names the file, line and byte (the CSV reader's wording) and says to
    re-save it as UTF-8; a UTF-8 file with a byte-order mark reads without one."""
    (tmp_path / "canteen.txt").write_bytes("Staff lunch\nThe Café serves lunch for €10.".encode("cp1252"))
    (tmp_path / "leave.md").write_bytes("\ufeffAnnual leave is 25 days.".encode("utf-8"))
    with pytest.warns(RuntimeWarning) as seen:
        chunks = chunk_documents(tmp_path, 50)
    (message,) = [str(w.message) for w in seen]
    assert message.startswith(f"baselines.documents: {tmp_path / 'canteen.txt'}:2: not UTF-8: byte 0xe9 ('é' in "
                              "Windows-1252) at byte 8 of the line; 2 characters of it are read as \ufffd")
    assert message.endswith("re-save the file as UTF-8")
    assert [c.text for c in chunks] == ["Staff lunch The Caf\ufffd serves lunch for \ufffd10.",
                                        "Annual leave is 25 days."]


def test_empty_documents_are_counted_in_a_warning(tmp_path):
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "leave.txt").write_text("Annual leave is 25 days.")
    for name in ("a.txt", "b.md", "c.txt", "d.txt"):
        (tmp_path / "policies" / name).write_text(" \n" if name == "b.md" else "")
    with pytest.warns(RuntimeWarning, match=r"baselines.documents: 4 empty files skipped in .*policies "
                                            r"\(a.txt, b.md, c.txt and 1 more\): nothing in them can be retrieved"):
        assert [c.id for c in chunk_documents(tmp_path / "policies", 50)] == ["leave.txt#0"]
