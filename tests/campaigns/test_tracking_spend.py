"""Email over real SMTP (aiosmtpd): opens and clicks tracked only with analytics consent, bounces and
complaints from provider webhooks feed the do-not-contact list, conversions by last touch and ROI."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from candor.config import Settings
from tests.helpers import Api, api, bearer, provider_settings, signed
from tests.rights.smtp import Inbox, smtp_server

pytestmark = pytest.mark.anyio
EVERYONE = {"name": "everyone", "conditions": [{"last_seen": {"within_days": 30}}]}
MAIL: dict[str, Any] = {
    "name": "jazz",
    "segment": "everyone",
    "subject": "New jazz",
    "template": "Hi {{ traits.firstName }}, listen: https://shop.example/jazz?x=1",
    "generic_template": "New jazz: https://shop.example/jazz?x=1",
    "sender": "Shop <news@shop.example>",
    "postal_address": "1 Main Street, Salem",
    "cost_per_message": 0.5,
}


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    with smtp_server() as box:
        yield box


async def person(a: Api, uid: str, grant: list[str]) -> str:
    r = await a.post("/v1/identify", {"userId": uid, "traits": {"email": f"{uid}@example.org", "firstName": uid}})
    assert r.status_code == 200
    r = await a.post("/v1/consent", {"userId": uid, "granted": grant, "source": "preference_center"})
    assert r.status_code in (200, 201)
    return a.rt.consent.subject_for("user_id", uid) or ""


async def buy(a: Api, uid: str, revenue: float) -> None:
    time.sleep(0.005)  # touches and purchases a few ms apart: the order is what last touch means
    r = await a.post("/v1/track", {"userId": uid, "event": "Order Completed", "properties": {"revenue": revenue}})
    assert r.status_code == 200, r.text
    time.sleep(0.005)


def links(body: str) -> list[str]:
    return re.findall(r"https?://\S+", body)


async def test_tracking_needs_analytics_consent_and_conversions_go_to_the_last_touch(
    make_settings: Callable[..., Settings], inbox: Inbox
) -> None:
    async with api(make_settings(default_jurisdiction="EU", smtp_url=inbox.url, quiet_hours="")) as a:
        owner = bearer(a.owner)
        await person(a, "tess", ["marketing.email", "analytics"])
        await person(a, "uma", ["marketing.email"])
        a.rt.segments.create("everyone", EVERYONE, "test")
        assert (await a.client.post("/v1/campaigns", json=MAIL, headers=owner)).status_code == 201
        assert (await a.client.post("/v1/campaigns/jazz/send", headers=owner)).json()["outcomes"] == {"sent": 2}
        tess, uma = inbox.to("tess@example.org")[0], inbox.to("uma@example.org")[0]
        # no analytics consent: the original link, plain text only (no HTML part, so no image)
        assert "https://shop.example/jazz?x=1" in inbox.body(uma) and "/v1/t/" not in inbox.body(uma)
        assert [p.get_content_type() for p in uma.walk()] == ["text/plain"]
        # analytics consent: the link goes through the tracker, the HTML part has the 1x1 image
        assert "https://shop.example/jazz" not in inbox.body(tess)
        tracked = [u for u in links(inbox.body(tess)) if "/v1/t/c/" in u]
        assert len(tracked) == 1
        assert "/v1/unsubscribe/" in inbox.body(tess)  # the unsubscribe link is never rewritten
        pixel = re.search(r'<img src="([^"]+/v1/t/o/[^"]+)"', inbox.body(tess, "html"))
        assert pixel
        r = await a.client.get("/v1/t/o/" + pixel.group(1).split("/v1/t/o/", 1)[1])
        assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
        r = await a.client.get("/v1/t/c/" + tracked[0].split("/v1/t/c/", 1)[1])
        assert r.status_code == 302 and r.headers["location"] == "https://shop.example/jazz?x=1"
        assert (await a.client.get("/v1/t/c/" + "x" * 40)).status_code == 404  # not ours: no redirect
        assert (await a.client.get("/v1/t/o/" + "x" * 40)).status_code == 200  # the image, nothing recorded
        report = (await a.client.get("/v1/campaigns/jazz/report", headers=owner)).json()
        assert report["engagement"] == {"opens": 1, "clicks": 1, "bounces": 0, "complaints": 0}
        # purchases: Tess after her click on "jazz", then after a second campaign; Uma's is not measured
        await buy(a, "tess", 30.0)
        await buy(a, "uma", 50.0)
        await a.client.post("/v1/campaigns", json={**MAIL, "name": "jazz-2"}, headers=owner)
        assert (await a.client.post("/v1/campaigns/jazz-2/send", headers=owner)).json()["outcomes"]["sent"] == 2
        await buy(a, "tess", 20.0)
        first = (await a.client.get("/v1/campaigns/jazz/report", headers=owner)).json()
        second = (await a.client.get("/v1/campaigns/jazz-2/report", headers=owner)).json()
        assert (first["conversions"], first["revenue"], first["spend"]) == (1, 30.0, 1.0)
        assert first["roi"] == 29.0  # (30 - 1) / 1
        assert (second["conversions"], second["revenue"]) == (1, 20.0)
        assert first["attribution"]["window_days"] == 7 and first["attribution"]["event"] == "Order Completed"
        # a window of one day: Vic's only touch was two days before her purchase, so it is not a conversion
        from candor.store import now_ms

        await person(a, "vic", ["marketing.email", "analytics"])
        a.rt.campaigns.cap = (100, 7 * 86_400_000)
        two_days_ago = now_ms() - 2 * 86_400_000
        a.rt.campaigns.now = lambda: two_days_ago
        a.rt.campaigns.create({**MAIL, "name": "jazz-3", "conversion_window_days": 1}, actor="test")
        assert a.rt.campaigns.send("jazz-3", actor="test")["outcomes"]["sent"] == 3
        await buy(a, "vic", 99.0)
        late = a.rt.campaigns.report("jazz-3")
        assert late["conversions"] == 0 and late["attribution"]["window_days"] == 1


async def test_bounces_and_complaints_feed_the_do_not_contact_list(
    make_settings: Callable[..., Settings], inbox: Inbox
) -> None:
    async with api(
        provider_settings(make_settings(default_jurisdiction="US", smtp_url=inbox.url, quiet_hours=""))
    ) as a:
        owner = bearer(a.owner)
        for uid in ("hard", "soft", "angry", "fine"):
            await person(a, uid, ["marketing.email"])
        a.rt.segments.create("everyone", EVERYONE, "test")
        a.rt.campaigns.create(MAIL, actor="test")
        a.rt.campaigns.send("jazz", actor="test")
        angry_id = inbox.to("angry@example.org")[0]["Message-ID"]
        ses_complaint = {
            "Type": "Notification",
            "Message": orjson.dumps(
                {
                    "notificationType": "Complaint",
                    "complaint": {"complainedRecipients": [{"emailAddress": "Angry@Example.org"}]},
                    "mail": {"commonHeaders": {"messageId": angry_id}},
                }
            ).decode(),
        }
        key = a.write_key
        r = await a.client.post("/v1/email/feedback", **signed(ses_complaint, key))
        assert r.status_code == 200 and r.json()["complaints"] == 1 and r.json()["suppressed"] == 1, r.text
        sendgrid = [
            {"event": "bounce", "email": "hard@example.org", "type": "bounce"},
            {"event": "delivered", "email": "fine@example.org"},
        ]
        assert (await a.client.post("/v1/email/feedback", **signed(sendgrid, key))).json()["bounces"] == 1
        generic = {"type": "bounce", "email": "soft@example.org", "permanent": False}
        assert (await a.client.post("/v1/email/feedback", **signed(generic, key))).json()["suppressed"] == 0
        confirm = {"Type": "SubscriptionConfirmation", "SubscribeURL": "https://sns.example/confirm"}
        assert "subscription" in (await a.client.post("/v1/email/feedback", **signed(confirm, key))).json()
        for bad in ({"type": "bounce"}, {"type": "unsubscribe", "email": "x@example.org"}, [1]):
            r = await a.client.post("/v1/email/feedback", **signed(bad, key))
            assert r.status_code == 400, (bad, r.text)
        r = await a.client.post("/v1/email/feedback", **signed(b"not json", key))
        assert r.status_code == 400
        assert (await a.client.post("/v1/email/feedback", json=generic, headers=owner)).status_code == 401
        assert a.rt.suppressions.check("email", "email", "hard@example.org")
        assert a.rt.suppressions.check("email", "email", "angry@example.org")
        assert not a.rt.suppressions.check("email", "email", "soft@example.org")
        angry = a.rt.consent.subject_for("user_id", "angry") or ""
        assert not a.rt.consent.can_use(angry, "marketing.email").allowed  # a complaint withdraws it
        report = a.rt.campaigns.report("jazz")
        assert report["engagement"]["complaints"] == 1 and report["engagement"]["bounces"] == 2
        a.rt.campaigns.create({**MAIL, "name": "next"}, actor="test")
        out = a.rt.campaigns.send("next", actor="test")["outcomes"]
        assert out == {"sent": 2, "skipped:suppressed": 1, "skipped:no_consent": 1}, out
