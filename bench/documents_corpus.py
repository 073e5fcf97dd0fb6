"""A seeded corpus of labelled business documents: personal data planted among its look-alikes.

Five kinds of document, several layouts each, built the way the real ones print:

* ``receipt``: shop receipts (a Malaysian grocer in the style of the SROIE scanned receipts, a US
  store, a UK shop, a café, a petrol station): company, address, an optional telephone line,
  company registration and GST/VAT numbers, invoice number, the date in the formats receipts use
  (``10-03-2018``, ``2018-03-18``, ``25032018``, ``18/03/2018 14:32``...), item lines with EAN-13
  or UPC-A barcodes (valid check digits), quantities, prices and totals;
* ``invoice``: supplier invoices (German, US, UK): VAT ids and company numbers that pass their
  check digits, invoice and purchase-order numbers, dates, amounts, the supplier's IBAN;
* ``signature``: e-mail signatures with national and international phone numbers and e-mail
  addresses, beside dates, references and company numbers;
* ``ticket``: support tickets with order numbers (Amazon-style ``112-3456789-1234567`` too),
  tracking numbers, amounts, Luhn-valid card numbers, and now and then an API key (Stripe
  ``sk_live_…``, AWS ``AKIA…``, GitHub ``ghp_…``);
* ``chat``: support chat logs with time stamps, order numbers, one-time codes, and customers
  giving their phone number, e-mail or card.

Every planted piece of personal data is a labelled span of kind ``PHONE``, ``EMAIL``, ``CARD``,
``IBAN`` or ``SECRET``; every look-alike (``DATE``, ``TIME``, ``AMOUNT``, ``BARCODE``,
``INVOICE_NO``, ``ORDER_NO``, ``TAX_ID``, ``REG_NO``, ``REF``, ``TRACKING``) is labelled too, so
a detector's precision and recall can be measured per kind, and a redaction that touches a date,
an amount, a barcode or an invoice number can be named. Masked card numbers (``**** 1234``) are
neither: they hold no personal data and are left unlabelled.

Every planted phone number carries the evidence a careful reader would use: a label on its line
(``Tel``, ``Phone``, ``Mobile``, ``call me on``...), an international ``+`` prefix, or a number
valid in the US or the UK (phonenumbers). Phone numbers are drawn at random and kept when
phonenumbers calls them valid, so they look like real ones; the Malaysian receipts' numbers are
labelled ``TEL``/``FAX`` as they are on real receipts.

Receipts carry ``answer = {"company", "date", "address", "total"}``, each exactly as printed in
the text (the address on one line), so the same corpus serves an extract task
(:func:`write_extract_jsonl`). A few documents are true copies of an earlier one (the same text,
or with trailing spaces added to its lines), marked ``copy_of``.

The output depends only on ``n`` and ``seed``::

    from documents_corpus import documents
    docs = documents(400, seed=0)       # bench/ on sys.path
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

PII_KINDS = ("PHONE", "EMAIL", "CARD", "IBAN", "SECRET")
LOOKALIKE_KINDS = ("DATE", "TIME", "AMOUNT", "BARCODE", "INVOICE_NO", "ORDER_NO", "TAX_ID", "REG_NO", "REF",
                   "TRACKING")
DOC_KINDS = ("receipt", "invoice", "signature", "ticket", "chat")


@dataclass(frozen=True)
class Span:
    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class Doc:
    id: str
    kind: str  # receipt, invoice, signature, ticket, chat
    layout: str
    text: str
    spans: tuple[Span, ...]  # planted personal data
    lookalikes: tuple[Span, ...]  # dates, amounts, barcodes, invoice numbers... that are not
    answer: dict[str, str] = field(default_factory=dict)  # receipts: company, date, address, total
    copy_of: str | None = None  # the id of the document this one copies

    def value(self, span: Span) -> str:
        return self.text[span.start:span.end]


class _Text:
    """A document written piece by piece; a piece given as ``(kind, value)`` is recorded as a span."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.at = 0
        self.spans: list[Span] = []
        self.lookalikes: list[Span] = []
        self.values: dict[str, str] = {}

    def add(self, *pieces: str | tuple[str, str]) -> "_Text":
        for piece in pieces:
            if isinstance(piece, tuple):
                kind, value = piece
                span = Span(kind, self.at, self.at + len(value))
                (self.spans if kind in PII_KINDS else self.lookalikes).append(span)
                piece = value
            self.parts.append(piece)
            self.at += len(piece)
        return self

    def line(self, *pieces: str | tuple[str, str]) -> "_Text":
        return self.add(*pieces, "\n")

    def doc(self, id: str, kind: str, layout: str, answer: dict[str, str] | None = None) -> Doc:
        text = "".join(self.parts)
        for value in (answer or {}).values():
            assert value in text, (id, value)
        return Doc(id, kind, layout, text, tuple(self.spans), tuple(self.lookalikes), dict(answer or {}))


# ---- values -----------------------------------------------------------------------------------

_FIRST = ["Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi",
          "Luca", "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tomas", "Aisyah", "Wei Ling"]
_LAST = ["Smith", "Garcia", "Mueller", "Okafor", "Rossi", "Tanaka", "Novak", "Dubois", "Silva", "Kowalski",
         "Larsen", "Haddad", "Brown", "Ivanova", "Chen", "Patel", "Tan", "Abdullah"]
_MY_SHOPS = ["KEDAI RUNCIT SRI MAJU", "PASARAYA BESTMART", "PERNIAGAAN HUP SENG", "SYARIKAT LIM BROTHERS",
             "UNIHARDWARE TRADING", "KEDAI UBAT CAHAYA", "MINI MARKET SUNRISE", "ECO GROCER"]
_MY_STREETS = ["NO 12, JALAN SS 2/55", "LOT 1851-A, JALAN KPB 6", "NO 3, JALAN PUTERI 2/4",
               "NO 45, JALAN TUN RAZAK", "G-07, JALAN MERANTI 1", "NO 8, JALAN BAKAWALI 50"]
_MY_TOWNS = ["47300 PETALING JAYA, SELANGOR", "43300 SERI KEMBANGAN, SELANGOR", "47100 PUCHONG, SELANGOR",
             "50450 KUALA LUMPUR", "81100 JOHOR BAHRU, JOHOR", "10200 GEORGETOWN, PULAU PINANG"]
