"""A synthetic retailer of books and music, "Northwind Books & Music", sent through the public API.

``generate`` makes a deterministic, messy, realistic data set for one seed. It has five sources:

- ``web``: analytics.js page views and e-commerce events. Sessions start anonymous, and some log in
  later with the same anonymousId. About 30% of web users have two browsers.
- ``app``: a mobile app with screens, lifecycle events and device context.
- ``pos``: store purchases, sent only when a loyalty card is scanned.
- ``email``: ESP engagement: delivered, opened, clicked, unsubscribed.
- ``callcenter``: a CRM that spells names, emails, phones and addresses its own way and sometimes
  keeps two records for one caller.

Every message carries ``context.consent.categoryPreferences`` as Segment's Consent Management sends
it. ``truth`` records who is who, as the ground truth for identity-resolution tests.

``send`` posts everything to ``/v1/batch`` as an SDK would: HTTP Basic auth with the source's write
key, batches of at most ``batch_size`` messages and 500 KB, roughly in time order across sources,
and retries when the server is busy or unavailable.

No real person can be reached: emails use only the reserved domains example.com, .org and .net
(RFC 2606). Phone numbers use the fictional US range 555-0100..0199, and IPs the documentation
ranges (RFC 5737). UK numbers in the 07700 900xxx drama range are not used, because
``phonenumbers`` rejects them as invalid, so they would never become phone identifiers.
"""

from __future__ import annotations

import email.utils
import heapq
import random
import time
import unicodedata
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import httpx
import orjson

SOURCES: tuple[str, ...] = ("web", "app", "pos", "email", "callcenter")
DEFAULT_NOW = datetime(2026, 11, 1, tzinfo=UTC)
HISTORY_DAYS = 180
# Purposes a consent banner asks about (keys of categoryPreferences); "necessary" is never asked.
CONSENT_PURPOSES = ("analytics", "personalization", "advertising", "sale_sharing", "marketing.email", "marketing.sms")
SHOP = "https://shop.example.com"
EMAIL_DOMAINS = ("example.com", "example.org", "example.net")

# Limits of the Segment HTTP API (and Candor's defaults), and how `send` retries.
MAX_BATCH_ITEMS = 2500
MAX_BATCH_BYTES = 500 * 1024
_BATCH_BUDGET = MAX_BATCH_BYTES - 1024  # room for the envelope: {"batch":[...],"sentAt":"..."}
MAX_TRIES = 5
RETRY_BASE_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

Msg = dict[str, Any]

