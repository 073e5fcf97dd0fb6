"""Personal data and secrets: find them, redact them, and never print them.

Detection leans on maintained libraries where one fits:

* payment cards: a run of 13 to 19 digits, printed whole or in the groups cards use, whose issuer
  prefix and length are a card brand's (Visa, Mastercard, Amex, Discover, JCB, Diners,
  UnionPay, Maestro, Mir) and whose Luhn check digit holds (``python-stdnum``); a 13- or 14-digit
  run that is a valid EAN-13/GTIN-14 is a barcode, and a run inside a longer one (a receipt's
  20-digit transaction code) is no card; a card's security code (3 or 4 digits after cvv, cvc,
  csc, security code, Kartenprüfnummer, cryptogramme...) and its expiry (MM/YY or MM/YYYY after
  exp, expiry, valid thru, gültig bis..., with a card or a card word within 80 characters) are
  CARD findings too;
* IBANs (mod-97) and national ID numbers (US SSN, Spanish DNI, French NIR): candidate patterns
  confirmed by ``python-stdnum``'s checksum validators; UK National Insurance numbers, which have
  no check digit, by HMRC's allocation rules (letters never used, prefixes never issued);
* phone numbers: Google's ``phonenumbers`` finds them, and a number needs evidence (below);
* credentials: the regular expressions of ``detect-secrets``' provider plugins (AWS, Stripe,
  GitHub, GitLab, Slack, OpenAI, private keys, basic-auth URLs, JWTs...), plus a keyword rule for
  ``api_key=…``, ``password: …`` and ``token=…`` assignments;
* e-mail addresses and IP addresses: a pattern, then ``ipaddress`` to confirm.

Only the patterns that may match a text are tried: RE2's ``Set`` finds them in one pass
(:class:`Screen`).

**What counts as a phone number.** Business text is full of 7-to-15-digit numbers that
phonenumbers would accept as *possible* phone numbers: dates (``10-03-2018``, ``25032018``),
barcodes, invoice, order and tax numbers. A number found by phonenumbers' matcher is a phone
number when it has evidence:

* a phone word before it on its line, within 40 characters, nearer than any identifier word
  (tel, phone, mobile, cell, fax, call, text, whatsapp, office, contact..., their common German,
  French, Spanish, Italian, Portuguese and Dutch words, and the words of
  ``data.privacy.phone_context``); or
* an international ``+`` prefix; or
* it is valid (phonenumbers' ``is_valid_number``, the test of its VALID leniency) in one of the
  regions of ``data.privacy.regions``; a number printed as one run of digits must not also pass
  a barcode check digit (EAN-8, UPC-A, EAN-13, GTIN-14) or a UK VAT number's.

and it is never a phone number when it overlaps a date (day, month and year in either order,
with ``-``, ``/`` or ``.``, or as 8 digits), a span of years (``1985-1995``), a time, or an
amount or decimal number; or when the nearest word before it names an identifier (invoice,
order, receipt, ref, reg, GST, VAT, tax, account no., customer no., tracking, approval, ...); or
when it is glued to letters (``INV-20180045``, ``acct_48289860``) or to a ``#``. A number with a
slash between digits, the German way of setting off an area code (``030/1234567``), needs the
phone word.

A :class:`Finding` holds where the match is and its kind, and its ``__repr__`` hides the value,
so reports and logs can list findings without ever showing a secret.
"""

from __future__ import annotations

import bisect
import datetime
import ipaddress
import re
import string
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Callable, Iterable, Literal

if TYPE_CHECKING:
    from taskfit.config import PrivacySpec

SECRET_KINDS = frozenset({"SECRET", "PRIVATE_KEY"})
Action = Literal["redact", "mask", "keep"]


@dataclass(frozen=True)
class Finding:
    kind: str  # EMAIL, PHONE, CARD, IBAN, NATIONAL_ID, IP, SECRET, PRIVATE_KEY
    start: int
    end: int
    detector: str
    value: str = field(repr=False, compare=False)

    @property
    def is_secret(self) -> bool:
        return self.kind in SECRET_KINDS


