"""Purposes of processing, with a plain-language description and a lawful basis per jurisdiction.

The default taxonomy below can be extended (never weakened silently) with a JSON file named by
``CANDOR_PURPOSES_FILE``: ``{"purposes": {"name": {"description": "...", "basis": {"EU": "consent",
...}}}}``. docs/privacy-model.md explains each purpose and basis.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Lawful bases. "consent" means nothing happens without an explicit grant (opt-in); the others allow
# processing until the person objects or opts out (opt-out), except "contract" and "legal_obligation",
# which a choice cannot switch off (only a restriction can).
CONSENT = "consent"
LEGITIMATE_INTEREST = "legitimate_interest"
CONTRACT = "contract"
LEGAL_OBLIGATION = "legal_obligation"
BASES = (CONSENT, LEGITIMATE_INTEREST, CONTRACT, LEGAL_OBLIGATION)

JURISDICTIONS = {
    "EU": "European Union and EEA (GDPR, ePrivacy)",
    "UK": "United Kingdom (UK GDPR, PECR)",
    "US-CA": "California (CCPA/CPRA)",
    "US": "Other US states (CAN-SPAM, TCPA, state privacy laws)",
    "OTHER": "Everywhere else (treated with the strictest basis)",
}


@dataclass(frozen=True)
class Purpose:
    name: str
    description: str
    basis: dict[str, str] = field(default_factory=dict)
    channel: str | None = None  # marketing channel this purpose sends on, if any

    def basis_in(self, jurisdiction: str) -> str:
        return self.basis.get(jurisdiction) or self.basis.get("OTHER") or CONSENT

    @property
    def direct_marketing(self) -> bool:
        return self.name.startswith("marketing.")


def _p(name: str, description: str, eu: str, us_ca: str, us: str, channel: str | None = None) -> Purpose:
    return Purpose(
        name,
        description,
        {"EU": eu, "UK": eu, "US-CA": us_ca, "US": us, "OTHER": eu},
        channel,
    )


LI = LEGITIMATE_INTEREST
DEFAULT_PURPOSES: dict[str, Purpose] = {
    p.name: p
    for p in (
        _p(
            "necessary",
            "What the service cannot work without: your account, orders, security.",
            CONTRACT,
            CONTRACT,
            CONTRACT,
        ),
        _p("analytics", "Measuring how our site, app and stores are used, to improve them.", CONSENT, LI, LI),
        _p("personalization", "Tailoring content, offers and recommendations to you.", CONSENT, LI, LI),
        _p("advertising", "Showing you ads based on what you do across sites and apps.", CONSENT, LI, LI),
        _p("sale_sharing", "Selling or sharing your data with third parties for their own use.", CONSENT, LI, LI),
        _p("profiling", "Building a profile to predict your interests or behaviour.", CONSENT, LI, LI),
        _p(
            "sensitive",
            "Using sensitive information about you (precise location, health, beliefs) beyond what the "
            "service needs.",
            CONSENT,
            LI,
            CONSENT,
        ),
        _p(
            "loyalty",
            "Running your loyalty membership: points for purchases and for what you choose to tell us, "
            "tiers and member prices.",
            CONSENT,
            CONSENT,
            CONSENT,
        ),
        _p("marketing.email", "Sending you marketing emails.", CONSENT, LI, LI, "email"),
        _p("marketing.sms", "Sending you marketing text messages.", CONSENT, CONSENT, CONSENT, "sms"),
        _p("marketing.phone", "Calling you with offers.", CONSENT, CONSENT, CONSENT, "phone"),
        _p("marketing.post", "Sending you offers by post.", LI, LI, LI, "post"),
        _p("marketing.push", "Sending you push notifications with offers.", CONSENT, CONSENT, CONSENT, "push"),
    )
}
# Explicit opt-in per special category (GDPR Art. 9(2)(a), CPRA sensitive personal information): consent
# everywhere. ``can_use(..., categories=...)`` requires them for data of those categories (dictionary.py).
SENSITIVE_CATEGORIES: dict[str, str] = {
    "precise_location": "your precise location (finer than about 1 km)",
    "health": "information about your health",
    "religion": "your religious or philosophical beliefs",
    "ethnicity": "your racial or ethnic origin",
    "sexual_orientation": "your sex life or sexual orientation",
    "political_opinion": "your political opinions",
    "trade_union": "your trade-union membership",
    "biometric": "your biometric data",
    "genetic": "your genetic data",
    "government_id": "your government identifiers (social security, passport, licence numbers)",
    "communications": "the contents of your messages, reviews and comments",
    "children": "information about your children",
}
for _cat, _what in SENSITIVE_CATEGORIES.items():
    DEFAULT_PURPOSES[f"sensitive.{_cat}"] = _p(
        f"sensitive.{_cat}",
        f"Keeping and using {_what}, only because you explicitly agreed.",
        CONSENT,
        CONSENT,
        CONSENT,
    )
# Purposes a Global Privacy Control signal or a US opt-out switches off (CCPA/CPRA).
GPC_PURPOSES = frozenset({"sale_sharing", "advertising"})


class UnknownPurpose(ValueError):
    pass


class Taxonomy:
    def __init__(self, purposes: dict[str, Purpose] | None = None) -> None:
        self.purposes = dict(purposes or DEFAULT_PURPOSES)

    @classmethod
    def load(cls, path: str | Path | None) -> Taxonomy:
        purposes = dict(DEFAULT_PURPOSES)
        if path:
            data: Any = json.loads(Path(path).read_text())
            for name, spec in (data.get("purposes") or {}).items():
                if name in purposes and "basis" in spec:
                    for j, b in spec["basis"].items():
                        if b not in BASES:
                            raise ValueError(f"{path}: purpose {name}: unknown lawful basis {b!r}")
                        if purposes[name].basis_in(j) == CONSENT and b != CONSENT:
                            raise ValueError(f"{path}: purpose {name} needs consent in {j}; a file cannot relax that")
                basis = {**(purposes[name].basis if name in purposes else {}), **spec.get("basis", {})}
                if not basis:
                    basis = {"OTHER": CONSENT}
                purposes[name] = Purpose(
                    name,
                    spec.get("description") or (purposes[name].description if name in purposes else name),
                    basis,
                    spec.get("channel"),
                )
        return cls(purposes)

    def get(self, name: str) -> Purpose:
        p = self.purposes.get(name)
        if p is None:
            raise UnknownPurpose(f"unknown purpose {name!r}; known purposes: {', '.join(self.purposes)}")
        return p

    def names(self) -> list[str]:
        return list(self.purposes)

    def channel_purpose(self, channel: str) -> str:
        for p in self.purposes.values():
            if p.channel == channel:
                return p.name
        raise UnknownPurpose(f"no marketing purpose for channel {channel!r}")