# -- built-in lists ------------------------------------------------------------------------------
# Name pools by culture, so that first and last names go together; weights roughly like a US city.
NAME_POOLS: tuple[tuple[int, tuple[str, ...], tuple[str, ...]], ...] = (
    (
        30,
        (
            "James", "Robert", "William", "Michael", "Elizabeth", "Margaret", "Katherine", "Jennifer",
            "Christopher", "Daniel", "Thomas", "Richard", "Sarah", "Emily", "Olivia", "Noah", "Grace", "Hannah",
        ),
        (
            "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Anderson", "Taylor",
            "Moore", "Thompson", "White", "Clark", "Walker", "O'Brien", "McAllister", "Fitzgerald",
        ),
    ),
    (
        16,
        ("José", "María", "Sofía", "Mateo", "Lucía", "Alejandro", "Ximena", "Tomás", "Camila", "Guadalupe", "Ramón"),
        ("García", "Rodríguez", "Martínez", "Hernández", "López", "González", "Pérez", "Sánchez", "Núñez", "Torres"),
    ),
    (5, ("Minh", "Linh", "Thảo", "Huy", "Anh", "Trang", "Quang"), ("Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Võ")),
    (3, ("伟", "芳", "明", "静", "丽", "强"), ("李", "王", "张", "刘", "陈")),
    (4, ("Wei", "Mei", "Jun", "Xiaoling", "Hao", "Yan"), ("Li", "Wang", "Zhang", "Liu", "Chen", "Huang")),
    (
        4,
        ("Øyvind", "Ingrid", "Björn", "Sigrid", "Søren", "Astrid", "Lars", "Freja"),
        ("Hansen", "Johansson", "Larsen", "Nilsson", "Lindqvist", "Sørensen", "Bjørnstad"),
    ),
    (
        5,
        ("Chidi", "Ngozi", "Kwame", "Ama", "Oluwaseun", "Adaeze", "Kofi", "Abena"),
        ("Okafor", "Mensah", "Adeyemi", "Boateng", "Okonkwo", "Nwosu"),
    ),
    (
        7,
        ("Priya", "Aarav", "Ananya", "Rohan", "Kavya", "Arjun", "Deepika", "Vikram"),
        ("Patel", "Sharma", "Iyer", "Reddy", "Gupta", "Nair", "Chatterjee"),
    ),
    (
        5,
        ("Fatima", "Omar", "Yusuf", "Leila", "Amira", "Karim", "Elif", "Zeynep", "Mehmet"),
        ("Haddad", "Khalil", "Mansour", "Yılmaz", "Demir", "Aziz"),
    ),
    (
        8,
        ("Zoë", "Chloé", "François", "Léa", "Matthias", "Małgorzata", "Giulia", "Luca", "Dmitri", "Siobhán", "Renée"),
        ("Dubois", "Müller", "Kowalski", "Rossi", "Novak", "Fischer", "Ivanova", "O'Sullivan", "Schäfer"),
    ),
    (
        4,
        ("Hiroshi", "Yuki", "Haruto", "Sakura", "Ji-woo", "Min-jun", "Seo-yeon"),
        ("Tanaka", "Sato", "Suzuki", "Kim", "Park", "Lee"),
    ),
)  # fmt: skip
NICKNAMES = {
    "Robert": "Bob", "William": "Bill", "Elizabeth": "Liz", "Margaret": "Maggie", "Katherine": "Kate",
    "Michael": "Mike", "Jennifer": "Jen", "James": "Jim", "Christopher": "Chris", "Daniel": "Dan",
    "Thomas": "Tom", "Richard": "Rick", "Alejandro": "Alex", "José": "Pepe", "Guadalupe": "Lupe",
    "Oluwaseun": "Seun", "Matthias": "Matt",
}  # fmt: skip
_ROMAN = {
    "李": "li", "王": "wang", "张": "zhang", "刘": "liu", "陈": "chen",
    "伟": "wei", "芳": "fang", "明": "ming", "静": "jing", "丽": "li", "强": "qiang",
}  # fmt: skip
_FOLD = str.maketrans({"ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "ß": "ss", "đ": "d", "Đ": "D", "ł": "l", "Ł": "L"})
_FOLD_I = str.maketrans({"ı": "i"})

# City, state, ZIP, time zone, local area codes (any area code works with the 555-01xx range).
CITIES: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    ("Portland", "OR", "97205", "America/Los_Angeles", ("503", "971")),
    ("Seattle", "WA", "98101", "America/Los_Angeles", ("206",)),
    ("San Francisco", "CA", "94110", "America/Los_Angeles", ("415", "628")),
    ("Los Angeles", "CA", "90026", "America/Los_Angeles", ("213", "323", "310")),
    ("San Diego", "CA", "92104", "America/Los_Angeles", ("619", "858")),
    ("Denver", "CO", "80205", "America/Denver", ("303", "720")),
    ("Phoenix", "AZ", "85004", "America/Phoenix", ("602", "480")),
    ("Austin", "TX", "78704", "America/Chicago", ("512", "737")),
    ("Houston", "TX", "77006", "America/Chicago", ("713", "281", "832", "346")),
    ("Chicago", "IL", "60614", "America/Chicago", ("312", "773", "872")),
    ("Minneapolis", "MN", "55408", "America/Chicago", ("612",)),
    ("Madison", "WI", "53703", "America/Chicago", ("608",)),
    ("Nashville", "TN", "37203", "America/Chicago", ("615", "629")),
    ("Atlanta", "GA", "30307", "America/New_York", ("404", "470", "678")),
    ("Miami", "FL", "33131", "America/New_York", ("305", "786")),
    ("Raleigh", "NC", "27601", "America/New_York", ("919", "984")),
    ("Philadelphia", "PA", "19103", "America/New_York", ("215", "267")),
    ("Pittsburgh", "PA", "15213", "America/New_York", ("412",)),
    ("New York", "NY", "10027", "America/New_York", ("212", "646", "718", "347", "917", "929")),
    ("Boston", "MA", "02118", "America/New_York", ("617", "857")),
    ("Providence", "RI", "02903", "America/New_York", ("401",)),
    ("Burlington", "VT", "05401", "America/New_York", ("802",)),
)
# Area codes where phonenumbers accepts 555-01xx as valid: people keep a mobile number from elsewhere.
_AREA_CODES = """
201 202 203 205 206 207 208 209 210 212 213 214 215 216 217 218 219 224 225 228 229 231 234 239 240
248 251 252 253 254 256 260 262 267 269 270 272 276 281 301 302 303 304 305 307 308 309 310 312 313
314 315 316 317 318 319 320 321 323 325 330 331 334 336 337 339 347 351 352 360 361 385 386 401 402
404 405 406 407 408 409 410 412 413 414 415 417 419 423 424 425 430 432 434 435 440 442 443 458 469
470 475 478 479 480 484 501 502 503 504 505 507 508 509 510 512 513 515 516 517 518 520 530 540 541
551 559 561 562 563 567 570 571 573 574 575 580 585 586 601 602 603 605 606 607 608 609 610 612 614
615 616 617 618 619 620 623 626 630 631 636 641 646 650 651 660 661 662 678 682 701 702 703 704 706
707 708 712 713 714 715 716 717 718 719 720 724 727 731 732 734 737 740 754 757 760 763 765 770 772
773 774 775 781 785 786 801 802 803 804 805 806 808 810 812 813 814 815 816 817 818 828 830 831 832
843 845 847 848 850 856 857 858 859 860 862 863 864 865 870 872 901 903 904 906 907 908 909 910 912
913 914 915 916 917 918 919 920 925 928 929 931 936 937 940 941 947 949 951 952 954 956 970 971 972
973 978 979 980 984 985 989
"""
ANY_AREA_CODES = tuple(_AREA_CODES.split())
STREET_NAMES = (
    "Maple", "Oak", "Cedar", "Elm", "Willow", "Harbor", "Mill", "Church", "Station", "Garden", "Lake", "Hill",
    "Market", "Chestnut", "Juniper", "Linden", "Orchard", "Riverside", "Sycamore", "Union",
)  # fmt: skip
STREET_KINDS = (("Street", "St."), ("Avenue", "Ave."), ("Road", "Rd."), ("Lane", "Ln."), ("Boulevard", "Blvd."))
STORES = (
    ("NW-001", "Northwind Books & Music — Pearl District"),
    ("NW-004", "Northwind Books & Music — Capitol Hill"),
    ("NW-007", "Northwind Books & Music — Mission"),
    ("NW-012", "Northwind Books & Music — South Congress"),
    ("NW-017", "Northwind Books & Music — Wicker Park"),
    ("NW-023", "Northwind Books & Music — Back Bay"),
    ("NW-031", "Northwind Books & Music — Park Slope"),
)
GENRES: dict[str, tuple[str, ...]] = {
    "Books": ("Fiction", "Mystery", "Science", "Children", "History", "Poetry"),
    "Music": ("Jazz", "Classical", "Rock", "Folk", "Soul", "Electronic"),
}
# Fictional titles, five per genre.
TITLES: dict[str, tuple[str, ...]] = {
    "Fiction": ("The Lighthouse Ledger", "Salt and Paper", "A Winter in Calder", "The Glass Orchard", "Small Hours"),
    "Mystery": ("The Quiet Pier", "Murder at Millbrook", "The Seventh Key", "A Case of Ink", "Fog over Hadley"),
    "Science": ("Tides of Time", "The Curious Cell", "Maps of the Deep", "Counting Stars", "The Shape of Heat"),
    "Children": ("Pip and the Paper Boat", "Moon Bear", "The Very Busy Beetle", "Otto's Oven", "Ten Little Kites"),
    "History": ("Rivers of Empire", "The Silk Ledger", "Harbor Towns", "The Last Lamplighters", "Bread and Bricks"),
    "Poetry": ("Small Weathers", "Salt Psalms", "Field Notes", "The Lantern Hours", "Birch and Ember"),
    "Jazz": ("Blue Hour Sessions", "Midnight at the Velvet", "Brass & Rain", "Late Train Home", "Copper Moon Trio"),
    "Classical": ("Nocturnes for a Cold City", "The Harbor Suite", "Six Small Sonatas", "Requiem in Grey", "Vesper"),
    "Rock": ("Static Summer", "Highway Ghosts", "Loud Little Town", "Neon Orchard", "Broken Compass"),
    "Folk": ("Songs from the Ridge", "Kitchen Table Ballads", "Willow Road", "The Ferryman", "Old Stone Bridge"),
    "Soul": ("Velvet Mornings", "Sunday Gold", "Hold the Light", "Warm Static", "City of Honey"),
    "Electronic": ("Pulse Atlas", "Night Grid", "Soft Machines", "Glass Circuits", "Tidal Frequencies"),
}
REFERRERS = (
    "",
    "",
    "https://search.example.org/?q=books",
    "https://search.example.org/?q=vinyl+records",
    "https://social.example.net/feed",
    "https://news.example.com/best-albums-of-the-year",
    f"{SHOP}/?utm_source=newsletter&utm_medium=email",
)
USER_AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
)  # fmt: skip
PHONES = (
    ("Apple", "iPhone15,2", "ios", "iOS", "17.5.1", "analytics-swift", "1.5.11"),
    ("Apple", "iPhone14,5", "ios", "iOS", "16.7.8", "analytics-swift", "1.5.11"),
    ("Google", "Pixel 8", "android", "Android", "14", "analytics-kotlin", "1.16.0"),
    ("samsung", "SM-S911B", "android", "Android", "14", "analytics-kotlin", "1.16.0"),
    ("motorola", "moto g power (2023)", "android", "Android", "13", "analytics-kotlin", "1.16.0"),
)
# Campaigns: id, name, subject, days before "now" it was sent.
CAMPAIGNS = (
    ("cmp-2026-05-spring-reads", "Spring reads", "Fresh fiction for longer days", 176),
    ("cmp-2026-05-jazz-week", "Jazz week", "Blue Hour Sessions is back on vinyl", 162),
    ("cmp-2026-06-summer-kids", "Summer for kids", "Ten books for ten summer weeks", 148),
    ("cmp-2026-06-loyalty", "Loyalty points", "You have points waiting", 134),
    ("cmp-2026-07-mystery", "Mystery month", "A murder, a pier and a 20% discount", 120),
    ("cmp-2026-07-vinyl-sale", "Vinyl sale", "Records from $15 this weekend", 106),
    ("cmp-2026-08-back-to-school", "Back to school", "Science that sticks", 92),
    ("cmp-2026-08-classical", "Classical evenings", "Nocturnes for a cold city", 78),
    ("cmp-2026-09-poetry", "Poetry day", "Small Weathers, signed copies", 64),
    ("cmp-2026-09-new-releases", "New releases", "This month's new arrivals", 50),
    ("cmp-2026-10-autumn-reads", "Autumn reads", "Books for long evenings", 36),
    ("cmp-2026-10-gift-guide", "Gift guide", "Gifts for every reader and listener", 22),
    ("cmp-2026-10-members", "Members' evening", "You are invited: members' evening", 8),
)
CALL_REASONS = ("order status", "return", "billing", "loyalty points", "product question", "complaint", "store hours")
COMMENTS = {
    "detractor": (
        "Took too long to answer.",
        "Delivery was late again.",
        "Could not find my order.",
        "The return process is confusing.",
    ),
    "passive": ("Fine, nothing special.", "Okay, but the app is slow.", "Good selection, prices a bit high."),
    "promoter": (
        "Quick and friendly.",
        "Great recommendations!",
        "Loved the jazz section.",
        "Very helpful staff.",
        "Best bookshop in town.",
    ),
}