_US_SHOPS = ["Walton Mart", "Fresh Basket Market", "Corner Hardware Co.", "Sunset Pharmacy", "Greenway Foods"]
_US_STREETS = ["1234 Market St", "77 Elm Avenue", "4500 Broadway", "310 W 34th St", "8800 Sunset Blvd"]
_US_TOWNS = [("San Francisco, CA 94103", "415"), ("New York, NY 10001", "212"), ("Austin, TX 78701", "512"),
             ("Chicago, IL 60601", "312"), ("Seattle, WA 98101", "206"), ("Boston, MA 02110", "617")]
_UK_SHOPS = ["Hartley & Sons Ltd", "The Book Nook Ltd", "Baker Street Deli Ltd", "Riverside Garden Centre Ltd"]
_UK_ADDRESSES = [("12 High Street, Leeds LS1 4AP", "113"), ("4 Deansgate, Manchester M3 2BW", "161"),
                 ("88 Baker Street, London W1U 6AG", "20"), ("21 Park Row, Bristol BS1 5LJ", "117"),
                 ("7 Rose Street, Edinburgh EH2 2PR", "131")]
_CAFES = ["KOPI & CO", "The Daily Grind", "BEAN THERE CAFE", "Little Teapot"]
_ITEMS = [("MILO 1KG", 18.90), ("BERAS 5KG", 21.50), ("MINYAK MASAK 2KG", 12.80), ("GULA 1KG", 2.85),
          ("TELUR GRED A 30", 13.50), ("ROTI GARDENIA", 3.70), ("SUSU PEKAT", 3.20), ("SABUN DOBI 3KG", 16.90),
          ("Paper towels 6pk", 7.49), ("Whole milk 1gal", 3.98), ("Bananas", 1.29), ("AA batteries 8pk", 9.97),
          ("Sourdough loaf", 3.50), ("Cheddar 400g", 4.25), ("Tomatoes", 2.10), ("Olive oil 1L", 8.99)]
_DRINKS = [("Latte", 4.50), ("Flat white", 4.20), ("Teh tarik", 2.80), ("Croissant", 3.10), ("Muffin", 2.90)]
_COMPANIES = [("Northwind Traders", "northwind.com"), ("Bluebird Studio", "bluebird.studio"),
              ("Pinecone Labs", "pineconelabs.io"), ("Orbit Logistics", "orbit-logistics.co.uk"),
              ("Kite & Co", "kiteandco.com"), ("Greenleaf GmbH", "greenleaf.de"), ("Acme Analytics", "acme-analytics.com")]
_DE_ADDRESSES = ["Friedrichstrasse 123, 10117 Berlin", "Leopoldstrasse 45, 80802 Muenchen",
                 "Hafenstrasse 7, 20457 Hamburg"]
_PRODUCTS = ["the Pro plan", "SmartHub", "the wireless scanner", "Sync Plus", "the starter kit"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]


def _digits(rng: random.Random, n: int, first: str = "0123456789") -> str:
    return rng.choice(first) + "".join(rng.choice(string.digits) for _ in range(n - 1))


def _phone(rng: random.Random, region: str, style: str = "national") -> str:
    """A number phonenumbers calls valid for ``region``, printed the way people print them."""
    import phonenumbers

    national = {
        "GB": lambda: rng.choice(["7" + rng.choice("134589") + _digits(rng, 8), "20" + rng.choice("378") + _digits(rng, 7),
                                  rng.choice(["113", "161", "117", "131", "121"]) + _digits(rng, 7, "2345678")]),
        "US": lambda: (("800" if style == "tollfree" else rng.choice(["212", "415", "312", "617", "206", "512", "646",
                                                                       "303"]))
                       + _digits(rng, 3, "23456789") + _digits(rng, 4)),
        "MY": lambda: rng.choice(["3" + _digits(rng, 8, "2345679"), "1" + rng.choice("2379") + _digits(rng, 7, "23456789"),
                                  rng.choice(["4", "6", "7"]) + _digits(rng, 7, "2345678")]),
        "DE": lambda: rng.choice(["30" + _digits(rng, 8, "2345678"), "89" + _digits(rng, 8, "2345678"),
                                  "15" + rng.choice("12") + _digits(rng, 8)]),
        "FR": lambda: rng.choice("1234569") + _digits(rng, 8),
        "SG": lambda: rng.choice("689") + _digits(rng, 7),
        "AU": lambda: rng.choice(["2", "3", "4"]) + _digits(rng, 8, "2345678"),
    }[region]
    for _ in range(200):
        number = phonenumbers.parse(national(), region)
        if phonenumbers.is_valid_number(number):
            break
    else:  # pragma: no cover - the patterns above are valid ranges
        raise AssertionError(region)
    if style.startswith("international"):
        text = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        if style == "international (0)":  # +44 (0)20 7946 0958, as UK signatures print it
            code, rest = text.split(" ", 1)
            text = f"{code} (0){rest}"
        return text
    text = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    if style == "dots" and region == "US":
        d = str(number.national_number)
        return f"{d[:3]}.{d[3:6]}.{d[6:]}"
    if style == "tollfree":
        d = str(number.national_number)
        return f"1-{d[:3]}-{d[3:6]}-{d[6:]}"
    if style == "dashes" and region == "US":
        d = str(number.national_number)
        return f"{d[:3]}-{d[3:6]}-{d[6:]}"
    if style == "bare":
        return "".join(c for c in text if c.isdigit())
    return text


def _ean(rng: random.Random, prefix: str, length: int = 13) -> str:
    from stdnum import ean

    body = prefix + _digits(rng, length - 1 - len(prefix))
    return body + ean.calc_check_digit(body)


def _luhn_card(rng: random.Random) -> str:
    from stdnum import luhn

    brand = rng.choice(["visa", "visa", "mastercard", "amex"])
    if brand == "amex":
        body = rng.choice(["34", "37"]) + _digits(rng, 12)
        number = body + luhn.calc_check_digit(body)
        groups = [number[:4], number[4:10], number[10:]]
    else:
        body = "4" + _digits(rng, 14) if brand == "visa" else "5" + rng.choice("12345") + _digits(rng, 13)
        number = body + luhn.calc_check_digit(body)
        groups = [number[i:i + 4] for i in range(0, 16, 4)]
    return rng.choice([" ", "-", ""]).join(groups)


