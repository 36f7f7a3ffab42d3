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
WITH recs AS (
    SELECT subject_id, seq, ts_ms, expires_ms, source, objection, confirmed, notice_id, notice_version,
           jurisdiction, CAST(granted AS VARCHAR[]) AS g, CAST(denied AS VARCHAR[]) AS d
    FROM consent_records
),
ev AS (
    SELECT subject_id, seq, ts_ms, expires_ms, source, confirmed, notice_id, notice_version,
           unnest(g) AS purpose, FALSE AS is_deny, FALSE AS objection
    FROM recs
    UNION ALL
    SELECT subject_id, seq, ts_ms, NULL, source, confirmed, notice_id, notice_version,
           unnest(d) AS purpose, TRUE AS is_deny, objection
    FROM recs
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
    SELECT ev.subject_id, ev.purpose, ev.ts_ms, ev.seq, ev.is_deny
    FROM ev
    LEFT JOIN gpc ON gpc.subject_id = ev.subject_id AND gpc.purpose = ev.purpose
    LEFT JOIN reconsent r ON r.notice_id = ev.notice_id
    WHERE ev.is_deny OR (
        (ev.expires_ms IS NULL OR ev.expires_ms > $now)
        AND (ev.notice_id IS NULL OR ev.notice_version IS NULL OR r.min_version IS NULL
             OR ev.notice_version >= r.min_version)
        AND NOT (gpc.first_gpc IS NOT NULL AND ev.ts_ms >= gpc.first_gpc AND NOT ev.confirmed)
    )
),
latest AS (
    SELECT subject_id, purpose, arg_max(NOT is_deny, (ts_ms, is_deny::INTEGER, seq)) AS granted
    FROM valid GROUP BY subject_id, purpose
),
objected AS (
    SELECT DISTINCT subject_id, purpose FROM ev WHERE is_deny AND objection
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
suppressed AS (
    SELECT DISTINCT i.subject_id, sp.channel
    FROM identifiers i JOIN suppressions sp ON sp.hash = i.contact_hash
),
purposes AS (
    SELECT * FROM (VALUES {purposes}) AS t(purpose, channel, marketing)
),
bases AS (
    SELECT * FROM (VALUES {bases}) AS t(purpose, j, basis)
),
decided AS (
    SELECT p.purpose,
        CASE
            WHEN pe.restricted AND p.purpose <> 'necessary' THEN 'restricted'
            WHEN p.marketing AND (o1.subject_id IS NOT NULL OR o2.subject_id IS NOT NULL) THEN 'not_consented'
            WHEN b.basis IN ('contract', 'legal_obligation') THEN 'allowed'
            WHEN l.granted IS NOT NULL THEN CASE WHEN l.granted THEN 'allowed' ELSE 'not_consented' END
            WHEN b.basis = 'consent' OR b.basis IS NULL THEN 'not_consented'
            ELSE 'allowed'
        END AS outcome,
        p.channel, pe.subject_id
    FROM people pe
    CROSS JOIN purposes p
    LEFT JOIN bases b ON b.purpose = p.purpose AND b.j = pe.j
    LEFT JOIN latest l ON l.subject_id = pe.subject_id AND l.purpose = p.purpose
    LEFT JOIN objected o1 ON o1.subject_id = pe.subject_id AND o1.purpose = p.purpose
    LEFT JOIN objected o2 ON o2.subject_id = pe.subject_id AND o2.purpose = 'marketing'
)
SELECT d.purpose,
    count(*) FILTER (WHERE d.outcome = 'allowed' AND s1.subject_id IS NULL AND s2.subject_id IS NULL) AS usable,
    count(*) FILTER (WHERE d.outcome = 'not_consented') AS not_consented,
    count(*) FILTER (WHERE d.outcome = 'allowed' AND (s1.subject_id IS NOT NULL OR s2.subject_id IS NOT NULL))
        AS suppressed,
    count(*) FILTER (WHERE d.outcome = 'restricted') AS restricted
FROM decided d
LEFT JOIN suppressed s1 ON d.channel IS NOT NULL AND s1.subject_id = d.subject_id AND s1.channel = d.channel
LEFT JOIN suppressed s2 ON d.channel IS NOT NULL AND s2.subject_id = d.subject_id AND s2.channel = 'all'
GROUP BY d.purpose
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
            "usable": int(usable),
            "not_consented": int(not_consented),
            "suppressed": int(suppressed),
            "restricted": int(restricted),
        }
    return out
