"""A synthetic retailer of books and music, sent through the public API.

``generate`` makes a deterministic, messy, realistic data set for one seed: web sessions that start
anonymous and later log in, a mobile app, store purchases with loyalty cards, email engagement and
call-center contacts, with duplicates and typos across touchpoints and a spread of consent choices.
``send`` posts it to ``/v1/batch`` exactly as an SDK would. Only reserved example domains
(example.com/.org/.net) and fictional phone ranges (US 555-01xx) are used: nobody real is contacted.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

SOURCES = ("web", "app", "pos", "email", "callcenter")
DEFAULT_NOW = datetime(2026, 11, 1, tzinfo=UTC)
CONSENT_PURPOSES = ("analytics", "personalization", "advertising", "sale_sharing", "marketing.email", "marketing.sms")

FIRST = [
    "Anna",
    "Ben",
    "Carla",
    "David",
    "Emma",
    "Farid",
    "Greta",
    "Hiro",
    "Ines",
    "José",
    "Kofi",
    "Lena",
    "Mateo",
    "Nadia",
    "Oskar",
    "Priya",
    "Quentin",
    "Rosa",
    "Sven",
    "Tomás",
    "Uma",
    "Vera",
    "Wei",
    "Ximena",
    "Yusuf",
    "Zoë",
    "Robert",
    "Elizabeth",
    "William",
    "Margaret",
    "Øyvind",
    "Aoife",
    "Chidi",
    "Dana",
    "Li",
]
LAST = [
    "Smith",
    "García",
    "Müller",
    "Nguyễn",
    "Kowalski",
    "Okafor",
    "Rossi",
    "Dubois",
    "Hansen",
    "Tanaka",
    "Silva",
    "O'Brien",
    "Novak",
    "Johansson",
    "Haddad",
    "Kim",
    "Papadopoulos",
    "Fischer",
    "Costa",
    "Patel",
    "李",
    "Brown",
]
NICK = {"Robert": "Bob", "Elizabeth": "Liz", "William": "Bill", "Margaret": "Maggie", "José": "Pepe"}
STREETS = ["Maple", "Oak", "Harbor", "Mill", "Church", "Station", "Garden", "Lake", "Hill", "Market"]
CITIES = [
    ("Springfield", "IL", "62701"),
    ("Portland", "OR", "97201"),
    ("Madison", "WI", "53703"),
    ("Austin", "TX", "73301"),
    ("Salem", "MA", "01970"),
    ("Boulder", "CO", "80302"),
]
DOMAINS = ["example.com", "example.org", "example.net"]
GENRES = {
    "Books": ["Fiction", "Mystery", "Science", "Children", "Poetry", "History"],
    "Music": ["Jazz", "Classical", "Rock", "Folk", "Soul", "Electronic"],
}
REASONS = ["order status", "return", "billing", "loyalty points", "complaint", "store hours"]
COMMENTS = [
    "Quick and friendly.",
    "Took too long to answer.",
    "Great recommendations!",
    "Delivery was late.",
    "Loved the jazz section.",
    "Could not find my order.",
    "Very helpful staff.",
]


@dataclass
class Person:
    pid: int
    user_id: str
    first: str
    last: str
    email: str
    phone: str
    street: str
    city: str
    state: str
    postal: str
    card: str | None
    devices: list[str]
    prefs: dict[str, bool]
    gpc: bool
    genres: list[str]
    sources: set[str] = field(default_factory=set)


@dataclass
class DemoData:
    batches: dict[str, list[dict[str, Any]]]
    truth: list[Person]

    @property
    def total_events(self) -> int:
        return sum(len(v) for v in self.batches.values())


@dataclass
class SendReport:
    total_events: int = 0
    requests: int = 0
    per_source: Counter[str] = field(default_factory=Counter)


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _typo(rng: random.Random, s: str) -> str:
    """One realistic slip: a dropped, doubled or swapped letter."""
    if len(s) < 4:
        return s
    i = rng.randrange(1, len(s) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        return s[:i] + s[i + 1 :]
    if kind == 1:
        return s[:i] + s[i] + s[i:]
    return s[: i - 1] + s[i] + s[i - 1] + s[i + 1 :]


def _typo_local(rng: random.Random, email: str) -> str:
    """A typo in the local part only: the domain stays a reserved example domain."""
    local, _, domain = email.partition("@")
    return f"{_typo(rng, local)}@{domain}"


def _phone_format(rng: random.Random, digits: str) -> str:
    a, b, c = digits[:3], digits[3:6], digits[6:]
    return rng.choice([f"({a}) {b}-{c}", f"+1 {a} {b} {c}", f"{a}.{b}.{c}", f"+1{a}{b}{c}", f"{a}-{b}-{c}"])


def _consent(rng: random.Random) -> dict[str, bool]:
    roll = rng.random()
    if roll < 0.6:
        return dict.fromkeys(CONSENT_PURPOSES, True)
    if roll < 0.8:
        return dict.fromkeys(CONSENT_PURPOSES, False)
    return {p: rng.random() < 0.5 for p in CONSENT_PURPOSES}


def _people(rng: random.Random, n: int) -> list[Person]:
    people: list[Person] = []
    for i in range(n):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        city, state, postal = rng.choice(CITIES)
        digits = f"{rng.choice(['415', '212', '312', '503', '617'])}5550{rng.randrange(100, 200):03d}"[:10]
        if people and rng.random() < 0.03:  # a family sharing one phone
            digits = people[-1].phone
        local = f"{first}.{last}".lower().replace("'", "").replace(" ", "")
        local = "".join(ch for ch in local if ch.isascii() and (ch.isalnum() or ch == ".")) or f"customer{i}"
        people.append(
            Person(
                pid=i,
                user_id=f"cust-{100000 + i}",
                first=first,
                last=last,
                email=f"{local}{rng.randrange(1, 99)}@{rng.choice(DOMAINS)}",
                phone=digits,
                street=f"{rng.randrange(1, 999)} {rng.choice(STREETS)} Street",
                city=city,
                state=state,
                postal=postal,
                card=f"NW{rng.randrange(10**7, 10**8)}" if rng.random() < 0.6 else None,
                devices=[str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(1 + (rng.random() < 0.3))],
                prefs=_consent(rng),
                gpc=rng.random() < 0.1,
                genres=rng.sample([g for gs in GENRES.values() for g in gs], 2),
            )
        )
    return people


def _product(rng: random.Random, genres: list[str]) -> dict[str, Any]:
    genre = rng.choice(genres) if rng.random() < 0.7 else rng.choice([g for gs in GENRES.values() for g in gs])
    kind = "Books" if any(genre in gs for k, gs in GENRES.items() if k == "Books") else "Music"
    n = rng.randrange(1000, 9999)
    return {
        "product_id": f"{kind[0]}-{n}",
        "sku": f"{kind[:2].upper()}{n}",
        "name": f"{genre} title {n}",
        "category": f"{kind}/{genre}",
        "price": round(rng.uniform(6, 45), 2),
        "quantity": 1 + (rng.random() < 0.2),
    }


def generate(customers: int, seed: int, now: datetime | None = None) -> DemoData:
    """A deterministic data set: the same seed gives the same events."""
    rng = random.Random(seed)
    now = now or DEFAULT_NOW
    people = _people(rng, customers)
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in SOURCES}

    def msg(source: str, person: Person, body: dict[str, Any], when: datetime) -> None:
        ctx = body.setdefault("context", {})
        ctx.setdefault("consent", {"categoryPreferences": dict(person.prefs)})
        if person.gpc and source == "web":
            ctx["gpc"] = True
        body["messageId"] = str(uuid.UUID(int=rng.getrandbits(128)))
        body["timestamp"] = _iso(when)
        out[source].append(body)
        person.sources.add(source)

    for p in people:
        start = now - timedelta(days=rng.uniform(1, 180))
        traits: dict[str, Any] = {"email": p.email, "firstName": p.first, "lastName": p.last}
        if rng.random() < 0.5:
            traits["phone"] = _phone_format(rng, p.phone)
        if rng.random() < 0.4:
            traits["address"] = {
                "street": p.street,
                "city": p.city,
                "state": p.state,
                "postalCode": p.postal,
                "country": "US",
            }
        # web: anonymous sessions, a login, shopping
        logged_in = False
        for s in range(rng.randrange(2, 5)):
            t = start + timedelta(days=s * rng.uniform(1, 12))
            anon = rng.choice(p.devices)
            ident: dict[str, Any] = {"anonymousId": anon}
            if logged_in:
                ident["userId"] = p.user_id
            if s == 0:
                msg("web", p, {"type": "track", "event": "Segment Consent Preference Updated", **ident}, t)
            for v in range(rng.randrange(2, 6)):
                prod = _product(rng, p.genres)
                path = f"/{prod['category'].lower()}/{prod['product_id']}"
                page = {
                    "type": "page",
                    "name": prod["category"],
                    **ident,
                    "properties": {
                        "path": path,
                        "url": f"https://shop.example.com{path}",
                        "title": prod["name"],
                        "referrer": "https://www.example.org/search",
                    },
                }
                msg("web", p, page, t + timedelta(minutes=v))
                if rng.random() < 0.5:
                    msg(
                        "web",
                        p,
                        {"type": "track", "event": "Product Viewed", **ident, "properties": prod},
                        t + timedelta(minutes=v, seconds=20),
                    )
            if not logged_in and rng.random() < 0.6:
                logged_in = True
                msg(
                    "web",
                    p,
                    {"type": "identify", "userId": p.user_id, "anonymousId": anon, "traits": traits},
                    t + timedelta(minutes=8),
                )
                ident["userId"] = p.user_id
            if rng.random() < 0.45:
                items = [_product(rng, p.genres) for _ in range(rng.randrange(1, 4))]
                revenue = round(sum(i["price"] * i["quantity"] for i in items), 2)
                msg(
                    "web",
                    p,
                    {"type": "track", "event": "Product Added", **ident, "properties": items[0]},
                    t + timedelta(minutes=9),
                )
                msg(
                    "web",
                    p,
                    {
                        "type": "track",
                        "event": "Order Completed",
                        **ident,
                        "properties": {
                            "order_id": f"W{rng.randrange(10**6, 10**7)}",
                            "revenue": revenue,
                            "currency": "USD",
                            "products": items,
                        },
                    },
                    t + timedelta(minutes=11),
                )
        # app
        if rng.random() < 0.4:
            t = start + timedelta(days=rng.uniform(0, 60))
            device = {"id": str(uuid.UUID(int=rng.getrandbits(128))), "model": rng.choice(["iPhone15,2", "Pixel 8"])}
            app_ctx = {
                "device": device,
                "os": {"name": rng.choice(["iOS", "Android"])},
                "app": {"name": "Northwind", "version": "4.2.0"},
            }
            for k in range(rng.randrange(2, 6)):
                msg(
                    "app",
                    p,
                    {
                        "type": "screen",
                        "name": rng.choice(["Home", "Search", "Product", "Cart"]),
                        "userId": p.user_id,
                        "context": dict(app_ctx),
                    },
                    t + timedelta(minutes=k),
                )
            msg(
                "app",
                p,
                {
                    "type": "track",
                    "event": "Wishlist Item Added",
                    "userId": p.user_id,
                    "properties": _product(rng, p.genres),
                    "context": dict(app_ctx),
                },
                t + timedelta(minutes=7),
            )
        # stores: purchases with the loyalty card
        if p.card:
            for _ in range(rng.randrange(1, 4)):
                t = start + timedelta(days=rng.uniform(0, 120))
                items = [_product(rng, p.genres) for _ in range(rng.randrange(1, 3))]
                first = p.first if rng.random() < 0.8 else NICK.get(p.first, _typo(rng, p.first))
                msg(
                    "pos",
                    p,
                    {
                        "type": "track",
                        "event": "Order Completed",
                        "userId": f"pos-{p.card}",
                        "properties": {
                            "order_id": f"S{rng.randrange(10**6, 10**7)}",
                            "store_id": "NW-017",
                            "revenue": round(sum(i["price"] for i in items), 2),
                            "currency": "USD",
                            "products": items,
                        },
                        "context": {
                            "externalIds": [
                                {"id": p.card, "type": "loyalty_card", "collection": "users", "encoding": "none"}
                            ],
                            "traits": {"firstName": first, "lastName": p.last},
                        },
                    },
                    t,
                )
        # email engagement
        if p.prefs.get("marketing.email"):
            for c in range(rng.randrange(1, 4)):
                t = start + timedelta(days=7 * c + 1)
                camp = {"campaign_id": f"cmp-{c + 1}", "email_subject": rng.choice(["New in jazz", "Autumn reads"])}
                msg(
                    "email",
                    p,
                    {"type": "track", "event": "Email Delivered", "userId": p.user_id, "properties": camp},
                    t,
                )
                if rng.random() < 0.5:
                    msg(
                        "email",
                        p,
                        {"type": "track", "event": "Email Opened", "userId": p.user_id, "properties": camp},
                        t + timedelta(hours=3),
                    )
                    if rng.random() < 0.3:
                        msg(
                            "email",
                            p,
                            {"type": "track", "event": "Email Link Clicked", "userId": p.user_id, "properties": camp},
                            t + timedelta(hours=3, minutes=1),
                        )
        # call center: a CRM that spells things its own way
        if rng.random() < 0.25:
            t = start + timedelta(days=rng.uniform(0, 90))
            crm_first = _typo(rng, p.first) if rng.random() < 0.5 else NICK.get(p.first, p.first)
            crm_last = _typo(rng, p.last) if rng.random() < 0.3 else p.last
            email = p.email
            if rng.random() < 0.3:
                email = p.email.upper()
            elif rng.random() < 0.2:
                email = _typo_local(rng, p.email)
            street = p.street.replace("Street", "St.") if rng.random() < 0.5 else p.street
            crm_id = f"crm-{rng.randrange(10**5, 10**6)}"
            msg(
                "callcenter",
                p,
                {
                    "type": "identify",
                    "userId": crm_id,
                    "traits": {
                        "firstName": crm_first,
                        "lastName": crm_last,
                        "email": email,
                        "phone": _phone_format(rng, p.phone),
                        "address": {"street": street, "city": p.city, "postalCode": p.postal, "country": "US"},
                    },
                },
                t,
            )
            msg(
                "callcenter",
                p,
                {
                    "type": "track",
                    "event": "Call Completed",
                    "userId": crm_id,
                    "properties": {
                        "reason": rng.choice(REASONS),
                        "duration_s": rng.randrange(40, 900),
                        "csat": rng.randrange(1, 6),
                    },
                },
                t + timedelta(minutes=12),
            )
            msg(
                "callcenter",
                p,
                {
                    "type": "track",
                    "event": "Survey Answered",
                    "userId": crm_id,
                    "properties": {"nps": rng.randrange(0, 11), "comment": rng.choice(COMMENTS)},
                },
                t + timedelta(hours=1),
            )
    for events in out.values():
        events.sort(key=lambda m: m["timestamp"])
    return DemoData(out, people)


def send(
    data: DemoData,
    base_url: str,
    write_keys: dict[str, str],
    *,
    batch_size: int = 100,
    progress: bool = True,
    client: httpx.Client | None = None,
) -> SendReport:
    """Post every event to ``/v1/batch`` as an SDK would (Basic auth with the source's write key)."""
    from rich.progress import Progress

    report = SendReport()
    own = client is None
    http = client or httpx.Client(base_url=base_url, timeout=30, transport=httpx.HTTPTransport(retries=3))
    jobs: list[tuple[str, list[dict[str, Any]]]] = []
    for source, events in data.batches.items():
        for i in range(0, len(events), batch_size):
            jobs.append((source, events[i : i + batch_size]))
    jobs.sort(key=lambda j: j[1][0]["timestamp"])
    try:
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("sending demo events", total=data.total_events)
            for source, batch in jobs:
                body = orjson.dumps({"batch": batch, "sentAt": _iso(datetime.now(UTC))})
                _post(http, base_url, write_keys[source], body)
                report.requests += 1
                report.total_events += len(batch)
                report.per_source[source] += len(batch)
                bar.advance(task, len(batch))
    finally:
        if own:
            http.close()
    return report


def _post(http: httpx.Client, base_url: str, key: str, body: bytes) -> None:
    url = f"{base_url.rstrip('/')}/v1/batch"
    for attempt in range(5):
        try:
            r = http.post(url, content=body, auth=(key, ""), headers={"Content-Type": "application/json"})
        except httpx.TransportError:
            if attempt == 4:
                raise
            time.sleep(0.2 * 2**attempt)
            continue
        if r.status_code in (429, 503) or r.status_code >= 500:
            if attempt == 4:
                raise RuntimeError(f"the server answered {r.status_code} five times")
            time.sleep(float(r.headers.get("retry-after", 0.2 * 2**attempt)))
            continue
        if r.status_code >= 400:
            try:
                message = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = r.text[:200]
            raise RuntimeError(f"the server refused a batch ({r.status_code}): {message}")
        return
