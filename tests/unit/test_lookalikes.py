"""Look-alikes told apart by their answers, and layouts (templates).

One shop's receipts share a layout and look alike, yet each has its own date, items and total:
they are distinct examples and are kept. A copy (the same answer) is removed, a different answer
the text does not explain is a conflict, and the card counts rows per layout on each side of the
split; `data.group_by: template` keeps a layout on one side.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from taskfit.config import ColumnMap, DataSpec, TaskSpec, load_config
from taskfit.data.card import render_markdown
from taskfit.data.prepare import check_data, drop_leaks, prepare_data
from taskfit.data.scan import scan
from taskfit.records import Example

SCHEMA = {"type": "object", "properties": {"company": {"type": "string"}, "date": {"type": "string"},
                                           "address": {"type": "string"}, "total": {"type": "number"}},
          "required": ["company", "date", "total"], "additionalProperties": False}
EXTRACT = TaskSpec(kind="extract", success="s", system_prompt="Read the receipt: {fields}.", schema=SCHEMA)
RECEIPTS = DataSpec(train="train.jsonl", columns=ColumnMap(input="text", target="fields"))
DISCLAIMER = ("THIS IS A COMPUTER GENERATED RECEIPT AND NO SIGNATURE IS REQUIRED. PRICES ARE SUBJECT TO CHANGE "
              "WITHOUT PRIOR NOTICE. PLEASE CHECK YOUR CHANGE AND ITEMS BEFORE LEAVING THE COUNTER; NO CLAIMS "
              "CAN BE ENTERTAINED AFTERWARDS.")
SHOPS = [("KEDAI RUNCIT SRI MAJU SDN BHD", "NO 12, JALAN BUNGA RAYA 3, TAMAN MELATI, 53100 KUALA LUMPUR",
          "THANK YOU. PLEASE COME AGAIN. GOODS SOLD ARE NOT RETURNABLE OR EXCHANGEABLE."),
         ("UNIHAKKA INTERNATIONAL SDN BHD", "12, JALAN TAMPOI 7/4, KAWASAN PERINDUSTRIAN TAMPOI, 81200 JOHOR BAHRU",
          "THANK YOU & COME AGAIN! LIKE AND FOLLOW US ON FACEBOOK: UNIHAKKA FOOD COURT."),
         ("POPULAR BOOK CO. (M) SDN BHD", "LOT F1.16, 1ST FLOOR, MID VALLEY MEGAMALL, 59200 KUALA LUMPUR",
          "MEMBER SAVES MORE. EXCHANGE WITHIN 7 DAYS WITH ORIGINAL RECEIPT ONLY."),
         ("MR. D.I.Y. (M) SDN BHD", "LOT 1851-A & 1851-B, JALAN KPB 6, KAWASAN PERINDUSTRIAN BALAKONG, 43300 SELANGOR",
          "ITEMS SOLD ARE NOT REFUNDABLE. KEEP THIS RECEIPT FOR WARRANTY CLAIMS.")]
ITEMS = ["MILO 1KG", "BREAD", "EGGS 10S", "SUGAR 1KG", "NASI PUTIH", "TEH O AIS", "A4 PAPER", "BALL PEN", "STAPLER"]


def receipt(rng: random.Random, shop: int, n: int) -> dict:
    """One receipt of one shop's layout: its own date, items and total."""
    name, address, footer = SHOPS[shop]
    items = [(rng.choice(ITEMS), rng.randint(150, 2500) / 100) for _ in range(rng.randint(1, 3))]
    total = round(sum(p for _, p in items) * 1.06, 2)
    date = f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/2018"
    text = "\n".join([DISCLAIMER, name, address, f"RECEIPT NO: {rng.randint(10000, 99999)}", f"DATE: {date}",
                      *(f"{item}  {price:.2f}" for item, price in items), f"TOTAL RM {total:.2f}", footer])
    return {"id": f"s{shop}-{n}", "text": text, "shop": shop,
            "fields": {"company": name, "date": date, "address": address, "total": total}}


def receipts(n: int, seed: int = 0, shops: list[int] | None = None) -> list[dict]:
    rng = random.Random(seed)
    shops = shops or [i % len(SHOPS) for i in range(n)]
    return [receipt(rng, shop, i) for i, shop in enumerate(shops)]


def edited(row: dict, rid: str, date: str, total: float, **fields) -> dict:
    """The same receipt with another date and total (written in its text): near-identical text,
    a different answer."""
    text = row["text"].replace(row["fields"]["date"], date).replace(f"{row['fields']['total']:.2f}", f"{total:.2f}")
    return {**row, "id": rid, "text": text, "fields": {**row["fields"], "date": date, "total": total, **fields}}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _scan(tmp_path, rows, task=EXTRACT, spec=RECEIPTS):
    result = scan(_write(tmp_path / "train.jsonl", rows), task, spec, keep=True)
    assert result.read == result.kept + len(result.quarantined) + result.exact_duplicates + len(result.near_duplicates)
    return result