_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
_IPV6 = re.compile(r"\b(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}\b")
# A whole run of 13-19 digits with optional single spaces or dashes: not part of a longer run or a word.
_CARD = re.compile(r"(?<![\w+])(?<!\d[ -])\d(?:[ -]?\d){12,18}(?!\w|[ -]\d)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
# Phone-shaped: 7+ characters of digits and the usual separators, a space or a dot never doubled
# nor followed by the other ("7.  123456789" is a list item, not a number), and a slash between
# two digits: the German area code's ("030/1234567"), which counts only after a phone word.
_PHONE_HINT = re.compile(r"\+?\(?\d(?:[\d()-]|[ .](?![ .])|(?<=\d)/(?=\d)){5,}\d")
_KEYWORD = re.compile(r"(?i)\b(?:api[_-]?key|secret|token|passw(?:or)?d|pwd)\b\s*[=:]\s*[\"']?([^\s\"',;]{8,})")
_NATIONAL = [
    (re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), "stdnum.us.ssn"),
    (re.compile(r"\b\d{8}[A-Z]\b"), "stdnum.es.dni"),
    (re.compile(r"\b[12] ?\d{2} ?\d{2} ?\d{2} ?\d{3} ?\d{3} ?\d{2}\b"), "stdnum.fr.nir"),
    # UK National Insurance number: no check digit, so HMRC's allocation rules are the check
    (re.compile(r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"), "gb.nino"),
]
_NINO_NEVER_ISSUED = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})

# Card brands: (issuer prefix ranges as (low, high) on the first digits, allowed lengths).
_CARD_BRANDS = [
    ([(4, 4)], {13, 16, 19}),  # Visa
    ([(51, 55), (2221, 2720)], {16}),  # Mastercard
    ([(34, 34), (37, 37)], {15}),  # American Express
    ([(6011, 6011), (644, 649), (65, 65)], {16, 17, 18, 19}),  # Discover
    ([(3528, 3589)], {16, 17, 18, 19}),  # JCB
    ([(300, 305), (36, 36), (38, 39)], {14, 15, 16, 17, 18, 19}),  # Diners Club
    ([(62, 62)], {16, 17, 18, 19}),  # UnionPay
    ([(50, 50), (56, 69)], {12, 13, 14, 15, 16, 17, 18, 19}),  # Maestro
    ([(2200, 2204)], {16, 17, 18, 19}),  # Mir
]

# Words that say what the number after them is. The nearest one before a number decides. Besides
# English's, the common European ones: a German or French number is written without its +49/+33
# and is valid in neither US nor GB, so its word is all the evidence it has ("Telefon: 030 1234567").
_PHONE_WORDS = (r"t[ée]l|t[ée]l[ée]?phone|phone|ph|mob|mobile|cell|cellphone|fax|call|calling|ring|text|sms|"
                r"whats ?app|hotline|helpline|direct|office|landline|contact|dial|"
                r"telefon(?:nummer|nr)?|telefax|handy(?:nummer)?|mobil(?:telefon|nummer|nr)?|rufnummer|fon|"
                r"festnetz|"  # de
                r"portable(?=\s*:)|"  # fr, as a label ("Portable : 06 ..."), not "portable speaker"
                r"tel[ée]fono|m[óo]vil|celular|cellulare|telefone|telem[óo]vel|telefoon|mobiel")  # es, it, pt, nl
_ID_WORDS = (r"invoice|inv|bill|order|po|p\.o|purchase|receipt|rcpt|ref|reference|reg(?:d|n|istered|istration)?|"
             r"gst|sst|vat|tax|tin|ein|ust|ust-?id(?:nr)?|abn|acn|hrb|sku|ean|upc|gtin|isbn|barcode|serial|"
             r"s/n|imei|tracking|awb|parcel|shipment|consignment|approval|auth|authori[sz]ation|trans|"
             r"transaction|txn|trx|booking|confirmation|ticket|case|batch|lot|merchant|terminal|pos|loyalty|"
             r"request|id|iban|bic|swift|sort code|routing|"
             r"(?:customer|cust|account|acct|a/c|member|membership|client|item|product|document|doc|company|"
             r"store|card|voucher|coupon|policy|claim|patient|student|employee|staff) ?(?:no|nr|num|number|#|id|code)"
             r"|(?:st|op|te|tr|tc) ?#"
             # the European words beside the European phone words: "Telefon: 030 1234567, Kundennummer 12345678"
             r"|(?:kunden|rechnungs|bestell|auftrags|vertrags|versicherungs|schaden|vorgangs|referenz|artikel|"
             r"steuer|policen|mitglieds|sendungs)(?:nummer|nr\.?|-nr\.?)|kd\.?-?nr|art\.?-?nr|vorgang|aktenzeichen|"
             r"r[ée]f[ée]rence|facture|commande|dossier|contrat|n[°º]|nº|pedido|factura|albar[áa]n|expediente|"
             r"n[úu]mero de (?:pedido|factura|cliente|p[óo]liza)")
