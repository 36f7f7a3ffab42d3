"""Profile lookup: masked by default, revealed only with pii:read, every read audited."""

from __future__ import annotations

import json

import pytest

from candor import audit
from candor.config import Settings
from candor.profiles import mask
from tests.helpers import api, bearer

pytestmark = pytest.mark.anyio


async def test_masking_reveal_and_audit(settings: Settings) -> None:
    async with api(settings) as a:
        traits = {
            "email": "Ann.Lee@Example.com",
            "firstName": "Ann",
            "phone": "+1 415 555 0134",
            "address": {"street": "12 Maple Street", "city": "Salem"},
        }
        await a.post("/v1/identify", {"userId": "u-7", "anonymousId": "a-7", "traits": traits})
        await a.post("/v1/identify", {"userId": "u-7", "traits": {"firstName": "Annie"}})
        marketer = bearer(a.rt.directory.create_token("m", "marketer"))
        r = await a.client.get("/v1/profiles/lookup", params={"email": "ann.lee@example.com"}, headers=marketer)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["revealed"] is False
        text = json.dumps(body)
        for secret in ("Ann.Lee", "Annie", "555 0134", "Maple"):
            assert secret not in text
        assert body["traits"]["email"]["value"] == "A***@Example.com"
        assert body["traits"]["firstName"]["source"] == "test-source"
        assert {i["type"] for i in body["identities"]} == {"user_id", "anonymous_id", "email", "phone"}
        r = await a.client.get("/v1/profiles/lookup", params={"userId": "u-7", "reveal": "true"}, headers=marketer)
        assert r.status_code == 403 and "pii:read" in r.json()["error"]["message"]
        dpo = bearer(a.rt.directory.create_token("d", "privacy_officer"))
        r = await a.client.get("/v1/profiles/lookup", params={"userId": "u-7", "reveal": "true"}, headers=dpo)
        revealed = r.json()
        assert revealed["traits"]["firstName"]["value"] == "Annie"  # the newest value wins
        assert revealed["traits"]["email"]["value"] == "Ann.Lee@Example.com"
        entries = audit.entries(a.rt.store, limit=1000)
        reads = [e for e in entries if e["action"] in ("pii.read", "profile.read")]
        assert [e["action"] for e in reads] == ["profile.read", "pii.read"]
        assert reads[1]["details"]["fields"] == ["address", "email", "firstName", "phone"]
        assert "Annie" not in json.dumps(entries)


async def test_lookup_rules(settings: Settings) -> None:
    async with api(settings) as a:
        support = bearer(a.rt.directory.create_token("s", "support"))
        analyst = bearer(a.rt.directory.create_token("x", "analyst"))
        r = await a.client.get("/v1/profiles/lookup", params={"userId": "nobody"}, headers=support)
        assert r.status_code == 404
        r = await a.client.get("/v1/profiles/lookup", params={"userId": "a", "email": "b@example.com"}, headers=support)
        assert r.status_code == 400
        r = await a.client.get("/v1/profiles/lookup", params={"userId": "a"}, headers=analyst)
        assert r.status_code == 403


def test_mask_shapes() -> None:
    assert mask("ann@example.com") == "a***@example.com"
    assert mask("+14155550134") == "********0134"
    assert mask("Zoë") == "Z***"
    assert mask({"street": "12 Maple"}) == {"street": "1***"}
    assert mask(True) is True and mask(None) is None