def test_receipts_of_one_layout_with_different_answers_are_all_kept_and_copies_removed(tmp_path):
    originals = receipts(40)
    originals += [edited(originals[0], "e1", "02/03/2018", 10.60), edited(originals[1], "e2", "15/07/2018", 99.91)]
    spaced = [dict(r, id=f"ws{i}", text=r["text"].replace("\n", "\n   ").replace(": ", ":    "))
              for i, r in enumerate(originals[:5])]
    reprinted = [dict(r, id=f"re{i}", text="*** REPRINT ***\n" + r["text"]) for i, r in enumerate(originals[5:10])]
    result = _scan(tmp_path, originals + spaced + reprinted)
    assert {ex.id for ex in result.examples} == {r["id"] for r in originals}
    assert result.exact_duplicates == len(spaced) and len(result.near_duplicates) == len(reprinted)
    assert result.conflicts == []
    # The look-alikes kept are receipts of one shop: a layout shared, the answers their own.
    shop = {i + 1: r["shop"] for i, r in enumerate(originals)}
    assert result.distinct >= 2
    assert all(shop[n.kept_line] == shop[n.other_line] for n in result.distinct_notes)
    assert {n.other_line for n in result.distinct_notes} >= {41, 42}  # the edited receipts


def test_a_different_answer_the_text_does_not_explain_is_a_conflict(tmp_path):
    base = receipts(8)
    invented = dict(base[0], id="x1", text="*** REPRINT ***\n" + base[0]["text"],
                    fields={**base[0]["fields"], "total": 999.99})  # 999.99 is not on the receipt
    same_words = dict(base[1], id="x2", text=base[1]["text"].replace("\n", " ; "),
                      fields={**base[1]["fields"], "date": "01/01/2018"})  # the words are the same
    result = _scan(tmp_path, base + [invented, same_words])
    assert {n.other_line for n in result.conflicts} == {9, 10}
    assert {ex.id for ex in result.examples} == {r["id"] for r in base}
    card = render_markdown(check_data(_project(tmp_path, base + [invented, same_words]), tmp_path))
    assert "## Conflicting answers" in card and "| kept row | answer | removed row | answer |" in card  # not "label"


def test_a_number_written_against_its_unit_explains_its_answer(tmp_path):
    """ "I ordered 4x" writes the quantity 4, as "I ordered 4" does: two look-alike messages whose
    quantities differ as their texts do are distinct examples, both kept (the first was removed as
    a conflict when a run of digits and letters read as one word)."""
    schema = {"type": "object", "properties": {"order_id": {"type": "string"}, "quantity": {"type": "integer"}},
              "required": ["order_id", "quantity"], "additionalProperties": False}
    task = TaskSpec(kind="extract", success="s", system_prompt="Read the order: {fields}.", schema=schema)
    text = ("Hello, this is about my order ORD-20585 placed last week for the blue ceramic mugs from your "
            "spring catalogue. I ordered {n}x and the parcel has still not arrived, could you check with the "
            "courier and tell me when it will come? Thank you very much, Dana")
    rows = [{"id": f"o{n}", "text": text.format(n=n), "fields": {"order_id": "ORD-20585", "quantity": n}}
            for n in (4, 2)]
    result = _scan(tmp_path, rows, task)
    assert result.conflicts == [] and result.distinct == 1 and {ex.id for ex in result.examples} == {"o4", "o2"}


def test_classify_look_alikes_with_other_labels_stay_conflicts(tmp_path, classify_task):
    text = "Hello, I was charged twice for my Pro plan this month, please check the invoice. Thanks, Anna"
    rows = [{"text": text, "label": "billing"}, {"text": "Any update? " + text, "label": "refund"}]
    spec = DataSpec(train="x", columns=ColumnMap(input="text", target="label"))
    result = _scan(tmp_path, rows, classify_task, spec)
    assert len(result.conflicts) == 1 and result.kept == 1 and result.distinct == 0


def test_classify_look_alikes_whose_labels_are_named_in_their_own_text_are_distinct(tmp_path):
    """clinc150 (its 2,800 rows, as a walkthrough read them): "what is on my shopping list"
    (shopping_list) and "please order me everything that is on my shopping list" (order) were a
    conflict and both removed, though the words they differ by name their intents."""
    labels = ["order", "shopping_list", "distance", "directions"]
    task = TaskSpec(kind="classify", success="s", system_prompt="Route it.", labels=labels)
    rows = [{"text": "what is on my shopping list", "label": "shopping_list"},
            {"text": "please order me everything that is on my shopping list", "label": "order"},
            {"text": "where is the closest gas station", "label": "distance"},
            {"text": "where is the closest gas station to glendale", "label": "directions"}]  # names neither
    spec = DataSpec(train="x", columns=ColumnMap(input="text", target="label"))
    result = _scan(tmp_path, rows, task, spec)
    assert result.distinct == 1 and [n.other_line for n in result.conflicts] == [4]
    assert {ex.target for ex in result.examples} == {"order", "shopping_list", "distance"}
    mislabelled = [rows[0], {"text": "what is on my shopping list, please", "label": "order"}]
    result = _scan(tmp_path, mislabelled, task, spec)  # "order" is not in its text: still a conflict
    assert result.distinct == 0 and [n.other_line for n in result.conflicts] == [2]


