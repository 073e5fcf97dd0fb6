"""Blind human review: two candidates' answers side by side, sides shuffled and names hidden.

``export`` writes ``review.html`` (self-contained: the reviewer clicks, then downloads their
verdicts as CSV, nothing is sent anywhere), the same items as ``review.csv`` for reviewing in a
spreadsheet, and ``review_key.json``, which says which side was which and stays with you.
``import`` reads a filled-in CSV back, un-blinds it with the key, and gives the win rate with a 95%
interval; ``compare`` shows it beside the scorecard.

Only rows the two candidates answered differently are sampled: two same answers can only tie,
and a classify review of mostly same labels asked a reviewer to judge style, and gave a win rate
of mostly ties whose interval came out narrow. The export counts the rows left out, and the win
rate is over the items a reviewer decided, ties left out (a sign test's framing), with Wilson's
interval.
"""

from __future__ import annotations

import csv
import html
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from taskfit.errors import DataError
from taskfit.records import Example, Prediction

RATINGS = ("accuracy", "relevance", "style", "usefulness")
CHOICES = ("1", "2", "tie")
COLUMNS = ["item", "input", "response_1", "response_2", "better"] + \
    [f"{r}_{side}" for side in ("1", "2") for r in RATINGS] + ["comment"]


def export_review(out_dir: Path, examples: Sequence[Example], a: str, a_preds: Sequence[Prediction],
                  b: str, b_preds: Sequence[Prediction], n: int, seed: int = 0) -> dict[str, Path]:
    """Write the review page, its CSV and the key for ``n`` examples (a seeded random sample of
    those the two answered differently; the key counts the rows answered alike, ``agreed``, of
    the ``rows`` both answered)."""
    by_a = {p.example_id: p for p in a_preds}
    by_b = {p.example_id: p for p in b_preds}
    both = [ex for ex in examples if ex.id in by_a and ex.id in by_b]
    differ = [ex for ex in both if by_a[ex.id].output.strip() != by_b[ex.id].output.strip()]
    if not differ:
        raise DataError(f"{a} and {b} gave the same answer on all {len(both)} held-out rows both answered: "
                        "there is nothing to choose between", hint="review two candidates that disagree")
    rng = random.Random(seed)
    chosen = rng.sample(differ, min(n, len(differ)))
    items, key = [], {"a": a, "b": b, "rows": len(both), "agreed": len(both) - len(differ), "items": {}}
    for k, ex in enumerate(chosen, 1):
        a_first = rng.random() < 0.5
        first, second = (by_a, by_b) if a_first else (by_b, by_a)
        item = f"R{k:03d}"
        items.append({"item": item, "input": shown_input(ex.input, ex.context),
                      "response_1": first[ex.id].output, "response_2": second[ex.id].output})
        key["items"][item] = {"example_id": ex.id, "side_1": "a" if a_first else "b"}
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"html": out_dir / "review.html", "csv": out_dir / "review.csv", "key": out_dir / "review_key.json"}
    write_sheet(paths["csv"], COLUMNS, items)
    paths["key"].write_text(json.dumps(key, indent=1), encoding="utf-8")
    paths["html"].write_text(review_page(
        "taskfit blind review", "Blind review",
        "For each request, pick the better response (or a tie) and rate each one from 1 (poor) to 5 "
        "(excellent). Which system wrote which response is hidden, and the sides are shuffled.",
        items, COLUMNS, _pair_block, judged="better"), encoding="utf-8")
    return paths


def _pair_block(it: dict[str, str]) -> str:
    """One A/B item's controls: the two responses with their ratings, the choice, a comment."""
    i = html.escape(it["item"])

    def rating(side: str, name: str) -> str:
        opts = "".join(f"<option>{v}</option>" for v in ("", "1", "2", "3", "4", "5"))
        return f'<label>{name} {select(i, f"{name}_{side}", opts)}</label>'

    sides = "".join(
        f'<div class="side"><h3>Response {s}</h3><pre>{html.escape(it[f"response_{s}"])}</pre>'
        + " ".join(rating(s, r) for r in RATINGS) + "</div>" for s in ("1", "2"))
    choice = " ".join(radio(i, "better", c, "Response " + c + " is better" if c != "tie" else "tie")
                      for c in CHOICES)
    return f'<div class="pair">{sides}</div><p class="choice">{choice}</p>{comment_box(i)}'


