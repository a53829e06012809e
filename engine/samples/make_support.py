#!/usr/bin/env python3
"""Generate support.ndjson: ten days of customer support at a small online coffee shop.

    python engine/samples/make_support.py            # rewrites engine/samples/support.ndjson
    python engine/samples/make_support.py out.ndjson

Deterministic: the same seed gives the same file, byte for byte (no wall clock, no hash-seed
dependent iteration). Every line is a ctxdb envelope (id, source, type, subject, time, data,
optional meta); the file is sorted by time, and every time lies in 2026-11-10 .. 2026-11-20 UTC.

The story: Kettle & Crema sells coffee beans and brewing gear to customers in DE, AT, NL, BE, FR
and DK. Orders are placed, shipped and delivered; some go wrong (carrier delays, broken glass,
wrong or missing items, cancellations, discount codes, double charges, out-of-stock), and each
incident leaves a trail: customer and agent comments on the order, a Jira ticket in the SUP
project with its status changes, refunds or replacement shipments, and chatter in #support.
"""
from __future__ import annotations

import json
import random
import re
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

SEED = 20261110
START = datetime(2026, 11, 10, tzinfo=timezone.utc)
END = datetime(2026, 11, 20, 23, 59, 59, tzinfo=timezone.utc)
OUT = Path(__file__).with_name("support.ndjson")

SHOP = "shop-backend"
HELPDESK = "helpdesk"
JIRA = "jira:kettleandcrema/SUP"
SLACK = "slack:T04KCSUPP"

PERSONA = {
    "name": "Mia",
    "role": "Customer support assistant for Kettle & Crema, an online shop for specialty coffee and brewing gear",
    "tone": "Warm, concise and concrete. Use the customer's first name. No corporate filler; apologise once "
            "when we are at fault, then say what happens next and when.",
    "rules": "1. Always quote the order number (#20xxx) and, for shipments, the carrier and tracking number.\n"
             "2. Refunds up to EUR 60 may be promised directly; above that, say a colleague confirms within one business day.\n"
             "3. Never ask for or repeat card numbers. For address changes confirm only postcode and city.\n"
             "4. Broken glass or ceramics (Chemex, French press, V60, mugs): refund or replace without asking for the "
             "item back; photos help but are optional.\n"
             "5. WINTER15 (15% off) applies to coffee beans only - not to hardware or gift cards - until 30 November.\n"
             "6. A parcel that has not moved for 5 business days gets a free replacement, no questions asked.\n"
             "7. Hand over to a human (Tomás, team lead) for chargebacks, legal threats or health and safety issues.",
    "language": "Reply in the customer's language (German, Dutch, French or English); internal notes in English.",
}

PRODUCTS = {  # sku: (name, price EUR, kind)
    "ETH-YIRG-250": ("Ethiopia Yirgacheffe, whole bean, 250 g", 11.90, "beans"),
    "KEN-AA-1000": ("Kenya AA Kiambu, whole bean, 1 kg", 39.50, "beans"),
    "COL-HUI-DEC-250": ("Colombia Huila Decaf, whole bean, 250 g", 10.50, "beans"),
    "BRA-CER-1000": ("Brazil Cerrado espresso blend, 1 kg", 24.90, "beans"),
    "GUA-ANT-250": ("Guatemala Antigua, ground for filter, 250 g", 12.40, "beans"),
    "SUM-MAN-250": ("Sumatra Mandheling, whole bean, 250 g", 13.20, "beans"),
    "GRD-C40-MK4": ("Comandante C40 MK4 hand grinder", 249.00, "gear"),
    "GRD-ENC-ESP": ("Baratza Encore ESP grinder", 199.00, "gear"),
    "BRW-V60-02": ("Hario V60 02 ceramic dripper", 24.90, "fragile"),
    "FLT-V60-02": ("Hario V60 02 paper filters (100)", 6.50, "gear"),
    "BRW-CHEM-6": ("Chemex 6-cup classic", 54.90, "fragile"),
    "FRP-CHAM-1L": ("Bodum Chambord French press, 1 l", 39.90, "fragile"),
    "KTL-EKG": ("Fellow Stagg EKG electric kettle", 179.00, "gear"),
    "SCL-PEARL": ("Acaia Pearl scale", 149.00, "gear"),
    "AER-GO": ("AeroPress Go", 39.95, "gear"),
    "MUG-STN-2": ("Stoneware mug set (2)", 22.00, "fragile"),
    "GIFT-25": ("Gift card EUR 25", 25.00, "gift"),
}
SHORT = {
    "ETH-YIRG-250": "Yirgacheffe", "KEN-AA-1000": "Kenya AA", "COL-HUI-DEC-250": "Huila decaf",
    "BRA-CER-1000": "Cerrado blend", "GUA-ANT-250": "Guatemala Antigua", "SUM-MAN-250": "Sumatra",
    "GRD-C40-MK4": "Comandante", "GRD-ENC-ESP": "Encore ESP", "BRW-V60-02": "V60 dripper",
    "FLT-V60-02": "V60 filters", "BRW-CHEM-6": "Chemex", "FRP-CHAM-1L": "French press",
    "KTL-EKG": "Stagg EKG kettle", "SCL-PEARL": "Pearl scale", "AER-GO": "AeroPress Go",
    "MUG-STN-2": "mug set", "GIFT-25": "gift card",
}
BROKEN_PART = {
    "BRW-CHEM-6": "the glass neck is cracked right under the wooden collar",
    "FRP-CHAM-1L": "the glass beaker is shattered",
    "BRW-V60-02": "the rim of the dripper is chipped and one of the ribs broke off",
    "MUG-STN-2": "one of the two mugs is broken in three pieces",
}

