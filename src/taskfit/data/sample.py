"""A seeded generator of realistic support tickets: the quickstart's sample task.

Each ticket is routed to one of eight queues and carries one of three urgency levels. The text is
built the way real tickets look: an optional greeting, one or two requests (each queue has fifteen
wordings, many of them in another queue's words: a refund asked for after a late delivery, a crash
right after logging in), urgency cues, typos, an optional quoted earlier reply and an optional
signature. Wording overlaps across queues as in real tickets, so keywords alone do not route them:

* two topics: 40% of tickets also mention a second queue's problem, marked as secondary the way
  customers mark it ("By the way, not urgent: ...", or as background before "Anyway, the real
  issue: ..."); the main request decides the queue, and the same pair of topics appears with
  either one as the main request (``meta.side_topic`` names the second queue);
* label noise: 2.5% of tickets carry the label a hurried labeller would give, the side topic's
  queue or a neighbouring one (``meta.true_queue`` names the queue the main request asks for).

A few problems are planted on purpose so that the data checks have something real to find:

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
# Real queues are not balanced: technical issues and billing dominate, feedback is rare.
QUEUE_WEIGHTS: dict[str, int] = {"billing": 16, "refund": 10, "shipping": 13, "account_access": 12,
                                 "technical_issue": 18, "product_question": 11, "cancellation": 10,
                                 "feedback": 6}
# Shares of fresh tickets (not re-sends) that mention a second queue, and that are mislabelled.
SIDE_TOPIC_RATE = 0.4
LABEL_NOISE_RATE = 0.025

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

# Each queue's requests, several wordings each. Many borrow another queue's words on purpose, as
# real tickets do: a refund asked for after a late delivery, a crash right after logging in, praise
# for the refund process. What the customer asks for decides the queue, not the words around it.
# Slots: {product} {order} {amount} {date} {carrier} {day} {n} (a code or error number) {company}
# {years} {days} {people} {month}.
_REQUESTS: dict[str, list[str]] = {
    "billing": [
        "I was charged {amount} twice for {product} this month, can you check my invoice?",
        "My invoice for {date} shows {amount} but my plan should cost less. Can you correct it?",
        "How do I change the credit card you charge for {product}?",
        "The payment for invoice INV-{n} failed and I don't know why, the card is valid.",
        "Can you add our VAT number to the invoices? They go to {company}.",
        "I need a copy of all invoices since {date} for our accounting.",
        "Why did the price of {product} go up to {amount}? Nobody told us.",
        "Please switch our subscription from monthly to yearly billing.",
        "There is a charge of {amount} on my statement I don't recognise, what is it for?",
        "The app keeps asking me to update my payment details although the card works everywhere else.",
        "The confirmation for order {order} says {amount} but my card was charged a different amount, which is right?",
        "Can we pay by bank transfer instead of card from now on?",
        "The receipt for order {order} has the wrong company name on it, it should say {company}.",
        "My account says the payment is overdue but I paid {amount} on {date}.",
        "Could you explain the extra {amount} on this month's bill for {product}?",
    ],
    "refund": [
        "I returned {product} on {date} and still haven't got my refund of {amount}.",
        "Order {order} arrived broken, I want my money back please.",
        "I cancelled order {order} before it shipped, when will the money be back on my card?",
        "You charged me twice for order {order}, please refund the second payment of {amount}.",
        "The refund for my return was only part of the amount, {amount} is missing.",
        "How long does a refund take to show up on my card? The return was sent {day}.",
        "I want to return {product}, it doesn't do what was promised. I'd like the money back.",
        "The item from order {order} was the wrong size, I'd like a refund, not an exchange.",
        "My refund was approved {days} days ago but nothing came back to my bank.",
        "The parcel never arrived and I've given up waiting, please just pay me back the {amount}.",
        "I was billed {amount} for {product} after I had cancelled, please return that money.",
        "Please reverse the {amount} charge from {date}, I never used the subscription.",
        "{carrier} delivered a damaged box for order {order}; I don't want a replacement, I want a refund.",
        "Can I get part of my money back? {product} was down for half of the month.",
        "I forgot to cancel in time and got charged {amount} for another year, can I have it back?",
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
        "Can you send {product} by express delivery instead? I need it by {day}.",
        "I paid {amount} for next-day delivery and order {order} still hasn't left the warehouse.",
        "Only half of order {order} came, when will the rest of the items be delivered?",
        "The app shows order {order} as shipped since {date} but {carrier} has no record of it.",
        "Could you hold order {order} at the depot? I'm away until {day}.",
        "My account still has my old address, please send order {order} to the new one instead.",
        "Which carrier is bringing order {order}? I need a tracking number.",
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
        "My colleague left {company} and we need to get into the admin account she set up.",
        "The verification code in the text message has expired by the time it arrives.",
        "I'm locked out of the mobile app since I changed my email, the old password doesn't work either.",
        "The website says invalid credentials, but the same password works in {product}.",
        "Our team members can't accept their invitations to the account, the link says it expired.",
        "Can you reset my password? The forgot-password button does nothing.",
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
        "The app crashes right after I log in, before the home screen even loads.",
        "The checkout page throws error {n} in every browser, I can't get past it.",
        "The order history in the app has been empty since the update, although I have orders.",
        "The wireless scanner stopped pairing with {product} after the firmware update.",
        "Emails sent by {product} have broken links that lead to a 404 page.",
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
        "If we upgrade to the Team plan, do we keep our data and invoices from the Pro plan?",
        "Does {product} come with a warranty, and what does it cover?",
        "Can {product} be delivered with a UK plug, or only the EU one?",
        "Is there single sign-on on the Team plan, so our staff log in with their work accounts?",
        "Does the API have rate limits on the Basic plan?",
        "Before we sign up: can we pay for a yearly plan by invoice?",
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
        "I don't want {product} anymore, make sure no more payments are taken from my card.",
        "The app has been too unreliable for us, so we are cancelling; please confirm the end date.",
        "Please don't renew my subscription in {month}, I'll keep using it until then.",
        "How do I delete my login and every order linked to my account for good?",
        "We won't need the {product} licences for our {people} people after {date}, please end them.",
        "I signed up for the trial by mistake, please cancel it before it becomes a paid plan.",
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
        "The delivery was quick and the packaging was lovely, well done to the team.",
        "Your refund process was painless, thanks for sorting it out so quickly.",
        "The new invoice layout is much clearer than before, nice job.",
        "Logging in with the new two-factor screen is a lot smoother now, thanks.",
        "Idea: put the tracking link right in the order confirmation email.",
        "I'm disappointed that the price went up without any better features.",
        "Nothing is broken, I just want to say the new sync is brilliant.",
    ],
}

# The queues a ticket about one queue is most often confused with: where a side topic comes from
# (half the time) and where a mislabelled row's label goes.
_NEIGHBOURS: dict[str, tuple[str, ...]] = {
    "billing": ("refund", "cancellation", "product_question"),
    "refund": ("billing", "shipping", "cancellation"),
    "shipping": ("refund", "product_question"),
    "account_access": ("technical_issue", "cancellation"),
    "technical_issue": ("account_access", "feedback"),
    "product_question": ("billing", "feedback", "technical_issue"),
    "cancellation": ("billing", "refund", "account_access"),
    "feedback": ("technical_issue", "product_question"),
}

# A second topic in the same ticket, marked as secondary the way customers mark it: after the main
# request ("By the way, ..."), or before it as background ("... Anyway, the real issue: ...").
_SIDE_AFTER = [
    "By the way, not urgent: {side}",
    "Also, a separate thing, no need to answer now: {side}",
    "P.S. {side} But that can wait, the above is what matters.",
    "Unrelated, and I'll write about it separately: {side}",
    "(Side note: {side} That one is minor.)",
    "I had this one last month too: {side} It got sorted, so ignore that part.",
]
_SIDE_BEFORE = [
    "First some background, already resolved: {side} Now my actual question:",
    "Last time I wrote about this: {side} That's sorted. Today it's something else:",
    "Not why I'm writing, but: {side} Anyway, the real issue:",
    "{side} (That was handled already, thanks.) What I need help with now:",
]

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
        years=rng.randint(2, 12), days=rng.randint(2, 21), people=rng.choice([5, 10, 25, 40, 120]),
        month=rng.choice(_MONTHS))


def _side_queue(queue: str, rng: random.Random) -> str:
    """A second topic for a ticket about ``queue``: a neighbouring queue half the time, else any other."""
    if rng.random() < 0.5:
        return rng.choice(_NEIGHBOURS[queue])
    return rng.choice([q for q in QUEUES if q != queue])


def _ticket(queue: str, urgency: str, rng: random.Random) -> tuple[str, str | None, str | None]:
    """Return the ticket text, the kind of planted problem it carries and its side topic, if any."""
    planted = None
    parts: list[str] = []
    if rng.random() < 0.7:
        parts.append(rng.choice(_GREETINGS))
    sentences = rng.sample(_REQUESTS[queue], k=rng.choice([1, 1, 1, 2]))
    body = " ".join(_fill(s, rng) for s in sentences)
    side = None
    if rng.random() < SIDE_TOPIC_RATE:
        side = _side_queue(queue, rng)
        mention = _fill(rng.choice(_REQUESTS[side]), rng)
        if rng.random() < 0.7:
            body = f"{body} {rng.choice(_SIDE_AFTER).format(side=mention)}"
        else:
            body = f"{rng.choice(_SIDE_BEFORE).format(side=mention)} {body}"
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
    return "\n".join(parts), planted, side


def generate_tickets(n: int = 2400, seed: int = 0) -> list[dict]:
    """Generate ``n`` tickets as chat-format rows: ``{"id", "messages", "meta"}``.

    ``meta.queue`` is the row's label (the assistant message); ``meta.side_topic`` names the
    second queue a ticket mentions, if any; ``meta.true_queue`` is present on a mislabelled row and
    names the queue its main request asks for. About 3% of rows are near-duplicates of an earlier
    row and a quarter of those carry a different queue (conflicting labels); see the module docstring.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    rng = random.Random(seed)
    queues = list(QUEUES)
    rows: list[dict] = []
    for i in range(n):
        meta_extra: dict = {}
        if rows and rng.random() < 0.03:
            source = rng.choice(rows)
            text = source["messages"][0]["content"]
            edit = rng.choice(["Sorry, sending this again: ", "Any update? ", "Re: ", "Following up. "])
            text = edit + text.replace("Hi,", "Hello,", 1)
            true_queue = source["meta"].get("true_queue", source["meta"]["queue"])
            queue = source["meta"]["queue"]
            planted = "near_duplicate"
            if rng.random() < 0.25:
                queue = rng.choice([q for q in queues if q != queue])
                planted = "conflicting_label"
            urgency = source["meta"]["urgency"]
            side = source["meta"].get("side_topic")
            meta_extra["duplicate_of"] = source["id"]
        else:
            true_queue = rng.choices(queues, weights=[QUEUE_WEIGHTS[q] for q in queues])[0]
            urgency = rng.choices(URGENCY, weights=[3, 5, 2])[0]
            text, planted, side = _ticket(true_queue, urgency, rng)
            queue = true_queue
            if rng.random() < LABEL_NOISE_RATE:
                # A labeller's plausible slip: the side topic's queue, or a neighbouring one.
                queue = side or rng.choice(_NEIGHBOURS[true_queue])
        if queue != true_queue:
            meta_extra["true_queue"] = true_queue
        meta = {"queue": queue, "urgency": urgency, "customer": f"C{rng.randint(1, n // 3 + 1):04d}"}
        if side:
            meta["side_topic"] = side
        if planted:
            meta["planted"] = planted
        meta.update(meta_extra)
        rows.append({
            "id": f"T{i:05d}",
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
