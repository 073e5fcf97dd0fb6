"""Build ``src/taskfit/probes/general.jsonl``, the general probe of the forgetting check, from the
SQuAD 2.0 sample in ``../shared/data/squad2_dev`` (CC BY-SA 4.0; see probes/SOURCE.md).

Deterministic: the same input file gives the same probe. Each item is an answerable question
with a short answer (at most 4 words) that occurs exactly once in its Wikipedia paragraph; the
passage is cut to the sentence holding the answer and the sentence before it (when the two stay
within 60 words), so an item renders to about 100 tokens and a forward pass over it is cheap on a
CPU. One item per paragraph, spread over the file by a seeded shuffle. The first SHOTS lines are
demonstrations (``"shot": true``, shorter passages, answers not echoed from the question) shown
before every probe item as solved earlier turns.

    python scripts/build_general_probe.py [--source ../shared/data/squad2_dev/train.jsonl] [--n 128]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from pathlib import Path

SEED = 20240601
MAX_ANSWER_WORDS = 4
MAX_PASSAGE_WORDS = 60
SHOTS = 3  # solved items shown before each probe item, so the base model sees the answer's form
SHOT_WORDS = 30
# A sentence ends at . ! or ? followed by space and a capital letter, a digit or a quote.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def excerpt(context: str, answer: str) -> str | None:
    """The sentence holding ``answer`` and the one before it (or that sentence alone when the two
    pass MAX_PASSAGE_WORDS); None when the answer straddles a sentence cut or is too long a
    sentence to keep."""
    sentences = _SENTENCE_END.split(context.strip())
    for i, sentence in enumerate(sentences):
        if answer in sentence:
            pair = " ".join(sentences[max(0, i - 1): i + 1])
            for text in (pair, sentence):
                if len(text.split()) <= MAX_PASSAGE_WORDS:
                    return text
            return None
    return None


def _is_shot(passage: str, question: str, answer: str) -> bool:
    """A good demonstration: a short passage, and an answer that is neither in the question nor
    the passage's first words (so it shows answering, not echoing)."""
    return (len(passage.split()) <= SHOT_WORDS and answer.lower() not in question.lower()
            and not passage.startswith(answer))


def build(source: Path, n: int) -> list[dict[str, object]]:
    """SHOTS demonstrations (``"shot": true``) first, then ``n`` probe items."""
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(SEED).shuffle(rows)
    shots: list[dict[str, object]] = []
    items: list[dict[str, object]] = []
    seen = set()
    for row in rows:
        answer, context, question = row.get("answer"), row["context"], row["question"].strip()
        if not answer or len(answer.split()) > MAX_ANSWER_WORDS or context.count(answer) != 1:
            continue
        if context in seen:
            continue
        passage = excerpt(context, answer)
        if passage is None:
            continue
        seen.add(context)
        digest = hashlib.sha256((question + "\0" + answer).encode()).hexdigest()[:10]
        item: dict[str, object] = {"id": f"squad2-{digest}", "context": passage, "question": question,
                                   "answer": answer}
        if len(shots) < SHOTS and _is_shot(passage, question, answer):
            shots.append({**item, "shot": True})
        elif len(items) < n:
            items.append(item)
        if len(items) == n and len(shots) == SHOTS:
            break
    if len(items) < n or len(shots) < SHOTS:
        raise SystemExit(f"{source}: only {len(items)} items and {len(shots)} shots qualify")
    return shots + items


def main() -> None:
    here = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=here.parent / "shared/data/squad2_dev/train.jsonl")
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--out", type=Path, default=here / "src/taskfit/probes/general.jsonl")
    args = parser.parse_args()
    items = build(args.source, args.n)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items), encoding="utf-8")
    print(f"{len(items)} items -> {args.out} (sha256 {hashlib.sha256(args.out.read_bytes()).hexdigest()[:16]})")


if __name__ == "__main__":
    main()