CUSTOMERS = [  # (name, country, email)
    ("Hannah Okafor", "DE", "hannah.okafor@example.com"), ("Lukas Brandt", "DE", "lukas.brandt@example.net"),
    ("Sophie Wagner", "DE", "sophie.w@example.org"), ("Jan Hoffmann", "DE", "jan.hoffmann@example.com"),
    ("Elif Yilmaz", "DE", "elif.yilmaz@example.com"), ("Felix Schröder", "DE", "f.schroeder@example.net"),
    ("Marie Keller", "DE", "marie.keller@example.org"), ("Tobias Lang", "DE", "tobi.lang@example.com"),
    ("Anna Petrović", "DE", "anna.petrovic@example.com"), ("Niklas Braun", "DE", "niklas.braun@example.org"),
    ("Katharina Roth", "DE", "k.roth@example.com"), ("David Nguyen", "DE", "david.nguyen@example.net"),
    ("Paul Zimmermann", "DE", "paul.zimmermann@example.com"), ("Mila Schulz", "DE", "mila.schulz@example.org"),
    ("Moritz Albrecht", "DE", "moritz.albrecht@example.com"), ("Emma Koch", "DE", "emma.koch@example.net"),
    ("Ben Richter", "DE", "ben.richter@example.com"), ("Clara Wolf", "DE", "clara.wolf@example.org"),
    ("Yusuf Demir", "DE", "yusuf.demir@example.com"), ("Nora Becker", "DE", "nora.becker@example.net"),
    ("Theo Krüger", "DE", "theo.krueger@example.com"), ("Karim Haddad", "DE", "karim.haddad@example.org"),
    ("Lena Gruber", "AT", "lena.gruber@example.at"), ("Florian Huber", "AT", "florian.huber@example.at"),
    ("Sarah Pichler", "AT", "sarah.pichler@example.com"), ("Daan de Vries", "NL", "daan.devries@example.nl"),
    ("Femke Jansen", "NL", "femke.jansen@example.nl"), ("Joris van den Berg", "NL", "jvdberg@example.net"),
    ("Sanne Bakker", "NL", "sanne.bakker@example.nl"), ("Ruben Visser", "NL", "ruben.visser@example.com"),
    ("Lotte Peeters", "BE", "lotte.peeters@example.be"), ("Arnaud Lambert", "BE", "arnaud.lambert@example.be"),
    ("Camille Dubois", "FR", "camille.dubois@example.fr"), ("Hugo Martin", "FR", "hugo.martin@example.fr"),
    ("Chloé Bernard", "FR", "chloe.bernard@example.org"), ("Léa Moreau", "FR", "lea.moreau@example.fr"),
    ("Mads Sørensen", "DK", "mads.sorensen@example.dk"), ("Freja Nielsen", "DK", "freja.nielsen@example.dk"),
    ("Ida Lorenz", "DE", "ida.lorenz@example.com"), ("Leon Schmitt", "DE", "leon.schmitt@example.net"),
    ("Amelie Frank", "DE", "amelie.frank@example.org"), ("Jasper Smit", "NL", "jasper.smit@example.nl"),
]
LOCALE = {"DE": "de-DE", "AT": "de-AT", "NL": "nl-NL", "BE": "nl-BE", "FR": "fr-FR", "DK": "da-DK"}
STREETS = {
    "DE": [("Lindenstraße 14", "10969", "Berlin"), ("Schanzenstraße 71", "20357", "Hamburg"),
           ("Gärtnerplatz 3", "80469", "München"), ("Bergmannstraße 102", "10961", "Berlin"),
           ("Eigelstein 25", "50668", "Köln"), ("Karl-Heine-Straße 48", "04229", "Leipzig")],
    "AT": [("Neubaugasse 36", "1070", "Wien"), ("Lendkai 19", "8020", "Graz")],
    "NL": [("Oudegracht 201", "3511 NK", "Utrecht"), ("Ceintuurbaan 144", "1072 GB", "Amsterdam")],
    "BE": [("Vlaamsekaai 12", "2000", "Antwerpen"), ("Overpoortstraat 40", "9000", "Gent")],
    "FR": [("12 rue Oberkampf", "75011", "Paris"), ("8 quai Saint-Vincent", "69001", "Lyon")],
    "DK": [("Jægersborggade 21", "2200", "København N"), ("Mejlgade 46", "8000", "Aarhus C")],
}
AGENTS = {"priya": "Priya Raman", "jonas": "Jonas Weber", "lea": "Lea Fischer", "tomas": "Tomás Ortega"}
CARRIERS = {"DHL": ["Leipzig", "Hannover", "Bochum"], "DPD": ["Aschaffenburg", "Unna"],
            "UPS": ["Köln/Bonn", "Neuss"], "GLS": ["Neuenstein", "Hamburg"]}
FATES = {  # incident kind: weight (the rest of the orders go well)
    "delay": 7, "damaged": 5, "wrong_item": 3, "missing_item": 3, "cancel_request": 4,
    "address_change": 3, "discount_code": 3, "double_charge": 2, "out_of_stock": 2,
}


@dataclass
class Order:
    n: int
    user: int
    placed: datetime
    items: list[dict]
    total: float
    country: str
    fate: str = "ok"
    carrier: str = ""
    tracking: str = ""
    shipped: datetime | None = None