# A card's security code and expiry: no checksum tells them, so a word must name them. An expiry
# counts only near a card (``_CARD_NEAR``): "offer expires 12/24" is no card's.
_CARD_CODE = re.compile(
    r"(?i)(?<!\w)(?:(?P<own>cvv2?|cvc2?|cv2|cvn|card verification (?:code|value|number)|kartenprüfnummer|"
    r"cryptogramme(?: visuel)?)|csc|security code|prüfnummer)[\s:=#.()-]{0,4}(?:(?:is|ist|est)\s+)?"
    r"(?P<code>\d{3,4})(?!\w|[.,/-]\d)")
_CARD_EXPIRY = re.compile(
    r"(?i)(?<!\w)(?:exp(?:iry|iration|ires?|ired|\.)?(?: date)?|valid (?:thru|through|until|till|to)|"
    r"good thru|gültig bis|ablaufdatum|date d'expiration|fin de validité)[\s:=#.()-]{0,4}(?:(?:on|le|am)\s+)?"
    r"((?:0?[1-9]|1[0-2]) ?[/-] ?(?:\d{2}|20\d{2}))(?!\w|[/.-]\d)")
# Words of a payment card only: "gift card", "store card" and "loyalty card" are no card a code or an
# expiry near them belongs to ("Gift cards valid until 12/31" is a date).
_CARD_WORD = re.compile(r"(?i)(?<!\w)(?:(?:credit|debit|bank|payment|charge) ?cards?|card ?(?:number|no|nr|#)|"
                        r"(?:kredit|bank|ec-|debit)karten?(?:nummer)?|kartennummer|girocard|"
                        r"cartes? (?:bancaire|bleue|de crédit|de débit)|numéro de carte|"
                        r"tarjetas? de (?:crédito|débito)|carta di credito|"
                        r"visa|master ?card|amex|american express|maestro|cvv2?|cvc2?|cryptogramme|kartenprüfnummer)(?!\w)")
_CARD_NEAR = 80  # characters either side of an expiry where a card or a card word is looked for

_LETTER_LABEL = re.compile(r"(?i)(?:^|[\s|·,;(])[tmfp] ?[:.] ?$")  # "T: ", "M: " in signatures
_LABEL_WINDOW = 40  # characters before a number where its label is looked for, on its line

# Numbers that are not phone numbers whatever the matcher says.
_DATE_SEP = re.compile(r"(?<![\d/.-])(\d{1,4})([-/.])(\d{1,2})\2(\d{4}|\d{2})(?!\d|[-/.]\d)")
_DATE_RUN = re.compile(r"(?<!\d)\d{8}(?!\d)")
_YEARS = re.compile(r"(?<!\d)(1[5-9]\d\d|20\d\d) ?[-–/] ?(1[5-9]\d\d|20\d\d)(?!\d)")
_TIME = re.compile(r"(?<![\d:])(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d)?(?![\d:])")
_DECIMAL = re.compile(
    r"(?<![\d.,])(?=\d)(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d|[.,]\d)"  # 1,234.56
    r"|\d{1,3}(?:\.\d{3})+,\d{2}(?!\d|[.,]\d)"  # 1.234,56
    r"|\d+,\d{2}(?!\d|[.,]\d)"  # 450,00
    r"|(?!0\d)\d+\.\d+(?!\d|\.\d))")  # 45.60, 365.2425, -121.8244116 (not 030.1234567)


@lru_cache(maxsize=1)
def _secret_patterns() -> list[tuple[str, re.Pattern]]:
    """The denylist regexes of detect-secrets' provider plugins (not its entropy heuristics, which
    flag ordinary words in prose)."""
    import importlib
    import inspect
    import pkgutil

    import detect_secrets.plugins as plugins
    from detect_secrets.plugins.base import RegexBasedDetector

    out: list[tuple[str, re.Pattern]] = []
    for info in pkgutil.iter_modules(plugins.__path__):
        module = importlib.import_module(f"detect_secrets.plugins.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (issubclass(cls, RegexBasedDetector) and cls is not RegexBasedDetector
                    and cls.__module__ == module.__name__ and "IP" not in cls.__name__):
                for pattern in cls.denylist:
                    out.append((cls.secret_type, pattern))
    return out + _OWN_SECRETS