@cache
def _catalog() -> tuple[dict[str, Any], ...]:
    """The fixed product catalogue (no randomness): five titles per genre, books and music."""
    products: list[dict[str, Any]] = []
    n = 1000
    for dept, genres in GENRES.items():
        for genre in genres:
            for title in TITLES[genre]:
                n += 1
                if dept == "Books":
                    variant = ("Hardcover", "Paperback")[n % 2]
                    price = round(9.99 + (n * 7 % 23), 2)
                else:
                    variant = ("Vinyl", "CD")[n % 2]
                    price = round((24.99 if variant == "Vinyl" else 11.99) + (n * 5 % 13), 2)
                slug = "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-")
                products.append(
                    {
                        "product_id": f"{dept[0]}-{n}",
                        "sku": f"NW-{dept[:2].upper()}-{n}-{variant[:2].upper()}",
                        "name": title,
                        "category": genre,
                        "variant": variant,
                        "price": price,
                        "slug": slug,
                        "department": dept,
                    }
                )
    return tuple(products)


# -- the data set --------------------------------------------------------------------------------
@dataclass
class Person:
    """Ground truth about one synthetic customer: who they are and every identifier that is theirs."""

    pid: int
    user_id: str | None  # account id on web, app and email; None when they never made an account
    first: str
    last: str
    email: str  # canonical, lower case
    phone: str  # ten US digits, e.g. "4155550134"
    street: str
    city: str
    state: str
    postal: str
    card: str | None  # loyalty card number
    devices: list[str]  # web anonymousIds (one per browser)
    prefs: dict[str, bool]  # the consent choice (purpose → yes/no)
    consent: str  # "accept_all", "reject_all" or "custom"
    gpc: bool  # their browser sends Global Privacy Control
    genres: list[str]
    since: datetime  # first contact with the brand
    app_device: str | None = None  # app anonymousId
    card_linked: bool = False  # the loyalty card is linked to the online account
    card_email: bool = False  # they gave their email on the loyalty card form
    household: int | None = None  # pid of the household head when a family shares one phone
    moved_to: str | None = None  # a newer street address, known only to the call center
    unsubscribed_at: datetime | None = None
    crm_ids: list[str] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)
    user_ids: set[str] = field(default_factory=set)  # every userId sent for them (account, pos-…, crm-…)
    anonymous_ids: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)  # every spelling of their email that was sent
    message_ids: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"

    def prefs_at(self, when: datetime) -> dict[str, bool]:
        """Their consent at a moment: an unsubscribe withdraws marketing email from then on."""
        if self.unsubscribed_at is not None and when >= self.unsubscribed_at:
            return {**self.prefs, "marketing.email": False}
        return dict(self.prefs)


@dataclass
class DemoData:
    """Segment-spec messages per source (each list in time order), and who is really who."""

    batches: dict[str, list[Msg]]
    truth: list[Person]
    seed: int = 0
    now: datetime = DEFAULT_NOW
    summary: dict[str, int] = field(default_factory=dict)

    @property
    def total_events(self) -> int:
        return sum(len(v) for v in self.batches.values())

    @property
    def counts(self) -> dict[str, int]:
        """Messages per source."""
        return {s: len(v) for s, v in self.batches.items()}


def _ms(dt: datetime) -> datetime:
    """Truncated to the millisecond, the precision timestamps are sent with."""
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fold(s: str) -> str:
    """Accents removed, as a keyboard without them would type it ("Nguyễn" → "Nguyen")."""
    s = s.translate(_FOLD).translate(_FOLD_I)
    return "".join(ch for ch in unicodedata.normalize("NFKD", s) if not unicodedata.combining(ch))


def _ascii_slug(s: str) -> str:
    roman = "".join(_ROMAN.get(ch, ch) for ch in s)
    return "".join(ch for ch in _fold(roman).lower() if ch.isascii() and ch.isalnum())


