"""Campaigns over real SMTP: only people who agreed receive anything, and unsubscribing is instant."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from candor.campaigns import CampaignError, in_quiet_hours, parse_cap, parse_quiet
from candor.config import Settings
from tests.helpers import Api, api, bearer
from tests.rights.smtp import Inbox, smtp_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    with smtp_server() as box:
        yield box


CAMPAIGN: dict[str, Any] = {
    "name": "jazz-week",
    "segment": "recent",
    "channel": "email",
    "purpose": "marketing.email",
    "subject": "New jazz this week",
    "template": "Hi {{ traits.firstName }}, new jazz for you.",
    "generic_template": "Hello, new jazz this week.",
    "sender": "Books & Records <news@shop.example>",
    "postal_address": "Books & Records, 1 Main Street, Salem",
    "cost_per_message": 0.01,
}


async def person(a: Api, uid: str, email: str, grant: list[str], tz: str | None = None) -> None:
    ctx: dict[str, Any] = {"timezone": tz} if tz else {}
    await a.post("/v1/identify", {"userId": uid, "traits": {"email": email, "firstName": uid.title()}, "context": ctx})
    if grant:
        r = await a.post("/v1/consent", {"userId": uid, "granted": grant, "source": "preference_center"})
        assert r.status_code in (200, 201), r.text


async def test_only_people_who_agreed_receive_and_unsubscribe_stops_the_next_send(
    make_settings: Callable[..., Settings], inbox: Inbox
) -> None:
    settings = make_settings(
        default_jurisdiction="EU",
        smtp_url=inbox.url,
        quiet_hours="00:00-23:59",
        quiet_hours_channels="email",
        email_frequency_cap="1/7d",
    )
    async with api(settings) as a:
        await person(a, "yes", "yes@example.org", ["marketing.email", "personalization"], tz="Etc/GMT+12")
        await person(a, "generic", "generic@example.org", ["marketing.email"], tz="Etc/GMT+12")
        await person(a, "nope", "nope@example.org", [])
        await person(a, "blocked", "blocked@example.org", ["marketing.email"], tz="Etc/GMT+12")
        await person(a, "night", "night@example.org", ["marketing.email"], tz="UTC")
        a.rt.suppressions.add("email", "email", "blocked@example.org", "complaint")
        # quiet hours are 00:00-23:59 everywhere: the 23:59 minute is outside them. Etc/GMT+12 is UTC-12;
        # the test pins "now" so that it is 23:59 there and inside the quiet hours in UTC
        import datetime as dt

        now = int(dt.datetime(2026, 11, 30, 11, 59, 30, tzinfo=dt.UTC).timestamp() * 1000)
        a.rt.campaigns.now = lambda: now
        a.rt.segments.create("recent", {"name": "recent", "conditions": [{"last_seen": {"within_days": 30}}]}, "test")
        owner = bearer(a.owner)
        r = await a.client.post("/v1/campaigns", json=CAMPAIGN, headers=owner)
        assert r.status_code == 201, r.text
        preview = (await a.client.get("/v1/campaigns/jazz-week/preview", headers=owner)).json()
        assert preview["outcomes"]["send:personalised"] == 1 and preview["outcomes"]["send:generic"] == 1
        r = await a.client.post("/v1/campaigns/jazz-week/send", headers=owner)
        out = r.json()["outcomes"]
        assert out == {
            "sent": 2,
            "skipped:no_consent": 1,
            "skipped:suppressed": 1,
            "skipped:quiet_hours": 1,
        }, out
        assert sorted(m["To"] for m in inbox.messages) == ["generic@example.org", "yes@example.org"]
        personal = inbox.to("yes@example.org")[0]
        assert "Hi Yes" in inbox.body(personal)
        assert "Hi " not in inbox.body(inbox.to("generic@example.org")[0])  # no personalization consent
        assert personal["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "mailto:" in personal["List-Unsubscribe"] and "/v1/unsubscribe/" in personal["List-Unsubscribe"]
        assert "1 Main Street" in inbox.body(personal)
        # resuming sends to nobody twice
        again = (await a.client.post("/v1/campaigns/jazz-week/send", headers=owner)).json()["outcomes"]
        assert again.get("sent", 0) == 0 and again["already_sent"] == 2
        # the frequency cap (1 per 7 days) stops a second campaign to the same people
        r = await a.client.post("/v1/campaigns", json={**CAMPAIGN, "name": "second"}, headers=owner)
        out2 = (await a.client.post("/v1/campaigns/second/send", headers=owner)).json()["outcomes"]
        assert out2.get("skipped:frequency_cap") == 2 and "sent" not in out2
        # one click: the link in the header, then the very next campaign skips the person
        import re

        found = re.search(r"<(https?://[^>]+)>", "".join(str(personal["List-Unsubscribe"]).split()))
        assert found, personal["List-Unsubscribe"]
        url = found.group(1)
        path = "/v1/unsubscribe/" + url.split("/v1/unsubscribe/", 1)[1]
        assert (await a.client.get(path)).status_code == 200  # a GET only asks
        assert a.rt.consent.can_use(a.rt.consent.subject_for("user_id", "yes") or "", "marketing.email").allowed
        r = await a.client.post(path, content=b"List-Unsubscribe=One-Click")
        assert r.status_code == 200 and r.json()["unsubscribed"] is True
        sid = a.rt.consent.subject_for("user_id", "yes") or ""
        assert not a.rt.consent.can_use(sid, "marketing.email").allowed
        assert a.rt.suppressions.check("email", "email", "yes@example.org")
        a.rt.campaigns.cap = (100, 7 * 86_400_000)
        r = await a.client.post("/v1/campaigns", json={**CAMPAIGN, "name": "third"}, headers=owner)
        out3 = (await a.client.post("/v1/campaigns/third/send", headers=owner)).json()["outcomes"]
        assert out3["sent"] == 1 and out3["skipped:no_consent"] == 2
        assert len(inbox.to("yes@example.org")) == 1
        report = (await a.client.get("/v1/campaigns/jazz-week/report", headers=owner)).json()
        assert report["outcomes"]["sent"] == 2 and report["variants"] == {"personalised": 1, "generic": 1}
        assert report["spend"] == 0.02
        assert (await a.client.post("/v1/unsubscribe/" + "x" * 40)).status_code == 404
        # the person's access export tells them which segments they were in and what we sent or skipped
        import io
        import json
        import zipfile

        a.rt.segments.refresh("recent", "test")
        people = a.rt.identity.members(sid)
        data = json.loads(zipfile.ZipFile(io.BytesIO(a.rt.rights.export_bytes(people, "r"))).read("data.json"))
        assert [m["segment"] for m in data["segments"]] == ["recent"]
        assert {(m["campaign"], m["outcome"]) for m in data["messages"]} >= {
            ("jazz-week", "sent"),
            ("second", "skipped:frequency_cap"),
            ("third", "skipped:no_consent"),
        }


async def test_bad_campaigns_are_refused_before_anything_is_sent(settings: Settings) -> None:
    async with api(settings) as a:
        a.rt.segments.create("recent", {"name": "recent", "conditions": [{"last_seen": {"within_days": 30}}]}, "test")
        owner = bearer(a.owner)
        for bad, words in (
            ({**CAMPAIGN, "template": "Hi {{ traits.firstName "}, "template"),
            ({**CAMPAIGN, "subject": "{{ ''.__class__.__mro__ }}"}, "subject"),
            ({**CAMPAIGN, "purpose": "marketing.fax"}, "purpose"),
            ({**CAMPAIGN, "segment": "nobody"}, "segment"),
            ({**CAMPAIGN, "postal_address": ""}, "postal_address"),
            ({**CAMPAIGN, "surprise": 1}, "unknown"),
        ):
            r = await a.client.post("/v1/campaigns", json=bad, headers=owner)
            assert r.status_code in (400, 404), (bad, r.text)
            assert words in r.json()["error"]["message"]
        marketer = bearer(a.rt.directory.create_token("m", "marketer"))
        assert (await a.client.post("/v1/campaigns", json=CAMPAIGN, headers=marketer)).status_code == 201
        analyst = bearer(a.rt.directory.create_token("x", "analyst"))
        assert (await a.client.get("/v1/campaigns/jazz-week/report", headers=analyst)).status_code == 403


def test_caps_and_quiet_hours_parsing() -> None:
    import datetime as dt

    assert parse_cap("3/7d") == (3, 7 * 86_400_000)
    with pytest.raises(CampaignError):
        parse_cap("lots")
    quiet = parse_quiet("21:00-08:00")
    assert quiet is not None
    assert in_quiet_hours(dt.time(22, 0), quiet) and in_quiet_hours(dt.time(7, 59), quiet)
    assert not in_quiet_hours(dt.time(8, 0), quiet) and not in_quiet_hours(dt.time(20, 59), quiet)
    assert parse_quiet("") is None


async def test_mail_server_down_then_back_sends_each_recipient_once(
    make_settings: Callable[..., Settings], inbox: Inbox
) -> None:
    from candor.testing import free_port

    settings = make_settings(smtp_url=f"smtp://127.0.0.1:{free_port()}", quiet_hours="")
    async with api(settings) as a:
        for uid in ("m1", "m2"):
            await person(a, uid, f"{uid}@example.org", [])  # US: marketing email is opt-out
        a.rt.segments.create("recent", {"name": "recent", "conditions": [{"last_seen": {"within_days": 30}}]}, "test")
        a.rt.campaigns.create(CAMPAIGN, actor="test")
        down = a.rt.campaigns.send("jazz-week", actor="test")
        assert down["state"] == "failed" and down["outcomes"] == {"failed": 2}
        a.rt.mailer.url = inbox.url  # the server is back
        back = a.rt.campaigns.send("jazz-week", actor="test")
        assert back["outcomes"] == {"sent": 2} and back["state"] == "sent"
        again = a.rt.campaigns.send("jazz-week", actor="test")
        assert again["outcomes"] == {"already_sent": 2}
        assert sorted(m["To"] for m in inbox.messages) == ["m1@example.org", "m2@example.org"]
        assert a.rt.campaigns.report("jazz-week")["outcomes"] == {"sent": 2}


async def test_a_batch_cut_off_mid_send_is_never_sent_twice(
    make_settings: Callable[..., Settings], inbox: Inbox
) -> None:
    from sqlalchemy import update

    from candor.store.schema import sends

    async with api(make_settings(smtp_url=inbox.url, quiet_hours="")) as a:
        for uid in ("c1", "c2"):
            await person(a, uid, f"{uid}@example.org", [])
        a.rt.segments.create("recent", {"name": "recent", "conditions": [{"last_seen": {"within_days": 30}}]}, "test")
        a.rt.campaigns.create(CAMPAIGN, actor="test")
        a.rt.campaigns.send("jazz-week", actor="test")
        assert len(inbox.messages) == 2
        # a crash between "sending" and "sent": the row stays "sending"; the message may have left
        c1 = a.rt.consent.subject_for("user_id", "c1")
        with a.rt.store.write() as conn:
            conn.execute(update(sends).where(sends.c.subject_id == c1).values(outcome="sending"))
        again = a.rt.campaigns.send("jazz-week", actor="test")
        assert again["outcomes"] == {"already_sent": 2} and len(inbox.messages) == 2


class _Outage(Inbox):
    """A mail server that accepts ``ok`` messages, then takes the next one and dies before answering (it
    was delivered, the sender cannot know), then answers every new message 421 until it is ``back``."""

    def __init__(self, port: int, ok: int) -> None:
        super().__init__(port)
        self.ok = ok
        self.down = False
        self.crashed = False

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.down:
            return "421 4.3.2 Service not available, closing transmission channel"
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await super().handle_DATA(server, session, envelope)
        if len(self.messages) > self.ok and not self.crashed:
            self.down = self.crashed = True
            server.transport.close()  # the crash: the message is in, the reply never leaves
        return "250 OK"


@asynccontextmanager
async def _campaign_for(
    make_settings: Callable[..., Settings], box: Inbox, people: list[str], connections: int
) -> AsyncIterator[Api]:
    """The API with ``people`` seen recently and CAMPAIGN created, mailing to ``box`` (a real server)."""
    from aiosmtpd.controller import Controller

    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        settings = make_settings(smtp_url=box.url, quiet_hours="", smtp_connections=connections)
        async with api(settings) as a:
            for uid in people:
                await person(a, uid, f"{uid}@example.org", [])
            a.rt.segments.create("recent", {"name": "recent", "conditions": [{"last_seen": {"within_days": 30}}]}, "t")
            a.rt.campaigns.create(CAMPAIGN, actor="test")
            yield a
    finally:
        controller.stop()


@pytest.mark.parametrize("connections", [1, 4])
async def test_mail_server_dying_mid_campaign_retries_and_sends_nobody_twice(
    make_settings: Callable[..., Settings], connections: int
) -> None:
    from candor.testing import free_port

    box = _Outage(free_port(), ok=2)
    people = [f"o{i}" for i in range(6)]
    async with _campaign_for(make_settings, box, people, connections) as a:
        first = a.rt.campaigns.send("jazz-week", actor="test")
        out = first["outcomes"]
        if connections == 1:
            # two sent, one handed over without an answer (unconfirmed), three refused while it was down
            assert out == {"sent": 2, "unconfirmed": 1, "failed": 3}, first
        else:  # several connections at once: how many got past MAIL before the crash depends on timing
            assert sum(out.values()) == 6 and out.get("unconfirmed") == 1 and out.get("sent", 0) >= 2, first
        delivered = out.get("sent", 0) + out.get("unconfirmed", 0)
        assert first["state"] == ("failed" if out.get("failed") else "sent")
        assert len(box.messages) == delivered
        box.down = False  # the server is back
        second = a.rt.campaigns.send("jazz-week", actor="test")
        want = {"already_sent": delivered, "sent": 6 - delivered}
        assert second["outcomes"] == {k: n for k, n in want.items() if n} and second["state"] == "sent"
        third = a.rt.campaigns.send("jazz-week", actor="test")
        assert third["outcomes"] == {"already_sent": 6}
        received = sorted(str(m["To"]) for m in box.messages)
        assert received == sorted(f"{uid}@example.org" for uid in people)  # each exactly once
        report = a.rt.campaigns.report("jazz-week")["outcomes"]
        assert sum(report.values()) == 6 and report.get("unconfirmed", 0) == out.get("unconfirmed", 0)


class _Slow(Inbox):
    """A mail server that takes its time with each message and notes which connection brought it."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.peers: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import asyncio

        self.peers.append(session.peer)
        await asyncio.sleep(0.05)
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.parametrize("connections", [1, 3])
async def test_a_campaign_sends_over_as_many_connections_as_configured(
    make_settings: Callable[..., Settings], connections: int
) -> None:
    from candor.testing import free_port

    box = _Slow(free_port())
    people = [f"c{i}" for i in range(9)]
    async with _campaign_for(make_settings, box, people, connections) as a:
        out = a.rt.campaigns.send("jazz-week", actor="test")
        assert out["outcomes"] == {"sent": 9}
        assert sorted(str(m["To"]) for m in box.messages) == sorted(f"{u}@example.org" for u in people)
        # the slow server holds each message 50 ms: every connection is busy at once
        assert len(set(box.peers)) == connections
        sent = a.rt.campaigns.report("jazz-week")["outcomes"]
        assert sent == {"sent": 9}


def test_the_number_of_smtp_connections_is_checked() -> None:
    from candor.config import ConfigError

    for bad in ("0", "33", "many"):
        with pytest.raises(ConfigError):
            Settings.from_env(env={"CANDOR_SMTP_CONNECTIONS": bad})
    assert Settings.from_env(env={"CANDOR_SMTP_CONNECTIONS": "8"}).smtp_connections == 8