_KEY_CHARS = frozenset(string.ascii_letters + string.digits + "_-")  # what an API key is made of

# Keys detect-secrets' patterns miss or take only in part: OpenAI's project, service-account and
# admin keys and its legacy ones (its pattern wants T3BlbkFJ with exactly 20 characters after it),
# Anthropic's.
_OWN_SECRETS = [
    ("OpenAI Token", re.compile(r"\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,}")),
    ("OpenAI Token", re.compile(r"\bsk-[A-Za-z0-9]{32,}")),
    ("Anthropic Token", re.compile(r"\bsk-ant-[a-z]+\d*-[A-Za-z0-9_-]{20,}")),
]


# RE2's \d, \w and \s are ASCII's, Python's Unicode's: where a pattern may take one, its superset
# takes the Unicode characters Python's does as well (and more: \p{N} holds more than decimal
# digits, \p{M} is no word character to Python). Python's \b and \B are left out (a superset
# without an assertion matches more). In a negated class the ASCII classes are already wider.
_WIDER = {"d": r"\d\p{N}", "w": r"\w\p{L}\p{N}\p{M}", "s": r"\s\v\x1c-\x1f\x85\p{Z}"}


_REPEAT = re.compile(r"\{(\d*),?(\d*)\}")  # {m}, {m,}, {m,n}, {,n}
_RE2_REPEATS = 1000  # the largest count RE2 takes in a repeat


def superset(pattern: re.Pattern) -> str | None:
    """An RE2 pattern that matches somewhere in every text ``pattern`` matches in (more texts
    too): its lookarounds and word-boundary assertions dropped, its classes \\d, \\w and \\s
    holding the Unicode characters Python's hold, ``$`` read as Python reads it (also before a
    final newline), ``\\Z`` as RE2 writes it, a repeat of more than RE2's 1,000 as one of at least
    ``min(m, 1000)`` (``{50,1024}`` as ``{50,}``), its flags inline; None for a verbose pattern that
    holds whitespace or ``#`` (without them it reads the same unverbose), or one whose negated class
    holds \\D, \\W or \\S (RE2's are narrower there, not wider)."""
    if pattern.flags & re.VERBOSE and re.search(r"[\s#]", pattern.pattern):
        return None
    src, out, i, in_class, negated = pattern.pattern, [], 0, False, False
    while i < len(src):
        c = src[i]
        if c == "\\":
            escape = src[i + 1:i + 2]
            if escape in _WIDER and not (in_class and negated):
                out.append(_WIDER[escape] if in_class else f"[{_WIDER[escape]}]")
            elif escape and escape in "DWS" and in_class and negated:
                return None
            elif escape and escape in "bB" and not in_class:
                pass  # a word boundary: Python's words hold letters beyond ASCII
            else:
                out.append(r"\z" if escape == "Z" else src[i:i + 2])
            i += 2
        elif in_class:
            in_class = c != "]"
            out.append(c)
            i += 1
        elif src.startswith(("(?=", "(?!", "(?<=", "(?<!"), i):  # a lookaround: skip to its closing )
            depth, j, cls = 0, i, False
            while j < len(src):
                if src[j] == "\\":
                    j += 1
                elif cls:
                    cls = src[j] != "]"
                elif src[j] == "[":
                    cls = True
                elif src[j] == "(":
                    depth += 1
                elif src[j] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            i = j + 1
        elif c == "[":  # a class; a ] right after its [ or [^ is a member
            opening = "[^" if src.startswith("[^", i) else "["
            opening += "]" if src.startswith("]", i + len(opening)) else ""
            out.append(opening)
            in_class, negated, i = True, opening.startswith("[^"), i + len(opening)
        elif (rep := _REPEAT.match(src, i)) and max(int(n or 0) for n in rep.group(1, 2)) > _RE2_REPEATS:
            out.append(f"{{{min(int(rep.group(1) or 0), _RE2_REPEATS)},}}")  # at least as many: a superset
            i = rep.end()
        elif src.startswith("{,", i):  # Python's {,n} is RE2's {0,n}
            out.append("{0,")
            i += 2
        else:
            out.append(r"(?:\n?\z)" if c == "$" and not pattern.flags & re.MULTILINE else c)
            i += 1
    flags = "".join(f for flag, f in ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"))
                    if pattern.flags & flag)
    return (f"(?{flags})" if flags else "") + "".join(out)