def _typo(rng: random.Random, s: str) -> str:
    """One realistic slip: a dropped, doubled or swapped letter (names shorter than 4 stay as they are)."""
    if len(s) < 4:
        return s
    i = rng.randrange(1, len(s) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        return s[:i] + s[i + 1 :]
    if kind == 1:
        return s[:i] + s[i] + s[i:]
    if s[i - 1] == s[i]:
        return s[:i] + s[i + 1 :]
    return s[: i - 1] + s[i] + s[i - 1] + s[i + 1 :]


def _phone_format(rng: random.Random, digits: str) -> str:
    a, b, c = digits[:3], digits[3:6], digits[6:]
    return rng.choice((f"({a}) {b}-{c}", f"+1 {a} {b} {c}", f"{a}.{b}.{c}", f"+1{a}{b}{c}", f"{a}-{b}-{c}", digits))


def _mixed_case(email: str) -> str:
    local, _, domain = email.partition("@")
    return ".".join(part[:1].upper() + part[1:] for part in local.split(".")) + "@" + domain.capitalize()


class _Generator:
    """Builds one data set; all randomness comes from one ``random.Random(seed)``."""

    def __init__(self, seed: int, now: datetime) -> None:
        self.rng = random.Random(seed)
        self.now = now
        self.out: dict[str, list[Msg]] = {s: [] for s in SOURCES}
        self.catalog = _catalog()
        self.by_genre: dict[str, list[dict[str, Any]]] = {}
        for p in self.catalog:
            self.by_genre.setdefault(p["category"], []).append(p)
        self.emails: set[str] = set()
        self.phones: set[str] = set()
        self.cards: set[str] = set()
        self.next_order = 100_000
        self.next_crm = 300_000

    # -- helpers ---------------------------------------------------------------------------------
    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def order_id(self, prefix: str) -> str:
        self.next_order += self.rng.randint(1, 9)
        return f"{prefix}{self.next_order}"

    def when(self, p: Person, earliest: datetime | None = None) -> datetime:
        """A moment between their first contact (or ``earliest``) and an hour ago."""
        start = max(p.since, earliest) if earliest else p.since
        end = self.now - timedelta(hours=1)
        if start >= end:
            return end - timedelta(minutes=self.rng.randint(1, 50))
        return start + timedelta(seconds=self.rng.uniform(0, (end - start).total_seconds()))

    def emit(self, source: str, p: Person, msg: Msg, when: datetime) -> None:
        when = _ms(min(when, self.now - timedelta(seconds=1)))
        ctx = msg.setdefault("context", {})
        ctx["consent"] = {"categoryPreferences": p.prefs_at(when)}
        if source == "web" and p.gpc:
            ctx["gpc"] = True
        full: Msg = {"type": msg.pop("type"), "messageId": self.uid(), "timestamp": _iso(when), **msg}
        self.out[source].append(full)
        p.sources.add(source)
        p.message_ids.append(full["messageId"])
        if "userId" in full:
            p.user_ids.add(full["userId"])
        if "anonymousId" in full:
            p.anonymous_ids.add(full["anonymousId"])
        for traits in (full.get("traits"), ctx.get("traits")):
            if isinstance(traits, dict) and traits.get("email"):
                p.emails.add(traits["email"])

    def product(self, p: Person) -> dict[str, Any]:
        if self.rng.random() < 0.75:
            return self.rng.choice(self.by_genre[self.rng.choice(p.genres)])
        return self.rng.choice(self.catalog)

    @staticmethod
    def line(prod: dict[str, Any], quantity: int = 1) -> dict[str, Any]:
        """A product as the Segment e-commerce spec sends it."""
        keys = ("product_id", "sku", "name", "category", "variant", "price")
        return {**{k: prod[k] for k in keys}, "quantity": quantity}

    def order(self, items: list[dict[str, Any]], prefix: str, shipping: bool) -> dict[str, Any]:
        subtotal = round(sum(i["price"] * i["quantity"] for i in items), 2)
        discount = round(subtotal * 0.2, 2) if self.rng.random() < 0.1 else 0.0
        revenue = round(subtotal - discount, 2)
        tax = round(revenue * 0.08, 2)
        ship = 0.0 if not shipping or revenue >= 35 else 4.99
        props: dict[str, Any] = {
            "order_id": self.order_id(prefix),
            "total": round(revenue + tax + ship, 2),
            "revenue": revenue,
            "tax": tax,
            "currency": "USD",
            "products": items,
        }
        if shipping:
            props["shipping"] = ship
        if discount:
            props["discount"] = discount
            props["coupon"] = "READMORE20"
        return props

    # -- people ----------------------------------------------------------------------------------
    def phone(self, area_codes: tuple[str, ...]) -> str:
        """A fictional number (NPA-555-01xx), unique while the ranges last (20,000+ numbers)."""
        rng = self.rng
        digits = ""
        for _ in range(30):
            pool = area_codes if rng.random() < 0.75 else ANY_AREA_CODES
            digits = f"{rng.choice(pool)}5550{rng.randrange(100, 200)}"
            if digits not in self.phones:
                break
        self.phones.add(digits)
        return digits

    def email_address(self, first: str, last: str) -> str:
        rng = self.rng
        f, l_ = _ascii_slug(first) or "reader", _ascii_slug(last) or "northwind"
        local = rng.choice((f"{f}.{l_}", f"{f}{l_}", f"{f[0]}.{l_}", f"{f}_{l_}", f"{f}.{l_}{rng.randint(1, 99)}"))
        address = f"{local}@{rng.choice(EMAIL_DOMAINS)}"
        while address in self.emails:
            address = f"{local}{rng.randint(1, 9999)}@{rng.choice(EMAIL_DOMAINS)}"
        self.emails.add(address)
        return address

    def street(self) -> str:
        name, (kind, _) = self.rng.choice(STREET_NAMES), self.rng.choice(STREET_KINDS)
        return f"{self.rng.randint(1, 4999)} {name} {kind}"

    def consent(self) -> tuple[str, dict[str, bool]]:
        """60% accept all, 20% reject everything non-essential, 20% choose (a real mix of yes and no)."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.6:
            return "accept_all", dict.fromkeys(CONSENT_PURPOSES, True)
        if roll < 0.8:
            return "reject_all", dict.fromkeys(CONSENT_PURPOSES, False)
        likely = {
            "analytics": 0.7,
            "personalization": 0.5,
            "advertising": 0.2,
            "sale_sharing": 0.1,
            "marketing.email": 0.55,
            "marketing.sms": 0.2,
        }
        while True:
            prefs = {p: rng.random() < likely[p] for p in CONSENT_PURPOSES}
            if 0 < sum(prefs.values()) < len(prefs):
                return "custom", prefs

    def person(self, pid: int, people: list[Person]) -> Person:
        rng = self.rng
        _, firsts, lasts = rng.choices(NAME_POOLS, weights=[w for w, _, _ in NAME_POOLS])[0]
        first, last = rng.choice(firsts), rng.choice(lasts)
        city, state, postal, _tz, codes = rng.choice(CITIES)
        head = people[-1] if people and people[-1].household is None and rng.random() < 0.015 else None
        if head is not None:  # a family member: same home, same (landline or family) phone
            head.household = head.pid
            last = head.last if rng.random() < 0.8 else last
            if first == head.first:
                first = rng.choice(firsts)
            city, state, postal, phone, street = head.city, head.state, head.postal, head.phone, head.street
        else:
            phone, street = self.phone(codes), self.street()
        consent, prefs = self.consent()
        has_account = rng.random() < 0.7
        card = None
        if rng.random() < 0.45:
            card = f"{rng.randrange(10**11, 10**12)}"
            while card in self.cards:
                card = f"{rng.randrange(10**11, 10**12)}"
            self.cards.add(card)
        genres = rng.sample([g for gs in GENRES.values() for g in gs], rng.randint(2, 3))
        p = Person(
            pid=pid,
            user_id=f"cust-{100000 + pid}" if has_account else None,
            first=first,
            last=last,
            email=self.email_address(first, last),
            phone=phone,
            street=street,
            city=city,
            state=state,
            postal=postal,
            card=card,
            devices=[],
            prefs=prefs,
            consent=consent,
            gpc=False,
            genres=genres,
            since=self.now - timedelta(days=rng.uniform(7, HISTORY_DAYS)),
            household=head.pid if head else None,
        )
        uses_app = has_account and rng.random() < 0.4
        if rng.random() < 0.88 or not (uses_app or card):  # everyone shows up somewhere
            p.devices = [self.uid() for _ in range(1 + (rng.random() < 0.3))]
            p.gpc = rng.random() < 0.1
        if uses_app:
            p.app_device = self.uid()
        p.card_linked = bool(card and has_account and rng.random() < 0.5)
        p.card_email = bool(card and rng.random() < 0.7)
        if rng.random() < 0.08:
            p.moved_to = self.street()
        return p

    def address(self, p: Person, street: str | None = None) -> dict[str, str]:
        return {
            "street": street or p.street,
            "city": p.city,
            "state": p.state,
            "postalCode": p.postal,
            "country": "US",
        }

    # -- sources ---------------------------------------------------------------------------------
    def page(
        self,
        p: Person,
        ctx: dict[str, Any],
        ids: dict[str, str],
        where: tuple[str, str, str],
        referrer: str,
        t: datetime,
    ) -> str:
        """A page view as analytics.js sends it; returns its url (the next page's referrer)."""
        path, title, category = where
        props = {"path": path, "url": f"{SHOP}{path}", "title": title, "referrer": referrer, "search": ""}
        msg = {
            "type": "page",
            **ids,
            "name": title,
            "category": category,
            "properties": props,
            "context": {**ctx, "page": dict(props)},
        }
        self.emit("web", p, msg, t)
        return props["url"]

    def web(self, p: Person) -> None:
        rng = self.rng
        tz = next(c[3] for c in CITIES if c[0] == p.city)
        device_ctx = {
            d: {
                "library": {"name": "analytics.js", "version": "next-1.72.0"},
                "userAgent": rng.choice(USER_AGENTS),
                "ip": f"{rng.choice(('192.0.2', '198.51.100', '203.0.113'))}.{rng.randint(1, 254)}",
                "locale": "en-US",
                "timezone": tz,
            }
            for d in p.devices
        }
        logged_in: set[str] = set()
        seen: set[str] = set()
        mixed_case = rng.random() < 0.1
        for _ in range(rng.choice((1, 1, 2, 2, 3, 3, 4, 6))):
            device = p.devices[0] if len(p.devices) == 1 or rng.random() < 0.6 else p.devices[1]
            ctx = device_ctx[device]
            t = self.when(p)
            ids: dict[str, str] = {"anonymousId": device}
            if device in logged_in and p.user_id:
                ids["userId"] = p.user_id
            if device not in seen:  # the banner: Segment's Consent Management reports the choice
                seen.add(device)
                msg: Msg = {"type": "track", "event": "Segment Consent Preference Updated", **ids, "context": dict(ctx)}
                self.emit("web", p, msg, t)
            referrer = rng.choice(REFERRERS)
            viewed: list[dict[str, Any]] = []
            for i in range(rng.randint(1, 5)):
                t += timedelta(seconds=rng.randint(5, 150))
                roll = rng.random()
                if i == 0 and roll < 0.25:
                    referrer = self.page(p, ctx, ids, ("/", "Northwind Books & Music", "Home"), referrer, t)
                elif roll < 0.35:
                    genre = rng.choice(p.genres)
                    dept = "books" if genre in GENRES["Books"] else "music"
                    where = (f"/{dept}/{genre.lower()}", f"{genre} | Northwind", "Category")
                    referrer = self.page(p, ctx, ids, where, referrer, t)
                else:
                    prod = self.product(p)
                    path = f"/{prod['department'].lower()}/{prod['category'].lower()}/{prod['slug']}"
                    referrer = self.page(p, ctx, ids, (path, f"{prod['name']} | Northwind", "Product"), referrer, t)
                    props = {**self.line(prod), "url": f"{SHOP}{path}"}
                    del props["quantity"]
                    page_ctx = {**ctx, "page": {"path": path, "url": f"{SHOP}{path}"}}
                    msg = {"type": "track", "event": "Product Viewed", **ids, "properties": props, "context": page_ctx}
                    self.emit("web", p, msg, t + timedelta(seconds=rng.randint(1, 4)))
                    viewed.append(prod)
            cart = [self.line(prod, 1 + (rng.random() < 0.15)) for prod in viewed if rng.random() < 0.35]
            cart_id = self.uid() if cart else ""
            for item in cart:
                t += timedelta(seconds=rng.randint(5, 60))
                msg = {"type": "track", "event": "Product Added", **ids, "properties": {"cart_id": cart_id, **item}}
                self.emit("web", p, {**msg, "context": dict(ctx)}, t)
            if p.user_id and device not in logged_in and (rng.random() < (0.85 if cart else 0.3)):
                t += timedelta(seconds=rng.randint(10, 90))
                referrer = self.page(p, ctx, ids, ("/account/login", "Sign in | Northwind", "Account"), referrer, t)
                logged_in.add(device)
                ids["userId"] = p.user_id
                traits: dict[str, Any] = {
                    "email": _mixed_case(p.email) if mixed_case else p.email,
                    "firstName": p.first,
                    "lastName": p.last,
                }
                if rng.random() < 0.5:
                    traits["phone"] = _phone_format(rng, p.phone)
                if rng.random() < 0.35:
                    traits["address"] = self.address(p)
                t += timedelta(seconds=rng.randint(5, 40))
                self.emit("web", p, {"type": "identify", **ids, "traits": traits, "context": dict(ctx)}, t)
            if cart and "userId" in ids and rng.random() < 0.6:
                t += timedelta(seconds=rng.randint(30, 240))
                referrer = self.page(p, ctx, ids, ("/checkout", "Checkout | Northwind", "Checkout"), referrer, t)
                props = {**self.order(cart, "W", shipping=True), "affiliation": "Northwind Online", "cart_id": cart_id}
                t += timedelta(seconds=rng.randint(30, 300))
                msg = {"type": "track", "event": "Order Completed", **ids, "properties": props, "context": dict(ctx)}
                self.emit("web", p, msg, t)

    def track(
        self,
        source: str,
        p: Person,
        ids: dict[str, str],
        event: str,
        props: dict[str, Any] | None,
        ctx: dict[str, Any],
        t: datetime,
    ) -> None:
        msg: Msg = {"type": "track", "event": event, **ids}
        if props is not None:
            msg["properties"] = props
        msg["context"] = dict(ctx)
        self.emit(source, p, msg, t)

    def app(self, p: Person) -> None:
        rng = self.rng
        if p.app_device is None or p.user_id is None:
            return
        maker, model, kind, os_name, os_version, lib, lib_version = rng.choice(PHONES)
        tz = next(c[3] for c in CITIES if c[0] == p.city)
        base_ctx = {
            "app": {"name": "Northwind", "version": "4.2.1", "build": "421", "namespace": "com.example.northwind"},
            "device": {
                "id": p.app_device,
                "manufacturer": maker,
                "model": model,
                "type": kind,
                "adTrackingEnabled": p.prefs["advertising"],
            },
            "os": {"name": os_name, "version": os_version},
            "library": {"name": lib, "version": lib_version},
            "locale": "en-US",
            "timezone": tz,
            "screen": {"width": 390, "height": 844} if kind == "ios" else {"width": 412, "height": 915},
        }
        version = {"version": "4.2.1", "build": "421"}
        logged_in = False
        starts = sorted(self.when(p) for _ in range(rng.randint(1, 5)))
        for s, t in enumerate(starts):
            wifi = rng.random() < 0.6
            ctx = {**base_ctx, "network": {"wifi": wifi, "cellular": not wifi}}
            ids: dict[str, str] = {"anonymousId": p.app_device}
            if logged_in:
                ids["userId"] = p.user_id
            if s == 0:
                self.track("app", p, ids, "Application Installed", dict(version), ctx, t)
                self.track("app", p, ids, "Segment Consent Preference Updated", None, ctx, t)
            opened = {"from_background": s > 0 and rng.random() < 0.5, **version}
            self.track("app", p, ids, "Application Opened", opened, ctx, t)
            viewed: list[dict[str, Any]] = []
            for _ in range(rng.randint(1, 4)):
                t += timedelta(seconds=rng.randint(4, 90))
                roll = rng.random()
                if roll < 0.2:
                    self.emit("app", p, {"type": "screen", **ids, "name": "Home", "context": dict(ctx)}, t)
                elif roll < 0.35:
                    props = {"query": rng.choice(p.genres).lower()}
                    msg = {"type": "screen", **ids, "name": "Search", "properties": props, "context": dict(ctx)}
                    self.emit("app", p, msg, t)
                else:
                    prod = self.product(p)
                    props = {"product_id": prod["product_id"], "category": prod["category"]}
                    msg = {"type": "screen", **ids, "name": "Product Detail", "properties": props, "context": dict(ctx)}
                    self.emit("app", p, msg, t)
                    props = self.line(prod)
                    del props["quantity"]
                    self.track("app", p, ids, "Product Viewed", props, ctx, t + timedelta(seconds=1))
                    viewed.append(prod)
            if not logged_in and (s > 0 or rng.random() < 0.7):
                t += timedelta(seconds=rng.randint(10, 60))
                logged_in = True
                ids["userId"] = p.user_id
                traits = {"email": p.email, "firstName": p.first, "lastName": p.last}
                self.emit("app", p, {"type": "identify", **ids, "traits": traits, "context": dict(ctx)}, t)
            if viewed and logged_in and rng.random() < 0.25:
                items = [self.line(prod) for prod in viewed[:3]]
                for item in items:
                    t += timedelta(seconds=rng.randint(5, 40))
                    self.track("app", p, ids, "Product Added", dict(item), ctx, t)
                t += timedelta(seconds=rng.randint(20, 200))
                self.emit("app", p, {"type": "screen", **ids, "name": "Checkout", "context": dict(ctx)}, t)
                props = {**self.order(items, "A", shipping=True), "affiliation": "Northwind App"}
                self.track("app", p, ids, "Order Completed", props, ctx, t + timedelta(seconds=rng.randint(20, 120)))

    def pos(self, p: Person) -> None:
        """Store purchases: only those where the loyalty card was scanned are sent (stores send identified events)."""
        rng = self.rng
        if p.card is None:
            return
        ids = {"userId": p.user_id if p.card_linked and p.user_id else f"pos-{p.card}"}
        # what the customer wrote on the loyalty card form, once
        enrolled: dict[str, Any] = {"firstName": p.first, "lastName": p.last}
        if rng.random() < 0.2:
            enrolled["firstName"] = NICKNAMES.get(p.first) or _typo(rng, p.first)
        if p.card_email:
            enrolled["email"] = p.email.upper() if rng.random() < 0.1 else p.email
        if rng.random() < 0.6:
            enrolled["phone"] = _phone_format(rng, p.phone)
        ctx = {
            "library": {"name": "northwind-pos", "version": "3.1.0"},
            "externalIds": [{"id": p.card, "type": "loyalty_card", "collection": "users", "encoding": "none"}],
            "traits": enrolled,
        }
        home = rng.choice(STORES)
        for _ in range(rng.randint(1, 5)):
            store_id, store_name = home if rng.random() < 0.8 else rng.choice(STORES)
            t = self.when(p).replace(hour=rng.randint(15, 23), minute=rng.randint(0, 59))  # opening hours, UTC
            items = [self.line(self.product(p), 1 + (rng.random() < 0.1)) for _ in range(rng.randint(1, 4))]
            props = {
                **self.order(items, f"S{store_id[3:]}-", shipping=False),
                "affiliation": store_name,
                "store_id": store_id,
                "payment_method": rng.choice(("card", "card", "card", "cash", "mobile wallet")),
            }
            self.track("pos", p, ids, "Order Completed", props, {**ctx, "traits": dict(enrolled)}, t)

    def email(self, p: Person) -> None:
        """ESP engagement for people on the marketing list (they said yes to marketing email)."""
        rng = self.rng
        if not p.prefs["marketing.email"] or not (p.user_id or p.card_email):
            return
        ids = {"userId": p.user_id or f"pos-{p.card}"}
        ctx = {"library": {"name": "northwind-esp-bridge", "version": "1.4.2"}, "traits": {"email": p.email}}
        for campaign_id, name, subject, days_ago in CAMPAIGNS:
            sent = self.now - timedelta(days=days_ago, minutes=-rng.randint(0, 90))
            if sent < p.since:
                continue
            props = {
                "campaign_id": campaign_id,
                "campaign_name": name,
                "email_id": f"{campaign_id}-{rng.getrandbits(40):010x}",
                "email_subject": subject,
            }
            self.track("email", p, ids, "Email Delivered", dict(props), ctx, sent)
            if rng.random() < 0.42:
                t = sent + timedelta(hours=rng.uniform(0.1, 48))
                self.track("email", p, ids, "Email Opened", dict(props), ctx, t)
                if rng.random() < 0.3:
                    t += timedelta(seconds=rng.randint(5, 300))
                    link = f"{SHOP}/{rng.choice(p.genres).lower()}?utm_campaign={campaign_id}"
                    self.track("email", p, ids, "Email Link Clicked", {**props, "link_url": link}, ctx, t)
                if rng.random() < 0.03:
                    p.unsubscribed_at = _ms(t + timedelta(seconds=rng.randint(5, 120)))
                    self.track("email", p, ids, "Unsubscribed", dict(props), ctx, p.unsubscribed_at)
                    return

    def crm_traits(self, p: Person) -> dict[str, Any]:
        """How an agent typed the caller in: often right, sometimes not quite."""
        rng = self.rng
        first, last = p.first, p.last
        roll = rng.random()
        if roll < 0.3:
            pass
        elif roll < 0.48:
            first = NICKNAMES.get(first) or _typo(rng, first)
        elif roll < 0.68:
            last = _typo(rng, last)
        elif roll < 0.82:
            first = _typo(rng, first)
        elif roll < 0.9:
            first, last = last, first
        else:
            first, last = _fold(first), _fold(last)
        traits: dict[str, Any] = {"firstName": first, "lastName": last}
        if rng.random() < 0.9:
            e = p.email
            roll = rng.random()
            if roll < 0.2:
                e = _mixed_case(e)
            elif roll < 0.3:
                e = e.upper()
            elif roll < 0.4:
                local, _, domain = e.partition("@")
                e = f"{_typo(rng, local)}@{domain}"
            traits["email"] = e
        if rng.random() < 0.95:
            traits["phone"] = _phone_format(rng, p.phone)
        if rng.random() < 0.7:
            street = p.moved_to or p.street
            if rng.random() < 0.5:
                for long, short in STREET_KINDS:
                    street = street.replace(long, short)
            traits["address"] = self.address(p, street)
        if p.card and rng.random() < 0.5:
            traits["loyaltyCard"] = p.card
        return traits

    def callcenter(self, p: Person) -> None:
        rng = self.rng
        if rng.random() >= 0.18:
            return
        ctx = {"library": {"name": "northwind-crm-sync", "version": "2.0.3"}}
        for _ in range(1 + (rng.random() < 0.12)):  # sometimes a second record for the same caller
            self.next_crm += rng.randint(1, 40)
            ids = {"userId": f"crm-{self.next_crm}"}
            p.crm_ids.append(ids["userId"])
            t = self.when(p)
            self.emit(
                "callcenter", p, {"type": "identify", **ids, "traits": self.crm_traits(p), "context": dict(ctx)}, t
            )
            for _ in range(rng.randint(1, 3)):
                t = self.when(p, t)
                props: dict[str, Any] = {
                    "reason": rng.choice(CALL_REASONS),
                    "duration_s": rng.randint(40, 1500),
                    "csat": rng.choices((1, 2, 3, 4, 5), weights=(1, 1, 2, 4, 5))[0],
                    "agent_id": f"agent-{rng.randint(1, 60):03d}",
                    "channel": "phone",
                }
                self.track("callcenter", p, ids, "Call Completed", props, ctx, t)
                if rng.random() < 0.5:
                    nps = rng.choices(range(11), weights=(1, 1, 1, 1, 2, 2, 3, 5, 8, 9, 8))[0]
                    band = "detractor" if nps <= 6 else "passive" if nps <= 8 else "promoter"
                    props = {"survey_id": "post-call-nps", "nps": nps, "comment": rng.choice(COMMENTS[band])}
                    t += timedelta(minutes=rng.randint(5, 180))
                    self.track("callcenter", p, ids, "Survey Answered", props, ctx, t)


def generate(customers: int, seed: int, now: datetime | None = None) -> DemoData:
    """A deterministic data set of about 30 messages per customer: the same seed gives the same data.

    Timestamps fall in the :data:`HISTORY_DAYS` days before ``now``, which defaults to
    :data:`DEFAULT_NOW`, a fixed date.
    """
    if customers < 0:
        raise ValueError(f"customers must be 0 or more, not {customers}")
    now = (now or DEFAULT_NOW).astimezone(UTC)
    g = _Generator(seed, now)
    people: list[Person] = []
    for pid in range(customers):
        p = g.person(pid, people)
        people.append(p)
        g.email(p)  # first: an unsubscribe changes the consent every later message carries
        if p.devices:
            g.web(p)
        g.app(p)
        g.pos(p)
        g.callcenter(p)
    for events in g.out.values():
        events.sort(key=lambda m: m["timestamp"])
    summary = {
        "customers": customers,
        "events": sum(len(v) for v in g.out.values()),
        "accounts": sum(p.user_id is not None for p in people),
        "two_browsers": sum(len(p.devices) > 1 for p in people),
        "loyalty_cards": sum(p.card is not None for p in people),
        "shared_phones": sum(p.household is not None for p in people),
        "crm_records": sum(len(p.crm_ids) for p in people),
        "orders": sum(m.get("event") == "Order Completed" for v in g.out.values() for m in v),
        **{
            f"consent_{kind}": sum(p.consent == kind for p in people) for kind in ("accept_all", "reject_all", "custom")
        },
    }
    return DemoData(g.out, people, seed=seed, now=now, summary=summary)


# -- sending -------------------------------------------------------------------------------------
class DemoSendError(RuntimeError):
    """The server refused the demo data, or stayed unavailable."""


@dataclass
class SendReport:
    total_events: int = 0
    requests: int = 0  # batches accepted (retried attempts not counted)
    retries: int = 0
    rejected: int = 0  # events the server accepted the batch without (X-Candor-Rejected)
    per_source: Counter[str] = field(default_factory=Counter)


def _chunks(batches: dict[str, list[Msg]], batch_size: int) -> Iterator[tuple[str, list[bytes]]]:
    """Messages encoded once, grouped per source into batches of at most ``batch_size`` items and
    :data:`_BATCH_BUDGET` bytes, released roughly in time order across sources."""

    def stream(source: str) -> Iterator[tuple[str, str, int, Msg]]:
        for i, m in enumerate(batches[source]):
            yield m["timestamp"], source, i, m

    streams = [stream(s) for s in batches]
    pending: dict[str, list[bytes]] = {s: [] for s in batches}
    size: dict[str, int] = dict.fromkeys(batches, 0)
    for _, source, _, msg in heapq.merge(*streams, key=lambda x: (x[0], x[1], x[2])):
        raw = orjson.dumps(msg)
        if len(raw) > _BATCH_BUDGET:
            raise DemoSendError(f"a {source} message is {len(raw)} bytes, more than a batch may hold")
        if pending[source] and size[source] + len(raw) + 1 > _BATCH_BUDGET:
            yield source, pending[source]
            pending[source], size[source] = [], 0
        pending[source].append(raw)
        size[source] += len(raw) + 1
        if len(pending[source]) >= batch_size:
            yield source, pending[source]
            pending[source], size[source] = [], 0
    for source, rest in pending.items():
        if rest:
            yield source, rest


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (email.utils.parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), RETRY_MAX_SECONDS)


def _server_error(response: httpx.Response) -> str:
    """The server's own words: Candor's {"error": {"code", "message"}} with per-event errors, or the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300].strip() or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        out = str(err.get("message", ""))
        if err.get("code"):
            out = f"{out} ({err['code']})"
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            details = "; ".join(
                f"event {e.get('index')}: {e.get('message')}" + (f" [{e['field']}]" if e.get("field") else "")
                for e in errors[:3]
                if isinstance(e, dict)
            )
            out += f"; {details}" + (f"; and {len(errors) - 3} more" if len(errors) > 3 else "")
        return out
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:300]
    return str(body)[:300]


def _post(http: httpx.Client, url: str, source: str, key: str, batch: list[bytes], report: SendReport) -> None:
    """One batch, with up to :data:`MAX_TRIES` tries while the server is busy or unreachable."""
    payload = b",".join(batch)
    problem = ""
    for attempt in range(1, MAX_TRIES + 1):
        body = b'{"batch":[' + payload + b'],"sentAt":' + orjson.dumps(_iso(datetime.now(UTC))) + b"}"
        delay = min(RETRY_BASE_SECONDS * 2 ** (attempt - 1), RETRY_MAX_SECONDS)
        try:
            r = http.post(url, content=body, auth=(key, ""), headers={"Content-Type": "application/json"})
        except httpx.TransportError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if r.is_success:
                report.requests += 1
                report.total_events += len(batch)
                report.per_source[source] += len(batch)
                rejected = r.headers.get("x-candor-rejected", "0")
                report.rejected += int(rejected) if rejected.isdigit() else 0
                return
            if r.status_code not in RETRY_STATUSES:
                hint = " Check the write key of that source." if r.status_code == 401 else ""
                raise DemoSendError(
                    f"the server refused a {source} batch of {len(batch)} events with HTTP {r.status_code}: "
                    f"{_server_error(r)}.{hint}"
                )
            problem = f"HTTP {r.status_code}: {_server_error(r)}"
            wait = _retry_after(r)
            if wait is not None:
                delay = wait
        if attempt == MAX_TRIES:
            break
        report.retries += 1
        time.sleep(delay)
    raise DemoSendError(
        f"gave up on a {source} batch after {MAX_TRIES} tries to {url}; last answer: {problem}. "
        "Is the server running and healthy?"
    )


def send(
    data: DemoData,
    base_url: str,
    write_keys: dict[str, str],
    *,
    batch_size: int = 100,
    progress: bool = True,
    client: httpx.Client | None = None,
) -> SendReport:
    """Post every message to ``{base_url}/v1/batch`` as an SDK would, one source's write key per batch.

    Batches hold at most ``batch_size`` messages (and never more than 2,500 or 500 KB), interleaved
    across sources roughly in time order. Connection failures, 429 and 5xx are retried with backoff
    (honouring Retry-After), at most 5 tries. Any other error raises :class:`DemoSendError` with the
    server's message. Pass ``client`` to send through your own ``httpx.Client``, for example one bound
    to an app in tests. Without it, a client is made that retries failed connects.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if not 1 <= batch_size <= MAX_BATCH_ITEMS:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_ITEMS}, not {batch_size}")
    missing = [s for s, events in data.batches.items() if events and not write_keys.get(s)]
    if missing:
        raise ValueError(f"no write key for source(s) {', '.join(missing)}; create one source per name in SOURCES")
    url = f"{base_url.rstrip('/')}/v1/batch"
    report = SendReport()
    own = client is None
    http = client or httpx.Client(
        timeout=httpx.Timeout(30.0, connect=10.0),
        transport=httpx.HTTPTransport(retries=3),
        headers={"User-Agent": "candor-demo"},
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, disable=not progress, transient=True) as bar:
            task = bar.add_task("Sending demo events", total=data.total_events)
            for source, batch in _chunks(data.batches, batch_size):
                _post(http, url, source, write_keys[source], batch, report)
                bar.advance(task, len(batch))
    finally:
        if own:
            http.close()
    return report


