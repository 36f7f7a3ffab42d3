"""Prometheus metrics (served at /metrics). Labels never carry personal data."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

registry = CollectorRegistry(auto_describe=True)

events_total = Counter(
    "candor_events_total",
    "Events received by the collection API, by type and outcome (accepted, duplicate, rejected)",
    ["type", "outcome"],
    registry=registry,
)
requests_rejected_total = Counter(
    "candor_requests_rejected_total",
    "Collection requests refused as a whole, by reason code",
    ["code"],
    registry=registry,
)
commit_seconds = Histogram(
    "candor_commit_seconds",
    "Time to write and durably commit one group of collection requests",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=registry,
)
commit_group_events = Histogram(
    "candor_commit_group_events",
    "Events written per group commit",
    buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000),
    registry=registry,
)
pii_findings_total = Counter(
    "candor_pii_findings_total",
    "Personal data found at collection where none was declared, by data category and what was done "
    "(encrypted, redacted, dropped, removed, withheld)",
    ["category", "action"],
    registry=registry,
)