class Screen:
    """Which of some patterns may match a text, found in one pass over it by RE2's ``Set``
    (``google-re2``) rather than one pass a pattern: each enters the set as its
    :func:`superset`, so a pattern ruled out cannot match, and a text's findings are those of
    trying every pattern. A pattern RE2 cannot read (a verbose one, a back-reference, a repeat
    over 1,000) is never ruled out; nor is any pattern on a text RE2 cannot take (one holding a
    lone surrogate, which has no UTF-8), or one holding the dotless ı or the dotted İ, which
    Python's case folding takes for i (an ignore-case ``api_key`` matches "apı_key") and RE2's
    does not."""

    def __init__(self, patterns: Iterable[re.Pattern]):
        import re2

        options = re2.Options()
        options.log_errors = False
        self._set = re2.Set.SearchSet(options)
        self._entered: dict[int, int] = {}  # RE2's number of a pattern -> its id()
        self.always: set[re.Pattern] = set()
        self.screened: set[re.Pattern] = set()  # the patterns RE2 reads: those it may rule out
        for pattern in patterns:
            source = superset(pattern)
            try:
                self._entered[self._set.Add(source)] = id(pattern)
                self.screened.add(pattern)
            except (re2.error, TypeError):  # None, or a pattern RE2 cannot read
                self.always.add(pattern)
        self._set.Compile()
        self._always = frozenset(id(p) for p in self.always)

    def may_match(self, text: str) -> frozenset[int] | None:
        """The ids (``id()``) of the screen's patterns that may match ``text``, None when each
        must be tried. Ids, not the patterns: hashing a compiled pattern hashes its whole code."""
        if "\u0131" in text or "\u0130" in text:  # ı, İ: RE2 would rule out what Python matches
            return None
        try:
            hits = self._set.Match(text)
        except UnicodeEncodeError:
            return None
        return self._always.union(self._entered[k] for k in hits) if hits else self._always


@lru_cache(maxsize=1)
def _secret_ids() -> frozenset[int]:
    """The ids of :func:`_secret_patterns`' patterns (what :meth:`Screen.may_match` returns)."""
    return frozenset(id(pattern) for _, pattern in _secret_patterns())


@lru_cache(maxsize=1)
def _screen() -> Screen | None:
    """The screen of the detector's patterns, None without ``google-re2`` (every pattern is tried)."""
    try:
        return Screen([_EMAIL, _IPV4, _IPV6, _CARD, _CARD_CODE, _CARD_EXPIRY, _IBAN, _PHONE_HINT, _KEYWORD]
                      + [pattern for pattern, _ in _NATIONAL] + [pattern for _, pattern in _secret_patterns()])
    except ImportError:
        return None


@lru_cache(maxsize=1)
def _validators() -> dict[str, Callable[[str], bool]]:
    from stdnum import ean, iban, luhn
    from stdnum.es import dni
    from stdnum.fr import nir
    from stdnum.gb import vat as gb_vat
    from stdnum.us import ssn

    return {"luhn": luhn.is_valid, "iban": iban.is_valid, "ean": ean.is_valid, "gb.vat": gb_vat.is_valid,
            "stdnum.us.ssn": ssn.is_valid, "stdnum.es.dni": dni.is_valid,
            "stdnum.fr.nir": nir.is_valid, "gb.nino": lambda v: v[:2] not in _NINO_NEVER_ISSUED}


def _digits(s: str) -> str:
    return re.sub(r"[ -]", "", s)


def _card_brand(digits: str) -> bool:
    """Whether ``digits`` starts with a card brand's issuer prefix and has one of its lengths."""
    for ranges, lengths in _CARD_BRANDS:
        if len(digits) in lengths:
            for low, high in ranges:
                width = len(str(low))
                if low <= int(digits[:width]) <= high:
                    return True
    return False


