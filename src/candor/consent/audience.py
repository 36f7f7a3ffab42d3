"""Audience counts per purpose on the analytics engine (DuckDB): the bulk form of ``can_use``.

The SQL below applies the resolver's rules (consent/resolver.py) to every person at once: restriction,
absolute objection to direct marketing, contract and legal-obligation bases, the latest valid choice
with withdrawals winning at the same instant, expiry, re-consent notices, Global Privacy Control, and
the basis in the person's jurisdiction when they made no choice. A test checks it against the
resolver itself on random ledgers.
"""

from __future__ import annotations

from typing import Any

from candor.analytics import Analytics
from candor.consent.ledger import Consent
from candor.consent.purposes import GPC_PURPOSES
from candor.store import now_ms

SQL = """
WITH purposes AS (
    SELECT * FROM (VALUES {purposes}) AS t(purpose, channel, marketing)
),
bases AS (
    SELECT * FROM (VALUES {bases}) AS t(purpose, j, basis)
),
recs AS (
    SELECT subject_id, seq, ts_ms, expires_ms, source, objection, confirmed, notice_id, notice_version,
           jurisdiction, CAST(granted AS VARCHAR[]) AS g, CAST(denied AS VARCHAR[]) AS d
    FROM consent_records
),
raw AS (
    SELECT subject_id, seq, ts_ms, expires_ms, source, confirmed, notice_id, notice_version,
           unnest(g) AS purpose, FALSE AS is_deny, FALSE AS objection
    FROM recs
    UNION ALL
    SELECT subject_id, seq, ts_ms, NULL, source, confirmed, notice_id, notice_version,
           unnest(d) AS purpose, TRUE AS is_deny, objection
    FROM recs
),
-- an objection to "marketing" is an objection to every marketing channel ("marketing" alone means
-- nothing else: it is not a purpose)
ev AS (
    SELECT r.subject_id, r.seq, r.ts_ms, r.expires_ms, r.source, r.confirmed, r.notice_id, r.notice_version,
           CASE WHEN r.purpose = 'marketing' THEN p.purpose ELSE r.purpose END AS purpose, r.is_deny, r.objection
    FROM raw r LEFT JOIN purposes p ON r.purpose = 'marketing' AND r.objection AND p.marketing
    WHERE r.purpose <> 'marketing' OR p.purpose IS NOT NULL
),
gpc AS (
    SELECT subject_id, purpose, min(ts_ms) AS first_gpc
    FROM ev WHERE is_deny AND source IN ('gpc', 'gpp') AND purpose IN (SELECT unnest($gpc_purposes))
    GROUP BY subject_id, purpose
),
reconsent AS (
    SELECT notice_id, max(version) AS min_version FROM notices WHERE requires_reconsent GROUP BY notice_id
),
valid AS (
    SELECT ev.subject_id, ev.purpose, ev.ts_ms, ev.seq, ev.is_deny, ev.objection AND p.marketing AS absolute
    FROM ev
    JOIN purposes p ON p.purpose = ev.purpose
    LEFT JOIN gpc ON gpc.subject_id = ev.subject_id AND gpc.purpose = ev.purpose
    LEFT JOIN reconsent r ON r.notice_id = ev.notice_id
    WHERE ev.is_deny OR (
        (ev.expires_ms IS NULL OR ev.expires_ms > $now)
        AND (ev.notice_id IS NULL OR ev.notice_version IS NULL OR r.min_version IS NULL
             OR ev.notice_version >= r.min_version)
        AND NOT (gpc.first_gpc IS NOT NULL AND ev.ts_ms >= gpc.first_gpc AND NOT ev.confirmed)
    )
),
-- the choice that decides: an absolute objection first, else the latest, a withdrawal winning ties
latest AS (
    SELECT subject_id, purpose,
           -- one 128-bit sort key (objection, time, withdrawal, record number): faster than a struct
           arg_max(NOT is_deny, absolute::HUGEINT * (1::HUGEINT << 100) + ts_ms::HUGEINT * (1::HUGEINT << 40)
                                + is_deny::HUGEINT * (1::HUGEINT << 39) + seq) AS granted
    FROM valid GROUP BY subject_id, purpose
),
juris AS (
    SELECT subject_id, arg_max(jurisdiction, (ts_ms, seq)) AS j
    FROM recs WHERE jurisdiction IS NOT NULL GROUP BY subject_id
),
people AS (
    SELECT s.subject_id, s.state = 'restricted' AS restricted, coalesce(juris.j, $default_j) AS j
    FROM subjects s LEFT JOIN juris USING (subject_id)
    WHERE s.state <> 'erased'
),
unusual AS (
    SELECT subject_id, state FROM subjects WHERE state <> 'active'
),
-- people with a choice about a purpose, with what it decides (joined with the small tables only)
chosen AS (
    SELECT l.purpose, coalesce(juris.j, $default_j) AS j, coalesce(u.state = 'restricted', FALSE) AS restricted,
           l.granted, l.subject_id
    FROM latest l LEFT JOIN juris USING (subject_id) LEFT JOIN unusual u USING (subject_id)
    WHERE u.state IS NULL OR u.state <> 'erased'
),
outcome_of AS (
    SELECT x.*, CASE
            WHEN x.restricted AND x.purpose <> 'necessary' THEN 'restricted'
            WHEN b.basis IN ('contract', 'legal_obligation') THEN 'allowed'
            WHEN x.granted IS NOT NULL THEN CASE WHEN x.granted THEN 'allowed' ELSE 'not_consented' END
            WHEN b.basis = 'consent' OR b.basis IS NULL THEN 'not_consented'
            ELSE 'allowed'
        END AS outcome
    FROM (
        SELECT purpose, j, restricted, granted, count(*) AS n FROM chosen GROUP BY ALL
        UNION ALL
        -- everyone else gets the default of their basis: all people minus those with a choice
        SELECT p.purpose, g.j, g.restricted, NULL AS granted, g.n - coalesce(c.n, 0) AS n
        FROM (SELECT j, restricted, count(*) AS n FROM people GROUP BY ALL) g
        CROSS JOIN purposes p
        LEFT JOIN (SELECT purpose, j, restricted, count(*) AS n FROM chosen GROUP BY ALL) c
            ON c.purpose = p.purpose AND c.j = g.j AND c.restricted = g.restricted
    ) x
    LEFT JOIN bases b ON b.purpose = x.purpose AND b.j = x.j
),
-- people on a do-not-contact list for the channel of a purpose they are otherwise usable for
suppressed_people AS (
    SELECT DISTINCT i.subject_id, sp.channel FROM identifiers i JOIN suppressions sp ON sp.hash = i.contact_hash
),
suppressed_usable AS (
    SELECT p.purpose, count(DISTINCT sp.subject_id) AS n
    FROM suppressed_people sp
    JOIN purposes p ON p.channel IS NOT NULL AND (sp.channel = p.channel OR sp.channel = 'all')
    JOIN people pe ON pe.subject_id = sp.subject_id
    LEFT JOIN latest l ON l.subject_id = sp.subject_id AND l.purpose = p.purpose
    LEFT JOIN bases b ON b.purpose = p.purpose AND b.j = pe.j
    WHERE NOT (pe.restricted AND p.purpose <> 'necessary')
      AND (b.basis IN ('contract', 'legal_obligation')
           OR (l.granted IS NULL AND b.basis NOT IN ('consent')) OR l.granted)
    GROUP BY p.purpose
)
SELECT o.purpose,
    coalesce(sum(o.n) FILTER (WHERE o.outcome = 'allowed'), 0) - coalesce(max(su.n), 0) AS usable,
    coalesce(sum(o.n) FILTER (WHERE o.outcome = 'not_consented'), 0) AS not_consented,
    coalesce(max(su.n), 0) AS suppressed,
    coalesce(sum(o.n) FILTER (WHERE o.outcome = 'restricted'), 0) AS restricted
FROM outcome_of o LEFT JOIN suppressed_usable su ON su.purpose = o.purpose
GROUP BY o.purpose
"""


