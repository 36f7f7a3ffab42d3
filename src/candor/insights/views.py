"""The contract every insight is written against: a few named views, and a portable SQL subset.

An insight is one SQL text (or a few) over **only** these views, with ``$name`` parameters:

- ``ins_profiles(subject_id, profile_id)``: every subject not erased, and its unified profile;
- ``ins_allowed(profile_id)``: the profiles ``can_use(profile, "analytics")`` allows (the resolver's
  SQL twin, consent/audience.py, at profile level);
- ``ins_events(profile_id, id, type, event, ts_ms, channel, campaign, revenue, properties)``: the
  events of allowed profiles, with ``channel`` by ``channel_sql``;
- ``ins_touchpoints(profile_id, ts_ms, channel, campaign, kind, event)``: what a person met: their
  events (``kind = 'event'``) other than identify, alias, group and consent updates, the campaign
  messages sent to them (``kind = 'send'``) and their opens and clicks (``kind = 'engagement'``);
- ``ins_segments(segment, profile_id)``: members of the segments a request names.

The SQL of an insight uses: SELECT, WITH, JOIN (inner, left), WHERE, GROUP BY, HAVING, ORDER BY,
UNION ALL, CASE, COALESCE, ``count``/``sum``/``min``/``max``/``avg`` (with DISTINCT), ``row_number``
/ ``ntile`` / ``lag`` over windows, ``concat_ws``, ``least``/``greatest``, ``floor``, ``pow``,
arithmetic and comparisons. Nothing DuckDB-only: ``tests/insights`` transpiles every insight's SQL to
Spark SQL with sqlglot (errors raised, nothing silently dropped), so the Spark backend of issue 11
defines the same five views over the same Parquet files (``spark.read.parquet`` on the live
generation) and runs the same texts. The views themselves are the only engine-specific part.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from candor.consent.audience import allowed_sql, profile_level

CHANNELS = ("web", "app", "email", "sms", "push", "store", "call_center", "social", "ads", "other")
# spellings that name a channel: in properties.channel / context.channel, and in source names
ALIASES: dict[str, str] = {
    **{c: c for c in CHANNELS},
    "browser": "web",
    "website": "web",
    "online": "web",
    "mobile": "app",
    "ios": "app",
    "android": "app",
    "mobile_app": "app",
    "phone": "call_center",
    "call": "call_center",
    "callcenter": "call_center",
    "call-center": "call_center",
    "contact_center": "call_center",
    "crm": "call_center",
    "pos": "store",
    "in_store": "store",
    "in-store": "store",
    "retail": "store",
    "shop": "store",
    "till": "store",
    "esp": "email",
    "newsletter": "email",
    "text": "sms",
}
# events that are not touchpoints: profile updates and consent choices
NOT_TOUCHPOINTS = ("Segment Consent Preference Updated",)


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def channel_sql(source_channels: Mapping[str, str]) -> str:
    """The channel of an event (columns of the analytics store), first rule that applies:

    1. ``CANDOR_SOURCE_CHANNELS`` names the source's channel;
    2. ``properties.channel`` or ``context.channel`` spells a channel (``ALIASES``);
    3. the app: ``context.app`` is present, or it is a screen view;
    4. the web: a page view, or sent by analytics.js;
    5. the event's name: ``Email ...``, ``SMS ...``, ``Push ...``; or the UTM medium ``email`` / ``sms``;
    6. the source's name spells a channel (a source called ``pos`` is the store);
    7. ``other``.
    Literals only (the mapping comes from the configuration, not from requests)."""
    alias = " ".join(f"WHEN {_lit(k)} THEN {_lit(v)}" for k, v in sorted(ALIASES.items()))
    mapped = " ".join(f"WHEN {_lit(k)} THEN {_lit(v)}" for k, v in sorted(source_channels.items()))
    first = f"CASE e.source {mapped} ELSE NULL END" if mapped else "CAST(NULL AS VARCHAR)"
    return (
        f"coalesce({first}, CASE e.channel_hint {alias} ELSE NULL END, "
        "CASE WHEN e.in_app OR e.type = 'screen' THEN 'app' "
        "WHEN e.type = 'page' OR e.library LIKE 'analytics.js%' OR e.library LIKE 'analytics-next%' THEN 'web' "
        "WHEN e.event LIKE 'Email %' OR e.utm_medium = 'email' THEN 'email' "
        "WHEN e.event LIKE 'SMS %' OR e.utm_medium = 'sms' THEN 'sms' "
        "WHEN e.event LIKE 'Push %' THEN 'push' ELSE NULL END, "
        f"CASE lower(e.source) {alias} ELSE NULL END, 'other')"
    )


def parse_source_channels(spec: str) -> dict[str, str]:
    """``CANDOR_SOURCE_CHANNELS``: ``source=channel`` pairs, comma-separated (``pos-till=store``)."""
    out: dict[str, str] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        name, sep, channel = part.partition("=")
        channel = ALIASES.get(channel.strip().lower(), "")
        if not sep or not name.strip() or not channel:
            raise ValueError(
                f"CANDOR_SOURCE_CHANNELS={spec!r}: write source=channel pairs such as 'pos=store,crm=call_center'; "
                f"channels are {', '.join(CHANNELS)}"
            )
        out[name.strip()] = channel
    return out


# the store tables the views read (the only ones Analytics.connect need load)
READS = (
    "events",
    "subjects",
    "profile_subjects",
    "consent_records",
    "notices",
    "identifiers",
    "suppressions",
    "sends",
    "campaigns",
    "engagements",
)


def install(
    con: Any,
    *,
    source_channels: Mapping[str, str],
    default_jurisdiction: str,
    now: int,
    analytics_purpose: Any,
    segments: Iterable[tuple[str, list[str]]] = (),
) -> None:
    """Create the five views in a workspace (candor.engines: DuckDB or Spark) over the analytics lake.

    The same statements on either engine; only ``ins_allowed`` is computed on DuckDB in both cases (the
    consent decision reads the store's ledger, which is small, with DuckDB-only SQL) and handed over."""
    import pyarrow as pa

    con.view(
        "ins_profiles",
        "SELECT s.subject_id, coalesce(ps.profile_id, s.subject_id) AS profile_id "
        "FROM main.subjects s LEFT JOIN main.profile_subjects ps ON ps.subject_id = s.subject_id "
        "WHERE s.state <> 'erased'",
    )
    # consent: the resolver's SQL twin at profile level, for the analytics purpose (tested against can_use)
    with con.store_duckdb() as duck:
        profile_level(duck)
        allowed = duck.execute(
            f"SELECT DISTINCT person AS profile_id FROM ({allowed_sql(analytics_purpose)})",
            {"now": now, "default_j": default_jurisdiction},
        ).to_arrow_table()
        duck.execute("SET search_path = 'main'")
    con.register("ins_allowed", allowed.cast(pa.schema([("profile_id", pa.string())])))
    con.view(
        "ins_events",
        "SELECT p.profile_id, e.id, e.type, e.event, e.ts_ms, "
        f"{channel_sql(source_channels)} AS channel, e.campaign, e.revenue, e.properties "
        "FROM main.events e JOIN ins_profiles p ON p.subject_id = e.subject_id "
        "JOIN ins_allowed a ON a.profile_id = p.profile_id",
    )
    skip = ", ".join(_lit(n) for n in NOT_TOUCHPOINTS)
    con.view(
        "ins_touchpoints",
        "SELECT profile_id, ts_ms, channel, campaign, 'event' AS kind, event FROM ins_events "
        f"WHERE type NOT IN ('identify', 'alias', 'group') AND coalesce(event, '') NOT IN ({skip}) "
        "UNION ALL "
        "SELECT p.profile_id, s.ts_ms, s.channel, c.name AS campaign, 'send' AS kind, NULL AS event "
        "FROM main.sends s JOIN main.campaigns c ON c.id = s.campaign_id "
        "JOIN ins_profiles p ON p.subject_id = s.subject_id JOIN ins_allowed a ON a.profile_id = p.profile_id "
        "WHERE s.outcome = 'sent' "
        "UNION ALL "
        "SELECT p.profile_id, g.ts_ms, c.channel, c.name AS campaign, 'engagement' AS kind, NULL AS event "
        "FROM main.engagements g JOIN main.campaigns c ON c.id = g.campaign_id "
        "JOIN ins_profiles p ON p.subject_id = g.subject_id JOIN ins_allowed a ON a.profile_id = p.profile_id "
        "WHERE g.kind IN ('open', 'click')",
    )
    rows = [(name, pid) for name, members in segments for pid in members]
    con.register(
        "ins_segments",
        pa.table(
            {"segment": [r[0] for r in rows], "profile_id": [r[1] for r in rows]},
            schema=pa.schema([("segment", pa.string()), ("profile_id", pa.string())]),
        ),
    )