def test_label_written_decides_as_its_rule_word_by_word():
    """label_written's shortcuts (a label word's first four letters missing from the text; a word
    of the text beginning with it found in the joined words) decide as its rule does, word by
    word: each label word is a word of the text, or one begins the other at four letters or more."""
    import re

    from taskfit.tasks.classify import PREFIX_LETTERS, label_written

    word = re.compile(r"[^\W_]+")

    def rule(label: str, text: str) -> bool:
        said = word.findall(text.casefold())
        return all(any(w == t or (min(len(w), len(t)) >= PREFIX_LETTERS and (t.startswith(w) or w.startswith(t)))
                       for t in said) for w in word.findall(label.casefold()))

    labels = ["order", "shopping_list", "ordering", "Orde", "ord", "Straße", "strasse_x", "a_b", "tv", "___",
              "technical_issue", "refund", "billing", "account_access", "ÉTÉ", "été_2"]
    vocab = ["order", "ordering", "orders", "ord", "or", "shopping", "shop", "list", "lists", "STRASSE", "straße",
             "strass", "tv", "tvs", "a", "b", "ab", "technically", "tech", "issue", "issues", "re", "refunded",
             "bill", "billing", "acc", "account_access", "access", "été", "ete", "2", "x", "_", "—", "order's"]
    rng = random.Random(0)
    texts = ["", "   ", "shopping_list", "please order me everything that is on my shopping list"]
    texts += [" ".join(rng.choice(vocab) + rng.choice(["", "", ",", "_", ".", "!"]) for _ in range(rng.randint(1, 8)))
              for _ in range(3000)]
    decided = [(label_written(lab, t), rule(lab, t)) for lab in labels for t in texts]
    assert all(got == want for got, want in decided)
    assert 0 < sum(want for _, want in decided) < len(decided)  # both answers are tried


def test_an_ascii_texts_words_are_read_as_the_regular_expression_reads_them():
    """_word_digest's bytes path for ASCII texts, and for texts whose words are all ASCII ("€40",
    a dash, a Kelvin sign that case-folds to k), gives the digest and vocabulary of words()'s
    words, for every ASCII character; texts with a letter beyond ASCII take words() itself."""
    from taskfit.data.lookalike import _hashes, _word_digest, digest
    from taskfit.tasks.base import words

    rng = random.Random(0)
    texts = ["", " ", "Hello, WORLD_1 x-y 12.50 12,50", "Straße café ÉTÉ ß", "tab\tnew\nline\x1f\x7f",
             "€40 for £12—ok", "KELVIN \u212a", "İstanbul ﬁne", "x\u00a0y\u2003z\u0301"]
    texts += ["".join(chr(rng.randrange(128)) for _ in range(rng.randint(0, 80))) for _ in range(3000)]
    texts += ["".join(rng.choice("aZ9_ é€\u00a0") for _ in range(30)) for _ in range(200)]
    assert all(_word_digest(t) == (digest(words(t)), _hashes(words(t))) for t in texts)


def test_word_overlap_is_the_same_from_the_stored_vocabularies_as_from_arrays():
    """overlap() counts the words two texts share alike whether a vocabulary comes as a numpy
    array or as the index stores it (an array("I") from _Vocabularies), given as a set or not:
    exactly for texts of a few words, and by the bottom-k estimate past WORDS_KEPT words."""
    import numpy as np

    from taskfit.data.lookalike import WORDS_KEPT, _Vocabularies, overlap, vocabulary

    rng = random.Random(3)
    pool = [f"w{i}" for i in range(3000)]
    texts = [" ".join(rng.sample(pool, n)) for n in (5, 30, 30, 600, 900, 2000)]
    texts.append(texts[1] + " extra words here")  # shares all of a text's words
    vocabs = [vocabulary(t) for t in texts]
    stored = _Vocabularies()
    for v in vocabs:
        stored.append(v)
    seen_estimate = False
    for i, a in enumerate(vocabs):
        for j, b in enumerate(vocabs):
            want = overlap(a, b)
            assert overlap(a, stored[j]) == want == overlap(np.asarray(stored[i]), stored[j])
            if len(a) < WORDS_KEPT:
                assert overlap(a, stored[j], set(a.tolist())) == want
            seen_estimate |= max(len(a), len(b)) >= WORDS_KEPT and want[2] != int(want[2])
    assert overlap(vocabs[1], stored[6]) == (0.0, 3.0, 30.0) and seen_estimate


def test_a_chunks_word_digests_are_each_texts_words_digest_and_vocabulary(kernels):
    """word_digests, which the worker makes a chunk at a time (in C for texts whose words are all
    ASCII: an ASCII text, or one whose characters beyond it hold no letter or digit, "€40",
    "—"), gives each text the digest and vocabulary of words()'s words, in order: for every
    ASCII character, currency signs, dashes and spaces beyond ASCII, letters beyond it (in
    Python), a case fold that makes ASCII (the Kelvin sign), empty texts, and a text of more
    than WORDS_KEPT words."""
    import numpy as np

    from taskfit.data.lookalike import WORDS_KEPT, _hashes, digest, word_digests
    from taskfit.tasks.base import words

    rng = random.Random(1)
    texts = ["", "   ", "Hello, WORLD_1 x-y 12.50 12,50", "€40 for £12—ok", "Straße café ÉTÉ ß", "KELVIN \u212a",
             "ｆｕｌｌ width", "x\u00a0y\u2003z", "\u0663 digit", " ".join(f"w{i}" for i in range(3 * WORDS_KEPT))]
    texts += ["".join(chr(rng.randrange(128)) for _ in range(rng.randint(0, 80))) for _ in range(500)]
    texts += ["".join(rng.choice("aZ9_ é€£—\u00a0.") for _ in range(rng.randint(0, 40))) for _ in range(300)]
    rng.shuffle(texts)
    for at in range(0, len(texts), 97):
        chunk = texts[at:at + 97]
        made, hashes, ends = word_digests(chunk)
        assert made.dtype == np.int64 and hashes.dtype == np.uint32 and len(ends) == len(chunk)
        starts = [0] + ends[:-1].tolist()
        assert [(int(m), hashes[a:b].tolist()) for m, a, b in zip(made, starts, ends.tolist())] == \
            [(digest(words(t)), _hashes(words(t))) for t in chunk]
    assert len(word_digests([texts[0]])[1]) <= WORDS_KEPT


