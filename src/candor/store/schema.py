"""The one schema Candor keeps, on SQLite and on PostgreSQL (SQLAlchemy Core).

Personal data never sits in a column in plaintext: identifiers are HMAC pseudonyms (``*_pid``),
personal values live in ``sealed`` columns encrypted under the subject's data key (see vault.py).
Every table that holds data about a subject carries ``subject_id`` so that access export and erasure
can find it; docs/privacy-model.md lists them, and a test checks that the list is complete.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Integer primary keys that are 64-bit on PostgreSQL and a rowid alias on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

sources = Table(
    "sources",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("write_key_hash", String(64), nullable=False, unique=True),
    Column("strict", Boolean, nullable=False, default=False),
    # JSON list of property names this source declares personal (encrypted, never in clear)
    Column("personal_properties", Text, nullable=False, default="[]"),
    Column("created_ms", BigInteger, nullable=False),
    Column("disabled_ms", BigInteger, nullable=True),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("role", String(40), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=True),
    Column("revoked_ms", BigInteger, nullable=True),
    Column("last_used_ms", BigInteger, nullable=True),
)

# Staff who sign in with a password (console, or POST /v1/auth/login for a session token).
users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(100), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),  # argon2id
    Column("role", String(40), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("disabled_ms", BigInteger, nullable=True),
)

# Secret keys other than the master key (HMAC pseudonym keys, ...), each wrapped by the master key.
keyring = Table(
    "keyring",
    metadata,
    Column("kind", String(40), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("wrapped", LargeBinary, nullable=False),
    Column("kek_id", String(32), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("retired_ms", BigInteger, nullable=True),
)

# A subject is the holder of one data key: deleting the key shreds every sealed value under it.
subjects = Table(
    "subjects",
    metadata,
    Column("subject_id", String(32), primary_key=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("state", String(20), nullable=False, default="active"),
)

data_keys = Table(
    "data_keys",
    metadata,
    Column("subject_id", String(32), primary_key=True),
    Column("wrapped", LargeBinary, nullable=False),
    Column("kek_id", String(32), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

identifiers = Table(
    "identifiers",
    metadata,
    Column("id_type", String(40), primary_key=True),
    Column("pseudonym", String(64), primary_key=True),
    Column("hmac_version", Integer, nullable=False),
    Column("subject_id", String(32), nullable=False, index=True),
    Column("first_seen_ms", BigInteger, nullable=False),
    # for email, phone and postal address: the HMAC under the suppression key, to match do-not-contact lists
    Column("contact_hash", String(64), nullable=True, index=True),
)

identity_edges = Table(
    "identity_edges",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("a_type", String(40), nullable=False),
    Column("a_pid", String(64), nullable=False),
    Column("b_type", String(40), nullable=False),
    Column("b_pid", String(64), nullable=False),
    Column("rule", String(40), nullable=False),
    Column("source_id", Integer, nullable=True),
    Column("message_id", String(200), nullable=True),
    Column("score", Float, nullable=True),
    Column("subject_id", String(32), nullable=True, index=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("removed_ms", BigInteger, nullable=True),
    # the subjects (key holders) the two identifiers belong to: profiles are components over subjects
    Column("a_subject", String(32), nullable=True, index=True),
    Column("b_subject", String(32), nullable=True, index=True),
    # derived by the graph rules (identity/graph.py): linked, held (review), flagged (supernode), removed
    Column("state", String(10), nullable=False, default="linked", server_default="linked"),
    Column("removed_by", String(100), nullable=True),
    UniqueConstraint("a_type", "a_pid", "b_type", "b_pid", "rule", name="uq_identity_edges_pair"),
    Index("ix_identity_edges_b", "b_type", "b_pid"),
)

# Profiles: connected components of subjects over the linked edges. A subject without a row here is a
# profile of its own; the profile id is the smallest subject id of the component (deterministic, so a
# replay of the edge log gives the same ids).
profile_subjects = Table(
    "profile_subjects",
    metadata,
    Column("subject_id", String(32), primary_key=True),
    Column("profile_id", String(32), nullable=False, index=True),
)

# Identifiers that link too many profiles (a store's default email, a shared kiosk): they stop linking.
identity_flags = Table(
    "identity_flags",
    metadata,
    Column("id_type", String(40), primary_key=True),
    Column("pseudonym", String(64), primary_key=True),
    Column("subject_id", String(32), nullable=True, index=True),
    Column("reason", String(200), nullable=False),
    Column("neighbours", Integer, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

# Merges a person must decide: conflicting authenticated ids (an edge that was held) and probabilistic
# matches in the grey zone (a candidate pair, no edge yet).
identity_reviews = Table(
    "identity_reviews",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kind", String(20), nullable=False),  # conflict | candidate
    Column("edge_id", BigInteger, nullable=True, index=True),
    Column("a_type", String(40), nullable=False),
    Column("a_pid", String(64), nullable=False),
    Column("b_type", String(40), nullable=False),
    Column("b_pid", String(64), nullable=False),
    Column("a_subject", String(32), nullable=True, index=True),
    Column("b_subject", String(32), nullable=True, index=True),
    Column("score", Float, nullable=True),
    Column("reason", String(300), nullable=False),
    Column("state", String(10), nullable=False),  # open | approved | rejected
    Column("created_ms", BigInteger, nullable=False),
    Column("decided_ms", BigInteger, nullable=True),
    Column("decided_by", String(100), nullable=True),
)

# Blocking keys for incremental probabilistic matching, as HMACs: a new record finds its candidates
# without decrypting everyone. Derived from personal data, so erased with the subject.
match_keys = Table(
    "match_keys",
    metadata,
    Column("key_hash", String(64), primary_key=True),
    Column("subject_id", String(32), primary_key=True),
    Index("ix_match_keys_subject", "subject_id"),
)

# Long identity jobs (probabilistic resolution) keep their place here so an interrupted run resumes.
identity_jobs = Table(
    "identity_jobs",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("state", Text, nullable=False),  # JSON, no personal values
    Column("updated_ms", BigInteger, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("source_id", Integer, nullable=False),
    Column("message_id", String(200), nullable=False),
    Column("type", String(16), nullable=False),
    Column("event", String(200), nullable=True),
    Column("subject_id", String(32), nullable=False),
    Column("user_pid", String(64), nullable=True),
    Column("anon_pid", String(64), nullable=True),
    Column("ts_ms", BigInteger, nullable=False),
    Column("received_ms", BigInteger, nullable=False),
    Column("properties", Text, nullable=False),
    Column("context", Text, nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    UniqueConstraint("source_id", "message_id", name="uq_events_source_message"),
    Index("ix_events_subject_ts", "subject_id", "ts_ms"),
    Index("ix_events_ts", "ts_ms"),
)

# Rejected input is kept (reason, where, when) but never its personal values.
rejected_events = Table(
    "rejected_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("source_id", Integer, nullable=True),
    Column("received_ms", BigInteger, nullable=False, index=True),
    Column("type", String(16), nullable=True),
    Column("message_id", String(200), nullable=True),
    Column("field", String(200), nullable=True),
    Column("reason", String(500), nullable=False),
)

event_counts = Table(
    "event_counts",
    metadata,
    Column("source_id", Integer, primary_key=True),
    Column("type", String(16), primary_key=True),
    Column("outcome", String(16), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("n", BigInteger, nullable=False),
)

# Append-only, hash-chained log of every consent change, rights step, merge/split, export, key
# operation and staff read of plaintext. Entries hold pseudonyms and ids, never personal values.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=False),
    Column("ts_ms", BigInteger, nullable=False),
    Column("actor", String(100), nullable=False),
    Column("action", String(100), nullable=False, index=True),
    Column("subject_id", String(32), nullable=True, index=True),
    Column("target", String(200), nullable=True),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

# The head of the audit chain: one row, locked by every append so the chain stays linear.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

# Versioned notice texts per language; a consent record stores the version and the SHA-256 of the text.
notices = Table(
    "notices",
    metadata,
    Column("notice_id", String(100), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("language", String(20), primary_key=True),
    Column("text", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("requires_reconsent", Boolean, nullable=False, default=False),
    Column("created_ms", BigInteger, nullable=False),
)

# The consent ledger: append-only. One row per choice or signal, with its proof.
consent_records = Table(
    "consent_records",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("subject_id", String(32), nullable=False, index=True),
    Column("id_type", String(40), nullable=True),
    Column("pseudonym", String(64), nullable=True),
    Column("granted", Text, nullable=False),  # JSON list of purposes
    Column("denied", Text, nullable=False),  # JSON list of purposes
    Column("objection", Boolean, nullable=False, default=False),
    Column("source", String(40), nullable=False),
    Column("jurisdiction", String(10), nullable=True),
    Column("ts_ms", BigInteger, nullable=False),
    Column("recorded_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=True),
    Column("notice_id", String(100), nullable=True),
    Column("notice_version", Integer, nullable=True),
    Column("notice_sha256", String(64), nullable=True),
    Column("ui_action", String(20), nullable=True),
    Column("raw_signal", Text, nullable=True),
    Column("confirmed", Boolean, nullable=False, default=False),
    Column("actor", String(100), nullable=False),
    Column("message_id", String(200), nullable=True),
)

# Do-not-contact lists: keyed by an HMAC of the normalised identifier under a key of their own, so
# entries outlive the erasure of the person (a tombstone that holds no personal data).
suppressions = Table(
    "suppressions",
    metadata,
    Column("channel", String(10), primary_key=True),
    Column("hash", String(64), primary_key=True),
    Column("id_type", String(20), nullable=False),
    Column("reason", String(40), nullable=False),
    Column("source", String(100), nullable=True),
    Column("created_ms", BigInteger, nullable=False),
)

# What consent cost: events not stored for lack of consent, as anonymous daily counts.
consent_blocked = Table(
    "consent_blocked",
    metadata,
    Column("day", String(10), primary_key=True),
    Column("source_id", Integer, primary_key=True),
    Column("event", String(200), primary_key=True),
    Column("purpose", String(40), primary_key=True),
    Column("n", BigInteger, nullable=False),
)

# Data-subject requests. The requester's contact (to send codes and links) and any free text are
# sealed under a key of the request's own (``requester_subject``), shredded when the request closes.
privacy_requests = Table(
    "privacy_requests",
    metadata,
    Column("id", String(32), primary_key=True),  # random, unguessable
    Column("type", String(30), nullable=False),
    Column("state", String(30), nullable=False, index=True),
    Column("jurisdiction", String(10), nullable=False),
    Column("id_type", String(40), nullable=False),
    Column("pseudonym", String(64), nullable=False, index=True),
    Column("requester_subject", String(32), nullable=True, index=True),
    Column("sealed", LargeBinary, nullable=True),  # contact, corrections, the subject's note
    Column("channel", String(30), nullable=False),
    Column("received_ms", BigInteger, nullable=False),
    Column("ack_due_ms", BigInteger, nullable=True),
    Column("due_ms", BigInteger, nullable=False),
    Column("extended_ms", BigInteger, nullable=True),
    Column("extension_reason", String(300), nullable=True),
    Column("verified_ms", BigInteger, nullable=True),
    Column("verification", String(40), nullable=True),  # email_code | link | staff
    Column("verified_by", String(100), nullable=True),
    Column("completed_ms", BigInteger, nullable=True),
    Column("denial_reason", String(300), nullable=True),
    Column("outcome", Text, nullable=False, default="{}"),  # per store, no personal data
    Column("notes", Text, nullable=False, default="[]"),  # staff annotations (no personal data)
)

verification_codes = Table(
    "verification_codes",
    metadata,
    Column("request_id", String(32), primary_key=True),
    Column("code_hash", String(64), nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("sent_ms", BigInteger, nullable=False),
)

# Single-use, expiring download links for access exports (the token is stored hashed).
download_links = Table(
    "download_links",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("request_id", String(32), nullable=False, index=True),
    Column("file", String(200), nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("used_ms", BigInteger, nullable=True),
)

# Data kept despite an erasure for a legal reason (an open order, a dispute), until released.
legal_holds = Table(
    "legal_holds",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("subject_id", String(32), nullable=False, index=True),
    Column("store", String(40), nullable=False),  # which table or file the hold keeps
    Column("reason", String(300), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("released_ms", BigInteger, nullable=True),
)

# Segments: declarative definitions (JSON), evaluated on the analytics engine.
segments = Table(
    "segments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("definition", Text, nullable=False),  # JSON, validated (segments.py)
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("created_by", String(100), nullable=False),
)

# Membership history: a row per profile and stretch of time it was a member (until_ms NULL: still is).
segment_members = Table(
    "segment_members",
    metadata,
    Column("segment_id", Integer, primary_key=True),
    Column("subject_id", String(32), primary_key=True),  # the profile id
    Column("since_ms", BigInteger, primary_key=True),
    Column("until_ms", BigInteger, nullable=True),
    Index("ix_segment_members_subject", "subject_id"),
)

# Each evaluation: its size and the purpose breakdown (aggregates only).
segment_runs = Table(
    "segment_runs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("segment_id", Integer, nullable=False, index=True),
    Column("run_ms", BigInteger, nullable=False),
    Column("size", Integer, nullable=False),
    Column("breakdown", Text, nullable=False),  # JSON
)

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("segment_id", Integer, nullable=False),
    Column("channel", String(20), nullable=False),
    Column("purpose", String(40), nullable=False),
    Column("definition", Text, nullable=False),  # JSON: subject, templates, sender, budget, cost
    Column("state", String(20), nullable=False),  # draft | sending | sent | failed
    Column("created_ms", BigInteger, nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("sent_ms", BigInteger, nullable=True),
)

# One row per campaign and recipient: what happened (sent, or skipped with the reason). Pseudonymous.
sends = Table(
    "sends",
    metadata,
    Column("campaign_id", Integer, primary_key=True),
    Column("subject_id", String(32), primary_key=True),
    Column("outcome", String(30), nullable=False),  # sent | failed | skipped:<reason>
    Column("variant", String(20), nullable=True),  # personalised | generic
    Column("channel", String(20), nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    Column("message_id", String(200), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Index("ix_sends_subject_ts", "subject_id", "ts_ms"),
)

# Differential privacy (insights/dp.py): the epsilon spent per dataset and calendar month of data, and
# one entry per release that spent some. Aggregates and staff names only, nothing about a subject.
privacy_budget = Table(
    "privacy_budget",
    metadata,
    Column("dataset", String(100), primary_key=True),
    Column("window", String(20), primary_key=True),  # YYYY-MM (UTC) of the data the releases read
    Column("spent", Float, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

privacy_budget_entries = Table(
    "privacy_budget_entries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("dataset", String(100), nullable=False),
    Column("window", String(20), nullable=False),
    Column("epsilon", Float, nullable=False),
    Column("insight", String(40), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    Index("ix_privacy_budget_entries_window", "dataset", "window"),
)

# Destinations: where channels other than SMTP deliver (signed webhooks, SMS providers, ad-platform
# audiences). Each one's signing secret is a keyring entry (``destination:<id>``), wrapped by the master key.
destinations = Table(
    "destinations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("kind", String(20), nullable=False),  # webhook | sms | ad_audience
    Column("url", String(2000), nullable=False),
    Column("purpose", String(40), nullable=True),  # what the destination's data is used for
    Column("contact", String(10), nullable=False, default="none"),  # email | phone | none: what it gets
    Column("created_ms", BigInteger, nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("disabled_ms", BigInteger, nullable=True),
)

# Deliveries to destinations that failed after every retry (state ``dead``: the dead-letter queue) and
# erasure notices waiting to go out. Message deliveries name the profile and hold no payload: a replay
# decides again and renders again; erasure notices carry only the destination's pseudonymous ids.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("destination_id", Integer, nullable=False),
    Column("kind", String(12), nullable=False),  # message | erasure | audience
    Column("campaign_id", Integer, nullable=True),
    Column("subject_id", String(32), nullable=True, index=True),  # the profile (message deliveries)
    Column("payload", Text, nullable=True),  # JSON without personal data (erasure notice, audience name)
    Column("state", String(12), nullable=False),  # pending | delivered | dead | replayed | skipped
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", String(200), nullable=True),  # a status code or an exception type, never content
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Index("ix_deliveries_destination_state", "destination_id", "state"),
)

# Who each destination received data about (so an erasure reaches it), with the pseudonymous id it got.
destination_recipients = Table(
    "destination_recipients",
    metadata,
    Column("destination_id", Integer, primary_key=True),
    Column("subject_id", String(32), primary_key=True),  # the profile id
    Column("ref", String(64), nullable=False),  # the candorId the destination knows the person by
    Column("first_ms", BigInteger, nullable=False),
    Column("last_ms", BigInteger, nullable=False),
    Index("ix_destination_recipients_subject", "subject_id"),
)

# Opens and clicks (recipients with analytics consent only), bounces and complaints, per campaign.
engagements = Table(
    "engagements",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("campaign_id", Integer, nullable=False),
    Column("subject_id", String(32), nullable=False),  # the profile id
    Column("kind", String(12), nullable=False),  # open | click | bounce | complaint
    Column("ts_ms", BigInteger, nullable=False),
    Column("detail", String(100), nullable=True),  # link number, bounce type: never personal data
    Index("ix_engagements_campaign_kind", "campaign_id", "kind"),
    Index("ix_engagements_subject_ts", "subject_id", "ts_ms"),
)

# Counters other processes watch: a change tells them to drop a cache (e.g. "shred" after erasures).
markers = Table(
    "markers",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# Where each retention rule's job stands (cursors, the last completed run) and the lease that lets one
# process at a time run the job. JSON without personal data.
retention_state = Table(
    "retention_state",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("state", Text, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

# The data dictionary (dictionary.py): a source's declared fields with their data category and retention.
# Field names and categories only, never values.
data_dictionary = Table(
    "data_dictionary",
    metadata,
    Column("source_id", Integer, primary_key=True),
    Column("scope", String(12), primary_key=True),  # traits | properties | context
    Column("path", String(200), primary_key=True),
    Column("category", String(40), nullable=False),
    Column("retention_days", Integer, nullable=True),  # NULL: as long as the profile exists
    Column("note", String(300), nullable=True),
    Column("declared_by", String(100), nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

# What a source does with undeclared personal data found at collection (detect.py): encrypt (and flag),
# redact or drop. A source without a row encrypts.
source_policies = Table(
    "source_policies",
    metadata,
    Column("source_id", Integer, primary_key=True),
    Column("policy", String(10), nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("updated_by", String(100), nullable=False),
)

# The privacy inbox (inbox.py): undeclared personal data found at collection, per source, field and
# guessed category, with counts and first/last seen. Never a value.
privacy_findings = Table(
    "privacy_findings",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("source_id", Integer, nullable=False),
    Column("scope", String(12), nullable=False),
    Column("path", String(200), nullable=False),
    Column("category", String(40), nullable=False),
    Column("detector", String(60), nullable=False),  # e.g. presidio:EMAIL_ADDRESS, field_name
    Column("action", String(12), nullable=False),  # encrypted | redacted | dropped | removed | withheld
    Column("count", BigInteger, nullable=False),
    Column("first_seen_ms", BigInteger, nullable=False),
    Column("last_seen_ms", BigInteger, nullable=False),
    Column("state", String(10), nullable=False, default="open", server_default="open"),  # open | declared | dismissed
    Column("decided_by", String(100), nullable=True),
    Column("decided_ms", BigInteger, nullable=True),
    UniqueConstraint("source_id", "scope", "path", "category", "detector", "action", name="uq_privacy_findings_key"),
)

# The full IP address of an event, sealed under the subject's key and kept apart from the event so a
# retention job can delete it (location.py: ``drop_expired_ips``); analytics sees the truncated address.
event_ips = Table(
    "event_ips",
    metadata,
    Column("source_id", Integer, primary_key=True),
    Column("message_id", String(200), primary_key=True),
    Column("subject_id", String(32), nullable=False, index=True),
    Column("received_ms", BigInteger, nullable=False, index=True),
    Column("sealed", LargeBinary, nullable=False),
)

# -- the loyalty programme (loyalty.py) ---------------------------------------------------------------
# Members: one row per subject that ever joined. ``balance`` is the sum of the member's ledger rows,
# kept here so a redemption can check and lower it in one locked row (never below zero).
loyalty_members = Table(
    "loyalty_members",
    metadata,
    Column("subject_id", String(32), primary_key=True),
    Column("state", String(10), nullable=False),  # active | left
    Column("joined_ms", BigInteger, nullable=False),  # the latest join
    Column("left_ms", BigInteger, nullable=True),
    Column("notice_version", Integer, nullable=False),  # the notice of financial incentive accepted
    Column("consent_seq", BigInteger, nullable=True),  # the consent record of the latest join
    Column("balance", BigInteger, nullable=False, default=0),
    CheckConstraint("balance >= 0", name="ck_loyalty_members_balance"),
)

# The points ledger: append-only. Earned points are positive, redeemed and expired ones negative;
# ``ref`` makes each earning and redemption happen once (an order's message id, an offer, a request id).
loyalty_ledger = Table(
    "loyalty_ledger",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("subject_id", String(32), nullable=False),
    Column("kind", String(12), nullable=False),  # purchase | offer | redeem | expire
    Column("points", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("ref", String(250), nullable=False),
    Column("detail", String(200), nullable=True),  # an offer name, an order's source: never personal data
    Column("amount", Float, nullable=True),  # the order value a purchase earned on
    Column("ts_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=True),  # earned points only
    Column("actor", String(100), nullable=False),
    UniqueConstraint("subject_id", "ref", name="uq_loyalty_ledger_ref"),
    Index("ix_loyalty_ledger_subject_ts", "subject_id", "ts_ms"),
    Index("ix_loyalty_ledger_ref", "ref"),
)

# Value-exchange offers: points for telling us something (fields, their data category and the purposes
# the person agrees to), within a validity window. Definitions only, nothing about a subject.
loyalty_offers = Table(
    "loyalty_offers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("title", String(200), nullable=False),
    Column("ask", String(500), nullable=False),  # what we ask, in plain words
    Column("fields", Text, nullable=False),  # JSON list of trait names
    Column("category", String(40), nullable=False),
    Column("purposes", Text, nullable=False),  # JSON list of purposes granted on acceptance
    Column("points", Integer, nullable=False),
    Column("starts_ms", BigInteger, nullable=False),
    Column("ends_ms", BigInteger, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("created_by", String(100), nullable=False),
)

# What a person got for sharing, other than points: member discounts, personalised offers used.
loyalty_benefits = Table(
    "loyalty_benefits",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("subject_id", String(32), nullable=False, index=True),
    Column("kind", String(30), nullable=False),  # discount | personalised_offer | recommendation | ...
    Column("detail", String(200), nullable=True),  # no personal data
    Column("amount", Float, nullable=True),  # money saved, when known
    Column("ref", String(250), nullable=True),
    Column("ts_ms", BigInteger, nullable=False),
    UniqueConstraint("subject_id", "ref", name="uq_loyalty_benefits_ref"),
)

# Where the purchase-earning job stands (the last event id it read). No personal data.
loyalty_jobs = Table(
    "loyalty_jobs",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("value", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

# -- recommendations (recommend/): the product catalogue and the item-to-item model. Aggregates and
# item facts only: no subject id anywhere (a person's history is read from events at request time).
catalog_items = Table(
    "catalog_items",
    metadata,
    Column("product_id", String(100), primary_key=True),
    Column("name", String(300), nullable=False),
    Column("category", String(100), nullable=False),
    Column("department", String(100), nullable=True),
    Column("data_category", String(40), nullable=True),  # a dictionary category (e.g. health) or NULL
    Column("active", Boolean, nullable=False),  # False: left the catalogue, never recommended
    Column("updated_ms", BigInteger, nullable=False),
)

rec_neighbors = Table(
    "rec_neighbors",
    metadata,
    Column("item_id", String(100), primary_key=True),
    Column("neighbor_id", String(100), primary_key=True),
    Column("score", Float, nullable=False),
    Column("support", Integer, nullable=False),  # people who interacted with both (at least the minimum)
)

rec_popular = Table(
    "rec_popular",
    metadata,
    Column("item_id", String(100), primary_key=True),
    Column("score", Float, nullable=False),
    Column("buyers", Integer, nullable=False),
)

rec_models = Table(
    "rec_models",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("built_ms", BigInteger, nullable=False),
    Column("state", Text, nullable=False),  # JSON: engine, watermark, counts; no personal data
)


# Tables holding data about one subject, and the column that names the subject.
# Access export and erasure walk this list; tests/test_privacy_tables.py keeps it complete.
SUBJECT_TABLES: dict[str, str] = {
    "subjects": "subject_id",
    "data_keys": "subject_id",
    "identifiers": "subject_id",
    "identity_edges": "subject_id",
    "events": "subject_id",
    "consent_records": "subject_id",
    "profile_subjects": "subject_id",
    "identity_flags": "subject_id",
    "identity_reviews": "a_subject",
    "match_keys": "subject_id",
    "legal_holds": "subject_id",
    "segment_members": "subject_id",
    "sends": "subject_id",
    "event_ips": "subject_id",
    "deliveries": "subject_id",
    "destination_recipients": "subject_id",
    "engagements": "subject_id",
    "loyalty_members": "subject_id",
    "loyalty_ledger": "subject_id",
    "loyalty_benefits": "subject_id",
}

# Further columns that also name a subject (a row about two people): erasure matches them too.
SUBJECT_COLUMNS_EXTRA: dict[str, tuple[str, ...]] = {
    "identity_edges": ("a_subject", "b_subject"),
    "identity_reviews": ("b_subject",),
}