def _card_grouping(value: str) -> bool:
    """Printed whole, or in groups of four (the last shorter), or Amex/Diners' 4-6-5 / 4-6-4."""
    groups = re.split(r"[ -]", value)
    sizes = [len(g) for g in groups]
    return (len(groups) == 1 or all(n == 4 for n in sizes[:-1]) and 1 <= sizes[-1] <= 4
            or sizes in ([4, 6, 5], [4, 6, 4]))


def _is_date(day_or_year: str, middle: str, last: str) -> bool:
    def real(y: int, m: int, d: int) -> bool:
        try:
            datetime.date(y, m, d)
        except ValueError:
            return False
        return 1900 <= y <= 2099

    a, b, c = int(day_or_year), int(middle), int(last)
    if len(day_or_year) == 4:
        return len(last) <= 2 and real(a, b, c)
    if len(day_or_year) > 2:
        return False
    year = c if len(last) == 4 else 2000 + c
    return real(year, b, a) or real(year, a, b)


def _date_run(run: str) -> bool:
    """8 digits that read as ddmmyyyy, mmddyyyy or yyyymmdd."""
    return (_is_date(run[:4], run[4:6], run[6:]) or _is_date(run[:2], run[2:4], run[4:])
            or _is_date(run[2:4], run[:2], run[4:]))


def not_phone_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of the dates, spans of years, times, amounts and decimal numbers in ``text``,
    sorted and merged: a phone number never overlaps one."""
    spans = [m.span() for m in _DATE_SEP.finditer(text) if _is_date(m.group(1), m.group(3), m.group(4))]
    spans += [m.span() for m in _DATE_RUN.finditer(text) if _date_run(m.group())]
    spans += [m.span() for m in _YEARS.finditer(text) if m.group(1) <= m.group(2)]
    spans += [m.span() for pattern in (_TIME, _DECIMAL) for m in pattern.finditer(text)]
    merged: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if merged and s < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    return merged


def _overlaps(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether [start, end) overlaps one of ``spans`` (sorted and disjoint)."""
    i = bisect.bisect_left(spans, (end,))
    return i > 0 and spans[i - 1][1] > start


def _glued(text: str, start: int, end: int) -> bool:
    """Part of a code: letters, ``#``, ``_`` or ``/`` right before the number, or a letter after."""
    if end < len(text) and text[end].isalpha():
        return True
    before = text[start - 1] if start else " "
    return before.isalnum() or before in "#_" or before in "/-" and start >= 2 and text[start - 2].isalnum()


def _barcode_or_tax_number(digits: str) -> bool:
    valid = _validators()
    return (len(digits) in (8, 12, 13, 14) and valid["ean"](digits)
            or len(digits) in (9, 12) and valid["gb.vat"](digits))