def _iban(rng: random.Random) -> str:
    from stdnum import iban

    country, bban = rng.choice([
        ("DE", lambda: _digits(rng, 18, "123456789")),
        ("GB", lambda: rng.choice(["NWBK", "BARC", "HBUK", "LOYD"]) + _digits(rng, 14)),
        ("NL", lambda: rng.choice(["ABNA", "INGB", "RABO"]) + _digits(rng, 10)),
        ("FR", None), ("ES", None),
    ])
    for _ in range(500):
        if country == "FR":
            body = "".join(rng.choice(string.digits) for _ in range(21))
            bban_value = body + f"{97 - int(body) * 100 % 97:02d}"  # the RIB key
        elif country == "ES":
            bank, branch, account = _digits(rng, 4), _digits(rng, 4), _digits(rng, 10)

            def ccc_digit(digits: str) -> str:
                d = 11 - sum(int(x) * w for x, w in zip(digits.zfill(10), (1, 2, 4, 8, 5, 10, 9, 7, 3, 6))) % 11
                return str({10: 1, 11: 0}.get(d, d))
            bban_value = bank + branch + ccc_digit("00" + bank + branch) + ccc_digit(account) + account
        else:
            bban_value = bban()
        candidate = country + iban.calc_check_digits(country + "00" + bban_value) + bban_value
        if iban.is_valid(candidate):
            return " ".join(candidate[i:i + 4] for i in range(0, len(candidate), 4))
    raise AssertionError(country)  # pragma: no cover


def _secret(rng: random.Random) -> str:
    alnum = string.ascii_letters + string.digits
    kind = rng.choice(["stripe", "aws", "github"])
    if kind == "stripe":
        return "sk_live_" + "".join(rng.choice(alnum) for _ in range(24))
    if kind == "aws":
        return "AKIA" + "".join(rng.choice(string.ascii_uppercase + "234567") for _ in range(16))
    return "ghp_" + "".join(rng.choice(alnum) for _ in range(36))


def _gb_vat(rng: random.Random) -> str:
    from stdnum.gb import vat

    while True:
        number = _digits(rng, 9, "123456789")
        if vat.is_valid(number):
            return f"GB {number[:3]} {number[3:7]} {number[7:]}"


def _de_vat(rng: random.Random) -> str:
    from stdnum.de import vat

    while True:
        number = _digits(rng, 9, "123456789")
        if vat.is_valid(number):
            return "DE" + number


def _date(rng: random.Random, style: str) -> tuple[str, int, int, int]:
    y, m, d = rng.randint(2016, 2019), rng.randint(1, 12), rng.randint(1, 28)
    text = {"dd-mm-yyyy": f"{d:02d}-{m:02d}-{y}", "iso": f"{y}-{m:02d}-{d:02d}", "ddmmyyyy": f"{d:02d}{m:02d}{y}",
            "dd/mm/yyyy": f"{d:02d}/{m:02d}/{y}", "mm/dd/yy": f"{m:02d}/{d:02d}/{y % 100:02d}",
            "dd.mm.yyyy": f"{d:02d}.{m:02d}.{y}", "d month yyyy": f"{d} {_MONTHS[m - 1]} {y}",
            "month d, yyyy": f"{_MONTHS[m - 1]} {d}, {y}", "yyyymmdd": f"{y}{m:02d}{d:02d}",
            "mm/dd/yyyy": f"{m:02d}/{d:02d}/{y}", "dd/mm/yy": f"{d:02d}/{m:02d}/{y % 100:02d}"}[style]
    return text, y, m, d


def _time(rng: random.Random, seconds: bool = False) -> str:
    t = f"{rng.randint(7, 22):02d}:{rng.randint(0, 59):02d}"
    return t + (f":{rng.randint(0, 59):02d}" if seconds else "")


def _money(value: float, thousands: str = ",", decimal: str = ".") -> str:
    whole, cents = f"{value:,.2f}".split(".")
    return whole.replace(",", thousands) + decimal + cents


def _person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(_FIRST), rng.choice(_LAST)


def _email(rng: random.Random, first: str, last: str, domain: str | None = None) -> str:
    domain = domain or rng.choice(["gmail.com", "outlook.com", "yahoo.co.uk", "hotmail.com", "proton.me"])
    local = rng.choice([f"{first}.{last}", f"{first[0]}{last}", f"{first}{rng.randint(1, 99)}", f"{last}.{first[0]}"])
    return local.lower().replace(" ", "") + "@" + domain


def _items(rng: random.Random, pool: list[tuple[str, float]], k: int) -> list[tuple[str, int, float]]:
    return [(name, rng.choice([1, 1, 1, 2, 3]), price) for name, price in rng.sample(pool, k)]


# ---- receipts ---------------------------------------------------------------------------------

def _receipt_my_grocer(rng: random.Random, id: str, shop: random.Random | None = None) -> Doc:
    t = _Text()
    s = shop or rng  # what one shop prints on every receipt
    company = s.choice(_MY_SHOPS) + " SDN BHD"
    address = f"{s.choice(_MY_STREETS)}, {s.choice(_MY_TOWNS)}"
    t.line(company)
    t.line("(CO REG NO: ", ("REG_NO", f"{s.randint(100000, 999999)}-{s.choice('AKMPTUVWX')}"), ")")
    t.line(address)
    if s.random() < 0.75:
        t.add("TEL: ", ("PHONE", _phone(s, "MY")))
        if s.random() < 0.4:
            t.add("  FAX: ", ("PHONE", _phone(s, "MY")))
        t.line()
    t.line("GST ID NO: ", ("TAX_ID", "000" + _digits(s, 9)))
    t.line("TAX INVOICE")
    t.line("INVOICE NO: ", ("INVOICE_NO", rng.choice(["CS", "OR", "T1-"]) + _digits(rng, 8)))
    date, *_ = _date(rng, rng.choice(["dd-mm-yyyy", "dd/mm/yyyy", "iso"]))
    t.line("DATE: ", ("DATE", date), "  TIME: ", ("TIME", _time(rng, rng.random() < 0.5)))
    t.line(f"CASHIER: {rng.choice(['ALI', 'SITI', 'KUMAR', 'MEI LING'])}")
    t.line("-" * 40)
    total = 0.0
    for name, qty, price in _items(rng, _ITEMS[:8], rng.randint(2, 5)):
        t.line(("BARCODE", _ean(rng, "955")), f"  {name}")
        t.line(f"  {qty} X ", ("AMOUNT", f"{price:.2f}"), "      ", ("AMOUNT", f"{qty * price:.2f}"), " SR")
        total += qty * price
    total = round(total, 2)
    total_text = f"{total:.2f}"
    t.line("-" * 40)
    t.line("TOTAL (INCL GST): ", ("AMOUNT", total_text))
    t.line("ROUNDING: ", ("AMOUNT", "0.00"))
    cash = float(int(total / 10) * 10 + 10)
    t.line("CASH: ", ("AMOUNT", f"{cash:.2f}"), "  CHANGE: ", ("AMOUNT", f"{cash - total:.2f}"))
    t.line("GST SUMMARY   AMOUNT(RM)  TAX(RM)")
    t.line("SR @ 6%       ", ("AMOUNT", f"{total / 1.06:.2f}"), "     ", ("AMOUNT", f"{total - total / 1.06:.2f}"))
    t.line("THANK YOU. PLEASE COME AGAIN.")
    return t.doc(id, "receipt", "my_grocer", {"company": company, "date": date, "address": address, "total": total_text})


