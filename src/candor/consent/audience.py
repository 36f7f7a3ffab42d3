"""Audience counts per purpose on the analytics engine (DuckDB): the bulk form of ``can_use``.

The SQL applies the resolver's rules (consent/resolver.py) to every person at once: restriction,
absolute objection to direct marketing, contract and legal-obligation bases, the latest valid choice
with withdrawals winning at the same instant, expiry, re-consent notices, Global Privacy Control, and
the basis in the person's jurisdiction when they made no choice.

It is written "wide": one row per person with one column per purpose (generated from the taxonomy),
so the ledger is read once and grouped by person, rather than by (person, purpose) pairs. A test
checks it against the resolver itself on random ledgers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from candor.analytics import Analytics
from candor.consent.ledger import Consent
from candor.consent.purposes import GPC_PURPOSES, JURISDICTIONS, Purpose
from candor.store import now_ms

TEMPLATE = """
WITH recs AS (
    SELECT subject_id, seq, ts_ms, expires_ms, source, objection, confirmed, notice_id, notice_version,
           jurisdiction, CAST(granted AS VARCHAR[]) AS g, CAST(denied AS VARCHAR[]) AS d
    FROM consent_records
),
reconsent AS (
    SELECT notice_id, max(version) AS min_version FROM notices WHERE requires_reconsent GROUP BY notice_id
),
-- the first GPC / GPP opt-out per person and purpose: later grants need an explicit confirmation
gpcs AS (
    SELECT subject_id, {gpc_firsts}
    FROM recs WHERE source IN ('gpc', 'gpp') GROUP BY subject_id
),
r2 AS (
    SELECT r.*, {gpc_cols},
           (r.notice_id IS NULL OR r.notice_version IS NULL OR rc.min_version IS NULL
            OR r.notice_version >= rc.min_version) AND (r.expires_ms IS NULL OR r.expires_ms > $now) AS fresh,
           r.objection AND list_contains(r.d, 'marketing') AS object_all
    FROM recs r LEFT JOIN gpcs USING (subject_id) LEFT JOIN reconsent rc ON rc.notice_id = r.notice_id
),
-- per person and purpose, the choice that decides: an absolute objection first, else the latest,
-- a withdrawal winning ties (one 128-bit sort key); NULL when there is no valid choice
per_subject AS (
    SELECT subject_id,
           arg_max(jurisdiction, ts_ms::HUGEINT * (1::HUGEINT << 40) + seq)
               FILTER (WHERE jurisdiction IS NOT NULL) AS j,
           {choices}
    FROM r2 GROUP BY subject_id
),
supp AS (
    SELECT i.subject_id, {supp_cols}
    FROM identifiers i JOIN suppressions sp ON sp.hash = i.contact_hash
    GROUP BY i.subject_id
),
people AS (
    SELECT s.subject_id AS person, s.state = 'restricted' AS restricted, coalesce(ps.j, $default_j) AS jj,
           ps.* EXCLUDE (subject_id, j), {supp_select}
    FROM subjects s LEFT JOIN per_subject ps USING (subject_id) LEFT JOIN supp USING (subject_id)
    WHERE s.state <> 'erased'
)
{final}
"""


def _lit(value: Any) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _outcome(i: int, p: Purpose) -> str:
    """SQL for the decision on purpose ``p`` (column set ``i``): allowed, not_consented or restricted."""
    cases = " ".join(f"WHEN {_lit(j)} THEN {_lit(p.basis_in(j))}" for j in JURISDICTIONS)
    basis = f"CASE jj {cases} ELSE {_lit(p.basis_in('OTHER'))} END"
    return (
        f"CASE WHEN restricted AND {_lit(p.name)} <> 'necessary' THEN 'restricted' "
        f"WHEN {basis} IN ('contract', 'legal_obligation') THEN 'allowed' "
        f"WHEN c_{i} IS NOT NULL THEN CASE WHEN c_{i} THEN 'allowed' ELSE 'not_consented' END "
        f"WHEN {basis} = 'consent' THEN 'not_consented' ELSE 'allowed' END"
    )


def allowed_sql(purpose: Purpose) -> str:
    """The query for the people (column ``person``) ``can_use`` allows ``purpose`` for, by the same rules."""
    return build_sql([purpose], allowed=True)[0]


# what ``profile_level`` reads besides the tables the audience query names
PROFILE_TABLES = ("profile_subjects",)


def profile_level(con: Any, members: str | None = None) -> None:
    """Make the audience query run at profile level on ``con``: views ``subjects``, ``consent_records``
    and ``identifiers`` in a schema ``aud`` (first on the search path) where ``subject_id`` is the
    profile id. The ledger records and contacts of every subject count for its profile, and one
    restricted subject restricts it, as in ``can_use``. ``members``: a table of ``profile_id`` to limit to."""
    con.execute("CREATE SCHEMA IF NOT EXISTS aud")
    con.execute(
        "CREATE OR REPLACE VIEW aud.profile_map AS SELECT s.subject_id,"
        " coalesce(ps.profile_id, s.subject_id) AS profile_id, s.state"
        " FROM main.subjects s LEFT JOIN main.profile_subjects ps ON ps.subject_id = s.subject_id"
    )
    scope = (
        f"FROM {members} m JOIN aud.profile_map pm ON pm.profile_id = m.profile_id GROUP BY m.profile_id"
        if members
        else "FROM aud.profile_map pm WHERE pm.state <> 'erased' GROUP BY pm.profile_id"
    )
    key = "m.profile_id" if members else "pm.profile_id"
    con.execute(
        f"CREATE OR REPLACE VIEW aud.subjects AS SELECT {key} AS subject_id,"
        f" CASE WHEN bool_or(pm.state = 'restricted') THEN 'restricted' ELSE 'active' END AS state {scope}"
    )
    for table in ("consent_records", "identifiers"):
        con.execute(
            f"CREATE OR REPLACE VIEW aud.{table} AS SELECT t.* REPLACE (pm.profile_id AS subject_id)"
            f" FROM main.{table} t JOIN aud.profile_map pm ON pm.subject_id = t.subject_id"
        )
    con.execute("SET search_path = 'aud,main'")


def build_sql(purposes: Iterable[Purpose], *, allowed: bool = False) -> tuple[str, list[Purpose]]:
    """The query for a taxonomy, and the purposes in the order of its result columns."""
    ps = list(purposes)
    gpc = [(i, p) for i, p in enumerate(ps) if p.name in GPC_PURPOSES]
    gpc_firsts = ", ".join(f"min(ts_ms) FILTER (WHERE list_contains(d, {_lit(p.name)})) AS gpc_{i}" for i, p in gpc)
    gpc_cols = ", ".join(f"gpcs.gpc_{i}" for i, _ in gpc)
    choices = []
    for i, p in enumerate(ps):
        denies = f"(list_contains(d, {_lit(p.name)})" + (" OR object_all" if p.direct_marketing else "") + ")"
        grants = f"(list_contains(g, {_lit(p.name)}) AND NOT {denies})"
        absolute = f"(objection AND {denies})" if p.direct_marketing else "FALSE"
        valid = f"{denies} OR ({grants} AND fresh"
        if p.name in GPC_PURPOSES:
            valid += f" AND NOT (gpc_{i} IS NOT NULL AND ts_ms >= gpc_{i} AND NOT confirmed)"
        valid += ")"
        key = (
            f"{absolute}::HUGEINT * (1::HUGEINT << 100) + ts_ms::HUGEINT * (1::HUGEINT << 40)"
            f" + {denies}::HUGEINT * (1::HUGEINT << 39) + seq"
        )
        choices.append(f"arg_max({grants}, {key}) FILTER (WHERE {valid}) AS c_{i}")
    channels = sorted({p.channel for p in ps if p.channel} | {"all"})
    supp_cols = ", ".join(f"bool_or(sp.channel = {_lit(c)}) AS s_{c}" for c in channels)
    supp_select = ", ".join(f"coalesce(supp.s_{c}, FALSE) AS s_{c}" for c in channels)
    counts = []
    for i, p in enumerate(ps):
        outcome = _outcome(i, p)
        suppressed = f"(s_{p.channel} OR s_all)" if p.channel else "FALSE"
        counts += [
            f"count(*) FILTER (WHERE {outcome} = 'allowed' AND NOT {suppressed}) AS usable_{i}",
            f"count(*) FILTER (WHERE {outcome} = 'not_consented') AS not_consented_{i}",
            f"count(*) FILTER (WHERE {outcome} = 'allowed' AND {suppressed}) AS suppressed_{i}",
            f"count(*) FILTER (WHERE {outcome} = 'restricted') AS restricted_{i}",
        ]
    sql = TEMPLATE.format(
        gpc_firsts=gpc_firsts or "NULL AS gpc_none",
        gpc_cols=gpc_cols or "NULL AS gpc_none",
        choices=",\n           ".join(choices),
        supp_cols=supp_cols,
        supp_select=supp_select,
        final=(f"SELECT person FROM people WHERE {_outcome(0, ps[0])} = 'allowed'" if allowed
               else "SELECT " + ",\n       ".join(counts) + " FROM people"),
    )  # fmt: skip
    return sql, ps


def audience_counts(consent: Consent, analytics: Analytics) -> dict[str, dict[str, int]]:
    """Usable / not consented / suppressed / restricted people per purpose, computed in DuckDB."""
    sql, ps = build_sql(consent.taxonomy.purposes.values())
    row = analytics.fetch(sql, {"now": now_ms(), "default_j": consent.default_jurisdiction}, fresh=False)[0]
    keys = ("usable", "not_consented", "suppressed", "restricted")
    return {p.name: {k: int(row[4 * i + n] or 0) for n, k in enumerate(keys)} for i, p in enumerate(ps)}