@dataclass
class Gen:
    rng: random.Random
    events: list[tuple[datetime, int, dict]] = field(default_factory=list)
    ticket_no: int = 100
    discount_tickets: list[str] = field(default_factory=list)
    users: dict[int, tuple[str, str, str, datetime]] = field(default_factory=dict)

    # ---- output ------------------------------------------------------------------------------
    def emit(self, t: datetime, type_: str, subject: str, data: dict, source: str, pii: bool = False) -> None:
        if not (START <= t <= END):
            return  # the story goes on after the sample window; those events are not in the file
        ev = {"id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)), "source": source, "type": type_,
              "subject": subject, "time": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "data": data}
        if pii:
            ev["meta"] = {"tags": ["pii"]}
        self.events.append((t, len(self.events), ev))

    def comment(self, t: datetime, o: Order, author: str, text: str, pii: bool = False, internal: bool = False) -> None:
        who = f"user:{o.user}" if author == "customer" else f"agent:{author}"
        name = self.users[o.user][0] if author == "customer" else AGENTS[author]
        self.emit(t, "comment.added", f"order:{o.n}",
                  {"order_id": o.n, "author": who, "author_name": name, "text": text,
                   "visibility": "internal" if internal else "public"}, HELPDESK, pii)

    def slack(self, t: datetime, user: str, text: str) -> None:
        self.emit(t, "slack.message", "channel:support",
                  {"channel": "#support", "user": user, "user_name": AGENTS.get(user, user), "text": text,
                   "ts": f"{int(t.timestamp())}.{self.rng.randrange(10**6):06d}"}, SLACK)

    def ticket(self, t: datetime, status: str, priority: str, summary: str, o: Order | None, user: int,
               assignee: str | None = None, key: str | None = None, note: str | None = None) -> str:
        created = key is None
        if created:  # a placeholder; keys are numbered by creation time once the story is sorted
            self.ticket_no += 1
            key = f"SUP-?{self.ticket_no}?"
        data = {"key": key, "status": status, "priority": priority, "summary": summary,
                "order_id": o.n if o else None, "customer": f"user:{user}", "assignee": assignee}
        if created:
            data["channel"] = self.rng.choice(["email", "email", "contact form", "chat"])
        if note:
            data["note"] = note
        self.emit(t, "ticket.created" if created else "ticket.updated", f"ticket:{key}", data, JIRA)
        return key

    def open_ticket(self, t: datetime, priority: str, summary: str, o: Order, *, lo: int = 8, hi: int = 95,
                    pick=None) -> tuple[str, str, datetime]:
        """A customer's ticket opened within 2 minutes of `t`, then taken by an agent at the next
        agent time: returns (key, agent, when taken)."""
        key = self.ticket(self.minutes(t, 0, 2), "Open", priority, summary, o, o.user)
        a = pick() if pick else self.rng.choice(["priya", "jonas", "lea"])
        t2 = self.agent_time(t, lo, hi)
        self.ticket(t2, "In Progress", priority, summary, o, o.user, a, key)
        return key, a, t2

    # ---- time helpers ------------------------------------------------------------------------
    def minutes(self, t: datetime, lo: int, hi: int) -> datetime:
        return t + timedelta(minutes=self.rng.randint(lo, hi), seconds=self.rng.randint(0, 59))

    def agent_time(self, t: datetime, lo: int = 8, hi: int = 95) -> datetime:
        """The first moment a support agent answers: 07:00-18:00 UTC on weekdays, 09:00-13:00 on weekends."""
        t = self.minutes(t, lo, hi)
        while True:
            open_h, close_h = (9, 13) if t.weekday() >= 5 else (7, 18)
            if t.hour < open_h:
                t = t.replace(hour=open_h, minute=self.rng.randint(2, 40), second=self.rng.randint(0, 59))
            if t.hour < close_h:
                return t
            t = (t + timedelta(days=1)).replace(hour=0, minute=0)

    def customer_time(self, t: datetime, lo: int, hi: int) -> datetime:
        """Customers write between 06:00 and 22:00 UTC."""
        t = self.minutes(t, lo, hi)
        if t.hour < 6:
            t = t.replace(hour=self.rng.randint(6, 9), minute=self.rng.randint(0, 59))
        elif t.hour >= 22:
            t = (t + timedelta(days=1)).replace(hour=self.rng.randint(6, 9), minute=self.rng.randint(0, 59))
        return t

    def ship_time(self, t: datetime) -> datetime:
        """The warehouse ships Monday-Saturday, 08:00-17:00 UTC, the same or the next working day."""
        t = self.minutes(t, 90, 26 * 60)
        while t.weekday() == 6 or t.hour >= 17:
            t = (t + timedelta(days=1)).replace(hour=8, minute=self.rng.randint(0, 50))
        if t.hour < 8:
            t = t.replace(hour=8, minute=self.rng.randint(0, 50))
        return t

    def deliver_time(self, t: datetime, extra_days: int = 0) -> datetime:
        t = t + timedelta(days=self.rng.choice([1, 1, 2, 2, 3]) + extra_days)
        t = t.replace(hour=self.rng.randint(8, 17), minute=self.rng.randint(0, 59), second=self.rng.randint(0, 59))
        return t + timedelta(days=1) if t.weekday() == 6 else t

    def tracking(self, carrier: str) -> str:
        r = self.rng
        if carrier == "DHL":
            return "00340434" + "".join(r.choice("0123456789") for _ in range(12))
        if carrier == "DPD":
            return "0150" + "".join(r.choice("0123456789") for _ in range(10))
        if carrier == "UPS":
            return "1ZA8E" + "".join(r.choice("0123456789ABCDEFGHJKLMNPRSTUVWXY") for _ in range(3)) + "68" + \
                   "".join(r.choice("0123456789") for _ in range(8))
        return "".join(r.choice("0123456789") for _ in range(11))


def fmt_eur(x: float) -> str:
    return f"€{x:.2f}"


def first(g: Gen, user: int) -> str:
    return g.users[user][0].split()[0]


def day(t: datetime) -> str:
    return t.strftime("%A %d %B").replace(" 0", " ")