def test_layout_signatures_are_those_of_the_masked_texts():
    """layout_signatures masks each text once and makes the masked texts' signatures without
    normalising them again: the signatures of mask(text), or the text's own where mask changes
    nothing (no digit, at most ten lines)."""
    import numpy as np

    from taskfit.data.lookalike import MinHashIndex, layout_signatures, mask

    index = MinHashIndex(5, 128, 0.65, None)
    texts = ["Order 123 of 12 May", "No digits HERE\tat  all", "ÉTÉ 2024 Straße ß 7",
             "\n".join(f"Line {i} of the RECEIPT" for i in range(14)), "\n".join(["a b c d e f g"] * 12), "x1"]
    own = index.signatures(texts)
    for known in (own, [None] * len(texts)):
        made = layout_signatures(index.shingles, texts, known)
        for (sig, size), text in zip(made, texts):
            alone, n = index.signature(mask(text))
            assert np.array_equal(sig, alone) and size == n


def test_qa_questions_about_one_passage_are_told_apart_by_grounded_answers(tmp_path):
    qa = TaskSpec(kind="qa", success="s", system_prompt="Answer from the context or say {refusal}.")
    spec = DataSpec(train="x", columns=ColumnMap(input="q", target="a", context="c"))
    c = ("The Mongol Empire was called Yeke Mongghul Ulus, meaning Great Mongol State. Its capital was "
         "designed by Matthew Murray's workshop, and Salamanca was built in Leeds in 1812.")
    rows = [{"q": "What does Yeke Mongghul Ulus mean?", "a": "Great Mongol State", "c": c},
            {"q": "What doesn't Yeke Mongghul Ulus mean?", "a": None, "c": c},  # the refusal: distinct
            {"q": "Who designed Salamanca?", "a": "Matthew Murray", "c": c},
            {"q": "Who designed Salamanca?", "a": None, "c": c},  # the same question, another answer
            {"q": "So, who designed Salamanca?", "a": "Matthew Murray", "c": c}]  # a copy
    result = _scan(tmp_path, rows, qa, spec)
    assert result.distinct == 1 and [n.other_line for n in result.conflicts] == [4]
    assert sorted(n.other_line for n in result.near_duplicates) == [4, 5]


def test_generate_other_replies_to_look_alike_requests_are_kept(tmp_path):
    generate = TaskSpec(kind="generate", success="s", system_prompt="Reply.")
    spec = DataSpec(train="x", columns=ColumnMap(input="q", target="a"))
    ask = "I would like to cancel my order {} because it has not shipped yet, please help me with that"
    reply = ("I'm sorry to hear your order has not shipped. I have cancelled order {} and the refund will "
             "reach your card within five working days. Is there anything else I can do for you?")
    rows = [{"q": ask.format(1234), "a": reply.format(1234)},
            {"q": ask.format(1235), "a": "Of course! Your order is cancelled; you will see the refund soon."},
            {"q": "Any update? " + ask.format(1234), "a": reply.format(1234)},  # a re-send: a copy
            {"q": ask.format(1234) + "!", "a": reply.format(1234).replace("five", "5")}]  # a near-identical reply
    result = _scan(tmp_path, rows, generate, spec)
    assert result.conflicts == [] and result.distinct == 1
    assert sorted(n.other_line for n in result.near_duplicates) == [3, 4]


def test_preference_pairs_swapped_are_a_conflict_and_other_answers_are_kept(tmp_path):
    generate = TaskSpec(kind="generate", success="s", system_prompt="Reply.")
    spec = DataSpec(train="x", format="preference")
    prompt = "Human: How do I keep my sourdough starter alive while I am away for two weeks?\n\nAssistant:"
    a = "Feed it, put it in the fridge, and feed it again when you are back; it will recover in a day or two."
    b = "You cannot, it will die."
    c = "Dry some of it on baking paper before you go and rehydrate it when you return."
    rows = [{"prompt": prompt, "chosen": a, "rejected": b},
            {"prompt": prompt + " Thanks", "chosen": c, "rejected": b},  # another comparison: kept
            {"prompt": prompt + " Please", "chosen": b, "rejected": a}]  # the same choice made the other way
    result = _scan(tmp_path, rows, generate, spec)
    assert result.distinct == 1 and [n.other_line for n in result.conflicts] == [3] and result.kept == 2