def _receipt_us_store(rng: random.Random, id: str, shop: random.Random | None = None) -> Doc:
    t = _Text()
    s = shop or rng
    company = s.choice(_US_SHOPS)
    town, area = s.choice(_US_TOWNS)
    address = f"{s.choice(_US_STREETS)}, {town}"
    t.line(company)
    t.line("Save money. Live better.")
    t.line(("PHONE", _phone(s, "US", s.choice(["national", "dashes"]))))  # printed without a label
    t.line(address)
    t.line("ST# ", ("REF", _digits(s, 5)), " OP# ", ("REF", _digits(rng, 6)), " TE# ", ("REF", _digits(rng, 2)),
           " TR# ", ("REF", _digits(rng, 5)))
    subtotal = 0.0
    for name, qty, price in _items(rng, _ITEMS[8:], rng.randint(2, 5)):
        t.line(f"{name.upper()[:16]:<17}", ("BARCODE", _ean(rng, "0", 12)), " F ", ("AMOUNT", f"{qty * price:.2f}"))
        subtotal += qty * price
    tax = round(subtotal * 0.0825, 2)
    total_text = f"{subtotal + tax:.2f}"
    t.line("SUBTOTAL ", ("AMOUNT", f"{subtotal:.2f}"))
    t.line("TAX 1 8.250 % ", ("AMOUNT", f"{tax:.2f}"))
    t.line("TOTAL ", ("AMOUNT", total_text))
    t.line("VISA TEND ", ("AMOUNT", total_text))
    t.line(f"ACCOUNT # **** **** **** {_digits(rng, 4)}")
    t.line("APPROVAL # ", ("REF", _digits(rng, 6)), "  REF # ", ("REF", _digits(rng, 12)))
    date, *_ = _date(rng, rng.choice(["mm/dd/yy", "mm/dd/yyyy"]))
    t.line(("DATE", date), " ", ("TIME", _time(rng, True)))
    t.line("TC# ", ("REF", " ".join(_digits(rng, 4) for _ in range(5))))
    t.line("# ITEMS SOLD ", str(rng.randint(2, 9)))
    return t.doc(id, "receipt", "us_store", {"company": company, "date": date, "address": address, "total": total_text})


def _uk_letterhead(rng: random.Random, t: _Text) -> tuple[str, str]:
    """A UK company's name and address, printed on two lines."""
    company, (address, _) = rng.choice(_UK_SHOPS), rng.choice(_UK_ADDRESSES)
    t.line(company)
    t.line(address)
    return company, address


def _receipt_uk_shop(rng: random.Random, id: str, shop: random.Random | None = None) -> Doc:
    t = _Text()
    s = shop or rng
    company, address = _uk_letterhead(s, t)
    if s.random() < 0.8:
        t.line(s.choice(["Tel ", "Tel: ", "Telephone: ", "Tel/Fax: "]), ("PHONE", _phone(s, "GB")))
    t.line("VAT Reg No: ", ("TAX_ID", _gb_vat(s)))
    t.line("Receipt No: ", ("INVOICE_NO", f"{_digits(rng, 4)}-{_digits(rng, 4)}"))
    date, *_ = _date(rng, rng.choice(["dd/mm/yyyy", "dd/mm/yy"]))
    t.line(("DATE", date), " ", ("TIME", _time(rng)))
    total = 0.0
    for name, qty, price in _items(rng, _ITEMS[8:], rng.randint(2, 4)):
        t.line(f"{qty} x {name:<20}", ("AMOUNT", f"£{qty * price:.2f}"))
        total += qty * price
    total_text = f"£{total:.2f}"
    t.line("Total ", ("AMOUNT", total_text))
    t.line(f"Card payment  Visa ************{_digits(rng, 4)}")
    t.line("Auth code: ", ("REF", _digits(rng, 6)), "  Merchant ID: ", ("REF", _digits(s, 8)))
    t.line("Company No. ", ("REG_NO", _digits(s, 8)), " registered in England and Wales")
    return t.doc(id, "receipt", "uk_shop", {"company": company, "date": date, "address": address, "total": total_text})


def _receipt_cafe(rng: random.Random, id: str, shop: random.Random | None = None) -> Doc:
    t = _Text()
    s = shop or rng
    company = s.choice(_CAFES)
    address = f"{s.choice(_MY_STREETS)}, {s.choice(_MY_TOWNS)}"
    t.line(company)
    t.line(address)
    date, *_ = _date(rng, rng.choice(["ddmmyyyy", "yyyymmdd"]))
    t.line("Receipt #", ("INVOICE_NO", _digits(rng, 6)), "  ", ("DATE", date), " ", ("TIME", _time(rng)))
    t.line(f"Table {rng.randint(1, 20)}  Pax {rng.randint(1, 4)}")
    total = 0.0
    for name, qty, price in _items(rng, _DRINKS, rng.randint(1, 3)):
        t.line(f"{name} x{qty}  ", ("AMOUNT", f"{qty * price:.2f}"))
        total += qty * price
    t.line("SST 6%  ", ("AMOUNT", f"{total * 0.06:.2f}"))
    total_text = f"{total * 1.06:.2f}"
    t.line("TOTAL  ", ("AMOUNT", total_text))
    t.line("SSM Reg ", ("REG_NO", "2018" + _digits(s, 8)))
    if s.random() < 0.5:
        t.line("Call us for catering: ", ("PHONE", _phone(s, "MY")))
    t.line("Thank you! Wifi password on your table card.")
    return t.doc(id, "receipt", "cafe", {"company": company, "date": date, "address": address, "total": total_text})