# ---- the story ---------------------------------------------------------------------------------
def make() -> list[dict]:
    g = Gen(random.Random(SEED))
    r = g.rng
    g.emit(START + timedelta(minutes=5), "persona.defined", "persona:support", PERSONA, "ctxdb-admin")

    # customers register over the first week; a few more later on
    for i, (name, country, email) in enumerate(CUSTOMERS, start=1):
        # a dozen accounts are opened on the first day, most of the rest during the first week
        t = START + timedelta(days=r.uniform(0.0, 0.9) if i <= 12 else r.uniform(1.0, 6.5) if i <= 34 else r.uniform(6.5, 9.5))
        t = t.replace(hour=r.randint(5, 20))
        g.users[i] = (name, country, email, t)
        g.emit(t, "user.registered", f"user:{i}",
               {"user_id": i, "name": name, "email": email, "country": country, "locale": LOCALE[country],
                "marketing_opt_in": r.random() < 0.4}, SHOP, pii=True)

    orders = place_orders(g)
    fates = [k for k, w in sorted(FATES.items()) for _ in range(w)]
    r.shuffle(fates)
    candidates = [o for o in orders if o.placed < END - timedelta(days=3)]
    for o, fate in zip(r.sample(candidates, len(fates)), fates):
        o.fate = fate
        if fate == "damaged" and not any(PRODUCTS[i["sku"]][2] == "fragile" for i in o.items):
            sku = r.choice(sorted(BROKEN_PART))
            o.items.append(item(sku, 1))
            o.total = total_of(o.items)
    for o in orders:
        g.emit(o.placed, "order.placed", f"order:{o.n}",
               {"order_id": o.n, "user": f"user:{o.user}", "items": o.items, "total": o.total, "currency": "EUR",
                "shipping": {"method": "standard" if o.total < 49 else "free", "country": o.country},
                "payment": r.choice(["card", "card", "paypal", "klarna", "ideal" if o.country == "NL" else "card"])},
               SHOP)
        INCIDENTS.get(o.fate, normal)(g, o)
    product_questions(g)
    ambient_slack(g)
    g.events.sort(key=lambda e: (e[0], e[1]))
    return number_tickets([e[2] for e in g.events])


def number_tickets(events: list[dict]) -> list[dict]:
    """Replace the placeholder ticket keys by SUP-101, SUP-102... in order of creation, as Jira would."""
    keys: dict[str, str] = {}
    for ev in events:
        if ev["type"] == "ticket.created":
            keys[ev["data"]["key"]] = f"SUP-{101 + len(keys)}"
    pattern = re.compile(r"SUP-\?\d+\?")
    return [json.loads(pattern.sub(lambda m: keys[m.group(0)], json.dumps(ev, ensure_ascii=False))) for ev in events]


def item(sku: str, qty: int) -> dict:
    name, price, _ = PRODUCTS[sku]
    return {"sku": sku, "name": name, "qty": qty, "unit_price": price}


def total_of(items: list[dict]) -> float:
    sub = sum(i["qty"] * i["unit_price"] for i in items)
    return round(sub + (0 if sub >= 49 else 4.90), 2)


def place_orders(g: Gen) -> list[Order]:
    r = g.rng
    times = []
    for d in range(11):
        for _ in range(r.choice([6, 7, 8, 9, 10])):
            times.append(START + timedelta(days=d, hours=r.randint(5, 21), minutes=r.randint(0, 59), seconds=r.randint(0, 59)))
    times.sort()
    skus = sorted(PRODUCTS)
    beans = [s for s in skus if PRODUCTS[s][2] == "beans"]
    orders = []
    for t in times:
        n = 20400 + len(orders)
        eligible = [u for u, v in sorted(g.users.items()) if v[3] + timedelta(minutes=10) < t]
        if not eligible:
            continue
        counts = [sum(1 for o in orders if o.user == u) for u in eligible]
        user = r.choices(eligible, weights=[1 / (1 + c) ** 2 for c in counts])[0]
        picked = {r.choice(beans): r.choice([1, 1, 2, 3])}
        for _ in range(r.choice([0, 0, 1, 1, 2, 3])):
            sku = r.choice(skus)
            picked.setdefault(sku, 1)
        items = [item(s, q) for s, q in picked.items()]
        orders.append(Order(n, user, t, items, total_of(items), g.users[user][1]))
    return orders


def ship(g: Gen, o: Order, after: datetime | None = None, note: dict | None = None) -> datetime:
    """Ship (or, with note["replacement"], re-ship) the order; returns the time of the shipped event."""
    o.carrier = o.carrier or g.rng.choice(sorted(CARRIERS))
    o.tracking = g.tracking(o.carrier)
    if note and note.get("replacement"):  # the agent asks the warehouse to send it out right away
        t = g.minutes(after or o.placed, 15, 60)
        if t.weekday() == 6 or not 8 <= t.hour < 17:
            t = g.ship_time(t)
    else:
        t = g.ship_time(after or o.placed)
    o.shipped = t
    data = {"order_id": o.n, "carrier": o.carrier, "tracking": o.tracking, "parcels": 1,
            "warehouse": "Offenbach"}
    data.update(note or {})
    g.emit(t, "order.shipped", f"order:{o.n}", data, SHOP)
    return t


def deliver(g: Gen, o: Order, after: datetime, extra_days: int = 0, note: dict | None = None) -> datetime:
    t = g.deliver_time(after, extra_days)
    data = {"order_id": o.n, "carrier": o.carrier, "tracking": o.tracking,
            "signed_by": g.rng.choice(["recipient", "recipient", "neighbour", "parcel locker", "front door"])}
    data.update(note or {})
    g.emit(t, "order.delivered", f"order:{o.n}", data, SHOP)
    return t


