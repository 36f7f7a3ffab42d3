"""Consent signals that arrive with events, and the tracking plan that says what each event needs.

Signals the ecosystem already sends are read from every event: Segment's
``context.consent.categoryPreferences``, a TCF string (``context.consent.tcString``), a GPP string
(``context.consent.gppString``) and the ``Sec-GPC`` request header. An invalid TCF or GPP string
counts as no consent (fail closed). A signal that says no always wins over one that says yes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from candor.consent.purposes import GPC_PURPOSES

SEGMENT_CONSENT_EVENT = "Segment Consent Preference Updated"

DEFAULT_TYPES: dict[str, tuple[str, ...]] = {
    "identify": (),
    "alias": (),
    "group": (),
    "page": ("analytics",),
    "screen": ("analytics",),
    "track": ("analytics",),
}
# Events that record a contract or a legal duty are necessary processing, whatever the banner said.
DEFAULT_EVENTS: dict[str, tuple[str, ...]] = {
    "Order Completed": ("necessary",),
    "Order Refunded": ("necessary",),
    "Order Cancelled": ("necessary",),
    SEGMENT_CONSENT_EVENT: ("necessary",),
}


@dataclass(frozen=True)
class TrackingPlan:
    """Purposes each event needs before it may be stored with identifiers."""

    types: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_TYPES))
    events: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_EVENTS))

    def required(self, mtype: str, event: str | None) -> tuple[str, ...]:
        if event is not None and event in self.events:
            return self.events[event]
        return self.types.get(mtype, ())

    @classmethod
    def load(cls, path: str | Path | None) -> TrackingPlan:
        if not path:
            return cls()
        data: Any = json.loads(Path(path).read_text())
        types = dict(DEFAULT_TYPES)
        events = dict(DEFAULT_EVENTS)
        for k, v in (data.get("types") or {}).items():
            types[k] = tuple(v)
        for k, v in (data.get("events") or {}).items():
            events[k] = tuple(v)
        return cls(types, events)


def _tcf_signals(tc_string: str, mapping: dict[int, str] | None) -> dict[str, bool]:
    from candor.consent import tcf

    try:
        decoded = tcf.decode(tc_string)
    except ValueError:
        return dict.fromkeys(set((mapping or tcf.DEFAULT_PURPOSE_MAP).values()), False)
    return dict(tcf.purposes_allowed(decoded, mapping or tcf.DEFAULT_PURPOSE_MAP))


def _gpp_signals(gpp_string: str) -> dict[str, bool]:
    from candor.consent import gpp

    try:
        decoded = gpp.decode(gpp_string)
    except ValueError:
        return dict.fromkeys(GPC_PURPOSES, False)
    return dict.fromkeys(gpp.opt_outs(decoded), False)


def event_signals(
    context: dict[str, Any], gpc_header: bool, tcf_map: dict[int, str] | None = None
) -> tuple[dict[str, bool], str | None]:
    """Purpose → yes/no from the signals in one event (absent purposes: no signal), and the raw
    TCF or GPP string when there was one (kept as proof)."""
    out: dict[str, bool] = {}
    raw: str | None = None

    def merge(values: dict[str, bool]) -> None:
        for p, ok in values.items():
            out[p] = out.get(p, True) and ok

    consent = context.get("consent")
    if isinstance(consent, dict):
        prefs = consent.get("categoryPreferences")
        if isinstance(prefs, dict):
            merge({str(k): v is True for k, v in prefs.items()})
        tc = consent.get("tcString") or consent.get("tcfString")
        if isinstance(tc, str) and tc:
            raw = tc[:4096]
            merge(_tcf_signals(tc, tcf_map))
        gp = consent.get("gppString")
        if isinstance(gp, str) and gp:
            raw = gp[:4096]
            merge(_gpp_signals(gp))
    if gpc_header:
        merge(dict.fromkeys(GPC_PURPOSES, False))
    return out, raw
