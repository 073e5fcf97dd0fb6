"""Personal data and secrets: find them, redact them, and never print them.

Detection leans on maintained libraries where one fits:

* payment cards (Luhn), IBANs (mod-97) and national ID numbers (US SSN, Spanish DNI, French
  NIR): candidate patterns confirmed by ``python-stdnum``'s checksum validators,
  so that an order number is not taken for a card; UK National Insurance numbers, which have no
  check digit, by HMRC's allocation rules (letters never used, prefixes never issued);
* phone numbers: Google's ``phonenumbers`` matcher;
* credentials: the regular expressions of ``detect-secrets``' provider plugins (AWS, Stripe,
  GitHub, GitLab, Slack, OpenAI, private keys, basic-auth URLs, JWTs...), plus a keyword rule for
  ``api_key=…``, ``password: …`` and ``token=…`` assignments;
* e-mail addresses and IP addresses: a pattern, then ``ipaddress`` to confirm.

A :class:`Finding` holds where the match is and its kind, and its ``__repr__`` hides the value,
so reports and logs can list findings without ever showing a secret.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterable, Literal

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
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
_PHONE_HINT = re.compile(r"\+?\(?\d[\d ().-]{5,}\d")
_KEYWORD = re.compile(r"(?i)\b(?:api[_-]?key|secret|token|passw(?:or)?d|pwd)\b\s*[=:]\s*[\"']?([^\s\"',;]{8,})")
_NATIONAL = [
    (re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), "stdnum.us.ssn"),
    (re.compile(r"\b\d{8}[A-Z]\b"), "stdnum.es.dni"),
    (re.compile(r"\b[12] ?\d{2} ?\d{2} ?\d{2} ?\d{3} ?\d{3} ?\d{2}\b"), "stdnum.fr.nir"),
    # UK National Insurance number: no check digit, so HMRC's allocation rules are the check
    (re.compile(r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"), "gb.nino"),
]
_NINO_NEVER_ISSUED = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})


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
    return out


@lru_cache(maxsize=1)
def _validators() -> dict[str, Callable[[str], bool]]:
    from stdnum import iban, luhn
    from stdnum.es import dni
    from stdnum.fr import nir
    from stdnum.us import ssn

    return {"luhn": luhn.is_valid, "iban": iban.is_valid, "stdnum.us.ssn": ssn.is_valid,
            "stdnum.es.dni": dni.is_valid,
            "stdnum.fr.nir": nir.is_valid, "gb.nino": lambda v: v[:2] not in _NINO_NEVER_ISSUED}


def _digits(s: str) -> str:
    return re.sub(r"[ -]", "", s)


def _phones(text: str) -> Iterable[Finding]:
    import phonenumbers

    # The matcher is the slowest detector and, at POSSIBLE leniency, generous: give it only the
    # phone-shaped spans (7+ digits with the usual separators), with a little context around them.
    for span in _PHONE_HINT.finditer(text):
        if sum(c.isdigit() for c in span.group()) > 15:  # E.164 numbers have at most 15 digits
            continue
        lo = max(0, span.start() - 1)
        chunk = text[lo:span.end()]
        # POSSIBLE, not VALID: a number in a reserved range (555, 07700 900...) is still someone's
        # number as far as a redaction policy is concerned.
        for region in ("US", "GB"):
            for match in phonenumbers.PhoneNumberMatcher(chunk, region, leniency=phonenumbers.Leniency.POSSIBLE):
                if sum(c.isdigit() for c in match.raw_string) >= 7:
                    yield Finding("PHONE", lo + match.start, lo + match.end, "phonenumbers", match.raw_string)


def detect(text: str) -> list[Finding]:
    """Every finding in ``text``, overlapping ones resolved (secrets first, then the longest)."""
    valid = _validators()
    found: list[Finding] = []
    for m in _EMAIL.finditer(text):
        found.append(Finding("EMAIL", m.start(), m.end(), "pattern", m.group()))
    for m in _IPV4.finditer(text):
        try:
            ipaddress.IPv4Address(m.group())
        except ValueError:
            continue
        found.append(Finding("IP", m.start(), m.end(), "ipaddress", m.group()))
    for m in _IPV6.finditer(text):
        found.append(Finding("IP", m.start(), m.end(), "ipaddress", m.group()))
    for m in _CARD.finditer(text):
        if m.start() and text[m.start() - 1] == "+":  # an international phone number
            continue
        digits = _digits(m.group())
        if 13 <= len(digits) <= 19 and valid["luhn"](digits):
            found.append(Finding("CARD", m.start(), m.end(), "stdnum.luhn", m.group()))
    for m in _IBAN.finditer(text):
        if valid["iban"](m.group()):
            found.append(Finding("IBAN", m.start(), m.end(), "stdnum.iban", m.group()))
    for pattern, name in _NATIONAL:
        for m in pattern.finditer(text):
            if valid[name](m.group()):
                found.append(Finding("NATIONAL_ID", m.start(), m.end(), name, m.group()))
    found.extend(_phones(text))
    for secret_type, pattern in _secret_patterns():
        for m in pattern.finditer(text):
            kind = "PRIVATE_KEY" if "Private Key" in secret_type else "SECRET"
            found.append(Finding(kind, m.start(), m.end(), f"detect-secrets: {secret_type}", m.group()))
    for m in _KEYWORD.finditer(text):
        found.append(Finding("SECRET", m.start(1), m.end(1), "keyword assignment", m.group(1)))
    return _resolve_overlaps(found)


def _resolve_overlaps(found: list[Finding]) -> list[Finding]:
    ranked = sorted(found, key=lambda f: (not f.is_secret, -(f.end - f.start), f.start))
    kept: list[Finding] = []
    for f in ranked:
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


def redact(text: str, findings: list[Finding] | None = None, action: Action = "redact") -> str:
    """Replace each finding by a typed placeholder (``<EMAIL>``) or, with ``mask``, by asterisks
    keeping the last two characters; ``keep`` returns the text unchanged."""
    if action == "keep":
        return text
    findings = detect(text) if findings is None else findings
    out, last = [], 0
    for f in findings:
        out.append(text[last:f.start])
        if action == "mask":
            out.append("*" * max(0, (f.end - f.start) - 2) + text[f.end - 2:f.end])
        else:
            out.append(f"<{f.kind}>")
        last = f.end
    out.append(text[last:])
    return "".join(out)