def refund(g: Gen, t: datetime, o: Order, amount: float, reason: str, note: str) -> None:
    rid = "re_" + "".join(g.rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789") for _ in range(24))
    g.emit(t, "refund.issued", f"order:{o.n}",
           {"order_id": o.n, "refund_id": rid, "amount": round(amount, 2), "currency": "EUR", "reason": reason,
            "method": "original payment method", "note": note}, SHOP)


def normal(g: Gen, o: Order) -> None:
    s = ship(g, o)
    deliver(g, o, s)


# ---- incidents ---------------------------------------------------------------------------------
def delay(g: Gen, o: Order) -> None:
    r = g.rng
    s = ship(g, o)
    hub = r.choice(CARRIERS[o.carrier])
    name = first(g, o.user)
    t = g.customer_time(s + timedelta(days=r.choice([3, 4])), 0, 600)
    g.comment(t, o, "customer", r.choice([
        f"Hi, my order #{o.n} was shipped on {day(s)} with {o.carrier}, but tracking {o.tracking} hasn't moved "
        f"since it reached {hub}. Is it lost?",
        f"Hello, where is my parcel? {o.carrier} says 'in transit' for days now ({o.tracking}). "
        f"I need the {SHORT[o.items[0]['sku']]} before the weekend.",
        f"Order {o.n}: still not here. The {o.carrier} status is stuck at '{hub} hub' since {day(s + timedelta(days=1))}.",
    ]))
    key, a, t2 = g.open_ticket(t, "Medium", f"Order #{o.n}: {o.carrier} parcel stuck at {hub}", o)
    if r.random() < 0.6:
        g.slack(g.minutes(t2, 1, 6), a, r.choice([
            f"{o.carrier} {hub} again: {key} is the third parcel this week with no scan for 3+ days. Anyone has a contact there?",
            f"FYI {key}: #{o.n} stuck at {o.carrier} {hub}. Opening a trace with {o.carrier} business support.",
            f"Is there a known {o.carrier} issue in {hub}? {key} (#{o.n}) has been sitting there since {day(s + timedelta(days=1))}.",
        ]))
    t3 = g.minutes(t2, 10, 50)
    eta = g.deliver_time(t3)
    g.comment(t3, o, a, r.choice([
        f"Hi {name}, sorry for the wait! I opened a trace with {o.carrier}: the parcel is at the {hub} hub, which has "
        f"a backlog this week. They expect to deliver by {day(eta)}. If it hasn't arrived by then, we send a "
        f"replacement free of charge.",
        f"Hi {name}, thanks for your patience. Tracking {o.tracking} shows the parcel in {hub}; {o.carrier} confirmed "
        f"it will go out with the next linehaul. I'll keep an eye on it and write again on {day(eta)}.",
    ]))
    g.ticket(g.minutes(t3, 0, 1), "Waiting for customer", "Medium", f"Order #{o.n}: {o.carrier} parcel stuck at {hub}",
             o, o.user, a, key, note=f"Trace opened with {o.carrier}, ETA {eta:%Y-%m-%d}")
    d = eta  # the carrier keeps its new promise
    g.emit(d, "order.delivered", f"order:{o.n}", {"order_id": o.n, "carrier": o.carrier, "tracking": o.tracking,
                                                   "signed_by": "recipient", "delayed": True}, SHOP)
    t4 = g.customer_time(d, 30, 300)
    g.comment(t4, o, "customer", r.choice([
        "Arrived today, thanks for chasing it!", f"The parcel is here, all fine. Thanks {AGENTS[a].split()[0]}!",
        "Got it this morning. A bit late for the weekend but everything's intact.",
    ]))
    g.ticket(g.agent_time(t4, 5, 60), "Resolved", "Medium", f"Order #{o.n}: {o.carrier} parcel stuck at {hub}",
             o, o.user, a, key, note="Delivered after carrier delay")


def damaged(g: Gen, o: Order) -> None:
    r = g.rng
    s = ship(g, o)
    d = deliver(g, o, s)
    sku = next(i["sku"] for i in o.items if i["sku"] in BROKEN_PART)
    name, prod = first(g, o.user), PRODUCTS[sku][0]
    t = g.customer_time(d, 20, 400)
    g.comment(t, o, "customer", r.choice([
        f"The {prod} from order #{o.n} arrived broken: {BROKEN_PART[sku]}. The box was dented on one corner. "
        "I attached two photos.",
        f"Unfortunately {BROKEN_PART[sku]} ({SHORT[sku]}, order {o.n}). There was hardly any padding around it.",
        f"Hi, opened the parcel today and {BROKEN_PART[sku]}. Can you send a new {SHORT[sku]}?",
    ]))
    summary = f"Order #{o.n}: {SHORT[sku]} arrived broken"
    key, a, t2 = g.open_ticket(t, "High", summary, o, lo=5, hi=70)
    price = PRODUCTS[sku][1]
    if r.random() < 0.5:
        refund(g, g.minutes(t2, 3, 15), o, price, "damaged_in_transit", f"{SHORT[sku]} broken on arrival ({key})")
        text = (f"Hi {name}, I'm sorry it arrived like that. I've refunded {fmt_eur(price)} for the {SHORT[sku]} to your "
                "original payment method; it shows up in 3-5 business days. No need to send the broken one back.")
        outcome = "Refunded"
    else:
        t2 = ship(g, o, t2, {"replacement": True, "items": [item(sku, 1)], "packing": "double-boxed"})
        text = (f"Hi {name}, so sorry! A replacement {SHORT[sku]} is on its way, double-boxed this time, with "
                f"{o.carrier} ({o.tracking}). Please just recycle the broken one.")
        outcome = "Replacement shipped"
    g.comment(g.minutes(t2, 2, 12), o, a, text)
    if r.random() < 0.7:
        g.slack(g.minutes(t2, 20, 90), a, r.choice([
            f"Another broken {SHORT[sku]} ({key}). That's glass arriving cracked with {o.carrier} twice this week - can we "
            "switch fragile items to the double box by default?",
            f"{key}: {SHORT[sku]} smashed, {outcome.lower()}. Packing photo from the warehouse shows only one layer of "
            "bubble wrap.",
            f"Heads-up warehouse: {SHORT[sku]} in #{o.n} arrived broken. Please check the fragile-item packing station.",
        ]))
    g.ticket(g.minutes(t2, 13, 40), "Resolved", "High", summary, o, o.user, a, key, note=outcome)


def wrong_item(g: Gen, o: Order) -> None:
    r = g.rng
    s = ship(g, o)
    d = deliver(g, o, s)
    ordered = next(i for i in o.items if PRODUCTS[i["sku"]][2] == "beans")["sku"]
    got = r.choice([b for b in sorted(PRODUCTS) if PRODUCTS[b][2] == "beans" and b != ordered])
    name = first(g, o.user)
    t = g.customer_time(d, 60, 600)
    g.comment(t, o, "customer", r.choice([
        f"I ordered {PRODUCTS[ordered][0]} but the bag in the box is {PRODUCTS[got][0]}. Order #{o.n}.",
        f"Wrong coffee in order {o.n}: got {SHORT[got]} instead of {SHORT[ordered]}. I haven't opened it.",
    ]))
    summary = f"Order #{o.n}: wrong beans ({SHORT[got]} instead of {SHORT[ordered]})"
    key, a, t2 = g.open_ticket(t, "Medium", summary, o)
    g.comment(g.minutes(t2, 2, 10), o, a, "Warehouse: SKU bins for "
              f"{ordered} and {got} are next to each other on shelf C3. Please double-check picks.", internal=True)
    t2 = ship(g, o, t2, {"replacement": True, "items": [item(ordered, 1)]})
    g.comment(g.minutes(t2, 2, 10), o, a, r.choice([
        f"Hi {name}, our mistake, sorry! The {SHORT[ordered]} is on its way now with {o.carrier} ({o.tracking}). "
        f"Please keep the {SHORT[got]} - enjoy it on us.",
        f"Hi {name}, thanks for telling us. I've sent the correct {PRODUCTS[ordered][0]} today, tracking {o.tracking}. "
        "No need to return the other bag.",
    ]))
    g.ticket(g.minutes(t2, 11, 30), "Resolved", "Medium", summary, o, o.user, a, key, note="Replacement shipped")


def missing_item(g: Gen, o: Order) -> None:
    r = g.rng
    if len(o.items) < 2:
        o.items.append(item("FLT-V60-02", 1))
        o.total = total_of(o.items)
    s = ship(g, o)
    d = deliver(g, o, s)
    lost = o.items[-1]
    name = first(g, o.user)
    t = g.customer_time(d, 60, 900)
    g.comment(t, o, "customer", r.choice([
        f"My parcel for order #{o.n} only had the {SHORT[o.items[0]['sku']]} in it, I can't find the {lost['name']} anywhere.",
        f"Hi! The {SHORT[lost['sku']]} wasn't in the box (order {o.n}). The packing slip lists it though.",
    ]))
    summary = f"Order #{o.n}: {SHORT[lost['sku']]} missing from parcel"
    key, a, t2 = g.open_ticket(t, "Medium", summary, o)
    g.slack(g.minutes(t2, 2, 20), a, f"Warehouse, can you check the packing weight for #{o.n}? Customer is missing the "
            f"{SHORT[lost['sku']]} ({key}).")
    g.slack(g.minutes(t2, 25, 90), "tomas", r.choice([
        f"Checked #{o.n}: parcel weighed 180 g less than the order total. Pick error, ship the {SHORT[lost['sku']]} again.",
        f"Scale log for #{o.n} confirms it: the {SHORT[lost['sku']]} never went in. Go ahead and resend.",
    ]))
    t3 = g.agent_time(t2, 95, 130)
    t3 = ship(g, o, t3, {"replacement": True, "items": [lost]})
    g.comment(g.minutes(t3, 5, 20), o, a, f"Hi {name}, you're right, it was left out when packing - sorry! The "
              f"{lost['name']} ships today with {o.carrier}, tracking {o.tracking}.")
    g.ticket(g.minutes(t3, 21, 50), "Resolved", "Medium", summary, o, o.user, a, key, note="Missing item resent")


def cancel_request(g: Gen, o: Order) -> None:
    r = g.rng
    name = first(g, o.user)
    t = g.customer_time(o.placed, 5, 70)
    g.comment(t, o, "customer", r.choice([
        f"Please cancel order #{o.n}, I picked the {PRODUCTS[o.items[0]['sku']][0]} by mistake. I'll order again.",
        f"Hi, I accidentally placed order {o.n} twice. Can you cancel this one?",
        f"Could you cancel #{o.n}? My partner already bought the same {SHORT[o.items[0]['sku']]} yesterday.",
    ]))
    summary = f"Cancel order #{o.n}"
    key, a, t2 = g.open_ticket(t, "High", summary, o, lo=3, hi=40)
    g.emit(g.minutes(t2, 1, 4), "order.cancelled", f"order:{o.n}",
           {"order_id": o.n, "reason": "customer_request", "cancelled_by": f"agent:{a}", "ticket": key}, SHOP)
    refund(g, g.minutes(t2, 5, 7), o, o.total, "order_cancelled", f"Cancelled before shipping ({key})")
    g.comment(g.minutes(t2, 8, 12), o, a, f"Hi {name}, done: order #{o.n} is cancelled before it left the warehouse and "
              f"the full {fmt_eur(o.total)} is refunded.")
    g.ticket(g.minutes(t2, 13, 20), "Resolved", "High", summary, o, o.user, a, key, note="Cancelled and refunded")


def address_change(g: Gen, o: Order) -> None:
    r = g.rng
    street, postcode, city = r.choice(STREETS[o.country])
    name = first(g, o.user)
    t = g.customer_time(o.placed, 10, 60)
    g.comment(t, o, "customer", r.choice([
        f"I just noticed order #{o.n} goes to my old address. Please ship to {street}, {postcode} {city} instead.",
        f"Hi, can you change the delivery address of {o.n} to {street}, {postcode} {city}? I moved last week.",
    ]), pii=True)
    summary = f"Order #{o.n}: change shipping address"
    key, a, t2 = g.open_ticket(t, "High", summary, o, lo=3, hi=40)
    g.comment(g.minutes(t2, 2, 8), o, a, f"Hi {name}, updated before packing: your parcel now goes to {postcode} {city}.")
    g.ticket(g.minutes(t2, 9, 15), "Resolved", "High", summary, o, o.user, a, key, note="Address updated before shipping")
    s = ship(g, o, t2, {"address_changed": True})
    deliver(g, o, s)


def discount_code(g: Gen, o: Order) -> None:
    r = g.rng
    s = ship(g, o)
    name = first(g, o.user)
    beans = sum(i["qty"] * i["unit_price"] for i in o.items if PRODUCTS[i["sku"]][2] == "beans")
    owed = round(beans * 0.15, 2)
    t = g.customer_time(o.placed, 30, 240)
    g.comment(t, o, "customer", r.choice([
        f"WINTER15 said 'not valid for items in your cart' on order #{o.n}, so I paid full price. Can you still apply it?",
        f"Your newsletter promised 15% with WINTER15 but checkout refused it (order {o.n}). Bit disappointing.",
    ]))
    summary = f"Order #{o.n}: WINTER15 not applied"
    key, a, t2 = g.open_ticket(t, "Low", summary, o, lo=20, hi=180)
    refund(g, g.minutes(t2, 3, 10), o, owed, "goodwill_discount", f"WINTER15 on beans applied after purchase ({key})")
    g.comment(g.minutes(t2, 11, 20), o, a, f"Hi {name}, WINTER15 only covers coffee beans, and the checkout wrongly "
              f"rejected it when a non-coffee item was in the cart. I've refunded the 15% on your beans: {fmt_eur(owed)}.")
    g.discount_tickets.append(key)
    seen = len(g.discount_tickets)
    if seen == 1:
        g.slack(g.minutes(t2, 21, 60), a, f"{key}: checkout rejects WINTER15 for mixed carts instead of applying it to "
                "the beans only. Tomás, do we know about this?")
        g.slack(g.minutes(t2, 61, 120), "tomas", "Yes, storefront team has a fix; it goes live with tonight's deploy. Until "
                "then refund the 15% on beans by hand and tag the ticket 'winter15'.")
    elif seen == 2:
        g.slack(g.minutes(t2, 21, 60), a, f"WINTER15 again in {key} even after the deploy :( "
                f"({', '.join(g.discount_tickets)} so far)")
        g.slack(g.minutes(t2, 61, 120), "tomas", "The deploy was rolled back (cart totals were off for gift cards). "
                "New attempt on Tuesday. Keep refunding by hand, thanks.")
    else:
        g.slack(g.minutes(t2, 21, 60), a, f"{key} is another WINTER15 one, refunded {fmt_eur(owed)} and tagged 'winter15'.")
    g.ticket(g.minutes(t2, 21, 40), "Resolved", "Low", summary, o, o.user, a, key, note=f"Goodwill refund {fmt_eur(owed)}")
    deliver(g, o, s)


def double_charge(g: Gen, o: Order) -> None:
    r = g.rng
    s = ship(g, o)
    name = first(g, o.user)
    t = g.customer_time(o.placed, 120, 1200)
    g.comment(t, o, "customer", f"My bank shows two payments of {fmt_eur(o.total)} for order #{o.n}. Please refund one!")
    summary = f"Order #{o.n}: charged twice"
    key, a, t2 = g.open_ticket(t, "High", summary, o, lo=5, hi=60, pick=lambda: "tomas" if r.random() < 0.5 else r.choice(["priya", "jonas"]))
    if r.random() < 0.5:
        refund(g, g.minutes(t2, 5, 15), o, o.total, "duplicate_charge", f"Payment captured twice ({key})")
        text = (f"Hi {name}, you're right: the payment was captured twice after a timeout at checkout. I've refunded "
                f"the duplicate {fmt_eur(o.total)}; it usually appears within 3-5 business days.")
        note = "Duplicate capture refunded"
    else:
        text = (f"Hi {name}, I checked with our payment provider: only one payment of {fmt_eur(o.total)} was captured. "
                "The second line is a card authorisation from the first attempt, and your bank releases it within "
                "7 days. If it is still there next week, write to us and we'll chase it.")
        note = "Pending authorisation, no capture"
    g.comment(g.minutes(t2, 16, 30), o, a, text)
    g.ticket(g.minutes(t2, 31, 45), "Resolved", "High", summary, o, o.user, a, key, note=note)
    deliver(g, o, s)


def out_of_stock(g: Gen, o: Order) -> None:
    r = g.rng
    name = first(g, o.user)
    sku = o.items[0]["sku"]
    t = g.agent_time(o.placed, 60, 300)
    a = r.choice(["priya", "jonas", "lea"])
    g.slack(t, "tomas", f"Stock count is off: {PRODUCTS[sku][0]} shows 4 in the shop but the shelf is empty. "
            f"#{o.n} can't be packed.")
    key = g.ticket(g.minutes(t, 2, 10), "Open", "Medium", f"Order #{o.n}: {SHORT[sku]} out of stock", o, o.user, a)
    g.emit(g.minutes(t, 15, 40), "order.cancelled", f"order:{o.n}",
           {"order_id": o.n, "reason": "out_of_stock", "cancelled_by": f"agent:{a}", "ticket": key,
            "items": [sku]}, SHOP)
    t2 = g.minutes(t, 41, 50)
    refund(g, t2, o, o.total, "out_of_stock", f"{SHORT[sku]} out of stock ({key})")
    g.comment(g.minutes(t2, 1, 6), o, a, f"Hi {name}, I'm sorry: the {PRODUCTS[sku][0]} sold out before we could pack "
              f"your order, so we cancelled #{o.n} and refunded {fmt_eur(o.total)}. The next roast is planned for "
              "Thursday; I can put a bag aside for you if you like.")
    t3 = g.customer_time(t2, 60, 500)
    g.comment(t3, o, "customer", r.choice([
        "Yes please, reserve one for me!", "Shame, but thanks for letting me know so quickly.",
    ]))
    g.ticket(g.agent_time(t3, 5, 60), "Resolved", "Medium", f"Order #{o.n}: {SHORT[sku]} out of stock", o, o.user, a, key,
             note="Cancelled and refunded")


INCIDENTS = {"delay": delay, "damaged": damaged, "wrong_item": wrong_item, "missing_item": missing_item,
             "cancel_request": cancel_request, "address_change": address_change, "discount_code": discount_code,
             "double_charge": double_charge, "out_of_stock": out_of_stock}

QUESTIONS = [
    ("Grind setting for AeroPress on the Comandante?",
     "Which click setting do you recommend on the Comandante C40 for AeroPress? I'm at 12 and it tastes bitter.",
     "Try 15-18 clicks for a standard AeroPress recipe and a 2 minute steep; 12 is closer to espresso territory."),
    ("Is the Huila decaf Swiss Water processed?",
     "Is the Colombia Huila decaf Swiss Water or sugarcane processed? I'm pregnant and want to be sure.",
     "It's decaffeinated with the sugarcane (ethyl acetate) method, 99.9% caffeine-free. Our Swiss Water decaf returns in January."),
    ("Descaling the Stagg EKG",
     "How often should I descale the Fellow Stagg EKG? We have very hard water in Munich.",
     "With hard water, once a month: half water, half white vinegar, bring to 80 °C, let it sit an hour, rinse twice."),
    ("Gift card balance",
     "I received a gift card for Christmas last year. Does it expire, and how do I check the balance?",
     "Our gift cards are valid for 3 years. The balance is shown at checkout after you enter the code."),
    ("Shipping to Switzerland?",
     "Do you ship to Switzerland, and do I have to pay customs on a grinder?",
     "Not yet, sorry - we ship to EU countries only. A partner shop in Zürich stocks the Comandante."),
]


def product_questions(g: Gen) -> None:
    r = g.rng
    for q, (summary, question, answer) in enumerate(QUESTIONS):
        user = r.choice(sorted(g.users))
        t = g.customer_time(START + timedelta(days=1 + 2 * q, hours=r.randint(0, 12)), 0, 120)
        t = max(t, g.users[user][3] + timedelta(minutes=30))
        key = g.ticket(t, "Open", "Low", summary, None, user, note=question)
        a = r.choice(["priya", "jonas", "lea"])
        t2 = g.agent_time(t, 15, 240)
        g.ticket(t2, "Resolved", "Low", summary, None, user, a, key, note=f"Answered: {answer}")


def ambient_slack(g: Gen) -> None:
    r = g.rng
    for d in range(11):
        t = START + timedelta(days=d, hours=7, minutes=r.randint(0, 25), seconds=r.randint(0, 59))
        if t.weekday() >= 5:
            t = t.replace(hour=9)
        who = r.choice(["priya", "jonas", "lea", "tomas"])
        opened = sum(1 for _, _, e in g.events if e["type"] == "ticket.created" and e["time"] < t.strftime("%Y-%m-%dT%H:%M:%SZ"))
        closed = sum(1 for _, _, e in g.events if e["type"] == "ticket.updated" and e["data"]["status"] == "Resolved"
                     and e["time"] < t.strftime("%Y-%m-%dT%H:%M:%SZ"))
        g.slack(t, who, r.choice([
            f"Morning! Queue check: {opened - closed} open {'ticket' if opened - closed == 1 else 'tickets'}, oldest first please.",
            f"Good morning. {opened - closed} {'ticket' if opened - closed == 1 else 'tickets'} open; I'm on email, {r.choice(['Priya', 'Jonas', 'Lea'])} takes chat.",
            f"Morning all - {opened - closed} open in SUP. Carrier tickets first, then the rest.",
        ]))
    extra = [
        (1, 15, "jonas", "Restock: Kenya AA Kiambu roasted today, 40 bags of 1 kg back in the shop."),
        (2, 10, "tomas", "Reminder: WINTER15 is beans only. If a customer used it on a grinder, don't refund the difference."),
        (3, 13, "lea", "Chat widget was down 12:40-12:55 (vendor incident). If someone mentions it, that's why."),
        (4, 9, "priya", "DHL warns of delays in Leipzig and Hannover through the weekend (Black Week volume)."),
        (6, 11, "tomas", "From today fragile items (Chemex, French press, V60, mugs) ship double-boxed. Thanks for flagging!"),
        (7, 8, "jonas", "New macro in Jira: 'Carrier trace opened' - fills in the carrier, tracking and the 5-day rule."),
        (8, 14, "lea", "Customer in SUP chat asked if we do corporate orders of 20 grinders. Passed to Tomás."),
        (9, 16, "priya", "Black Week starts Monday: expect double volume. Please keep replies under 24 h."),
        (10, 17, "tomas", "Great week everyone. Average first response 1 h 40 min, down from 3 h last week."),
    ]
    for d, h, who, text in extra:
        g.slack(START + timedelta(days=d, hours=h, minutes=r.randint(0, 59), seconds=r.randint(0, 59)), who, text)


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else OUT
    events = make()
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        for ev in events:
            f.write(json.dumps(ev, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {len(events)} events to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