# ---- the page and the sheet, shared by the blind review and the review queue -------------------
def shown_input(text: str, context: str | None) -> str:
    """What a reviewer reads of a request: its input, and the start of a qa passage."""
    return text if context is None else f"{text}\n\n[context] {context[:1500]}"


# Every control carries data-item (its item) and data-field (its CSV column); the page's script
# reads them back into rows, so a new kind of review page only writes its controls.

def radio(item: str, field: str, value: str, text: str) -> str:
    return (f'<label><input type="radio" name="{field}-{item}" data-item="{item}" data-field="{field}" '
            f'value="{html.escape(value)}"> {html.escape(text)}</label>')


def select(item: str, field: str, options: str) -> str:
    return f'<select name="{field}" data-item="{item}" data-field="{field}">{options}</select>'


def comment_box(item: str) -> str:
    return (f'<textarea name="comment" data-item="{item}" data-field="comment" '
            'placeholder="comment (optional)"></textarea>')


def review_page(title: str, heading: str, intro: str, items: Sequence[dict[str, str]], columns: Sequence[str],
                block: Callable[[dict[str, str]], str], judged: str, reviewer: bool = False) -> str:
    """A self-contained review page: the items (``block`` writes each one's controls), and a button
    that downloads the filled-in rows as CSV with ``columns`` (nothing is sent anywhere). An item
    counts as judged once its ``judged`` field is set; ``reviewer`` asks the reviewer's name once,
    for every row."""
    blocks = "".join(f'<section class="item" id="{html.escape(it["item"])}"><h2>{html.escape(it["item"])}</h2>'
                     f'<pre class="input">{html.escape(it["input"])}</pre>{block(it)}</section>' for it in items)
    name = ('<label>Your name <input id="reviewer" data-all="reviewer" placeholder="who reviewed"></label> '
            if reviewer else "")
    shown = [{k: v for k, v in it.items() if k in columns} for it in items]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