# -- the loyalty programme ---------------------------------------------------------------------------
GENRES_OFFER = {
    "name": "favourite-genres",
    "title": "Your favourite genres",
    "ask": "Tell us the genres you like best, and we will show you more of them.",
    "fields": ["favouriteGenres"],
    "category": "behavioural",
    "purposes": ["personalization"],
    "points": 200,
}


def enrol(
    data: DemoData,
    base_url: str,
    token: str,
    *,
    share: float = 0.4,
    client: httpx.Client | None = None,
) -> dict[str, int]:
    """Enrol some card holders with an online account in the loyalty programme through the public API
    (they saw the notice of financial incentive and opted in), open the genres offer and let half of the
    members answer it. Running it again changes nothing (joins and answers are refused as duplicates)."""
    rng = random.Random(data.seed * 7919 + 1)
    base = base_url.rstrip("/")
    headers = {"Authorization": f"Bearer {token}"}
    own = client is None
    http = client or httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0), headers={"User-Agent": "candor-demo"})
    out = {"members": 0, "offers_accepted": 0, "skipped": 0}

    def call(method: str, path: str, body: Any = None, ok: tuple[str, ...] = ()) -> httpx.Response | None:
        r = http.request(method, f"{base}{path}", json=body, headers=headers)
        if r.status_code < 300:
            return r
        try:
            code = r.json().get("error", {}).get("code")
        except ValueError:
            code = None
        if code in ok:
            return None
        raise DemoSendError(f"{method} {path}: {_server_error(r)}")

    try:
        notice = call("GET", "/v1/loyalty/notice")
        notice_version = int(notice.json()["version"]) if notice is not None else 1
        ends = (datetime.now(UTC) + timedelta(days=60)).isoformat()
        call("POST", "/v1/loyalty/offers", {**GENRES_OFFER, "ends": ends}, ok=("conflict",))
        for p in data.truth:
            if p.card is None or p.user_id is None or rng.random() >= share:
                continue
            who = {"userId": p.user_id}
            joined = call(
                "POST",
                "/v1/loyalty/members",
                {**who, "noticeVersion": notice_version},
                ok=("already_member", "not_found"),
            )
            if joined is None:
                out["skipped"] += 1
                continue
            out["members"] += 1
            if p.genres and rng.random() < 0.5:
                answer = {**who, "values": {"favouriteGenres": sorted(p.genres)[:MAX_GENRES]}}
                if call("POST", "/v1/loyalty/offers/favourite-genres/accept", answer, ok=("already_accepted",)):
                    out["offers_accepted"] += 1
        call("POST", "/v1/loyalty/earn")
    finally:
        if own:
            http.close()
    return out


MAX_GENRES = 5
