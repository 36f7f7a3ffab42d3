"""The consent resolver: from a subject's ledger records to a yes/no for one purpose, with reasons
and the records that prove it. Pure and deterministic; the rules, in order:

1. A restricted subject (GDPR Art. 18) is stored, not used: every purpose but ``necessary`` is denied.
2. An objection to direct marketing is absolute (GDPR Art. 21(3)): no later grant overrides it.
3. Purposes whose basis is contract or legal obligation are allowed (a choice cannot switch them off).
4. The latest explicit choice about the purpose wins. At the same instant, a withdrawal beats a
   grant. A grant that has expired, or was given under a notice version that has since required
   re-consent, counts as no grant.
5. After a Global Privacy Control signal (``Sec-GPC: 1``) or a GPP/US opt-out, a grant of
   ``sale_sharing`` or ``advertising`` counts only if the person confirmed it explicitly.
6. With no choice on record: allowed when the basis is legitimate interest (opt-out), denied when it
   is consent (opt-in).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from candor.consent.purposes import CONSENT, CONTRACT, GPC_PURPOSES, LEGAL_OBLIGATION, Purpose

OPT_OUT_SIGNALS = frozenset({"gpc", "gpp"})


@dataclass(frozen=True)
class Record:
    seq: int
    ts_ms: int
    granted: frozenset[str] = frozenset()
    denied: frozenset[str] = frozenset()
    objection: bool = False
    source: str = "api"
    expires_ms: int | None = None
    confirmed: bool = False
    notice_id: str | None = None
    notice_version: int | None = None
    jurisdiction: str | None = None


@dataclass(frozen=True)
class Decision:
    purpose: str
    allowed: bool
    reasons: tuple[str, ...]
    proof: tuple[int, ...] = ()
    basis: str = CONSENT
    jurisdiction: str = "EU"
    # True when a refusal, objection, opt-out signal or restriction decided (not a mere absence)
    explicit: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "purpose": self.purpose,
            "allowed": self.allowed,
            "reasons": list(self.reasons),
            "proof": list(self.proof),
            "basis": self.basis,
            "jurisdiction": self.jurisdiction,
            "explicit": self.explicit,
        }


@dataclass
class Context:
    """What the resolver needs besides the records."""

    jurisdiction: str = "EU"
    now_ms: int = 0
    restricted: bool = False
    # notice id → the newest version that required re-consent; grants under older versions are void
    reconsent_from: dict[str, int] = field(default_factory=dict)


def jurisdiction_of(records: Iterable[Record], default: str) -> str:
    """The jurisdiction of the most recent record that states one, else the default."""
    best = None
    for r in records:
        if r.jurisdiction and (best is None or (r.ts_ms, r.seq) >= (best.ts_ms, best.seq)):
            best = r
    return best.jurisdiction if best and best.jurisdiction else default


def _mentions(r: Record, name: str) -> bool:
    return name in r.granted or name in r.denied


def resolve(records: Iterable[Record], purpose: Purpose, ctx: Context) -> Decision:
    name = purpose.name
    basis = purpose.basis_in(ctx.jurisdiction)

    def decide(allowed: bool, reason: str, proof: tuple[int, ...] = (), explicit: bool = False) -> Decision:
        return Decision(name, allowed, (reason,), proof, basis, ctx.jurisdiction, explicit)

    recs = sorted(records, key=lambda r: (r.ts_ms, r.seq))
    if ctx.restricted and name != "necessary":
        return decide(False, "processing is restricted at the person's request (GDPR Art. 18)", explicit=True)
    if purpose.direct_marketing:
        objections = [r.seq for r in recs if r.objection and (name in r.denied or "marketing" in r.denied)]
        if objections:
            return decide(
                False,
                "the person objected to direct marketing; an objection is absolute (GDPR Art. 21(3))",
                tuple(objections),
            )
    if basis in (CONTRACT, LEGAL_OBLIGATION):
        return decide(True, f"lawful basis: {basis.replace('_', ' ')}; a choice cannot switch it off")

    gpc_seen = False
    latest: Record | None = None
    latest_grant = False
    for r in recs:
        if name in GPC_PURPOSES and r.source in OPT_OUT_SIGNALS and name in r.denied:
            gpc_seen = True
        if not _mentions(r, name):
            continue
        if name in r.denied:
            latest, latest_grant = r, False
            continue
        # a grant: does it count?
        if r.expires_ms is not None and r.expires_ms <= ctx.now_ms:
            continue
        if r.notice_id and r.notice_version is not None and r.notice_version < ctx.reconsent_from.get(r.notice_id, 0):
            continue
        if name in GPC_PURPOSES and gpc_seen and not r.confirmed:
            continue
        # same instant as the current decision and that one was a withdrawal: withdrawal stays
        if latest is not None and not latest_grant and latest.ts_ms == r.ts_ms:
            continue
        latest, latest_grant = r, True

    if latest is not None:
        if latest_grant:
            return decide(True, f"granted via {latest.source}", (latest.seq,))
        what = (
            "opted out via Global Privacy Control"
            if latest.source in OPT_OUT_SIGNALS
            else f"refused via {latest.source}"
        )
        return decide(False, what, (latest.seq,), explicit=True)
    if gpc_seen:
        return decide(False, "opted out via Global Privacy Control; no confirmed opt-in since", explicit=True)
    if basis == CONSENT:
        expired = [r.seq for r in recs if name in r.granted]
        if expired:
            return decide(
                False, "the consent given has expired or predates a notice that requires re-consent", tuple(expired)
            )
        return decide(False, "no consent recorded, and this purpose needs consent here")
    return decide(True, "legitimate interest; no objection or opt-out recorded")
