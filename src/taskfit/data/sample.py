"""A seeded generator of realistic support tickets: the quickstart's sample task.

Each ticket is routed to one of eight queues and carries one of three urgency levels. The text is
built the way real tickets look: an optional greeting, one to three sentences about the problem
(with product names, order numbers, amounts and dates), urgency cues, typos, an optional quoted
earlier reply and an optional signature. A few problems are planted on purpose so that the data
checks have something real to find:

* near-duplicates: a customer re-sends the same ticket with a small edit (``meta.planted = "near_duplicate"``);
* conflicting labels: a near-duplicate routed to a different queue (``meta.planted = "conflicting_label"``);
* personal data: e-mail addresses and phone numbers in signatures (``meta.planted = "pii"``);
* secrets: API-key-like strings pasted into technical tickets (``meta.planted = "secret"``).

The output is deterministic for a given seed: the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

QUEUES: dict[str, str] = {
    "billing": "charges, invoices, payment methods, VAT",
    "refund": "money back for returns, cancelled orders or double charges",
    "shipping": "delivery status, delays, tracking, addresses",
    "account_access": "login, passwords, two-factor codes, locked accounts",
    "technical_issue": "app or integration errors, crashes, sync and API problems",
    "product_question": "features, plans, compatibility, questions before buying",
    "cancellation": "ending a subscription or closing an account",
    "feedback": "praise, complaints about service, suggestions",
}
URGENCY = ("low", "medium", "high")

_PRODUCTS = ["Pro plan", "Team plan", "the mobile app", "the desktop app", "SmartHub",
             "the starter kit", "Sync Plus", "the analytics add-on", "the Basic plan",
             "the wireless scanner"]
_CARRIERS = ["DHL", "UPS", "FedEx", "the courier", "Royal Mail", "DPD"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_FIRST = ["Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas",
          "Kemi", "Luca", "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tomas"]
_LAST = ["Smith", "Garcia", "Müller", "Okafor", "Rossi", "Tanaka", "Novak", "Dubois", "Silva",
         "Kowalski", "Larsen", "Haddad", "Brown", "Ivanova", "Chen", "Patel"]
_COMPANIES = ["Acme Ltd", "Northwind", "Bluebird Studio", "Kite & Co", "Greenleaf GmbH",
              "Orbit Logistics", "Pinecone Labs"]

# Queue-specific problem sentences. Slots: {product} {order} {amount} {date} {carrier} {day} {n}
# (a code or error number) {company} {years} {days} {people}.
_BODIES: dict[str, list[str]] = {
    "billing": [
        "I was charged {amount} twice for {product} this month, can you check my invoice?",
        "My invoice for {date} shows {amount} but my plan should cost less.",
        "How do I change the credit card you charge for {product}?",
        "The payment for invoice INV-{n} failed and I don't know why.",
        "Can you add our VAT number to the invoices? They go to {company}.",
        "Your system charged my card {amount} on {date} without any invoice.",
        "I need a copy of all invoices since {date} for our accounting.",
        "Why did the price of {product} go up to {amount}? Nobody told us.",
        "Please switch our billing from monthly to yearly.",
        "There is a charge of {amount} on my statement I don't recognise.",
    ],
    "refund": [
        "I returned {product} on {date} and still haven't got my refund of {amount}.",
        "Order {order} arrived broken, I want my money back please.",
        "I cancelled order {order} before it shipped, when will I be refunded?",
        "You charged me twice for order {order}, please refund the second payment of {amount}.",
        "The refund for my return was only part of the amount, {amount} is missing.",
        "How long does a refund take to show up on my card? Return was sent {day}.",
        "I want to return {product}, it doesn't do what was promised. Refund please.",
        "The item from order {order} was the wrong size, I'd like a refund not an exchange.",
        "My refund was approved {days} days ago but nothing came back to my bank.",
    ],
    "shipping": [
        "My order {order} was supposed to arrive {day} and it's still not here.",
        "The tracking for order {order} hasn't updated in {days} days.",
        "{carrier} says the package was delivered but I never received it.",
        "Can I change the delivery address for order {order}? I moved.",
        "Do you ship to Norway? I want to order {product}.",
        "The parcel is stuck at customs, what should I do? Order {order}.",
        "Where is my package?? Order {order}, ordered on {date}.",
        "{carrier} left my parcel with a neighbour I don't know, order {order}.",
        "Can you send {product} by express delivery instead, I need it by {day}?",
    ],
    "account_access": [
        "I can't log in, it says my password is wrong but I just reset it.",
        "I'm not getting the two-factor code on my phone anymore.",
        "My account got locked after too many attempts, please unlock it.",
        "The password reset email never arrives, I checked spam too.",
        "I changed my phone and lost my authenticator, how do I get into my account?",
        "I can't sign in with Google anymore since {day}.",
        "Someone else may have accessed my account, I got a login alert from another country.",
        "Please change the email address on my account, I no longer have access to the old one.",
        "The login page just reloads when I enter my username and password.",
    ],
    "technical_issue": [
        "{product} crashes every time I open the reports page.",
        "The sync between {product} and our CRM stopped working on {date}.",
        "I get error {n} when uploading files bigger than 10MB.",
        "Your API returns 500 errors for every request since this morning.",
        "The export to CSV produces an empty file.",
        "After the latest update {product} is extremely slow and freezes.",
        "Notifications stopped working in {product} on Android.",
        "The webhook isn't firing anymore, our integration is broken.",
        "The dashboard shows a blank screen in Firefox, works in Chrome.",
        "Data from yesterday is missing in {product}, the graphs stop on {day}.",
    ],
    "product_question": [
        "Does {product} work with Mac computers?",
        "What's the difference between the Pro plan and the Team plan?",
        "Can {product} export data to Excel?",
        "Is there a discount for non-profits or schools?",
        "How many users can we add on the Team plan?",
        "Does the analytics add-on support custom dashboards?",
        "We're thinking of buying {product} for {people} people, is there a trial?",
        "Is {product} available in Spanish?",
        "Can I use {product} offline?",
    ],
    "cancellation": [
        "Please cancel my subscription to {product}, I no longer need it.",
        "I want to close my account and delete all my data.",
        "How do I stop the automatic renewal? We don't want to continue after {date}.",
        "Cancel our Team plan at the end of this billing period please.",
        "We're moving to another provider, please end our contract.",
        "I'd like to downgrade and then cancel, how does that work?",
        "Stop my membership immediately, I don't want to be charged again.",
        "Please terminate the account for {company}, we are closing the business.",
    ],
    "feedback": [
        "Just wanted to say your support agent was fantastic yesterday, thank you!",
        "The new design of {product} is really confusing, I liked the old one better.",
        "It would be great if {product} had a dark mode.",
        "I've been waiting {days} days for an answer, this service is getting worse.",
        "Love the latest update, the reports are so much faster now.",
        "Suggestion: let us schedule exports every week.",
        "Your chat agent was rude to me on {day}. Not acceptable.",
        "Great product overall, but the mobile app needs work.",
    ],
}

_GREETINGS = ["Hi,", "Hello,", "Hi team,", "Dear support,", "Hey,", "Good morning,",
              "Hello there,", "To whom it may concern,", "Hi support team,"]
_CLOSINGS = ["Thanks", "Thank you", "Best regards", "Cheers", "Regards", "Kind regards",
             "Thanks in advance", "Many thanks"]
_URGENCY_CUES = {
    "low": ["No rush.", "Whenever you get a chance.", "Not urgent.", "",  ""],
    "medium": ["Please let me know.", "Could you look into it?", "", "Thanks for checking."],
    "high": ["This is URGENT.", "Please help ASAP!", "We need this fixed today.",
             "This is blocking our whole team.", "Urgent please!!"],
}
_EXTRA = [
    "I already tried restarting.", "My account email is the usual one.",
    "This happened before as well.", "I have attached a screenshot.",
    "We have been customers for {years} years.", "Order number is above.", "",
]
_QUOTED = [
    "> On {day}, Support wrote:\n> Thanks for contacting us. We are looking into it.",
    "> -----Original Message-----\n> From: support\n> We have received your request #{n}.",
    "> On {date} support@ wrote:\n> Could you send us more details?",
]


def _typo(word: str, rng: random.Random) -> str:
    """One realistic keyboard slip: a swapped, dropped or doubled letter."""
    if len(word) < 4 or not word.isalpha():
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]


def _add_typos(text: str, rng: random.Random, rate: float) -> str:
    words = text.split(" ")
    return " ".join(_typo(w, rng) if rng.random() < rate else w for w in words)


def _phone(rng: random.Random) -> str:
    return rng.choice(["+44 7700 {a}{c}", "(555) {a}-{b}", "+1 415 {a} {b}", "0151 {a} {b}"]).format(
        a=rng.randint(100, 999), b=rng.randint(1000, 9999), c=rng.randint(100, 999))


def _secret(rng: random.Random) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    body = "".join(rng.choice(alphabet) for _ in range(32))
    return rng.choice([
        "sk_live_" + body[:24],
        "AKIA" + body[:16].upper(),
        "ghp_" + body[:36].ljust(36, "x"),
        "api_key=" + body,
    ])


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        product=rng.choice(_PRODUCTS), order=f"#{rng.randint(10000, 99999)}",
        amount=f"{rng.choice(['$', '€', '£'])}{rng.randint(5, 400)}.{rng.randint(0, 99):02d}",
        date=f"{rng.randint(1, 28)} {rng.choice(_MONTHS)}", carrier=rng.choice(_CARRIERS),
        day=rng.choice(_DAYS), n=rng.randint(100, 9999), company=rng.choice(_COMPANIES),
        years=rng.randint(2, 12), days=rng.randint(2, 21), people=rng.choice([5, 10, 25, 40, 120]))


def _ticket(queue: str, urgency: str, rng: random.Random) -> tuple[str, str | None]:
    """Return the ticket text and the kind of planted problem it carries, if any."""
    planted = None
    parts: list[str] = []
    if rng.random() < 0.7:
        parts.append(rng.choice(_GREETINGS))
    sentences = rng.sample(_BODIES[queue], k=rng.choice([1, 1, 2]))
    body = " ".join(_fill(s, rng) for s in sentences)
    extra = _fill(rng.choice(_EXTRA), rng)
    cue = rng.choice(_URGENCY_CUES[urgency])
    text = " ".join(p for p in (body, extra, cue) if p)
    if queue == "technical_issue" and rng.random() < 0.08:
        text += f" Here is the key we use: {_secret(rng)}"
        planted = "secret"
    parts.append(_add_typos(text, rng, rate=rng.choice([0.0, 0.02, 0.05])))
    if rng.random() < 0.6:
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        signature = f"{rng.choice(_CLOSINGS)},\n{name}"
        if rng.random() < 0.15:
            handle = name.lower().replace(" ", ".").replace("ü", "u")
            signature += f"\n{handle}@{rng.choice(['gmail.com', 'example.org', 'outlook.com'])}"
            planted = planted or "pii"
        if rng.random() < 0.1:
            signature += f"\nTel: {_phone(rng)}"
            planted = planted or "pii"
        parts.append(signature)
    if rng.random() < 0.12:
        parts.append(_fill(rng.choice(_QUOTED), rng))
    return "\n".join(parts), planted


def generate_tickets(n: int = 2400, seed: int = 0) -> list[dict]:
    """Generate ``n`` tickets as chat-format rows: ``{"id", "messages", "meta"}``.

    About 3% of rows are near-duplicates of an earlier row and a handful of those carry a
    different queue (conflicting labels); see the module docstring.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    rng = random.Random(seed)
    queues = list(QUEUES)
    # Real queues are not balanced: technical issues and billing dominate, feedback is rare.
    weights = [16, 10, 13, 12, 18, 11, 10, 6]
    rows: list[dict] = []
    for i in range(n):
        if rows and rng.random() < 0.03:
            source = rng.choice(rows)
            text = source["messages"][0]["content"]
            edit = rng.choice(["Sorry, sending this again: ", "Any update? ", "Re: ", "Following up. "])
            text = edit + text.replace("Hi,", "Hello,", 1)
            queue = source["meta"]["queue"]
            planted = "near_duplicate"
            if rng.random() < 0.25:
                queue = rng.choice([q for q in queues if q != queue])
                planted = "conflicting_label"
            urgency = source["meta"]["urgency"]
            meta_extra = {"duplicate_of": source["id"]}
        else:
            queue = rng.choices(queues, weights=weights)[0]
            urgency = rng.choices(URGENCY, weights=[3, 5, 2])[0]
            text, planted = _ticket(queue, urgency, rng)
            meta_extra = {}
        row_id = f"T{i:05d}"
        meta = {"queue": queue, "urgency": urgency, "customer": f"C{rng.randint(1, n // 3 + 1):04d}"}
        if planted:
            meta["planted"] = planted
        meta.update(meta_extra)
        rows.append({
            "id": row_id,
            "messages": [{"role": "user", "content": text}, {"role": "assistant", "content": queue}],
            "meta": meta,
        })
    return rows


def write_tickets(path: Path, n: int = 2400, seed: int = 0) -> Path:
    """Write :func:`generate_tickets` output as JSONL at ``path`` and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in generate_tickets(n, seed):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
