"""Every table is classified: it holds data about a subject (and is listed for access export and
erasure), or it holds none. A new table must be added to one of the two lists, or this fails."""

from __future__ import annotations

from candor.store.schema import SUBJECT_TABLES, metadata

# Tables that hold no data about a data subject, and why.
NOT_ABOUT_A_SUBJECT = {
    "sources": "source names and hashed write keys",
    "tokens": "hashed staff tokens",
    "users": "staff accounts (staff, not customers; argon2 hashes)",
    "keyring": "wrapped installation keys",
    "rejected_events": "reasons and field names, never values",
    "event_counts": "aggregate counters",
    "consent_blocked": "anonymous daily counts",
    "notices": "notice texts",
    "suppressions": "keyed hashes kept on purpose after erasure (tombstones)",
    "audit_log": "pseudonymous ids only; kept as the record of processing",
    "audit_head": "the head of the audit chain",
    "identity_jobs": "progress counters of identity jobs",
    "privacy_requests": "request records: pseudonyms, states, receipts; contact sealed under the request's own key",
    "verification_codes": "hashed one-time codes",
    "download_links": "hashed single-use tokens",
    "markers": "cache generation counters",
    "segments": "segment definitions",
    "segment_runs": "segment sizes and purpose breakdowns (aggregates)",
    "campaigns": "campaign definitions and templates",
    "retention_state": "retention job cursors, last runs and the job lease",
    "data_dictionary": "declared field names, categories and retention per source",
    "source_policies": "what each source does with undeclared personal data",
    "privacy_findings": "field names, guessed categories and counts; never a value",
    "privacy_budget": "epsilon spent per dataset and month (aggregates)",
    "privacy_budget_entries": "epsilon spent per release, with the staff actor",
    "destinations": "webhook, SMS provider and ad-platform endpoints (their secrets are keyring entries)",
    "loyalty_offers": "value-exchange offer definitions",
    "loyalty_jobs": "the loyalty earning job's cursor",
    "catalog_items": "the product catalogue (item facts)",
    "rec_neighbors": "item-to-item similarities, each from at least CANDOR_RECOMMEND_MIN_SUPPORT people",
    "rec_popular": "bestseller scores per item (aggregates)",
    "rec_models": "model versions, watermarks and counts",
}


def test_every_table_is_classified() -> None:
    tables = set(metadata.tables)
    assert set(SUBJECT_TABLES) | set(NOT_ABOUT_A_SUBJECT) == tables, (
        "classify the new table in SUBJECT_TABLES (store/schema.py) or NOT_ABOUT_A_SUBJECT here"
    )
    assert not set(SUBJECT_TABLES) & set(NOT_ABOUT_A_SUBJECT)


def test_subject_tables_name_their_subject_column() -> None:
    for table, column in SUBJECT_TABLES.items():
        assert column in metadata.tables[table].c, f"{table}.{column} does not exist"
    for name, tbl in metadata.tables.items():
        if "subject_id" in tbl.c and name not in SUBJECT_TABLES:
            assert name == "audit_log", f"{name} has a subject_id but is not in SUBJECT_TABLES"
