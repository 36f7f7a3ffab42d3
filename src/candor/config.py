"""Settings, read from the environment (``CANDOR_*``) and overridable by CLI flags.

Every setting is documented in docs/configuration.md; a test fails when one is not.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

MASTER_KEY_FILE = "master.key"
NEXT_MASTER_KEY_FILE = "master.key.next"


class ConfigError(ValueError):
    """A setting has a value Candor cannot use; the message names the setting and the fix."""


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Field metadata ``env`` names the environment variable."""

    data_dir: Path = field(default=Path("./candor-data"), metadata={"env": "CANDOR_DATA_DIR"})
    database_url: str = field(default="", metadata={"env": "CANDOR_DATABASE_URL"})
    master_key: str = field(default="", metadata={"env": "CANDOR_MASTER_KEY", "secret": True})
    previous_master_key: str = field(default="", metadata={"env": "CANDOR_PREVIOUS_MASTER_KEY", "secret": True})
    host: str = field(default="127.0.0.1", metadata={"env": "CANDOR_HOST"})
    port: int = field(default=8000, metadata={"env": "CANDOR_PORT"})
    workers: int = field(default=1, metadata={"env": "CANDOR_WORKERS"})
    # set by `candor serve --workers N` for its HTTP workers: the writer process's Unix socket
    writer_socket: str = field(default="", metadata={"env": "CANDOR_WRITER_SOCKET"})
    default_phone_region: str = field(default="US", metadata={"env": "CANDOR_DEFAULT_PHONE_REGION"})
    max_batch_bytes: int = field(default=500 * 1024, metadata={"env": "CANDOR_MAX_BATCH_BYTES"})
    max_event_bytes: int = field(default=32 * 1024, metadata={"env": "CANDOR_MAX_EVENT_BYTES"})
    max_batch_events: int = field(default=2500, metadata={"env": "CANDOR_MAX_BATCH_EVENTS"})
    max_request_bytes: int = field(default=1024 * 1024, metadata={"env": "CANDOR_MAX_REQUEST_BYTES"})
    max_json_depth: int = field(default=32, metadata={"env": "CANDOR_MAX_JSON_DEPTH"})
    log_level: str = field(default="info", metadata={"env": "CANDOR_LOG_LEVEL"})
    sqlite_synchronous: str = field(default="FULL", metadata={"env": "CANDOR_SQLITE_SYNCHRONOUS"})
    # page cache of each SQLite connection (SQLite's own default is 2 MB): the indexes of a large store
    # are written at random places (pseudonyms are HMACs), and a small cache rereads them from the OS
    sqlite_cache_mb: int = field(default=64, metadata={"env": "CANDOR_SQLITE_CACHE_MB"})
    cors_origins: str = field(default="", metadata={"env": "CANDOR_CORS_ORIGINS"})
    body_timeout_seconds: int = field(default=30, metadata={"env": "CANDOR_BODY_TIMEOUT_SECONDS"})
    rate_collect_per_key: str = field(default="5000/second", metadata={"env": "CANDOR_RATE_COLLECT_PER_KEY"})
    rate_collect_per_ip: str = field(default="5000/second", metadata={"env": "CANDOR_RATE_COLLECT_PER_IP"})
    rate_staff_per_token: str = field(default="50/second", metadata={"env": "CANDOR_RATE_STAFF_PER_TOKEN"})
    rate_auth_failures_per_ip: str = field(default="30/minute", metadata={"env": "CANDOR_RATE_AUTH_FAILURES_PER_IP"})
    default_jurisdiction: str = field(default="EU", metadata={"env": "CANDOR_DEFAULT_JURISDICTION"})
    consent_ttl_days: int = field(default=395, metadata={"env": "CANDOR_CONSENT_TTL_DAYS"})
    purposes_file: str = field(default="", metadata={"env": "CANDOR_PURPOSES_FILE"})
    tracking_plan_file: str = field(default="", metadata={"env": "CANDOR_TRACKING_PLAN_FILE"})
    rate_login_per_ip: str = field(default="10/minute", metadata={"env": "CANDOR_RATE_LOGIN_PER_IP"})
    rate_login_failures_per_user: str = field(
        default="5/minute", metadata={"env": "CANDOR_RATE_LOGIN_FAILURES_PER_USER"}
    )
    audit_checkpoint_seconds: int = field(default=3600, metadata={"env": "CANDOR_AUDIT_CHECKPOINT_SECONDS"})
    identity_limits: str = field(default="user_id=1", metadata={"env": "CANDOR_IDENTITY_LIMITS"})
    identity_max_shared: int = field(default=10, metadata={"env": "CANDOR_IDENTITY_MAX_SHARED"})
    identity_junk_values: str = field(default="", metadata={"env": "CANDOR_IDENTITY_JUNK_VALUES"})
    identity_weak: str = field(default="phone", metadata={"env": "CANDOR_IDENTITY_WEAK"})
    identity_priority: str = field(
        default="user_id,ext:loyalty_card,email,phone,anonymous_id", metadata={"env": "CANDOR_IDENTITY_PRIORITY"}
    )
    match_threshold: float = field(default=0.95, metadata={"env": "CANDOR_MATCH_THRESHOLD"})
    match_review_threshold: float = field(default=0.80, metadata={"env": "CANDOR_MATCH_REVIEW_THRESHOLD"})
    survivorship: str = field(default="recent", metadata={"env": "CANDOR_SURVIVORSHIP"})
    smtp_url: str = field(default="", metadata={"env": "CANDOR_SMTP_URL", "secret": True})
    mail_from: str = field(default="privacy@candor.invalid", metadata={"env": "CANDOR_MAIL_FROM"})
    smtp_connections: int = field(default=4, metadata={"env": "CANDOR_SMTP_CONNECTIONS"})
    public_url: str = field(default="http://127.0.0.1:8000", metadata={"env": "CANDOR_PUBLIC_URL"})
    rate_privacy_requests_per_ip: str = field(
        default="10/hour", metadata={"env": "CANDOR_RATE_PRIVACY_REQUESTS_PER_IP"}
    )
    rate_privacy_requests_per_identifier: str = field(
        default="3/hour", metadata={"env": "CANDOR_RATE_PRIVACY_REQUESTS_PER_IDENTIFIER"}
    )
    rate_verify_per_ip: str = field(default="20/hour", metadata={"env": "CANDOR_RATE_VERIFY_PER_IP"})
    email_frequency_cap: str = field(default="3/7d", metadata={"env": "CANDOR_EMAIL_FREQUENCY_CAP"})
    quiet_hours: str = field(default="21:00-08:00", metadata={"env": "CANDOR_QUIET_HOURS"})
    quiet_hours_channels: str = field(default="sms,phone", metadata={"env": "CANDOR_QUIET_HOURS_CHANNELS"})
    trusted_sources: str = field(default="", metadata={"env": "CANDOR_TRUSTED_SOURCES"})
    spark_master: str = field(default="local[2]", metadata={"env": "CANDOR_SPARK_MASTER"})
    spark_conf: str = field(default="", metadata={"env": "CANDOR_SPARK_CONF"})
    analytics_purge_engine: str = field(default="duckdb", metadata={"env": "CANDOR_ANALYTICS_PURGE_ENGINE"})
    retention: str = field(
        default="raw_events=13mo,ip_address=30d,rejected_records=30d,purpose:necessary=10y",
        metadata={"env": "CANDOR_RETENTION"},
    )
    retention_seconds: int = field(default=86400, metadata={"env": "CANDOR_RETENTION_SECONDS"})
    controller: str = field(default="", metadata={"env": "CANDOR_CONTROLLER"})
    controller_contact: str = field(default="", metadata={"env": "CANDOR_CONTROLLER_CONTACT"})
    dpo_contact: str = field(default="", metadata={"env": "CANDOR_DPO_CONTACT"})
    pii_detection: str = field(default="on", metadata={"env": "CANDOR_PII_DETECTION"})
    pii_patterns_file: str = field(default="", metadata={"env": "CANDOR_PII_PATTERNS"})
    pii_field_names: str = field(default="", metadata={"env": "CANDOR_PII_FIELD_NAMES"})
    pii_phone_regions: str = field(default="US,GB,DE,FR,ES,IT,IN,BR", metadata={"env": "CANDOR_PII_PHONE_REGIONS"})
    analytics_dir: str = field(default="", metadata={"env": "CANDOR_ANALYTICS_DIR"})
    analytics_refresh_seconds: int = field(default=60, metadata={"env": "CANDOR_ANALYTICS_REFRESH_SECONDS"})
    analytics_cache_mb: int = field(default=512, metadata={"env": "CANDOR_ANALYTICS_CACHE_MB"})
    insights_min_profiles: int = field(default=50, metadata={"env": "CANDOR_INSIGHTS_MIN_PROFILES"})
    source_channels: str = field(default="", metadata={"env": "CANDOR_SOURCE_CHANNELS"})
    dp_epsilon_per_month: float = field(default=1.0, metadata={"env": "CANDOR_DP_EPSILON_PER_MONTH"})
    dp_epsilon_per_request: float = field(default=0.5, metadata={"env": "CANDOR_DP_EPSILON_PER_REQUEST"})
    frequency_caps: str = field(default="sms=2/7d,webhook=3/7d", metadata={"env": "CANDOR_FREQUENCY_CAPS"})
    channel_costs: str = field(default="", metadata={"env": "CANDOR_CHANNEL_COSTS"})
    webhook_attempts: int = field(default=5, metadata={"env": "CANDOR_WEBHOOK_ATTEMPTS"})
    webhook_backoff_seconds: float = field(default=0.5, metadata={"env": "CANDOR_WEBHOOK_BACKOFF_SECONDS"})
    webhook_timeout_seconds: float = field(default=10.0, metadata={"env": "CANDOR_WEBHOOK_TIMEOUT_SECONDS"})
    conversion_event: str = field(default="Order Completed", metadata={"env": "CANDOR_CONVERSION_EVENT"})
    conversion_window_days: int = field(default=7, metadata={"env": "CANDOR_CONVERSION_WINDOW_DAYS"})
    feedback_sources: str = field(default="", metadata={"env": "CANDOR_FEEDBACK_SOURCES"})
    # provider callbacks: who may post them and how their signatures are checked (campaigns/callbacks.py)
    feedback_secret: str = field(default="", metadata={"env": "CANDOR_FEEDBACK_SECRET"})
    twilio_auth_token: str = field(default="", metadata={"env": "CANDOR_TWILIO_AUTH_TOKEN"})
    sendgrid_public_key: str = field(default="", metadata={"env": "CANDOR_SENDGRID_PUBLIC_KEY"})
    sns_certificate: str = field(default="", metadata={"env": "CANDOR_SNS_CERTIFICATE"})
    sns_topic_arns: str = field(default="", metadata={"env": "CANDOR_SNS_TOPIC_ARNS"})
    callback_max_age_seconds: int = field(default=300, metadata={"env": "CANDOR_CALLBACK_MAX_AGE_SECONDS"})
    sms_help_text: str = field(
        default="Marketing texts. Reply STOP to unsubscribe. Msg and data rates may apply.",
        metadata={"env": "CANDOR_SMS_HELP_TEXT"},
    )
    # -- the loyalty programme (loyalty.py, docs/loyalty.md) --
    loyalty_points_per_unit: float = field(default=1.0, metadata={"env": "CANDOR_LOYALTY_POINTS_PER_UNIT"})
    loyalty_purchase_event: str = field(default="Order Completed", metadata={"env": "CANDOR_LOYALTY_PURCHASE_EVENT"})
    loyalty_point_value: float = field(default=0.01, metadata={"env": "CANDOR_LOYALTY_POINT_VALUE"})
    loyalty_currency: str = field(default="USD", metadata={"env": "CANDOR_LOYALTY_CURRENCY"})
    loyalty_expiry_days: int = field(default=365, metadata={"env": "CANDOR_LOYALTY_EXPIRY_DAYS"})
    loyalty_tiers: str = field(default="member=0:0,silver=500:5,gold=2000:10", metadata={"env": "CANDOR_LOYALTY_TIERS"})
    loyalty_tier_window_days: int = field(default=365, metadata={"env": "CANDOR_LOYALTY_TIER_WINDOW_DAYS"})
    loyalty_data_value: float = field(default=12.0, metadata={"env": "CANDOR_LOYALTY_DATA_VALUE"})
    loyalty_seconds: int = field(default=60, metadata={"env": "CANDOR_LOYALTY_SECONDS"})

    # -- recommendations and next best action (recommend/) --
    recommend_sensitive_categories: str = field(
        default="health,religion,sexual_orientation,ethnicity,political_opinion,trade_union,genetic,biometric,"
        "spirituality,sexuality,lgbtq,politics",
        metadata={"env": "CANDOR_RECOMMEND_SENSITIVE_CATEGORIES"},
    )
    recommend_interests: str = field(
        default="fiction=Fiction,crime=Mystery,science-fiction=Science,history=History,children=Children,"
        "jazz=Jazz,classical=Classical,rock=Rock,pop=Soul|Electronic,folk=Folk",
        metadata={"env": "CANDOR_RECOMMEND_INTERESTS"},
    )
    recommend_min_support: int = field(default=3, metadata={"env": "CANDOR_RECOMMEND_MIN_SUPPORT"})
    recommend_neighbors: int = field(default=50, metadata={"env": "CANDOR_RECOMMEND_NEIGHBORS"})
    recommend_shrinkage: float = field(default=10.0, metadata={"env": "CANDOR_RECOMMEND_SHRINKAGE"})
    recommend_max_items: int = field(default=200, metadata={"env": "CANDOR_RECOMMEND_MAX_ITEMS"})
    recommend_refresh_seconds: int = field(default=900, metadata={"env": "CANDOR_RECOMMEND_REFRESH_SECONDS"})
    decide_rules_file: str = field(default="", metadata={"env": "CANDOR_DECIDE_RULES_FILE"})

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``env`` (default ``os.environ``), then apply non-None ``overrides``."""
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata["env"]
            if name in source and source[name] != "":
                raw = source[name]
                try:
                    if f.type in ("int", int):
                        values[f.name] = int(raw)
                    elif f.type in ("float", float):
                        values[f.name] = float(raw)
                    elif f.type in ("Path", Path):
                        values[f.name] = Path(raw)
                    else:
                        values[f.name] = raw
                except ValueError as exc:
                    kind = "a number" if f.type in ("float", float) else "a whole number"
                    raise ConfigError(f"{name}={raw!r} is not {kind}") from exc
        for key, value in overrides.items():
            if value is not None:
                values[key] = Path(value) if key == "data_dir" else value
        settings = cls(**values)
        settings.validate()
        return settings

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def validate(self) -> None:
        if self.sqlite_synchronous.upper() not in {"FULL", "EXTRA", "NORMAL"}:
            raise ConfigError(
                "CANDOR_SQLITE_SYNCHRONOUS must be FULL, EXTRA or NORMAL; OFF would break the promise "
                "that an acknowledged event is committed"
            )
        if not 1 <= self.sqlite_cache_mb <= 65536:
            raise ConfigError("CANDOR_SQLITE_CACHE_MB must be between 1 and 65536 (megabytes per connection)")
        if self.max_request_bytes < self.max_batch_bytes:
            raise ConfigError("CANDOR_MAX_REQUEST_BYTES must be at least CANDOR_MAX_BATCH_BYTES")
        if not 1 <= self.max_json_depth <= 256:
            raise ConfigError("CANDOR_MAX_JSON_DEPTH must be between 1 and 256")
        from limits import parse

        for name in (
            "rate_collect_per_key",
            "rate_collect_per_ip",
            "rate_staff_per_token",
            "rate_auth_failures_per_ip",
            "rate_privacy_requests_per_ip",
            "rate_privacy_requests_per_identifier",
            "rate_verify_per_ip",
        ):
            value = getattr(self, name)
            try:
                parse(value)
            except ValueError:
                env = next(f.metadata["env"] for f in fields(self) if f.name == name)
                raise ConfigError(f"{env}={value!r} is not a rate such as '100/second' or '30/minute'") from None
        if self.default_jurisdiction not in ("EU", "UK", "US-CA", "US", "OTHER"):
            raise ConfigError("CANDOR_DEFAULT_JURISDICTION must be one of EU, UK, US-CA, US, OTHER")
        if not 1 <= self.consent_ttl_days <= 3650:
            raise ConfigError("CANDOR_CONSENT_TTL_DAYS must be between 1 and 3650")
        for name, env in (
            ("purposes_file", "CANDOR_PURPOSES_FILE"),
            ("tracking_plan_file", "CANDOR_TRACKING_PLAN_FILE"),
        ):
            value = getattr(self, name)
            if value and not Path(value).is_file():
                raise ConfigError(f"{env}={value!r}: no such file")
        if not 1 <= self.workers <= 64:
            raise ConfigError("CANDOR_WORKERS must be between 1 and 64")
        if self.insights_min_profiles < 11:
            raise ConfigError(
                "CANDOR_INSIGHTS_MIN_PROFILES must be at least 11: smaller groups of people are never released"
            )
        if not 0 < self.dp_epsilon_per_request <= 10 or not 0 < self.dp_epsilon_per_month <= 100:
            raise ConfigError(
                "CANDOR_DP_EPSILON_PER_REQUEST must be in (0, 10] and CANDOR_DP_EPSILON_PER_MONTH in (0, 100]"
            )
        from candor.insights.views import parse_source_channels

        try:
            parse_source_channels(self.source_channels)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.analytics_cache_mb < 0:
            raise ConfigError("CANDOR_ANALYTICS_CACHE_MB must be 0 (no cache) or more")
        if self.analytics_refresh_seconds < 0:
            raise ConfigError("CANDOR_ANALYTICS_REFRESH_SECONDS must be 0 (no schedule) or more")
        if self.body_timeout_seconds < 1:
            raise ConfigError("CANDOR_BODY_TIMEOUT_SECONDS must be at least 1")
        self.identity_limit_map  # noqa: B018 - parses, raising ConfigError on a bad value
        self.recommend_interest_map  # noqa: B018 - parses, raising ConfigError on a bad value
        if self.recommend_min_support < 2:
            raise ConfigError("CANDOR_RECOMMEND_MIN_SUPPORT must be at least 2: a pair seen in one person's history "
                              "would tell what that person bought")  # fmt: skip
        if not 1 <= self.recommend_neighbors <= 1000 or not 1 <= self.recommend_max_items <= 10_000:
            raise ConfigError("CANDOR_RECOMMEND_NEIGHBORS must be 1..1000 and CANDOR_RECOMMEND_MAX_ITEMS 1..10000")
        if self.recommend_shrinkage < 0 or self.recommend_refresh_seconds < 0:
            raise ConfigError("CANDOR_RECOMMEND_SHRINKAGE and CANDOR_RECOMMEND_REFRESH_SECONDS must be 0 or more")
        if self.identity_max_shared < 2:
            raise ConfigError("CANDOR_IDENTITY_MAX_SHARED must be at least 2")
        if not 0.0 < self.match_review_threshold <= self.match_threshold < 1.0:
            raise ConfigError(
                "CANDOR_MATCH_REVIEW_THRESHOLD and CANDOR_MATCH_THRESHOLD must satisfy 0 < review <= match < 1"
            )
        if self.smtp_url and not self.smtp_url.startswith(("smtp://", "smtps://")):
            raise ConfigError("CANDOR_SMTP_URL must look like smtp://user:pass@host:587?starttls=1 or smtps://host:465")
        if not 1 <= self.smtp_connections <= 32:
            raise ConfigError("CANDOR_SMTP_CONNECTIONS must be 1..32 (connections a campaign sends over at once)")
        if not self.public_url.startswith(("http://", "https://")):
            raise ConfigError("CANDOR_PUBLIC_URL must start with http:// or https://")
        if self.survivorship not in ("recent", "trusted", "frequent"):
            raise ConfigError("CANDOR_SURVIVORSHIP must be one of recent, trusted, frequent")
        from candor.engines import parse_conf

        parse_conf(self.spark_conf)  # raises ConfigError naming the bad pair
        if self.analytics_purge_engine not in ("duckdb", "spark"):
            raise ConfigError("CANDOR_ANALYTICS_PURGE_ENGINE must be duckdb or spark")
        if self.retention_seconds < 0:
            raise ConfigError("CANDOR_RETENTION_SECONDS must be 0 (off) or a number of seconds")
        from candor.retention import parse_rules

        parse_rules(self.retention)  # raises ConfigError naming the bad rule
        self.validate_pii()
        if not 1 <= self.webhook_attempts <= 20:
            raise ConfigError("CANDOR_WEBHOOK_ATTEMPTS must be between 1 and 20")
        if not 0 <= self.webhook_backoff_seconds <= 300 or not 0 < self.webhook_timeout_seconds <= 300:
            raise ConfigError(
                "CANDOR_WEBHOOK_BACKOFF_SECONDS (0-300) and CANDOR_WEBHOOK_TIMEOUT_SECONDS (0-300] are seconds"
            )
        if not 1 <= self.conversion_window_days <= 365:
            raise ConfigError("CANDOR_CONVERSION_WINDOW_DAYS must be between 1 and 365")
        self.frequency_cap_map  # noqa: B018 - parses, raising ConfigError on a bad value
        self.channel_cost_map  # noqa: B018
        url = self.database_url
        if url and not (url.startswith("sqlite") or url.startswith("postgresql")):
            raise ConfigError(
                f"CANDOR_DATABASE_URL must start with sqlite:/// or postgresql+psycopg://, got scheme "
                f"{url.split(':', 1)[0]!r}"
            )

    def validate_pii(self) -> None:
        if self.pii_detection not in ("on", "off"):
            raise ConfigError("CANDOR_PII_DETECTION must be on or off")
        if self.pii_patterns_file:
            from candor.detect import load_patterns

            try:
                load_patterns(self.pii_patterns_file)
            except ValueError as exc:
                raise ConfigError(f"CANDOR_PII_PATTERNS: {exc}") from None
        from candor.detect import field_names

        try:
            field_names(self.pii_field_names)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        import phonenumbers

        for region in self.pii_phone_regions.split(","):
            if region.strip() and region.strip().upper() not in phonenumbers.SUPPORTED_REGIONS:
                raise ConfigError(f"CANDOR_PII_PHONE_REGIONS: {region.strip()!r} is not a region code such as US or GB")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            return url
        return f"sqlite:///{(self.data_dir / 'candor.db').resolve()}"

    @property
    def recommend_sensitive_set(self) -> frozenset[str]:
        """CANDOR_RECOMMEND_SENSITIVE_CATEGORIES: catalogue or dictionary categories never used (lower case)."""
        return frozenset(c.strip().lower() for c in self.recommend_sensitive_categories.split(",") if c.strip())

    @property
    def recommend_interest_map(self) -> dict[str, tuple[str, ...]]:
        """CANDOR_RECOMMEND_INTERESTS: ``jazz=Jazz,pop=Soul|Electronic`` -> stated interest to catalogue categories."""
        out: dict[str, tuple[str, ...]] = {}
        for part in self.recommend_interests.split(","):
            if not part.strip():
                continue
            name, sep, cats = part.partition("=")
            targets = tuple(c.strip() for c in cats.split("|") if c.strip())
            if not sep or not name.strip() or not targets:
                raise ConfigError(
                    f"CANDOR_RECOMMEND_INTERESTS: {part.strip()!r} is not interest=Category "
                    "(e.g. jazz=Jazz,pop=Soul|Rock)"
                )
            out[name.strip()] = targets
        return out

    @property
    def identity_limit_map(self) -> dict[str, int]:
        """CANDOR_IDENTITY_LIMITS parsed: ``user_id=1,email=3`` -> {"user_id": 1, "email": 3}."""
        out: dict[str, int] = {}
        for part in self.identity_limits.split(","):
            if not part.strip():
                continue
            name, sep, n = part.partition("=")
            try:
                value = int(n)
            except ValueError:
                value = 0
            if not sep or not name.strip() or value < 1:
                raise ConfigError(
                    f"CANDOR_IDENTITY_LIMITS={self.identity_limits!r}: "
                    "write type=count pairs such as 'user_id=1,email=3'"
                )
            out[name.strip()] = value
        return out

    @property
    def analytics_path(self) -> Path:
        """Where the analytics store (Parquet) lives: CANDOR_ANALYTICS_DIR, else ``analytics`` in the data dir."""
        return Path(self.analytics_dir) if self.analytics_dir else self.data_dir / "analytics"

    @property
    def frequency_cap_map(self) -> dict[str, str]:
        """CANDOR_FREQUENCY_CAPS parsed: ``sms=2/7d,webhook=3/7d`` -> {"sms": "2/7d", ...}."""
        out: dict[str, str] = {}
        for part in self.frequency_caps.split(","):
            if not part.strip():
                continue
            name, sep, cap = part.partition("=")
            n, slash, days = cap.strip().partition("/")
            if not sep or not slash or not n.isdigit() or not days.endswith("d") or not days[:-1].isdigit():
                raise ConfigError(
                    f"CANDOR_FREQUENCY_CAPS={self.frequency_caps!r}: write channel=N/Dd pairs such as 'sms=2/7d'"
                )
            out[name.strip()] = cap.strip()
        return out

    @property
    def channel_cost_map(self) -> dict[str, float]:
        """CANDOR_CHANNEL_COSTS parsed: ``email=0.001,sms=0.0075`` -> cost per message and channel."""
        out: dict[str, float] = {}
        for part in self.channel_costs.split(","):
            if not part.strip():
                continue
            name, sep, cost = part.partition("=")
            try:
                value = float(cost)
            except ValueError:
                value = -1.0
            if not sep or value < 0:
                raise ConfigError(
                    f"CANDOR_CHANNEL_COSTS={self.channel_costs!r}: write channel=cost pairs such as 'sms=0.0075'"
                )
            out[name.strip()] = value
        return out

    @property
    def identity_junk_set(self) -> frozenset[str]:
        return frozenset(v.strip().lower() for v in self.identity_junk_values.split(",") if v.strip())

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    def ensure_data_dir(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        return self.data_dir

    def load_master_key(self, create: bool = True) -> bytes:
        """The 32-byte master key: from CANDOR_MASTER_KEY, or the key file in the data dir.

        The key file is created on first start with mode 0600. The key is never logged.
        """
        if self.master_key:
            return decode_key(self.master_key, "CANDOR_MASTER_KEY")
        path = self.data_dir / MASTER_KEY_FILE
        if path.exists():
            return read_key_file(path)
        if not create:
            raise ConfigError(f"no master key: set CANDOR_MASTER_KEY or create {path}")
        self.ensure_data_dir()
        key = secrets.token_bytes(32)
        write_key_file(path, key)
        return key

    def load_master_keys(self) -> list[bytes]:
        """Every master key in force, the primary (the one that wraps new keys) first.

        Outside a rotation that is just the master key. During one it is the new key (the key file
        ``master.key.next``, or CANDOR_MASTER_KEY) followed by the old one (``master.key``, or
        CANDOR_PREVIOUS_MASTER_KEY), so that keys wrapped by either can be read.
        """
        if self.master_key:
            keys = [decode_key(self.master_key, "CANDOR_MASTER_KEY")]
            if self.previous_master_key:
                keys.append(decode_key(self.previous_master_key, "CANDOR_PREVIOUS_MASTER_KEY"))
            return keys
        current = self.load_master_key()
        nxt = self.data_dir / NEXT_MASTER_KEY_FILE
        if nxt.exists():
            return [read_key_file(nxt), current]
        return [current]


def read_key_file(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by other users (mode {mode:o}); run: chmod 600 {path}")
    return decode_key(path.read_text().strip(), str(path))


def write_key_file(path: Path, key: bytes) -> None:
    """Write a key file with mode 0600, durably, refusing to overwrite an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.urlsafe_b64encode(key).decode() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def decode_key(text: str, where: str) -> bytes:
    """Decode a 32-byte key given as 64 hex digits or base64 (standard or URL-safe)."""
    text = text.strip()
    raw: bytes | None = None
    if len(text) == 64:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = None
    if raw is None:
        try:
            raw = base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_") + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raw = None
    if raw is None or len(raw) != 32:
        raise ConfigError(
            f"{where} must hold a 32-byte key as 64 hex digits or base64; "
            "generate one with: python -c 'import secrets;print(secrets.token_hex(32))'"
        )
    return raw


def settings_table() -> list[tuple[str, str, str]]:
    """(environment variable, field, default) for every setting: used by docs and their test."""
    out = []
    for f in fields(Settings):
        default = "" if f.metadata.get("secret") else str(f.default)
        out.append((f.metadata["env"], f.name, default))
    return out