def test_leaks_follow_the_same_rule(tmp_path):
    config = _project(tmp_path, receipts(12))
    train = [Example(id=r["id"], input=r["text"], target=json.dumps(r["fields"])) for r in receipts(12)]
    r0 = receipts(12)[0]
    new_receipt = edited(r0, "h1", "09/09/2018", 42.40)
    held = [Example(id="h1", input=new_receipt["text"], target=json.dumps(new_receipt["fields"])),
            Example(id="h2", input="*** REPRINT ***\n" + r0["text"], target=json.dumps(r0["fields"])),
            Example(id="h3", input="*** REPRINT ***\n" + r0["text"],
                    target=json.dumps({**r0["fields"], "total": 999.99}))]
    kept, leaked = drop_leaks(train, held, config)
    assert [ex.id for ex in kept] == ["h1"] and leaked == 2


def _project(tmp_path: Path, rows: list[dict], **data) -> "object":
    _write(tmp_path / "train.jsonl", rows)
    doc = {"task": {"kind": "extract", "success": "s", "system_prompt": "Read the receipt.", "schema": SCHEMA},
           "data": {"train": "train.jsonl", "columns": {"input": "text", "target": "fields"}, **data}}
    (tmp_path / "taskfit.yaml").write_text(yaml.safe_dump(doc))
    return load_config(tmp_path)


def test_group_by_template_keeps_each_layout_on_one_side_and_the_card_counts_them(tmp_path):
    rows = receipts(80)
    prepared = prepare_data(_project(tmp_path, rows, group_by="template"), tmp_path)
    shop = {r["id"]: r["shop"] for r in rows}
    train_shops = {shop[ex.id] for ex in prepared.train}
    held_shops = {shop[ex.id] for ex in prepared.eval}
    assert train_shops and held_shops and train_shops.isdisjoint(held_shops)
    t = prepared.card.templates
    assert t["layouts"] == len(SHOPS) and t["rows_in_layouts"] == len(rows) and t["held_out"] == len(prepared.eval)
    for layout in t["top"]:
        assert 0 in (layout["train"], layout["held_out"]) and layout["train"] + layout["held_out"] == 20
        assert any(name in layout["preview"] for name, _, _ in SHOPS)
    assert "## Layouts (templates)" in render_markdown(prepared.card)
    # A random split puts layouts on both sides.
    mixed = prepare_data(_project(tmp_path, rows), tmp_path).card.templates
    assert any(layout["train"] and layout["held_out"] for layout in mixed["top"])


def test_a_layout_that_dominates_is_warned_about(tmp_path):
    rows = receipts(40, shops=[0] * 28 + [1, 2, 3] * 4)
    card = check_data(_project(tmp_path, rows), tmp_path)
    assert card.templates["top"][0]["rows"] == 28 and card.templates["held_out"] is None
    assert any("one layout" in w and "holds 28 of 40 rows" in w for w in card.warnings)
    prepared = prepare_data(_project(tmp_path, rows), tmp_path)
    assert any("held-out rows" in w and "data.group_by: template" in w for w in prepared.card.warnings)
    balanced = check_data(_project(tmp_path, receipts(40)), tmp_path)
    assert not any("one layout" in w for w in balanced.warnings)


def test_layout_previews_are_redacted(tmp_path):
    rows = [dict(r, text=r["text"] + "\nQUERIES: care@srimaju.example.com, 012-345 6789") for r in receipts(12)]
    card = check_data(_project(tmp_path, rows), tmp_path)
    previews = " ".join(layout["preview"] for layout in card.templates["top"])
    assert "<EMAIL>" in previews and "care@srimaju" not in previews


def test_what_a_layouts_rows_share_shows_through_a_greeting_and_signature_on_one_side_only():
    """A card's layout preview: two tickets of one layout, one with a signature the other lacks
    and another greeting, show the words their body lines share (each line was compared with the
    line at its place, so the preview was only "…"), and nothing either writes alone."""
    from taskfit.data.lookalike import shared_text

    a = ("Hello there,\nThe confirmation for order #32890 says €19.59 but my card was charged a different "
         "amount, which is right? I have attached a screenshot.\nThank you,\nAnna Garcia")
    b = ("Good morning,\nThe confirmation for order #89993 says £259.12 but my card was charged a different "
         "amount, which is right? I have attached a screenshot.")
    shown = shared_text(a, b, width=80)
    assert "The confirmation for order … says … but my card was charged a different amount" in shown
    assert not any(word in shown for word in ("Hello", "morning", "Anna", "Thank", "32890", "€"))
    receipt = "SRI MAJU\nNo. 12 Jalan 3\nITEM A 2.50\nITEM B 3.00\nTOTAL 5.50\nTHANK YOU"
    other = "SRI MAJU\nNo. 99 Jalan 7\nITEM C 1.00\nTOTAL 1.00\nTHANK YOU"
    assert shared_text(receipt, other) == "SRI MAJU / No. … Jalan … / ITEM … / … / TOTAL … / THANK YOU"


SIGNATURE = ("\n--\nAnna Smith | Customer Operations | Northwind Traders\nNorthwind Traders Ltd, 12 High Street, "
             "Leeds LS1 4AP. This e-mail and any attachments are confidential and intended solely for the "
             "addressee. If you have received it in error, please notify the sender and delete it. Northwind "
             "Traders accepts no liability for viruses; please scan attachments before opening them.")