def _lit(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return "'" + str(value).replace("'", "''") + "'"


def audience_counts(consent: Consent, analytics: Analytics) -> dict[str, dict[str, int]]:
    """Usable / not consented / suppressed / restricted people per purpose, computed in DuckDB."""
    from candor.consent.purposes import JURISDICTIONS

    taxonomy = consent.taxonomy.purposes.values()
    purposes = ", ".join(f"({_lit(p.name)}, {_lit(p.channel)}, {_lit(p.direct_marketing)})" for p in taxonomy)
    bases = ", ".join(f"({_lit(p.name)}, {_lit(j)}, {_lit(p.basis_in(j))})" for p in taxonomy for j in JURISDICTIONS)
    sql = SQL.format(purposes=purposes, bases=bases)
    con = analytics.connect()
    try:
        rows = con.execute(
            sql, {"now": now_ms(), "default_j": consent.default_jurisdiction, "gpc_purposes": sorted(GPC_PURPOSES)}
        ).fetchall()
    finally:
        con.close()
    out = {p.name: {"usable": 0, "not_consented": 0, "suppressed": 0, "restricted": 0} for p in taxonomy}
    for purpose, usable, not_consented, suppressed, restricted in rows:
        out[purpose] = {
            "usable": int(usable or 0),
            "not_consented": int(not_consented),
            "suppressed": int(suppressed),
            "restricted": int(restricted),
        }
    return out