def _receipt_petrol(rng: random.Random, id: str, shop: random.Random | None = None) -> Doc:
    t = _Text()
    s = shop or rng
    company = (s.choice(["PETRON", "SHELL", "PETRONAS", "CALTEX"]) + " "
               + s.choice(["JALAN KLANG LAMA", "BANDAR UTAMA", "SUBANG JAYA"]))
    address = f"{s.choice(_MY_STREETS)}, {s.choice(_MY_TOWNS)}"
    t.line(company)
    t.line(address)
    t.line("GST REG: ", ("TAX_ID", "001" + _digits(s, 9)))
    if s.random() < 0.7:
        t.line("Tel: ", ("PHONE", _phone(s, "MY")))
    date, *_ = _date(rng, rng.choice(["iso", "dd-mm-yyyy"]))
    t.line(("DATE", date), " ", ("TIME", _time(rng, True)))
    litres, price = round(rng.uniform(10, 45), 3), 2.20
    total_text = f"{litres * price:.2f}"
    t.line(f"PUMP {rng.randint(1, 12):02d}  RON95")
    t.line(f"LITRES {litres:.3f} @ ", ("AMOUNT", f"{price:.2f}"))
    t.line("TOTAL RM ", ("AMOUNT", total_text))
    t.line("TRANS NO: ", ("INVOICE_NO", _digits(rng, 8)))
    t.line("POS ID: ", ("REF", _digits(s, 7)), "  LOYALTY CARD: ", ("REF", _ean(rng, "7", 16)))
    return t.doc(id, "receipt", "petrol", {"company": company, "date": date, "address": address, "total": total_text})


# ---- invoices ---------------------------------------------------------------------------------

def _invoice_de(rng: random.Random, id: str) -> Doc:
    t = _Text()
    company, domain = rng.choice(_COMPANIES)
    t.line(f"{company} · {rng.choice(_DE_ADDRESSES)}")
    t.line("USt-IdNr.: ", ("TAX_ID", _de_vat(rng)), "  HRB ", ("REG_NO", _digits(rng, 6, "123456789")))
    t.line("Tel.: ", ("PHONE", _phone(rng, "DE", "international")), "  E-Mail: ", ("EMAIL", f"rechnung@{domain}"))
    t.line("Rechnung / Invoice")
    date, *_ = _date(rng, "dd.mm.yyyy")
    t.line("Invoice no.: ", ("INVOICE_NO", f"RE-{rng.randint(2016, 2019)}-{_digits(rng, 5)}"))
    t.line("Invoice date: ", ("DATE", date))
    t.line("Order no.: ", ("ORDER_NO", "45" + _digits(rng, 8)))
    t.line("Customer no.: ", ("REF", _digits(rng, 8, "123456789")))
    net = 0.0
    for i, (what, rate) in enumerate(rng.sample([("Consulting (hours)", 95.0), ("Licence", 1200.0),
                                                 ("Support package", 450.0), ("Travel", 312.4)], 2), 1):
        qty = rng.randint(1, 12)
        net += qty * rate
        t.line(f"{i}  {what:<20} {qty:>3}  ", ("AMOUNT", _money(rate, ".", ",")), "  ",
               ("AMOUNT", _money(qty * rate, ".", ",")), " EUR")
    t.line("Net: ", ("AMOUNT", _money(net, ".", ",")), " EUR")
    t.line("VAT 19%: ", ("AMOUNT", _money(net * 0.19, ".", ",")), " EUR")
    t.line("Total: ", ("AMOUNT", _money(net * 1.19, ".", ",")), " EUR")
    t.line("Bank: IBAN ", ("IBAN", _iban(rng)), "  BIC COBADEFFXXX")
    due, *_ = _date(rng, "dd.mm.yyyy")
    t.line("Payable within 14 days (by ", ("DATE", due), ").")
    return t.doc(id, "invoice", "de_invoice")


def _invoice_us(rng: random.Random, id: str) -> Doc:
    t = _Text()
    company, domain = rng.choice(_COMPANIES)
    town, _ = rng.choice(_US_TOWNS)
    first, last = _person(rng)
    t.line(f"{company}, Inc.")
    t.line(f"{rng.choice(_US_STREETS)}, {town}")
    t.line("Phone: ", ("PHONE", _phone(rng, "US")), " | ", ("EMAIL", f"billing@{domain}"))
    t.line("EIN: ", ("TAX_ID", f"{rng.randint(10, 98)}-{_digits(rng, 7)}"))
    t.line("INVOICE # ", ("INVOICE_NO", _digits(rng, 6, "123456789")))
    date, *_ = _date(rng, "month d, yyyy")
    due, *_ = _date(rng, "mm/dd/yyyy")
    t.line("Date: ", ("DATE", date), "   Due: ", ("DATE", due))
    t.line("PO Number: ", ("ORDER_NO", "45" + _digits(rng, 8)))
    t.line(f"Bill To: {first} {last}, {rng.choice(_US_STREETS)}, {rng.choice(_US_TOWNS)[0]}")
    total = 0.0
    for what, rate in rng.sample([("Design services", 120.0), ("Hosting (annual)", 1440.0), ("Setup fee", 250.0)], 2):
        qty = rng.randint(1, 10)
        total += qty * rate
        t.line(f"{what:<20} {qty:>3}  ", ("AMOUNT", f"${_money(rate)}"), "  ", ("AMOUNT", f"${_money(qty * rate)}"))
    t.line("Total Due: ", ("AMOUNT", f"${_money(total)}"))
    if rng.random() < 0.5:
        t.line("International wire: IBAN ", ("IBAN", _iban(rng)))
    t.line("Questions? Call ", ("PHONE", _phone(rng, "US", rng.choice(["dots", "tollfree"]))), " or write to ",
           ("EMAIL", _email(rng, first, last, domain)))
    return t.doc(id, "invoice", "us_invoice")


def _invoice_uk(rng: random.Random, id: str) -> Doc:
    t = _Text()
    company, _ = _uk_letterhead(rng, t)
    t.line("VAT No. ", ("TAX_ID", _gb_vat(rng)), "  Company No. ", ("REG_NO", "0" + _digits(rng, 7)))
    t.line("INVOICE ", ("INVOICE_NO", f"INV-{_digits(rng, 5)}"), "    Your ref: ",
           ("REF", f"PO/{rng.randint(2016, 2019)}/{_digits(rng, 4)}"))
    date, *_ = _date(rng, "d month yyyy")
    t.line("Date of issue: ", ("DATE", date))
    net = round(rng.uniform(100, 5000), 2)
    t.line("Net ", ("AMOUNT", f"£{_money(net)}"), "  VAT 20% ", ("AMOUNT", f"£{_money(net * 0.2)}"),
           "  Total ", ("AMOUNT", f"£{_money(net * 1.2)}"))
    t.line("Pay by transfer to IBAN ", ("IBAN", _iban(rng)))
    t.line("or in the UK: sort code ", ("REF", f"{_digits(rng, 2, '123456789')}-{_digits(rng, 2)}-{_digits(rng, 2)}"),
           "  account ", ("REF", _digits(rng, 8)))
    t.line("Accounts: ", ("PHONE", _phone(rng, "GB", rng.choice(["national", "international"]))),
           " / ", ("EMAIL", f"accounts@{company.split()[0].lower()}.co.uk"))
    return t.doc(id, "invoice", "uk_invoice")