def test_tickets_sharing_a_long_signature_are_distinct_examples_whatever_their_labels(tmp_path, classify_task):
    """The signature makes the tickets near-identical texts; their own words tell them apart,
    so one label twice is no copy and two labels are no conflict."""
    bodies = [("I was charged twice for invoice 4411 this month.", "billing"),
              ("The invoice total for March looks wrong, can you check it?", "billing"),
              ("Please cancel my subscription from next month on.", "refund"),
              ("The app crashes when I open the settings page.", "technical_issue")]
    rows = [{"text": body + SIGNATURE, "label": label} for body, label in bodies]
    rows.append({"text": "Any update? " + rows[0]["text"], "label": "billing"})  # a re-send: a copy
    spec = DataSpec(train="x", columns=ColumnMap(input="text", target="label"))
    result = _scan(tmp_path, rows, classify_task, spec)
    assert result.kept == 4 and result.conflicts == [] and result.distinct >= 3
    assert [n.other_line for n in result.near_duplicates] == [5]


def test_copy_words_is_the_bar_between_a_copy_and_a_template_filled_twice(tmp_path, classify_task):
    ask = ("Please cancel my order {} as soon as you can: it was a mistake, I no longer need the items and "
           "would like the full refund on the card I paid with. Thank you very much for your help!")
    rows = [{"text": ask.format("88123 placed yesterday"), "label": "cancellation"},
            {"text": ask.format("90456 placed on Monday"), "label": "cancellation"}]  # 2 and 3 words of their own
    for copy_words, kept in ((3, 1), (1, 2)):
        spec = DataSpec(train="x", columns=ColumnMap(input="text", target="label"), dedup={"copy_words": copy_words})
        result = _scan(tmp_path, rows, classify_task, spec)
        assert result.kept == kept and result.conflicts == []


def test_signatures_made_in_batches_are_datasketchs_minhash_of_each_texts_shingles(kernels):
    """The data check makes a batch of rows' signatures at once (in C, or with numpy where no
    compiler is found); each must be exactly what datasketch's MinHash over the CRC-32 of the
    text's distinct shingles gives (what the checks compared before, one Python call a shingle),
    so the same rows look alike: ASCII text,
    characters beyond it (a shingle of ``€`` and ``ü`` is hashed from its UTF-8 bytes), texts
    shorter than a shingle, the empty text, and shingle sizes past the packed path's 8."""
    import zlib

    import numpy as np
    from datasketch import MinHash

    from taskfit.data.lookalike import MinHashIndex, normalise

    rng = random.Random(3)
    alphabet = "abcdefghij  klmnop,.0123€üé😀\n\t"
    texts = ["", "ab", "Café au lait", "€€€€€€€€", "x" * 7, "Refund  my ORDER 1234 please", "Über 😀 emoji"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120))) for _ in range(80)]
    for k in (1, 5, 8, 9):
        index = MinHashIndex(k, 64, 0.8, 0.9)
        made = index.signatures(texts)
        assert len(made) == len(texts)
        for text, (sig, size) in zip(texts, made):
            t = normalise(text)
            shingles = {t[i:i + k].encode() for i in range(max(1, len(t) - k + 1))}
            want = MinHash(num_perm=64, seed=1, hashfunc=zlib.crc32)
            want.update_batch(list(shingles))
            assert size == len(shingles), (k, text)
            assert np.array_equal(sig, want.hashvalues), (k, text)
        assert np.array_equal(index.signature(texts[5])[0], made[5][0])


def test_a_batch_looked_up_together_matches_as_rows_looked_up_one_by_one(kernels):
    """The data check looks a chunk of rows up at once (MinHashIndex.lookup) and then matches
    and indexes them in order: every row must get the matches it gets looked up alone, in the
    index as the rows before it left it, whether its look-alikes came before the chunk, earlier
    in the same chunk (the first of them indexed makes the bucket), or across a merge of the
    pending hashes in the middle of a chunk (a small flush_rows makes many)."""
    import numpy as np

    from taskfit.data.lookalike import MinHashIndex, similarity
    from taskfit.data.sample import generate_tickets

    rng = random.Random(5)
    base = [r["messages"][0]["content"] for r in generate_tickets(120, seed=4)]
    texts = []
    for text in base:  # each ticket, then now and then a copy or a re-send a few rows later
        texts.append(text)
        if rng.random() < 0.5:
            texts.insert(len(texts) - rng.randint(0, 3), rng.choice([text, "Any update? " + text, text + " thanks"]))
    for flush_rows, chunk, bits, table in [(7, 16, 32, 50_000), (50, 5, 16, 50_000), (50_000, 32, 32, 50_000),
                                           (7, 16, 32, 9), (50, 5, 16, 9)]:
        alone = MinHashIndex(5, 128, 0.8, 0.9, flush_rows=flush_rows, bits=bits)
        together = MinHashIndex(5, 128, 0.8, 0.9, flush_rows=flush_rows, bits=bits)
        together._sigs.CHUNK = table  # signatures spread over many chunks of the table
        sigs, sizes = together.shingles.signatures(texts)
        got, want = [], []
        for at in range(0, len(texts), chunk):
            probes = together.lookup(sigs[at:at + chunk], sizes[at:at + chunk])
            for sig, size, probe in zip(sigs[at:at + chunk], sizes[at:at + chunk].tolist(), probes):
                found, expected = together.matches(sig, size, probe), alone.matches(sig, size)
                # each similarity as similarity() makes it from the two signatures, one pair at a time
                assert all(sim == similarity(np.count_nonzero(alone._sigs[k] == sig.astype(alone._stored)) / 128,
                                             size, alone._sizes[k],
                                             0.8, 0.9) for k, sim in expected)
                got.append(found)
                want.append(expected)
                if not any(sim >= 0.95 for _, sim in expected):  # a copy is not indexed
                    assert together.insert(sig, size, probe) == alone.insert(sig, size)
        assert got == want, flush_rows
        assert sum(map(len, want)) > 60 and together.n < len(texts)
        assert together._flushes == alone._flushes and np.array_equal(together._sorted_i, alone._sorted_i)


