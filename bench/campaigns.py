"""Campaign benchmark: email delivery to a local SMTP server with every check applied, per recipient.

    .venv/bin/python bench/campaigns.py [--profiles 5000] [--quick] [--json]

People are written through Candor's write path (validated identify events with an email and a
consent choice; a fifth refuse marketing email, one in twenty is on the do-not-contact list), a segment
selects everyone seen recently, and one campaign is sent to a real SMTP server (aiosmtpd) on localhost.
Reported: messages per second through ``Campaigns.send`` (segment evaluation, consent, address,
suppression, frequency cap, quiet hours, rendering, SMTP, the send log), and, in the same run, the
baseline: the same number of messages sent straight through one SMTP connection with no checks at all.

The SMTP server runs in a process of its own (bench/_smtp_sink.py), as a mail server would: in the
benchmark's own process it would take the interpreter's lock from the sender it is meant to measure,
and parse every message on the way. ``--smtp thread`` keeps the earlier in-process server (the test
suite's Inbox) for comparison.
"""

from __future__ import annotations

import argparse
import json
import random
import smtplib
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.rights.smtp import smtp_server  # noqa: E402

from candor.app import Runtime  # noqa: E402
from candor.config import Settings  # noqa: E402
from candor.ingest import Work  # noqa: E402
from candor.store import now_ms  # noqa: E402
from candor.testing import free_port  # noqa: E402

CAMPAIGN: dict[str, Any] = {
    "name": "bench",
    "segment": "everyone",
    "purpose": "marketing.email",
    "subject": "This week",
    "template": "Hi {{ traits.firstName }}, this week in the shop.",
    "generic_template": "Hello, this week in the shop.",
    "sender": "Shop <news@shop.example>",
    "postal_address": "1 Main Street, Salem",
}


def build(rt: Runtime, n: int, rng: random.Random) -> dict[str, int]:
    key = rt.directory.create_source("bench")
    info = rt.directory.source_for_key(key)
    assert info is not None
    validator = rt.validator_for(info)
    expected = {"send": 0, "no_consent": 0, "suppressed": 0}
    choices: dict[str, dict[str, bool]] = {}
    batch = []
    for i in range(n):
        refuse = rng.random() < 0.2
        prefs = {"marketing.email": not refuse, "personalization": rng.random() < 0.5, "analytics": True}
        choices[f"u{i}"] = prefs
        msg = validator.validate(
            {
                "userId": f"u{i}",
                "traits": {"email": f"person{i}@example.org", "firstName": f"P{i}"},
                "context": {"consent": {"categoryPreferences": prefs}},
            },
            type_="identify",
            received_ms=now_ms(),
            sent_at_ms=None,
            client_ip=None,
        )
        batch.append(msg)
        if refuse:
            expected["no_consent"] += 1
        elif rng.random() < 0.05:
            rt.suppressions.add("email", "email", f"person{i}@example.org", "unsubscribe")
            expected["suppressed"] += 1
        else:
            expected["send"] += 1
        if len(batch) == 2000:
            rt.ingestor.submit_sync(Work(info.id, batch, [], now_ms()), timeout=600)  # type: ignore[arg-type]
            batch = []
    if batch:
        rt.ingestor.submit_sync(Work(info.id, batch, [], now_ms()), timeout=600)  # type: ignore[arg-type]
    # each person's choice, as the preference center would record it
    items = list(choices.items())
    for k in range(0, len(items), 1000):
        with rt.store.write() as conn:
            for uid, prefs in items[k : k + 1000]:
                sid = rt.consent.subject_for("user_id", uid)
                assert sid is not None
                rt.consent.record(
                    conn,
                    sid,
                    granted=frozenset(p for p, v in prefs.items() if v),
                    denied=frozenset(p for p, v in prefs.items() if not v),
                    source="preference_center",
                    actor="bench",
                )
    return expected


def raw_smtp(url_port: int, n: int) -> float:
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", url_port) as client:
        for i in range(n):
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "news@shop.example", f"raw{i}@example.org", "This week"
            msg.set_content("Hello, this week in the shop.")
            client.send_message(msg)
    return time.perf_counter() - started