# ---- e-mail signatures ------------------------------------------------------------------------

def _signature(rng: random.Random, id: str) -> Doc:
    layout = rng.choice(["classic", "us", "bare", "one_line"])
    t = _Text()
    first, last = _person(rng)
    company, domain = rng.choice(_COMPANIES)
    title = rng.choice(["Account Manager", "Head of Operations", "Support Lead", "Finance Officer", "CTO"])
    sent, *_ = _date(rng, rng.choice(["dd/mm/yyyy", "iso", "mm/dd/yyyy"]))
    t.line("Thanks for the update, I'll check the figures from ", ("DATE", sent), " and get back to you.")
    t.line()
    if layout == "classic":
        t.line("Best regards,")
        t.line(f"{first} {last}")
        t.line(f"{title} | {company}")
        t.line("T: ", ("PHONE", _phone(rng, "GB", rng.choice(["international", "international (0)"]))))
        t.line(rng.choice(["M: ", "Mob. ", "Mobile: "]),
               ("PHONE", _phone(rng, rng.choice(["GB", "DE", "FR"]), "international")))
        t.line("E: ", ("EMAIL", _email(rng, first, last, domain)))
        t.line(f"{company} Ltd, registered in England No. ", ("REG_NO", _digits(rng, 8)))
    elif layout == "us":
        t.line("Thanks,")
        t.line(f"{first} {last}, {title}")
        t.line(company)
        t.line("Office: ", ("PHONE", _phone(rng, "US")), f"{rng.choice([' ext. ', ' x'])}{rng.randint(100, 999)}")
        t.line("Cell ", ("PHONE", _phone(rng, "US", rng.choice(["dots", "dashes"]))))
        t.line(("EMAIL", _email(rng, first, last, domain)))
    elif layout == "bare":
        t.line("--")
        t.line(f"{first} {last}")
        t.line(company)
        t.line(("PHONE", _phone(rng, rng.choice(["GB", "US"]))))  # no label: a valid UK or US number
        t.line(("EMAIL", _email(rng, first, last, domain)))
        t.line("Ref: ", ("REF", f"{rng.randint(2016, 2019)}/{_digits(rng, 4)}"))
    else:
        region = rng.choice(["SG", "AU", "FR", "DE", "MY"])
        t.line(f"{first} {last} · {title} · {company} · ", ("PHONE", _phone(rng, region, "international")), " · ",
               ("EMAIL", _email(rng, first, last, domain)))
    if rng.random() < 0.3:
        t.line("Sent: ", ("DATE", _date(rng, "dd/mm/yyyy")[0]), " ", ("TIME", _time(rng)))
    return t.doc(id, "signature", layout)


# ---- support tickets --------------------------------------------------------------------------

def _ticket(rng: random.Random, id: str) -> Doc:
    layout = rng.choice(["order_issue", "billing", "api", "tracking"])
    t = _Text()
    first, last = _person(rng)
    product = rng.choice(_PRODUCTS)
    date, *_ = _date(rng, rng.choice(["iso", "dd/mm/yyyy", "month d, yyyy", "dd-mm-yyyy"]))
    amount = f"${rng.randint(5, 400)}.{rng.randint(0, 99):02d}"
    if layout == "order_issue":
        order = f"112-{_digits(rng, 7)}-{_digits(rng, 7)}"
        t.line("Subject: Order ", ("ORDER_NO", order), " not delivered")
        t.line(f"Hi, I ordered {product} on ", ("DATE", date), " and paid ", ("AMOUNT", amount), ".")
        t.line("The tracking page says it left the depot but nothing since. Barcode on the slip: ",
               ("BARCODE", _ean(rng, rng.choice(["50", "40", "30"]))))
        if rng.random() < 0.7:
            t.line("You can call me on ", ("PHONE", _phone(rng, rng.choice(["GB", "US"]))), " after 5pm.")
    elif layout == "billing":
        t.line("Subject: charged twice for invoice ", ("INVOICE_NO", f"INV-{_digits(rng, 4)}"))
        t.line("My card ", ("CARD", _luhn_card(rng)), " was charged ", ("AMOUNT", amount), " twice on ", ("DATE", date), ".")
        t.line("Order number ", ("ORDER_NO", _digits(rng, 10, "123456789")), ", customer no. ", ("REF", _digits(rng, 8)))
        if rng.random() < 0.5:
            t.line("Please refund to the same card or to IBAN ", ("IBAN", _iban(rng)))
    elif layout == "api":
        t.line("Subject: 401 errors from the API since ", ("DATE", date))
        t.line("Request id ", ("REF", _digits(rng, 12)), " at ", ("TIME", _time(rng, True)), " failed with 401.")
        if rng.random() < 0.6:
            t.line("Our config has api_base=https://api.example.com and the key ", ("SECRET", _secret(rng)))
        t.line("We're on version 4.12.3, account ", ("REF", f"acct_{_digits(rng, 8)}"))
    else:
        tracking = "1Z" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16))
        t.line("Subject: where is my parcel ", ("TRACKING", tracking), "?")
        t.line("Ordered ", ("DATE", date), ", order #", ("ORDER_NO", _digits(rng, 8, "123456789")), ", total ",
               ("AMOUNT", amount), ".")
        t.line("Item EAN ", ("BARCODE", _ean(rng, "40")), ", qty 2.")
    t.line(f"Thanks, {first}")
    if rng.random() < 0.6:
        t.line(("EMAIL", _email(rng, first, last)))
    return t.doc(id, "ticket", layout)


# ---- chat logs --------------------------------------------------------------------------------