def test_the_share_of_equal_values_is_counted_exactly_for_any_number_of_permutations():
    """MinHashIndex._same counts a pair's equal values 8 to a 64-bit word: the same shares as
    counting them one by one, for 16 to 1,024 permutations (and one not a multiple of 8), both
    widths stored."""
    import numpy as np

    from taskfit.data.lookalike import MinHashIndex

    for perms, bits in [(128, 32), (128, 16), (1024, 32), (16, 16), (100, 32)]:
        index = MinHashIndex(5, perms, 0.5, None, bits=bits)
        rng = np.random.default_rng(perms)
        stored = rng.integers(0, 2**32, (300, perms), dtype=np.uint32)
        for sig in stored:
            index._sigs.append(sig)
        rows = rng.integers(0, 300, 2000)
        sigs = stored[rows].copy()
        sigs[rng.random(sigs.shape) < rng.random((2000, 1))] = 7  # from all equal to none
        sigs = sigs.astype(index._stored)
        want = np.array([np.count_nonzero(index._sigs[k] == sig) for k, sig in zip(rows, sigs)]) / perms
        assert np.array_equal(index._same(sigs, rows), want)
        assert want.min() < 0.1 and want.max() == 1.0


def test_the_pending_table_finds_every_hash_it_holds_as_it_grows(kernels):
    """The look-alike index's pending hashes (an open-addressing table in numpy arrays): every
    hash put in is found under its row, none that was not, through collisions (hashes that
    differ only in their low bits land in one slot) and past its size (it doubles); a hash put in
    again, in the same call or a later one, stays under its first row, held once."""
    import numpy as np

    from taskfit.data.lookalike import _Pending

    rng = np.random.default_rng(0)
    table = _Pending(100)
    keys = np.concatenate([rng.integers(0, 2**63, 3000, dtype=np.uint64), np.arange(1, 500, dtype=np.uint64)])
    rows = np.arange(len(keys), dtype=np.int32)
    for at in range(0, len(keys), 700):
        table.add(keys[at:at + 700], rows[at:at + 700])
        assert np.array_equal(table.get(keys[:at + 700]), rows[:at + 700])
    assert len(table.rows) > 4096 and (table.get(rng.integers(2**63, 2**64 - 1, 500, dtype=np.uint64)) == -1).all()
    # hashes held already and a hash twice in one call, under other rows: the first rows stay
    again = np.concatenate([keys[::3], [np.uint64(2**64 - 5), np.uint64(2**64 - 5)]]).astype(np.uint64)
    table.add(again, np.arange(len(again), dtype=np.int32) + 10_000)
    assert np.array_equal(table.get(keys), rows) and table.get(again[-1:])[0] == 10_000 + len(again) - 2
    held, under = table.items()
    assert table.n == len(held) == len(keys) + 1
    in_order = table.sorted()  # what a flush merges: every hash under its row, by hash
    assert np.array_equal(in_order[0], np.sort(held)) and np.array_equal(in_order[1], under[np.argsort(held)])
    assert sorted(zip(held.tolist(), under.tolist())) == sorted(
        zip(keys.tolist() + [2**64 - 5], rows.tolist() + [10_000 + len(again) - 2]))
    table.clear()
    assert (table.get(keys) == -1).all()


def test_the_sorted_hashes_are_searched_within_buckets_where_numpy_would_find_them(kernels):
    """MinHashIndex._search, the bucketed binary search over the merged band hashes, gives
    np.searchsorted's left positions: for hashes held once or in runs (one per flush), hashes it
    does not hold, and the ends of the 64-bit range."""
    import numpy as np

    from taskfit.data.lookalike import MinHashIndex

    rng = np.random.default_rng(2)
    index = MinHashIndex(5, 128, 0.8, 0.9, flush_rows=10)
    held = np.unique(rng.integers(0, 2**64 - 1, 200_000, dtype=np.uint64))
    held[-1] = np.uint64(2**64 - 1)
    for part in (held, held[::5], held[::15]):  # each flush adds a hash again: runs of one to three
        index._pending.add(part, np.arange(len(part), dtype=np.int32))
        index._flush()  # merged, sorted, and the buckets made again
    assert len(index._sorted_h) > len(held) and (np.diff(index._sorted_h) == 0).any()
    # every hash under its row, in order, a hash added again after the rows it was added under before
    parts = (held, held[::5], held[::15])
    order = np.argsort(np.concatenate(parts), kind="stable")
    assert np.array_equal(index._sorted_h, np.concatenate(parts)[order])
    assert np.array_equal(index._sorted_i, np.concatenate([np.arange(len(p)) for p in parts])[order])
    keys = np.sort(np.concatenate([held[::13], rng.integers(0, 2**64 - 1, 5000, dtype=np.uint64),
                                   np.array([0, 1, 2**64 - 1], np.uint64)]))
    assert np.array_equal(index._search(keys), np.searchsorted(index._sorted_h, keys))
    assert index._top_bits > 10
    firsts = np.arange((1 << index._top_bits) + 1, dtype=object) << (64 - index._top_bits)
    assert index._starts.tolist() == [int(np.searchsorted(index._sorted_h, np.uint64(f))) if f < 2**64
                                      else len(index._sorted_h) for f in firsts]


