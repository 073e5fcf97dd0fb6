"""BM25 retrieval (the few-shot and RAG baselines' lexical half) finds the matching text, and says
nothing on the user's terminal while it does."""

from __future__ import annotations

import subprocess
import sys

from taskfit.retrieval import Bm25Index


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