def _chat(rng: random.Random, id: str) -> Doc:
    layout = rng.choice(["stamped", "plain"])
    t = _Text()
    first, last = _person(rng)
    customer = rng.choice([first, "Customer"])

    day, clock = _date(rng, "iso")[0], [rng.randint(8 * 3600, 20 * 3600)]  # one day, the clock moving on

    def who(speaker: str) -> list[str | tuple[str, str]]:
        if layout == "stamped":
            clock[0] += rng.randint(5, 240)
            h, m, s = clock[0] // 3600, clock[0] // 60 % 60, clock[0] % 60
            return ["[", ("DATE", day), " ", ("TIME", f"{h:02d}:{m:02d}:{s:02d}"), f"] {speaker}: "]
        return [f"{speaker}: "]

    t.line(*who("Agent"), f"Hi {first}, thanks for waiting. How can I help?")
    t.line(*who(customer), "my order ", ("ORDER_NO", "45" + _digits(rng, 8)), " hasn't arrived, it was due ",
           ("DATE", _date(rng, "dd/mm/yyyy")[0]))
    t.line(*who("Agent"), "Sorry about that. Can I have a phone number or e-mail to reach you?")
    choice = rng.random()
    if choice < 0.4:
        t.line(*who(customer), "sure, it's ", ("PHONE", _phone(rng, rng.choice(["GB", "US"]))))
    elif choice < 0.7:
        t.line(*who(customer), "my mobile is ", ("PHONE", _phone(rng, rng.choice(["GB", "US", "MY"]), "international")))
    else:
        t.line(*who(customer), ("EMAIL", _email(rng, first, last)))
    t.line(*who("Agent"), "Thanks. I've sent a code to confirm: please read it back.")
    t.line(*who(customer), ("REF", _digits(rng, 6)))
    if rng.random() < 0.3:
        t.line(*who(customer), "and the card I paid with is ", ("CARD", _luhn_card(rng)))
        t.line(*who("Agent"), "Please don't share full card numbers here; I've noted the last four digits.")
    t.line(*who("Agent"), "A refund of ", ("AMOUNT", f"£{rng.randint(5, 90)}.{rng.randint(0, 99):02d}"),
           " is on its way, reference ", ("REF", _date(rng, "yyyymmdd")[0] + _digits(rng, 5)), ".")
    return t.doc(id, "chat", layout)


_MAKERS: dict[str, list[Callable[[random.Random, str], Doc]]] = {
    "receipt": [_receipt_my_grocer, _receipt_us_store, _receipt_uk_shop, _receipt_cafe, _receipt_petrol],
    "invoice": [_invoice_de, _invoice_us, _invoice_uk],
    "signature": [_signature],
    "ticket": [_ticket],
    "chat": [_chat],
}
_SHARE = {"receipt": 0.4, "invoice": 0.15, "signature": 0.15, "ticket": 0.2, "chat": 0.1}
COPY_SHARE = 0.03  # of the documents are true copies of an earlier one


def _respace(doc: Doc, id: str) -> Doc:
    """The same document with a space added at the end of every line (spans moved with the text)."""
    shift = [0] * (len(doc.text) + 1)
    out, added = [], 0
    for i, ch in enumerate(doc.text):
        shift[i] = added
        if ch == "\n":
            out.append(" ")
            added += 1
        out.append(ch)
    shift[len(doc.text)] = added
    move = lambda s: Span(s.kind, s.start + shift[s.start], s.end + shift[s.end - 1])  # noqa: E731
    return replace(doc, id=id, text="".join(out), spans=tuple(map(move, doc.spans)),
                   lookalikes=tuple(map(move, doc.lookalikes)), copy_of=doc.id)


def documents(n: int = 400, seed: int = 0) -> list[Doc]:
    """``n`` labelled documents (40% receipts, 15% invoices, 15% signatures, 20% tickets, 10% chat
    logs, about 3% of them true copies of an earlier document), the same for the same ``n`` and
    ``seed``."""
    order = random.Random(seed)
    kinds = [k for k, share in _SHARE.items() for _ in range(round(share * n))]
    kinds = (kinds + ["receipt"] * n)[:n]
    order.shuffle(kinds)
    out: list[Doc] = []
    for i, kind in enumerate(kinds):
        rng = random.Random(f"{seed}-{i}")
        id = f"D{i:05d}"
        if out and order.random() < COPY_SHARE:
            original = order.choice(out)
            original = next(d for d in out if d.id == (original.copy_of or original.id))
            out.append(replace(original, id=id, copy_of=original.id) if order.random() < 0.5
                       else _respace(original, id))
            continue
        makers = _MAKERS[kind]
        out.append(makers[i % len(makers)](rng, id))
    return out


@dataclass(frozen=True)
class Score:
    """One kind's counts: findings that hit a planted span of their kind (``hits``) of ``found``,
    planted spans some finding of their kind overlaps (``caught``) of ``planted``."""

    kind: str
    found: int
    hits: int
    planted: int
    caught: int

    @property
    def precision(self) -> float | None:
        return self.hits / self.found if self.found else None

    @property
    def recall(self) -> float | None:
        return self.caught / self.planted if self.planted else None


def score(docs: list[Doc], findings: dict[str, list[tuple[str, int, int]]]) -> dict[str, Score]:
    """Precision and recall per kind of personal data, from each document's ``(kind, start, end)``
    findings (keyed by ``Doc.id``). Overlap counts as a match, so a detector that takes "+44 20
    7946 0958" without its "+" still catches the number."""
    kinds = sorted(set(PII_KINDS) | {k for found in findings.values() for k, _, _ in found})
    out = {}
    for kind in kinds:
        found = hits = planted = caught = 0
        for doc in docs:
            mine = [(s, e) for k, s, e in findings.get(doc.id, []) if k == kind]
            truth = [(sp.start, sp.end) for sp in doc.spans if sp.kind == kind]
            found += len(mine)
            hits += sum(any(s < te and ts < e for ts, te in truth) for s, e in mine)
            planted += len(truth)
            caught += sum(any(s < te and ts < e for s, e in mine) for ts, te in truth)
        out[kind] = Score(kind, found, hits, planted, caught)
    return out


def lookalikes_hit(docs: list[Doc], findings: dict[str, list[tuple[str, int, int]]]) -> dict[str, int]:
    """Per look-alike kind (DATE, AMOUNT, BARCODE...): how many of them some finding overlaps."""
    out = {kind: 0 for kind in LOOKALIKE_KINDS}
    for doc in docs:
        for sp in doc.lookalikes:
            out[sp.kind] += any(s < sp.end and sp.start < e for _, s, e in findings.get(doc.id, []))
    return out


def receipts(n: int = 300, seed: int = 0) -> list[Doc]:
    """``n`` receipts only (every layout in turn, no copies): the extract task's rows."""
    makers = _MAKERS["receipt"]
    return [makers[i % len(makers)](random.Random(f"receipt-{seed}-{i}"), f"R{i:05d}") for i in range(n)]