def test_the_signature_table_gives_back_any_rows_in_any_order_across_its_chunks():
    """The look-alike index keeps signatures in chunks (_Table) and gathers a batch's candidates
    from all of them at once: each row asked for comes back as appended, in the order asked, rows
    repeated, from one chunk or many, none."""
    import numpy as np

    from taskfit.data.lookalike import _Table

    rng = np.random.default_rng(3)
    table = _Table((5,), np.uint32)
    table.CHUNK = 7  # 15 chunks
    rows = rng.integers(0, 2**32, (100, 5), dtype=np.uint32)
    for row in rows:
        table.append(row)
    for wanted in (rng.integers(0, 100, 300), np.array([99, 0, 99, 3]), np.arange(7, 14), np.array([], np.int64)):
        assert np.array_equal(table.gather(wanted.astype(np.int64)), rows[wanted])


def test_the_data_check_decides_the_same_with_its_c_kernels_as_with_numpy(tmp_path, monkeypatch):
    """Where a C compiler is found the check's signatures and candidate checks run compiled
    (native.c); the card a user reads (counts, look-alike pairs with their similarities, layouts)
    must be the same as numpy's, which runs where none is."""
    from dataclasses import asdict

    from taskfit.data import native
    from taskfit.quickstart import make_quickstart_project

    make_quickstart_project(tmp_path / "p", n_tickets=900)
    config = load_config(tmp_path / "p")
    cards = {}
    for flag in ("0", "1"):
        monkeypatch.setattr(native, "_loaded", {})
        monkeypatch.setenv("TASKFIT_NATIVE", flag)
        if flag == "1" and native.library() is None:
            pytest.skip("no C compiler on this machine: the numpy code is what runs")
        cards[flag] = asdict(check_data(config, tmp_path / "p"))
    assert cards["1"]["counts"]["near_duplicates"] > 10
    assert cards["0"] == cards["1"]


def test_without_a_c_compiler_the_check_runs_its_numpy_code(tmp_path, monkeypatch):
    """No compiler on the PATH, one that fails, or a cache it cannot write to: no kernels (and no
    half-written file left in the cache), and the signatures come from numpy, datasketch's."""
    import zlib

    import numpy as np
    from datasketch import MinHash

    from taskfit.data import native
    from taskfit.data.lookalike import Shingles

    monkeypatch.delenv("TASKFIT_NATIVE", raising=False)
    failing = tmp_path / "cc"
    failing.write_text("#!/bin/sh\necho 'cc: error: no such thing' >&2\nexit 1\n")
    failing.chmod(0o755)
    (tmp_path / "a-file").write_text("not a folder")
    texts = ["Refund my order", "refund my order please"]
    for compiler, cache in [(str(tmp_path / "no-such-cc"), tmp_path / "cache"), (str(failing), tmp_path / "cache"),
                            (None, tmp_path / "a-file" / "cache")]:
        monkeypatch.setattr(native, "_loaded", {})
        monkeypatch.setenv("TASKFIT_CACHE", str(cache))
        if compiler is None:
            monkeypatch.delenv("CC", raising=False)
        else:
            monkeypatch.setenv("CC", compiler)
        assert native.library() is None
        assert not list(tmp_path.rglob("*.tmp"))
        sigs, sizes = Shingles(5, 16).signatures(texts)
        for text, sig, size in zip(texts, sigs, sizes.tolist()):
            shingles = {text.lower()[i:i + 5].encode() for i in range(len(text) - 4)}
            want = MinHash(num_perm=16, seed=1, hashfunc=zlib.crc32)
            want.update_batch(list(shingles))
            assert size == len(shingles) and np.array_equal(sig, want.hashvalues)


def test_a_row_with_hundreds_of_candidates_matches_as_numpy_finds_it(kernels):
    """A text many indexed rows resemble (a layout's common part) meets one row a flush under
    each of its buckets: with a flush after every row, hundreds of candidates, each verified once
    and in order (the C kernel sorts a long list another way than a short one)."""
    from taskfit.data.lookalike import MinHashIndex

    rng = random.Random(8)
    common = "Order confirmation for your purchase at the shop, thank you for shopping with us today"
    texts = [f"{common} {rng.randint(0, 10**9)} {'x' * rng.randint(0, 9)}" for _ in range(400)]
    alone = MinHashIndex(5, 128, 0.5, 0.9, flush_rows=1)
    together = MinHashIndex(5, 128, 0.5, 0.9, flush_rows=1)
    sigs, sizes = together.shingles.signatures(texts)
    for sig, size in zip(sigs[:300], sizes[:300].tolist()):  # indexed one by one: a flush each
        alone.insert(sig, size)
        together.insert(sig, size)
    probes = together.lookup(sigs[300:], sizes[300:])
    found = [together.matches(sig, size, probe) for sig, size, probe in zip(sigs[300:], sizes[300:].tolist(), probes)]
    assert found == [alone.matches(sig, size) for sig, size in zip(sigs[300:], sizes[300:].tolist())]
    assert min(len(f) for f in found) > 64
