"""The records of processing activities (GDPR Art. 30(1)), generated from configuration.

Nothing here is typed by hand: the controller comes from ``CANDOR_CONTROLLER*`` and
``CANDOR_DPO_CONTACT``, the activities and their lawful bases from the purpose taxonomy, the events
each purpose covers from the tracking plan, the categories of personal data from the store's schema
(and from registered sources: the data dictionary, when it lands), recipients from the mail server
setting and registered destinations, retention from the retention rules, and security measures from
what the running configuration actually does. ``build`` gives JSON; ``render_html`` the same as a page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from candor import __version__, retention
from candor.store import now_ms

# Categories of personal data Candor keeps, where, and how (the data dictionary refines these per field).
DATA_CATEGORIES: dict[str, dict[str, Any]] = {
    "identifiers": {
        "description": "userId, anonymousId, email, phone, external ids (loyalty card, CRM id)",
        "stored_as": "keyed HMAC-SHA256 pseudonyms (identifiers, identity_edges, match_keys)",
    },
    "contact_details": {
        "description": "email address, phone number, postal address",
        "stored_as": "sealed under the person's own data key (AES-256-GCM); HMAC for do-not-contact lists",
    },
    "profile_traits": {
        "description": "name, birthday, address and other traits sent with identify calls or imports",
        "stored_as": "sealed under the person's own data key",
    },
    "behavioural_events": {
        "description": "pages viewed, screens, tracked actions with their properties and time",
        "stored_as": "event rows; declared personal properties sealed, the rest in clear without identifiers",
    },
    "device_and_network": {
        "description": "IP address, user agent, device identifiers, page URLs and referrers",
        "stored_as": "sealed with the event; the full IP address sealed apart (event_ips) for its retention, "
        "analytics see it truncated (IPv4 /24, IPv6 /48)",
    },
    "consent_records": {
        "description": "choices and signals (banner, TCF, GPP, GPC) with the notice version and proof",
        "stored_as": "append-only ledger keyed by subject",
    },
    "segment_and_campaign_history": {
        "description": "segment memberships over time, messages sent or skipped with the reason",
        "stored_as": "pseudonymous rows (segment_members, sends)",
    },
    "privacy_requests": {
        "description": "data-subject requests, their verification and outcome",
        "stored_as": "pseudonym and states; the requester's contact sealed under the request's own key",
    },
}
# What each kind of purpose processes.
_CHANNEL_CATEGORIES = [
    "identifiers",
    "contact_details",
    "profile_traits",
    "consent_records",
    "segment_and_campaign_history",
]
_EVENT_CATEGORIES = ["identifiers", "behavioural_events", "device_and_network", "consent_records"]

SUBJECT_CATEGORIES = [
    {"name": "customers", "description": "people who bought from or signed up with the brand"},
    {"name": "visitors", "description": "people using the brand's sites, apps and stores (possibly anonymous)"},
    {"name": "requesters", "description": "people who make a data-subject request"},
]

READ_SCOPES = frozenset({"pii:read", "profiles:read", "profiles:export"})
RecipientSource = Callable[[Any], list[dict[str, Any]]]
CategorySource = Callable[[Any], dict[str, dict[str, Any]]]
RECIPIENT_SOURCES: list[RecipientSource] = []
CATEGORY_SOURCES: list[CategorySource] = []


def register_recipients(source: RecipientSource) -> None:
    """Add recipients (channels, destinations): ``source(runtime) -> [{"name", "purposes", "where"}, ...]``."""
    if source not in RECIPIENT_SOURCES:
        RECIPIENT_SOURCES.append(source)


def register_categories(source: CategorySource) -> None:
    """Add or refine data categories (the data dictionary): ``source(runtime) -> {name: {...}}``."""
    if source not in CATEGORY_SOURCES:
        CATEGORY_SOURCES.append(source)


def _recipients(rt: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if rt.settings.smtp_url:
        host = urlsplit(rt.settings.smtp_url).hostname or "?"
        out.append(
            {
                "name": f"mail server {host}",
                "kind": "processor (email delivery)",
                "purposes": sorted(
                    [p.name for p in rt.taxonomy.purposes.values() if p.channel == "email"] + ["necessary"]
                ),
                "data": ["contact_details", "profile_traits (personalised messages, with personalization consent)"],
            }
        )
    for source in RECIPIENT_SOURCES:
        out.extend(source(rt))
    from candor.auth import ROLES

    out.append(
        {
            "name": "staff of the controller",
            "kind": "internal",
            "purposes": ["all of the above, by role"],
            "data": [
                f"{role}: " + ", ".join(sorted(scopes & READ_SCOPES))
                for role, scopes in ROLES.items()
                if scopes & READ_SCOPES
            ],
        }
    )
    return out


def _security(rt: Any) -> list[str]:
    s = rt.settings
    measures = [
        "Identifiers pseudonymised with keyed HMAC-SHA256 (versioned keys, rotation with a window)",
        "Personal values encrypted at rest with AES-256-GCM under a data key per person, wrapped by the master "
        f"key (in force: {', '.join(rt.vault.kek_ids)})",
        "Erasure by crypto-shredding (the person's key is destroyed) followed by a purge of every store, "
        "re-applied to restored backups from a journal kept outside the database",
        "Hash-chained audit log of consent changes, rights steps, merges and splits, exports and staff reads of "
        f"plaintext, with Ed25519-signed checkpoints every {s.audit_checkpoint_seconds} s",
        "Roles and scopes on every route; staff tokens and write keys stored as SHA-256 hashes; passwords as argon2id",
        f"Rate limits: {s.rate_collect_per_key} per write key, {s.rate_auth_failures_per_ip} failed logins per address",
        "Logs without personal values, query strings, client addresses or exception texts",
        "Backups: one archive with checksums and a MAC under the installation key; restores refuse foreign or "
        "altered archives",
        "Consent checked before anything is stored, and again by can_use before every use",
    ]
    if s.is_sqlite:
        measures.append("SQLite with secure_delete (erased rows are overwritten) and synchronous commits")
    else:
        measures.append("PostgreSQL: use TLS to the database and encrypted storage (the operator's configuration)")
    measures.append(
        "Heavy jobs on Spark run with I/O encryption on (shuffle files, spills and cached blocks encrypted)"
    )
    return measures


def build(rt: Any, *, now: int | None = None) -> dict[str, Any]:
    """The records of processing as a JSON-ready dict."""
    s = rt.settings
    rules = retention.rules(rt)
    by_target = {r.target: r for r in rules}
    default_events = by_target.get("raw_events")
    plan = rt.plan
    activities = []
    for p in rt.taxonomy.purposes.values():
        events_for = sorted(
            [f"{t} calls" for t, ps in plan.types.items() if p.name in ps]
            + [f"'{e}' events" for e, ps in plan.events.items() if p.name in ps]
        )
        if p.channel:
            categories = list(_CHANNEL_CATEGORIES)
        elif events_for:
            categories = list(_EVENT_CATEGORIES)
        else:
            categories = ["identifiers", "profile_traits", "consent_records"]
        rule = by_target.get(f"purpose:{p.name}") or (default_events if events_for else None)
        activities.append(
            {
                "purpose": p.name,
                "description": p.description,
                "lawful_basis": {j: p.basis_in(j) for j in ("EU", "UK", "US-CA", "US", "OTHER")},
                "direct_marketing": p.direct_marketing,
                "channel": p.channel,
                "events": events_for,
                "data_categories": categories,
                "retention": (rule.as_dict() if rule else {"period": "while the person's profile exists"}),
            }
        )
    table: dict[str, dict[str, Any]] = {k: dict(v) for k, v in DATA_CATEGORIES.items()}
    for source in CATEGORY_SOURCES:
        for name, spec in source(rt).items():
            table[name] = {**table.get(name, {}), **spec}
    for name in by_target:
        if name in retention.CATEGORIES:
            table.setdefault(name, {"description": retention.CATEGORIES[name]})
    from candor.dictionary import processing_records

    with rt.store.engine.connect() as conn:
        dictionary = processing_records(conn, rt.taxonomy.names())
    return {
        "format": "candor-ropa/1",
        "generated_ms": now_ms() if now is None else now,
        "candor_version": __version__,
        "controller": {
            "name": s.controller or "(set CANDOR_CONTROLLER)",
            "contact": s.controller_contact or "(set CANDOR_CONTROLLER_CONTACT)",
            "data_protection_officer": s.dpo_contact or "(set CANDOR_DPO_CONTACT)",
        },
        "default_jurisdiction": s.default_jurisdiction,
        "activities": activities,
        "data_subjects": SUBJECT_CATEGORIES,
        "data_categories": table,
        # per data category of the data dictionary: the fields declared, sources, retention, special or not
        "data_dictionary": dictionary,
        "recipients": _recipients(rt),
        "transfers": "Candor itself sends personal data only to the recipients listed; where each of them processes "
        "it decides whether a transfer outside the EEA takes place and which safeguard applies.",
        "retention": [
            {**r.as_dict(), "covers": retention.CATEGORIES.get(r.target, f"events needed for {r.purpose}")}
            for r in rules
        ],
        "security_measures": _security(rt),
    }


def render_html(doc: dict[str, Any]) -> str:
    """The records as one self-contained, autoescaped HTML page (print it to keep it on paper)."""
    from candor.web.common import TEMPLATES

    return TEMPLATES.get_template("ropa.html").render(doc=doc)