.pair {{ display: flex; gap: 1em; }} .side {{ flex: 1; border: 1px solid #ccc; padding: .5em; }}
pre {{ white-space: pre-wrap; background: #f7f7f7; padding: .5em; }} .item {{ border-bottom: 2px solid #ddd; padding: 1em 0; }}
textarea {{ width: 100%; }} #bar {{ position: sticky; top: 0; background: #fff; padding: .5em 0; }}
</style></head><body>
<h1>{html.escape(heading)}</h1>
<p>{html.escape(intro)} Nothing leaves this page: when done, download your verdicts and send the CSV back.</p>
<div id="bar">{name}<button id="download" onclick="download()">Download verdicts (CSV)</button> <span id="done"></span></div>
{blocks}
<script>
const COLUMNS = {json.dumps(list(columns))};
const ITEMS = {json.dumps(shown)};
function verdicts() {{
  const all = {{}};
  document.querySelectorAll("[data-all]").forEach(el => all[el.dataset.all] = el.value);
  return ITEMS.map(it => {{
    const row = Object.assign({{}}, it, all);
    document.querySelectorAll(`[data-item="${{it.item}}"]`).forEach(el => {{
      if (el.type !== "radio") row[el.dataset.field] = el.value;
      else if (el.checked) row[el.dataset.field] = el.value;
    }});
    return row;
  }});
}}
function csvText() {{
  const q = v => '"' + String(v ?? "").replaceAll('"', '""') + '"';
  return [COLUMNS.join(",")].concat(verdicts().map(r => COLUMNS.map(c => q(r[c])).join(","))).join("\\r\\n") + "\\r\\n";
}}
function download() {{
  const a = document.createElement("a");
  // a byte-order mark first: Excel reads a CSV without one in the machine's code page ("€" as "â‚¬")
  a.href = URL.createObjectURL(new Blob(["\\ufeff" + csvText()], {{type: "text/csv"}}));
  a.download = "review_verdicts.csv";
  a.click();
}}
document.addEventListener("change", () => {{
  document.getElementById("done").textContent = verdicts().filter(r => r.{judged}).length + " of " + ITEMS.length + " judged";
}});
</script>
</body></html>
"""


def write_sheet(path: Path, columns: Sequence[str], items: Sequence[dict[str, str]]) -> None:
    """The items as the CSV a spreadsheet opens (the columns the page downloads), with a byte-order
    mark: Excel reads a CSV without one in the machine's code page ("€" shown as "â‚¬")."""
    with path.open("w", newline="", encoding="utf-8-sig") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        for it in items:
            writer.writerow({c: it.get(c, "") for c in columns})


def read_sheet(path: Path, required: set[str], hint: str) -> Iterator[tuple[int, dict[str, str]]]:
    """A filled-in review CSV's rows with the line each starts on (as an editor numbers it: a cell
    holding a line break does not shift the rows after it); a DataError names a missing column
    (``hint`` says which file to import). The sheet saved from Excel as a workbook (.xlsx) is read
    too, each row with its row number."""
    from taskfit.data.read import is_workbook, read_rows, workbook_header

    if is_workbook(path):
        missing = required - set(workbook_header(path))
        if missing:
            raise DataError(f"{path}: no column {', '.join(sorted(missing))}", hint=hint)
        for raw in read_rows(path):
            if raw.error is not None:
                raise DataError(f"{raw.source}: {raw.error}", hint="mend that row and import the sheet again")
            if not raw.empty:
                yield raw.line, raw.obj
        return
    # A spreadsheet may save the sheet as Windows-1252: that is named with its line, not a traceback.
    text, delimiter = _sheet_text(path)
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        missing = required - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: no column {', '.join(sorted(missing))}", hint=hint)
        start = reader.line_num + 1
        for row in reader:
            yield start, row
            start = reader.line_num + 1


def sheet_columns(path: Path) -> list[str]:
    """The header of a review CSV, or of its sheet saved as a workbook (which kind of review it is)."""
    from taskfit.data.read import is_workbook, workbook_header

    if is_workbook(path):
        return workbook_header(path)
    text, delimiter = _sheet_text(path)
    with io.StringIO(text, newline="") as f:
        return next(csv.reader(f, delimiter=delimiter), [])


def _sheet_text(path: Path) -> tuple[str, str]:
    """A review sheet's text and the character between its columns (a comma, or the semicolon
    Excel saves with in much of Europe)."""
    from taskfit.data.read import read_text, sheet_delimiter

    text = read_text(path, hint="save the sheet as CSV UTF-8")
    header, _, rest = text.partition("\n")
    return text, sheet_delimiter(header, ",", rest.partition("\n")[0])


@dataclass
class ReviewResult:
    a: str
    b: str
    judged: int
    a_wins: int
    b_wins: int
    ties: int
    ratings: dict[str, dict[str, float]]  # candidate -> rating -> mean
    rows: int = 0  # held-out rows both answered (0: unknown, a review exported before it was kept)
    agreed: int = 0  # of them answered alike, so never shown

    @property
    def win_rate(self) -> float | None:
        """a's share of the decided items (ties left out); None when none was decided."""
        decided = self.a_wins + self.b_wins
        return self.a_wins / decided if decided else None

    @property
    def ci(self) -> tuple[float, float] | None:
        """Wilson's 95% interval for :attr:`win_rate`. Counting ties as half a win each (the
        bootstrap before) narrows it with every tie, though a tie says nothing of which is better:
        6 wins and 4 losses among 50 items, 40 of them ties, gave 52% [46%, 58%]; 6 of the 10
        decided is 60% [31%, 83%]."""
        from scipy.stats import binomtest

        decided = self.a_wins + self.b_wins
        if not decided:
            return None
        ci = binomtest(self.a_wins, decided).proportion_ci(method="wilson")
        return float(ci.low), float(ci.high)

    def sentence(self) -> str:
        shown = (f" of the {self.rows - self.agreed} held-out rows the two answered differently ({self.agreed} "
                 f"of {self.rows} answered alike were left out)" if self.rows else "")
        rate = (f"{self.a} won {100 * self.win_rate:.0f}% of the {self.a_wins + self.b_wins} decided "
                f"[{100 * self.ci[0]:.0f}%, {100 * self.ci[1]:.0f}%] (95% Wilson, ties left out)"
                if self.win_rate is not None else "no item decided")
        return (f"Blind review, {self.judged} items{shown}: {self.a} preferred {self.a_wins}, {self.b} "
                f"{self.b_wins}, ties {self.ties}; {rate}.")


def import_review(verdicts: Path, key_path: Path) -> ReviewResult:
    """Un-blind a filled-in review CSV with its key; every row must name a known item and a valid
    choice, or the error says which line is wrong."""
    key = json.loads(key_path.read_text(encoding="utf-8"))
    wins = {"a": 0, "b": 0}
    ties = judged = 0
    ratings: dict[str, dict[str, list[float]]] = {key["a"]: {}, key["b"]: {}}
    for line, row in read_sheet(verdicts, {"item", "better"},
                                "import the CSV that review.html downloads, or review.csv filled in"):
        item, better = (row.get("item") or "").strip(), (row.get("better") or "").strip().lower()
        if item not in key["items"]:
            raise DataError(f"{verdicts}:{line}: item {item!r} is not in {key_path.name}",
                            hint="use the key written with this review's export")
        if not better:
            continue  # not judged yet
        if better not in CHOICES:
            raise DataError(f"{verdicts}:{line}: better = {better!r}; allowed: 1, 2 or tie")
        side_1 = key["items"][item]["side_1"]
        side_of = {"1": side_1, "2": "b" if side_1 == "a" else "a"}
        judged += 1
        if better == "tie":
            ties += 1
        else:
            wins[side_of[better]] += 1
        for s in ("1", "2"):
            for r in RATINGS:
                value = (row.get(f"{r}_{s}") or "").strip()
                if not value:
                    continue
                if value not in {"1", "2", "3", "4", "5"}:
                    raise DataError(f"{verdicts}:{line}: {r}_{s} = {value!r}; ratings are 1 to 5")
                ratings[key[side_of[s]]].setdefault(r, []).append(float(value))
    if not judged:
        raise DataError(f"{verdicts}: no item has a verdict yet (column 'better' is empty everywhere)")
    return ReviewResult(a=key["a"], b=key["b"], judged=judged, a_wins=wins["a"], b_wins=wins["b"],
                        ties=ties, rows=key.get("rows", 0), agreed=key.get("agreed", 0),
                        ratings={c: {r: sum(x) / len(x) for r, x in rs.items()} for c, rs in ratings.items()})


def save_review(root: Path, result: ReviewResult) -> Path:
    """The counts, and the win rate and its interval worked out from them, for other readers."""
    path = root / "reviews" / f"{result.a}__vs__{result.b}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**result.__dict__, "win_rate": result.win_rate, "ci": result.ci}, indent=1),
                    encoding="utf-8")
    return path


def load_reviews(root: Path) -> list[ReviewResult]:
    """The kept reviews; the win rate and interval are worked out again from the counts (one kept
    before counted ties as half)."""
    out = []
    for p in sorted((root / "reviews").glob("*.json")):
        data: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
        data.pop("win_rate", None), data.pop("ci", None)
        out.append(ReviewResult(**data))
    return out