_NOTICES = [
    "THIS IS A COMPUTER GENERATED RECEIPT. NO SIGNATURE IS REQUIRED.",
    "GOODS SOLD ARE NOT RETURNABLE OR EXCHANGEABLE.",
    "PLEASE CHECK YOUR CHANGE AND ITEMS BEFORE LEAVING THE COUNTER. NO CLAIMS CAN BE ENTERTAINED AFTERWARDS.",
    "PRICES ARE INCLUSIVE OF GOVERNMENT TAX WHERE APPLICABLE AND SUBJECT TO CHANGE WITHOUT PRIOR NOTICE.",
    "KEEP THIS RECEIPT FOR WARRANTY CLAIMS AND EXCHANGES WITHIN 7 DAYS WITH THE ORIGINAL PACKAGING.",
    "MEMBERS EARN ONE POINT FOR EVERY RINGGIT SPENT. ASK OUR CASHIER HOW TO JOIN OUR LOYALTY PROGRAMME.",
    "LIKE AND FOLLOW US ON FACEBOOK AND INSTAGRAM FOR WEEKLY PROMOTIONS, NEW ARRIVALS AND MEMBER SPECIALS.",
    "OPENING HOURS: MONDAY TO SATURDAY 8AM TO 10PM, SUNDAY AND PUBLIC HOLIDAYS 9AM TO 6PM.",
    "FOR FEEDBACK AND COMPLAINTS PLEASE VISIT OUR CUSTOMER SERVICE COUNTER WITH THIS RECEIPT.",
    "THANK YOU FOR SHOPPING WITH US. HAVE A NICE DAY AND PLEASE COME AGAIN SOON.",
    "ALL PRICES IN RINGGIT MALAYSIA. CREDIT CARD PAYMENTS ABOVE RM 50 ONLY.",
    "FREE PARKING FOR 2 HOURS WITH A MINIMUM PURCHASE. VALIDATE YOUR TICKET AT THE COUNTER.",
    "DELIVERY AVAILABLE WITHIN 5 KM FOR ORDERS ABOVE RM 100. ASK FOR DETAILS.",
    "WE ACCEPT CASH, DEBIT CARDS, TOUCH N GO EWALLET AND GRABPAY.",
    "PLEASE RETAIN THIS RECEIPT AS PROOF OF PURCHASE FOR ALL RETURNS.",
    "PERISHABLE GOODS CANNOT BE RETURNED ONCE THEY LEAVE THE PREMISES.",
    "VOUCHERS ARE NOT EXCHANGEABLE FOR CASH AND VALID UNTIL THE DATE PRINTED.",
    "STAFF WILL NEVER ASK FOR YOUR CARD PIN. REPORT ANY SUSPICIOUS REQUEST TO THE MANAGER.",
    "SERVICE CHARGE IS NOT INCLUDED. TIPS ARE WELCOME BUT NOT EXPECTED.",
    "SCAN THE CODE ON YOUR TABLE CARD TO RATE YOUR VISIT AND WIN A FREE MEAL EVERY MONTH.",
]


def shop_receipts(n: int = 300, shops: int = 15, seed: int = 0) -> list[Doc]:
    """``n`` receipts of ``shops`` shops (every receipt layout in turn; no copies): each shop
    prints the same name, address, telephone, registration and tax numbers and its own notices
    (returns, opening hours...) on every receipt, and each receipt its own number, date, items and
    total, as one shop's receipts do: two receipts of one shop are alike texts with different
    answers (with the defaults, estimated Jaccard similarity 0.47-0.95 between two receipts of one
    shop, 0.8 or more for about a quarter of the pairs: the look-alikes)."""
    makers = _MAKERS["receipt"]
    out = []
    for i in range(n):
        shop = random.Random(f"shop-{seed}-{i % shops}")
        doc = makers[i % shops % len(makers)](random.Random(f"receipt-{seed}-{i}"), f"R{i:05d}", shop=shop)
        out.append(replace(doc, text=doc.text + "".join(line + "\n" for line in shop.sample(_NOTICES, 6))))
    return out


_REPRINT = ("*** REPRINT ***", "DUPLICATE COPY", "CUSTOMER COPY")
_OCR = {"O": "0", "I": "1", "l": "1", "S": "5", "e": "c"}


def _rescan(doc: Doc, id: str, rng: random.Random) -> Doc:
    """The document scanned again: one character of a line that holds no answer and no span read
    as its look-alike (O as 0, l as 1...)."""
    spans = doc.spans + doc.lookalikes
    at, start = [], 0
    for line in doc.text.split("\n"):
        end = start + len(line)
        if not any(v in line for v in doc.answer.values()) and not any(sp.start < end and start < sp.end for sp in spans):
            at += [start + i for i, ch in enumerate(line) if ch in _OCR]
        start = end + 1
    if not at:
        return replace(doc, id=id, copy_of=doc.id)
    i = rng.choice(at)
    return replace(doc, id=id, text=doc.text[:i] + _OCR[doc.text[i]] + doc.text[i + 1:], copy_of=doc.id)


def copies(docs: list[Doc], n: int, seed: int = 0) -> list[Doc]:
    """``n`` true copies of documents drawn from ``docs``, marked ``copy_of``: the same text, the
    text with a space added to every line, re-printed (a stamp such as ``*** REPRINT ***`` on a
    line of its own at the end), or re-scanned (one character read as its look-alike, see
    :func:`_rescan`); the same answer each time."""
    rng = random.Random(f"copies-{seed}")
    out = []
    for i in range(n):
        doc, id = rng.choice(docs), f"C{i:05d}"
        how = i % 4
        if how == 0:
            out.append(replace(doc, id=id, copy_of=doc.id))
        elif how == 1:
            out.append(_respace(doc, id))
        elif how == 2:
            out.append(replace(doc, id=id, text=doc.text + rng.choice(_REPRINT) + "\n", copy_of=doc.id))
        else:
            out.append(_rescan(doc, id, rng))
    return out


def write_extract_jsonl(docs: list[Doc], path: Path) -> Path:
    """The documents with an answer as an extract data file: one ``{"id", "text", "fields"}`` row
    each, the shape ``taskfit init --from`` reads as an extract task (text → fields)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for doc in docs:
            if doc.answer:
                f.write(json.dumps({"id": doc.id, "text": doc.text, "fields": doc.answer}, ensure_ascii=False) + "\n")
    return path


if __name__ == "__main__":  # a look at the corpus: python bench/documents_corpus.py [n] [seed]
    import sys
    from collections import Counter

    docs = documents(*(int(a) for a in sys.argv[1:3]))
    print(f"{len(docs)} documents:", dict(Counter(f"{d.kind}/{d.layout}" for d in docs)))
    print("planted:", dict(Counter(s.kind for d in docs for s in d.spans)))
    print("look-alikes:", dict(Counter(s.kind for d in docs for s in d.lookalikes)))
    print("copies:", sum(d.copy_of is not None for d in docs))
    for d in docs[:5]:
        print(f"--- {d.id} {d.kind}/{d.layout}\n{d.text}")