@dataclass(frozen=True)
class Detector:
    """Finds personal data and secrets; ``regions`` and ``phone_context`` are the project's
    ``data.privacy`` settings (see the module docstring for how they decide a phone number)."""

    regions: tuple[str, ...]
    phone_context: tuple[str, ...]

    @cached_property
    def _labels(self) -> re.Pattern:
        extra = "".join(f"|{re.escape(word)}" for word in self.phone_context)
        return re.compile(rf"(?i)(?<!\w)(?:(?P<phone>{_PHONE_WORDS}{extra})|(?P<id>{_ID_WORDS}))(?![^\W_])")

    def _label(self, text: str, start: int) -> str | None:
        """"phone", "id" or None: what the nearest word before ``start`` on its line says."""
        lo = max(0, start - _LABEL_WINDOW, text.rfind("\n", 0, start) + 1)
        window = text[lo:start]
        if _LETTER_LABEL.search(window):
            return "phone"
        last = None
        for last in self._labels.finditer(window):
            pass
        return None if last is None else last.lastgroup

    def _candidates(self, chunk: str, need_valid: bool) -> dict[tuple[int, int], bool]:
        """(start, end) in ``chunk`` → whether phonenumbers calls it valid in one of the regions."""
        import phonenumbers

        found: dict[tuple[int, int], bool] = {}
        for region in self.regions if need_valid else self.regions[:1]:
            for m in phonenumbers.PhoneNumberMatcher(chunk, region, leniency=phonenumbers.Leniency.POSSIBLE):
                key = (m.start, m.end)
                found[key] = found.get(key, False) or (need_valid and phonenumbers.is_valid_number(m.number))
        return found

    def _phones(self, text: str) -> Iterable[Finding]:
        not_phone: list[tuple[int, int]] | None = None  # found once, when a number needs them
        for hint in _PHONE_HINT.finditer(text):
            start, end = hint.span()
            raw = hint.group()
            digits = sum(c.isdigit() for c in raw)
            # E.164 numbers have 15 digits at most; a number glued to letters is part of a code.
            if not 7 <= digits <= 15 or _glued(text, start, end):
                continue
            label = self._label(text, start)
            if label == "id":
                continue
            international = raw.startswith("+")
            evident = label == "phone" or international
            if "/" in raw and not evident:
                continue  # dates, references and fractions are written so: only a phone word says phone
            if not evident and raw.isdigit() and _barcode_or_tax_number(raw):
                continue
            not_phone = not_phone_spans(text) if not_phone is None else not_phone
            if all(_overlaps(not_phone, i, i + 1) for i in range(start, end) if text[i].isdigit()):
                continue  # every digit is a date's, a time's or an amount's: the matcher need not look
            candidates = self._candidates(raw, need_valid=not evident)
            covered = {i for s, e in candidates for i in range(s, e)} if evident else set()
            if evident and any(c.isdigit() and i not in covered for i, c in enumerate(raw)):
                # a labelled number in a format no region's matcher reads whole ("Tel 0171 2345678",
                # a London number before 2000, read as 2345678 alone): the whole number, not a part
                candidates = {(0, len(raw)): False}
            for (s, e), valid in candidates.items():
                value = raw[s:e]
                if sum(c.isdigit() for c in value) < 7 or not (evident or valid):
                    continue
                if _overlaps(not_phone, start + s, start + e):
                    continue
                why = "label" if label == "phone" else "international" if international else "valid"
                yield Finding("PHONE", start + s, start + e, f"phonenumbers ({why})", value)

    def detect(self, text: str) -> list[Finding]:
        """Every finding in ``text``, overlapping ones resolved (secrets first, then the longest).
        A pattern the :class:`Screen` rules out is not tried: it cannot match."""
        screen = _screen()
        possible = screen.may_match(text) if screen is not None else None
        if possible is not None and not possible:  # no pattern can match (most texts): nothing to try
            return []

        def matches(pattern: re.Pattern) -> Iterable[re.Match]:
            return pattern.finditer(text) if possible is None or id(pattern) in possible else ()

        valid = _validators()

        found: list[Finding] = []
        for m in matches(_EMAIL):
            found.append(Finding("EMAIL", m.start(), m.end(), "pattern", m.group()))
        for m in matches(_IPV4):
            try:
                ipaddress.IPv4Address(m.group())
            except ValueError:
                continue
            found.append(Finding("IP", m.start(), m.end(), "ipaddress", m.group()))
        for m in matches(_IPV6):
            found.append(Finding("IP", m.start(), m.end(), "ipaddress", m.group()))
        for m in matches(_CARD):
            digits = _digits(m.group())
            barcode = digits == m.group() and len(digits) in (13, 14) and valid["ean"](digits)
            if (_card_brand(digits) and _card_grouping(m.group()) and not barcode and valid["luhn"](digits)):
                found.append(Finding("CARD", m.start(), m.end(), "stdnum.luhn", m.group()))
        cards = [f for f in found if f.kind == "CARD"]

        def near_card(start: int, end: int) -> bool:  # a card number, or a payment card's word, near
            return bool(_CARD_WORD.search(text[max(0, start - _CARD_NEAR):end + _CARD_NEAR])) or any(
                c.start < end + _CARD_NEAR and c.end > start - _CARD_NEAR for c in cards)

        for m in matches(_CARD_CODE):  # "csc", "security code", "Prüfnummer" name a card's code only near one
            start, end = m.span("code")
            if m.group("own") or near_card(start, end):
                found.append(Finding("CARD", start, end, "card security code", m.group("code")))
        for m in matches(_CARD_EXPIRY):
            start, end = m.span(1)
            if near_card(start, end):
                found.append(Finding("CARD", start, end, "card expiry", m.group(1)))
        for m in matches(_IBAN):
            if valid["iban"](m.group()):
                found.append(Finding("IBAN", m.start(), m.end(), "stdnum.iban", m.group()))
        for pattern, name in _NATIONAL:
            for m in matches(pattern):
                if valid[name](m.group()):
                    found.append(Finding("NATIONAL_ID", m.start(), m.end(), name, m.group()))
        if possible is None or id(_PHONE_HINT) in possible:
            found.extend(self._phones(text))
        secrets = _secret_patterns()
        if possible is not None:  # those the screen leaves (most often none), looked for in their order
            left = possible & _secret_ids()
            secrets = [(kind, pattern) for kind, pattern in secrets if id(pattern) in left] if left else []
        for secret_type, pattern in secrets:
            for m in pattern.finditer(text):
                kind = "PRIVATE_KEY" if "Private Key" in secret_type else "SECRET"
                end = m.end()  # a pattern of fixed length that stops inside a key leaves no tail of it
                while (kind == "SECRET" and m.group()[-1:] in _KEY_CHARS and end < len(text)
                       and text[end] in _KEY_CHARS):
                    end += 1
                found.append(Finding(kind, m.start(), end, f"detect-secrets: {secret_type}", text[m.start():end]))
        for m in matches(_KEYWORD):
            found.append(Finding("SECRET", m.start(1), m.end(1), "keyword assignment", m.group(1)))
        return _resolve_overlaps(found)

    def redact(self, text: str, findings: list[Finding] | None = None, action: Action = "redact") -> str:
        """Replace each finding by a typed placeholder (``<EMAIL>``) or, with ``mask``, by asterisks
        keeping the last two characters of a value of 6 or more (a card's 3-digit security code
        would keep most of itself); ``keep`` returns the text unchanged."""
        if action == "keep":
            return text
        findings = self.detect(text) if findings is None else findings
        out, last = [], 0
        for f in findings:
            out.append(text[last:f.start])
            if action == "mask":
                kept = 2 if f.end - f.start >= 6 else 0
                out.append("*" * (f.end - f.start - kept) + text[f.end - kept:f.end])
            else:
                out.append(f"<{f.kind}>")
            last = f.end
        out.append(text[last:])
        return "".join(out)


