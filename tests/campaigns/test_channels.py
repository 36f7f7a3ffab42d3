"""Webhook and SMS channels against a real HTTP receiver: signed, retried, dead-lettered, replayed
exactly once; SMS needs written consent, keeps quiet hours and honours STOP; erasure reaches them."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from candor.config import Settings
from candor.store.schema import audit_log, consent_records
from tests.campaigns.receiver import Receiver
from tests.helpers import Api, api, bearer, provider_settings, signed

pytestmark = pytest.mark.anyio
EVERYONE = {"name": "everyone", "conditions": [{"last_seen": {"within_days": 30}}]}
PUSH: dict[str, Any] = {
    "name": "push-week",
    "segment": "everyone",
    "channel": "webhook",
    "destination": "push",
    "purpose": "marketing.push",
    "subject": "New this week",
    "template": "Hi {{ traits.firstName }}, new jazz for you.",
    "generic_template": "New jazz this week.",
    "cost_per_message": 0.25,
}


def fast(make_settings: Callable[..., Settings], **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "default_jurisdiction": "US",
        "quiet_hours": "",
        "webhook_attempts": 3,
        "webhook_backoff_seconds": 0.01,
        "webhook_timeout_seconds": 2.0,
    }
    return make_settings(**{**base, **kw})


async def person(
    a: Api,
    uid: str,
    grant: list[str],
    *,
    phone: str | None = None,
    tz: str | None = None,
    notice: dict[str, Any] | None = None,
) -> None:
    traits: dict[str, Any] = {"email": f"{uid}@example.org", "firstName": uid.title()}
    if phone:
        traits["phone"] = phone
    r = await a.post("/v1/identify", {"userId": uid, "traits": traits, "context": {"timezone": tz} if tz else {}})
    assert r.status_code == 200, r.text
    if grant:
        body: dict[str, Any] = {"userId": uid, "granted": grant, "source": "preference_center"}
        if notice:
            body["notice"] = notice
        r = await a.post("/v1/consent", body)
        assert r.status_code in (200, 201), r.text


async def destination(a: Api, name: str, kind: str, url: str, **extra: Any) -> str:
    r = await a.client.post(
        "/v1/destinations", json={"name": name, "kind": kind, "url": url, **extra}, headers=bearer(a.owner)
    )
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    assert secret.startswith("whsec_")
    assert secret not in str((await a.client.get("/v1/destinations", headers=bearer(a.owner))).json())
    return str(secret)


async def test_webhook_down_mid_send_retries_dead_letters_and_replays_each_recipient_once(
    make_settings: Callable[..., Settings],
) -> None:
    with Receiver() as hook:
        async with api(fast(make_settings)) as a:
            owner = bearer(a.owner)
            hook.secret = await destination(a, "push", "webhook", hook.url, purpose="marketing.push", contact="email")
            for uid in ("w1", "w2", "w3", "w4", "w5"):
                await person(a, uid, ["marketing.push"])
            await person(a, "w6", [])  # marketing.push needs consent everywhere: nothing for w6
            a.rt.segments.create("everyone", EVERYONE, "test")
            assert (await a.client.post("/v1/campaigns", json=PUSH, headers=owner)).status_code == 201
            hook.fail_next = 1  # the first request fails once: retried with backoff, same delivery id
            hook.accept_at_most = 2  # then the receiver goes down after two messages
            out = (await a.client.post("/v1/campaigns/push-week/send", headers=owner)).json()
            assert out["state"] == "failed"
            assert out["outcomes"] == {"sent": 2, "failed": 3, "skipped:no_consent": 1}, out
            assert all(h.signed for h in hook.hits), "every request carries a valid signature"
            first, retry = hook.hits[0], hook.hits[1]
            assert not first.accepted and retry.accepted
            assert first.headers["Candor-Delivery"] == retry.headers["Candor-Delivery"]
            letters = (await a.client.get("/v1/destinations/push/dead-letters", headers=owner)).json()
            assert len(letters) == 3 and {x["attempts"] for x in letters} == {3}
            assert all(x["last_error"] == "HTTP 503" and x["campaign"] == "push-week" for x in letters)
            listing = (await a.client.get("/v1/destinations", headers=owner)).json()
            assert listing[0]["dead_letters"] == 3
            # meanwhile one of them withdraws consent: the replay decides again and skips them
            withdrawn = letters[0]["profile"]
            with a.rt.store.write() as conn:
                a.rt.consent.record(conn, withdrawn, denied=frozenset({"marketing.push"}), source="api", actor="t")
            hook.accept_at_most = None  # the receiver is back
            r = await a.client.post("/v1/destinations/push/replay", json={}, headers=owner)
            assert r.status_code == 200, r.text
            assert r.json() == {"replayed": 3, "delivered": 2, "dead": 0, "skipped": 1}
            assert (await a.client.get("/v1/destinations/push/dead-letters", headers=owner)).json() == []
            again = (await a.client.post("/v1/campaigns/push-week/send", headers=owner)).json()
            assert again["outcomes"].get("sent", 0) == 0 and again["outcomes"]["already_sent"] == 4
            delivered = Counter(h.json["candorId"] for h in hook.accepted)
            assert len(delivered) == 4 and set(delivered.values()) == {1}, "nobody received the message twice"
            body = hook.accepted[0].json
            # nothing personal at rest: the dead letters and the recipients' list hold pseudonymous ids only
            if a.rt.settings.is_sqlite:
                a.rt.store.checkpoint()
                blob = b"".join(p.read_bytes() for p in a.rt.settings.data_dir.rglob("*") if p.is_file())
                assert b"w1@example.org" not in blob
            # the person's access export says which destination received them, under which id
            import io
            import json
            import zipfile

            people = a.rt.identity.members(letters[1]["profile"])  # replayed and delivered
            data = json.loads(zipfile.ZipFile(io.BytesIO(a.rt.rights.export_bytes(people, "r"))).read("data.json"))
            assert [(r["destination"], r["kind"]) for r in data["recipients"]] == [("push", "webhook")]
            assert body["type"] == "campaign.message" and body["purpose"] == "marketing.push"
            assert body["to"].endswith("@example.org") and "/v1/unsubscribe/" in body["unsubscribeUrl"]
            report = (await a.client.get("/v1/campaigns/push-week/report", headers=owner)).json()
            assert report["outcomes"] == {"sent": 4, "skipped:no_consent": 2}
            assert report["spend"] == 1.0 and report["cost_per_message"] == 0.25
            # a tampered body does not verify
            import candor.campaigns.signing as signing

            assert not signing.verify(hook.secret, hook.accepted[0].headers, hook.accepted[0].body + b" ")
            bad = await a.client.post("/v1/destinations/push/replay", json={"ids": [999999]}, headers=owner)
            assert bad.status_code == 404


async def test_bad_destinations_and_webhook_campaigns_are_refused(make_settings: Callable[..., Settings]) -> None:
    async with api(fast(make_settings)) as a:
        owner = bearer(a.owner)
        a.rt.segments.create("everyone", EVERYONE, "test")
        for body, words in (
            ({"name": "x", "kind": "fax", "url": "https://x.example"}, "kind"),
            ({"name": "x", "kind": "webhook", "url": "ftp://x.example"}, "url"),
            ({"name": "x", "kind": "webhook", "url": "https://x.example", "contact": "postcard"}, "contact"),
            ({"name": "x", "kind": "webhook", "url": "https://x.example", "purpose": "mind-reading"}, "purpose"),
            ({"name": 5, "kind": "webhook", "url": "https://x.example"}, "name"),
        ):
            r = await a.client.post("/v1/destinations", json=body, headers=owner)
            assert r.status_code == 400 and words in r.json()["error"]["message"], (body, r.text)
        await destination(a, "push", "webhook", "https://push.example/hook")
        r = await a.client.post(
            "/v1/destinations", json={"name": "push", "kind": "webhook", "url": "https://x.example"}, headers=owner
        )
        assert r.status_code == 409
        marketer = bearer(a.rt.directory.create_token("m", "marketer"))
        r = await a.client.post(
            "/v1/destinations", json={"name": "y", "kind": "webhook", "url": "https://y.example"}, headers=marketer
        )
        assert r.status_code == 403  # destinations receive personal data: owners set them up
        for bad, words in (
            ({**PUSH, "destination": "nowhere"}, "destination"),
            ({k: v for k, v in PUSH.items() if k != "destination"}, "destination"),
            ({k: v for k, v in PUSH.items() if k != "purpose"}, "purpose"),
            ({**PUSH, "channel": "pigeon"}, "channel"),
            ({**PUSH, "channel": "sms"}, "sender"),
            ({**PUSH, "conversion_window_days": 0}, "conversion_window_days"),
        ):
            r = await a.client.post("/v1/campaigns", json=bad, headers=owner)
            assert r.status_code == 400 and words in r.json()["error"]["message"], (bad, r.text)
        assert a.rt.campaigns.names() == []
        assert (await a.client.get("/v1/destinations/nowhere/dead-letters", headers=owner)).status_code == 404


SMS: dict[str, Any] = {
    "name": "sms-week",
    "segment": "everyone",
    "channel": "sms",
    "destination": "texts",
    "sender": "+447700900001",
    "template": "Hi {{ traits.firstName }}: 2 for 1 on vinyl.",
    "generic_template": "2 for 1 on vinyl this week.",
}


async def test_sms_needs_written_consent_keeps_quiet_hours_and_stop_opts_out(
    make_settings: Callable[..., Settings],
) -> None:
    with Receiver() as provider:
        settings = fast(make_settings, quiet_hours="21:00-08:00", default_phone_region="GB")
        async with api(provider_settings(settings)) as a:
            owner = bearer(a.owner)
            provider.secret = await destination(a, "texts", "sms", provider.url)
            a.rt.consent.add_notice("sms-terms", 1, "en", "We may text you offers. Reply STOP to stop.")
            written = {"id": "sms-terms", "version": 1, "language": "en"}
            await person(a, "ann", ["marketing.sms"], phone="07911 123456", tz="Europe/London", notice=written)
            await person(a, "bob", ["marketing.sms"], phone="07911 123457", tz="Europe/London")  # no written proof
            await person(a, "kei", ["marketing.sms"], phone="07911 123458", tz="Asia/Tokyo", notice=written)
            await person(a, "noel", ["marketing.sms"], tz="Europe/London", notice=written)  # no phone
            noon = int(dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC).timestamp() * 1000)  # 21:00 in Tokyo
            a.rt.campaigns.now = lambda: noon
            a.rt.segments.create("everyone", EVERYONE, "test")
            assert (await a.client.post("/v1/campaigns", json=SMS, headers=owner)).status_code == 201
            out = (await a.client.post("/v1/campaigns/sms-week/send", headers=owner)).json()["outcomes"]
            assert out == {
                "sent": 1,
                "skipped:no_written_consent": 1,
                "skipped:quiet_hours": 1,
                "skipped:no_address": 1,
            }, out
            (text,) = [h.json for h in provider.accepted]
            assert text["to"] == "+447911123456" and text["from"] == "+447700900001"
            assert text["text"].startswith("Hi Ann") and "Reply STOP" in text["text"]
            assert provider.accepted[0].signed
            # the provider posts what people text back, with its source's write key
            r = await a.client.post("/v1/sms/inbound", **signed({"from": "+447911123456", "text": "help"}, a.write_key))
            assert r.status_code == 200 and "STOP" in r.json()["reply"] and r.json()["action"] == "help"
            r = await a.client.post(
                "/v1/sms/inbound",
                **signed(b"From=%2B447911123456&Body=Stop+", a.write_key, "application/x-www-form-urlencoded"),
            )
            assert r.status_code == 200 and r.json()["action"] == "opt_out", r.text
            sid = a.rt.consent.subject_for("user_id", "ann") or ""
            assert not a.rt.consent.can_use(sid, "marketing.sms").allowed
            with a.rt.store.engine.connect() as conn:
                sources = [
                    s
                    for (s,) in conn.execute(
                        select(consent_records.c.source).where(consent_records.c.subject_id == sid)
                    )
                ]
            assert sources[-1] == "sms_stop"
            assert a.rt.suppressions.check("sms", "phone", "+447911123456")
            # a number we do not know is suppressed too; other words change nothing
            r = await a.client.post("/v1/sms/inbound", **signed({"from": "+447911123999", "text": "QUIT"}, a.write_key))
            assert r.json()["action"] == "opt_out" and a.rt.suppressions.check("sms", "phone", "+447911123999")
            r = await a.client.post(
                "/v1/sms/inbound", **signed({"from": "+447911123457", "text": "stop please"}, a.write_key)
            )
            assert r.json() == {"action": "none", "reply": None}
            for bad in ({"text": "STOP"}, {"from": "not a number", "text": "STOP"}, ["STOP"]):
                r = await a.client.post("/v1/sms/inbound", **signed(bad, a.write_key))
                assert r.status_code == 400, (bad, r.text)
            assert (await a.client.post("/v1/sms/inbound", json={}, headers=owner)).status_code == 401
            # the next campaign skips Ann: STOP withdrew her consent
            assert (await a.client.post("/v1/campaigns", json={**SMS, "name": "sms-2"}, headers=owner)).status_code
            out2 = (await a.client.post("/v1/campaigns/sms-2/send", headers=owner)).json()["outcomes"]
            assert "sent" not in out2 and out2["skipped:no_consent"] == 1
            assert len(provider.accepted) == 1


async def test_by_default_no_source_may_post_provider_callbacks(make_settings: Callable[..., Settings]) -> None:
    async with api(fast(make_settings)) as a:
        r = await a.client.post("/v1/sms/inbound", **signed({"from": "+12025550143", "text": "STOP"}, a.write_key))
        assert r.status_code == 403 and "CANDOR_FEEDBACK_SOURCES" in r.json()["error"]["message"]
        complaint = {"type": "complaint", "email": "a@example.org"}
        r = await a.client.post("/v1/email/feedback", **signed(complaint, a.write_key))
        assert r.status_code == 403 and "CANDOR_FEEDBACK_SOURCES" in r.json()["error"]["message"]
        assert not a.rt.suppressions.check("sms", "phone", "+12025550143")
        assert not a.rt.suppressions.check("email", "email", "a@example.org")


async def test_only_named_sources_may_post_provider_callbacks(make_settings: Callable[..., Settings]) -> None:
    async with api(provider_settings(fast(make_settings), feedback_sources="sms-provider")) as a:
        r = await a.client.post("/v1/sms/inbound", **signed({"from": "+12025550143", "text": "STOP"}, a.write_key))
        assert r.status_code == 403 and "CANDOR_FEEDBACK_SOURCES" in r.json()["error"]["message"]
        key = a.rt.directory.create_source("sms-provider")
        r = await a.client.post("/v1/sms/inbound", **signed({"from": "+1 202 555 0143", "text": "STOP"}, key))
        assert r.status_code == 200


async def test_an_unreachable_sms_provider_leaves_dead_letters(make_settings: Callable[..., Settings]) -> None:
    from candor.testing import free_port

    async with api(fast(make_settings, default_phone_region="GB")) as a:
        await destination(a, "texts", "sms", f"http://127.0.0.1:{free_port()}/nobody-listens")
        a.rt.consent.add_notice("sms-terms", 1, "en", "We may text you offers.")
        await person(
            a,
            "ann",
            ["marketing.sms"],
            phone="07911 123456",
            notice={"id": "sms-terms", "version": 1, "language": "en"},
        )
        a.rt.segments.create("everyone", EVERYONE, "test")
        a.rt.campaigns.create(SMS, actor="test")
        out = a.rt.campaigns.send("sms-week", actor="test")
        assert out["outcomes"] == {"failed": 1}
        (letter,) = a.rt.campaigns.destinations.dead_letters("texts")
        assert letter["last_error"].startswith("unreachable") and letter["attempts"] == 3


async def test_erasure_reaches_every_destination_that_received_the_person(
    make_settings: Callable[..., Settings],
) -> None:
    with Receiver() as hook:
        async with api(fast(make_settings)) as a:
            owner = bearer(a.owner)
            hook.secret = await destination(a, "push", "webhook", hook.url, purpose="marketing.push")
            await person(a, "gone", ["marketing.push"])
            await person(a, "stays", ["marketing.push"])
            a.rt.segments.create("everyone", EVERYONE, "test")
            a.rt.campaigns.create(PUSH, actor="test")
            a.rt.campaigns.send("push-week", actor="test")
            ids = {h.json["to"]: h.json["candorId"] for h in hook.accepted}
            hook.down = True  # the notice cannot be delivered at first: it waits in the dead-letter queue
            req, _ = a.rt.requests.create("erasure", "email", "gone@example.org", send_code=False)
            a.rt.requests.verify_by_staff(req.id, actor="test", reason="called back")
            a.rt.rights.process(req.id, actor="test")
            (letter,) = a.rt.campaigns.destinations.dead_letters("push")
            assert letter["kind"] == "erasure" and letter["profile"] is None
            hook.down = False
            r = await a.client.post("/v1/destinations/push/replay", json={"ids": [letter["id"]]}, headers=owner)
            assert r.json()["delivered"] == 1
            notice = hook.accepted[-1].json
            assert notice["type"] == "erasure" and notice["candorIds"] == [ids["gone@example.org"]]
            assert "gone@example.org" not in hook.accepted[-1].body.decode()
            assert hook.accepted[-1].signed
            with a.rt.store.engine.connect() as conn:
                actions = [x for (x,) in conn.execute(select(audit_log.c.action))]
            assert "destination.erasure_notice" in actions


async def test_channel_costs_and_a_budget_that_holds_across_resumes(make_settings: Callable[..., Settings]) -> None:
    with Receiver() as hook:
        async with api(fast(make_settings, channel_costs="webhook=0.2,sms=0.05")) as a:
            hook.secret = await destination(a, "push", "webhook", hook.url, purpose="marketing.push")
            for uid in ("b1", "b2", "b3", "b4"):
                await person(a, uid, ["marketing.push"])
            a.rt.segments.create("everyone", EVERYONE, "test")
            free = {k: v for k, v in PUSH.items() if k != "cost_per_message"}
            a.rt.campaigns.create({**free, "budget": 0.5}, actor="test")  # the channel's cost: 0.2 a message
            hook.accept_at_most = 1
            first = a.rt.campaigns.send("push-week", actor="test")
            assert first["outcomes"] == {"sent": 1, "failed": 1, "skipped:budget": 2}, first
            hook.accept_at_most = None
            again = a.rt.campaigns.send("push-week", actor="test")  # 0.2 already spent: one more fits
            assert again["outcomes"] == {"already_sent": 1, "sent": 1, "skipped:budget": 2}, again
            report = a.rt.campaigns.report("push-week")
            assert report["cost_per_message"] == 0.2 and report["spend"] == 0.4 and report["budget"] == 0.5
            assert len(hook.accepted) == 2