class _ProcessInbox:
    """The recipients the sink process received, read from its file."""

    def __init__(self, port: int, path: Path) -> None:
        self.port, self.path = port, path

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def recipients(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.exists() else []


@contextmanager
def smtp_process(tmp: Path) -> Iterator[_ProcessInbox]:
    inbox = _ProcessInbox(free_port(), tmp / "recipients.txt")
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("_smtp_sink.py")), str(inbox.port), str(inbox.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"the SMTP sink did not start (said {line!r}, exit {proc.poll()})")
        yield inbox
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()


@contextmanager
def smtp_thread() -> Iterator[Any]:
    with smtp_server() as inbox:
        inbox.recipients = lambda: [m["To"] for m in inbox.messages]  # type: ignore[attr-defined]
        yield inbox


def run(profiles: int, seed: int = 1, smtp: str = "process", connections: int = 4) -> dict[str, Any]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp, smtp_process(Path(tmp)) if smtp == "process" else smtp_thread() as inbox:
        return _run(Path(tmp), inbox, profiles, rng, smtp, connections)


def _run(tmp: Path, inbox: Any, profiles: int, rng: random.Random, smtp: str, connections: int) -> dict[str, Any]:
    settings = Settings.from_env(
        env={},
        data_dir=tmp / "data",
        default_jurisdiction="EU",
        smtp_url=inbox.url,
        quiet_hours="",
        smtp_connections=connections,
    )
    rt = Runtime(settings)
    try:
        t0 = time.perf_counter()
        expected = build(rt, profiles, rng)
        built = time.perf_counter() - t0
        rt.segments.create(
            "everyone", {"name": "everyone", "conditions": [{"last_seen": {"within_days": 30}}]}, "bench"
        )
        t1 = time.perf_counter()
        members = rt.segments.evaluate("everyone")
        segment_s = time.perf_counter() - t1
        rt.campaigns.create(CAMPAIGN, actor="bench")
        out = rt.campaigns.send("bench", actor="bench")
        received = inbox.recipients()
        delivered = len(received)
        raw_s = raw_smtp(inbox.port, delivered)
    finally:
        rt.close()
    rate = delivered / out["seconds"] if out["seconds"] else 0.0
    raw_rate = delivered / raw_s if raw_s else 0.0
    return {
        "benchmark": "campaigns",
        "profiles": profiles,
        "build_seconds": round(built, 1),
        "smtp_server": smtp,
        "smtp_connections": connections,
        "segment_members": len(members),
        "delivered": delivered,
        "recipients_twice": sum(1 for n in Counter(received).values() if n > 1),
        "segment_seconds": round(segment_s, 3),
        "outcomes": out["outcomes"],
        "expected": expected,
        "send_seconds": out["seconds"],
        "messages_per_second": round(rate, 1),
        "raw_smtp_messages_per_second": round(raw_rate, 1),
        "ratio_to_raw": round(rate / raw_rate, 3) if raw_rate else None,
        "target_messages_per_second": 500,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", type=int, default=5000)
    ap.add_argument("--quick", action="store_true", help="300 profiles (the test suite)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--smtp",
        choices=("process", "thread"),
        default="process",
        help="the SMTP server in a process of its own (default) or in a thread of this one (earlier runs)",
    )
    ap.add_argument("--connections", type=int, default=4, help="SMTP connections a campaign sends over (default 4)")
    args = ap.parse_args(argv)
    result = run(300 if args.quick else args.profiles, smtp=args.smtp, connections=args.connections)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        table = Table(title=f"campaign delivery, {result['profiles']:,} profiles")
        table.add_column("measure")
        table.add_column("value", justify="right")
        for k in (
            "segment_seconds",
            "send_seconds",
            "messages_per_second",
            "raw_smtp_messages_per_second",
            "ratio_to_raw",
        ):
            table.add_row(k, str(result[k]))
        table.add_row("outcomes", json.dumps(result["outcomes"]))
        Console().print(table)
    return result


if __name__ == "__main__":
    main()