def detector(privacy: PrivacySpec | None = None) -> Detector:
    """The detector for a project's ``data.privacy`` settings (the defaults when None)."""
    if privacy is None:
        from taskfit.config import PrivacySpec

        privacy = PrivacySpec()
    return _detector(tuple(privacy.regions), tuple(privacy.phone_context))


def phone_regions(text: str) -> list[str | None]:
    """The region of each phone number in ``text`` written with a +country prefix (its country
    code's main region: +1 is US, +49 DE), and None for each one a phone word labels without one:
    the evidence ``init --from`` proposes ``data.privacy.regions`` from."""
    import phonenumbers

    labels = _detector((), ())  # the phone words alone: the regions play no part in a label
    out: list[str | None] = []
    for hint in _PHONE_HINT.finditer(text):
        raw = hint.group()
        if not 7 <= sum(c.isdigit() for c in raw) <= 15 or _glued(text, *hint.span()):
            continue
        if raw.startswith("+"):
            try:
                number = phonenumbers.parse(raw, None)
            except phonenumbers.NumberParseException:
                continue
            region = phonenumbers.region_code_for_country_code(number.country_code)
            if region in phonenumbers.SUPPORTED_REGIONS and phonenumbers.is_possible_number(number):
                out.append(region)
        elif labels._label(text, hint.start()) == "phone":
            out.append(None)
    return out


@lru_cache(maxsize=16)
def _detector(regions: tuple[str, ...], phone_context: tuple[str, ...]) -> Detector:
    return Detector(regions, phone_context)


def _resolve_overlaps(found: list[Finding]) -> list[Finding]:
    ranked = sorted(found, key=lambda f: (not f.is_secret, -(f.end - f.start), f.start))
    kept: list[Finding] = []
    for f in ranked:
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


def detect(text: str, privacy: PrivacySpec | None = None) -> list[Finding]:
    """Every finding in ``text`` under ``privacy``'s settings (the defaults when None)."""
    return detector(privacy).detect(text)


def redact(text: str, findings: list[Finding] | None = None, action: Action = "redact",
           privacy: PrivacySpec | None = None) -> str:
    """``text`` with its findings replaced (see :meth:`Detector.redact`)."""
    return detector(privacy).redact(text, findings, action)
