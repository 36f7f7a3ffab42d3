"""Provider callbacks: only named sources, and each provider's signature checked before anything is
written (campaigns/callbacks.py). Signatures are made here with real keys (cryptography)."""

from __future__ import annotations

import base64
import dataclasses
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from candor.auth import AuthError
from candor.campaigns import callbacks
from candor.config import Settings
from candor.store.schema import consent_records, suppressions
from tests.helpers import Api, api, basic, provider_settings, signed

pytestmark = pytest.mark.anyio
TOPIC = "arn:aws:sns:eu-west-1:123456789012:candor-feedback"
TWILIO_TOKEN = "twilio-test-token"


def _written(a: Api) -> tuple[int, int]:
    with a.rt.store.engine.connect() as conn:
        n_supp = conn.execute(select(func.count()).select_from(suppressions)).scalar()
        n_consent = conn.execute(select(func.count()).select_from(consent_records)).scalar()
    return int(n_supp or 0), int(n_consent or 0)


# -- keys made for the test ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _spki_b64(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def _certificate(key: rsa.RSAPrivateKey, path: Path) -> Path:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def sendgrid_headers(key: ec.EllipticCurvePrivateKey, body: bytes, ts: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if ts is None else ts)
    sig = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        "Content-Type": "application/json",
    }


def sns_envelope(key: rsa.RSAPrivateKey, message: dict[str, Any], *, version: str = "2", at: datetime | None = None,
                 topic: str = TOPIC) -> dict[str, Any]:  # fmt: skip
    doc: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": topic,
        "Message": orjson.dumps(message).decode(),
        "Timestamp": (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "SignatureVersion": version,
        "SigningCertURL": "https://sns.example/never-fetched.pem",
    }
    algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()  # noqa: S303 - SNS version 1
    doc["Signature"] = base64.b64encode(
        key.sign(callbacks.sns_string_to_sign(doc), padding.PKCS1v15(), algorithm)
    ).decode()
    return doc


def twilio_form(params: dict[str, str]) -> bytes:
    from urllib.parse import urlencode

    return urlencode(params).encode()


COMPLAINT = {
    "notificationType": "Complaint",
    "complaint": {"complainedRecipients": [{"emailAddress": "angry@example.org"}]},
    "mail": {"commonHeaders": {"messageId": "<m1@candor>"}},
}


# -- the checks on their own (no store) ---------------------------------------------------------------
def test_twilio_signature_matches_the_documented_example() -> None:
    params = [("CallSid", "CA1234567890ABCDE"), ("Caller", "+12349013030"), ("Digits", "1234"),
              ("From", "+12349013030"), ("To", "+18005551212")]  # fmt: skip
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert callbacks.twilio_signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", "Twilio's docs"


def test_sendgrid_signatures(ec_key: ec.EllipticCurvePrivateKey) -> None:
    s = Settings.from_env(env={}, sendgrid_public_key=_spki_b64(ec_key))
    body = orjson.dumps([{"event": "bounce", "email": "a@example.org"}])
    now = time.time()
    callbacks.verify_email_feedback(s, sendgrid_headers(ec_key, body), body, now=now)  # accepted
    pem = ec_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    callbacks.verify_email_feedback(dataclasses.replace(s, sendgrid_public_key=pem.decode()),
                                    sendgrid_headers(ec_key, body), body, now=now)  # fmt: skip
    other = ec.generate_private_key(ec.SECP256R1())
    tampered = body.replace(b"bounce", b"spamreport")
    for headers, raw, words in [
        (sendgrid_headers(other, body), body, "does not match"),
        (sendgrid_headers(ec_key, body), tampered, "does not match"),
        (sendgrid_headers(ec_key, body, ts=int(now) - 3600), body, "window"),  # replayed an hour later
        ({"Content-Type": "application/json"}, body, "missing"),
    ]:
        with pytest.raises(AuthError) as info:
            callbacks.verify_email_feedback(s, headers, raw, now=now)
        assert info.value.status == 401 and words in info.value.message
    with pytest.raises(AuthError) as info:  # no key configured: refused, with what to set
        callbacks.verify_email_feedback(Settings.from_env(env={}), sendgrid_headers(ec_key, body), body)
    assert info.value.status == 403 and "CANDOR_SENDGRID_PUBLIC_KEY" in info.value.message


def test_sns_signatures(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    cert = _certificate(rsa_key, tmp_path / "sns.pem")
    s = Settings.from_env(env={}, sns_certificate=str(cert), sns_topic_arns=TOPIC)
    for version in ("1", "2"):
        doc = sns_envelope(rsa_key, COMPLAINT, version=version)
        callbacks.verify_email_feedback(s, {}, orjson.dumps(doc))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    good = sns_envelope(rsa_key, COMPLAINT)
    cases = [
        (sns_envelope(other, COMPLAINT), 401, "does not match"),
        ({**good, "Message": orjson.dumps({**COMPLAINT, "x": 1}).decode()}, 401, "does not match"),
        (sns_envelope(rsa_key, COMPLAINT, at=datetime.now(UTC) - timedelta(hours=2)), 401, "window"),
        ({k: v for k, v in good.items() if k != "Signature"}, 401, "does not match"),
        ({**good, "SignatureVersion": "3"}, 401, "SignatureVersion"),
        (sns_envelope(rsa_key, COMPLAINT, topic="arn:aws:sns:eu-west-1:999999999999:theirs"), 403, "TOPIC_ARNS"),
    ]
    for doc, status, words in cases:
        with pytest.raises(AuthError) as info:
            callbacks.verify_email_feedback(s, {}, orjson.dumps(doc))
        assert info.value.status == status and words in info.value.message, info.value.message
    with pytest.raises(AuthError) as info:
        callbacks.verify_email_feedback(Settings.from_env(env={}), {}, orjson.dumps(good))
    assert info.value.status == 403 and "CANDOR_SNS_CERTIFICATE" in info.value.message


def test_generic_hmac_signatures() -> None:
    from candor.campaigns import signing

    s = Settings.from_env(env={}, feedback_secret="shh")
    body = orjson.dumps({"type": "complaint", "email": "a@example.org"})
    now = int(time.time())

    def h(secret: str, ts: int, raw: bytes = body) -> dict[str, str]:
        return {"Candor-Timestamp": str(ts), "Candor-Signature": signing.signature(secret, ts, raw)}

    callbacks.verify_email_feedback(s, h("shh", now), body)
    callbacks.verify_sms_inbound(s, h("shh", now), body, "application/json", "/v1/sms/inbound")
    for headers in (h("wrong", now), h("shh", now - 3600), {}, {"Candor-Timestamp": str(now)}):
        with pytest.raises(AuthError) as info:
            callbacks.verify_email_feedback(s, headers, body)
        assert info.value.status == 401 and "CANDOR_FEEDBACK_SECRET" in info.value.message
        with pytest.raises(AuthError):
            callbacks.verify_sms_inbound(s, headers, body, "application/json", "/v1/sms/inbound")
    with pytest.raises(AuthError):  # no secret configured: nothing verifies
        callbacks.verify_email_feedback(Settings.from_env(env={}), h("", now), body)
    # the other body, signed for the first, is refused
    with pytest.raises(AuthError):
        callbacks.verify_email_feedback(s, h("shh", now), body.replace(b"complaint", b"bounce"))


# -- through the API: accepted when signed, nothing written when not ----------------------------------
async def test_twilio_stop_needs_twilios_signature(make_settings: Callable[..., Settings]) -> None:
    settings = provider_settings(make_settings(default_phone_region="US"), twilio_auth_token=TWILIO_TOKEN,
                                 public_url="https://candor.example")  # fmt: skip
    async with api(settings) as a:
        params = {"AccountSid": "AC123", "From": "+12025550143", "To": "+12025550100", "Body": "STOP"}
        body = twilio_form(params)
        url = "https://candor.example/v1/sms/inbound"
        good = callbacks.twilio_signature(TWILIO_TOKEN, url, sorted(params.items()))
        form = {**basic(a.write_key), "Content-Type": "application/x-www-form-urlencoded"}
        before = _written(a)
        for sig in (None, "bm90IGl0", callbacks.twilio_signature("other-token", url, sorted(params.items())),
                    callbacks.twilio_signature(TWILIO_TOKEN, "https://elsewhere.example/v1/sms/inbound",
                                               sorted(params.items()))):  # fmt: skip
            headers = form if sig is None else {**form, "X-Twilio-Signature": sig}
            r = await a.client.post("/v1/sms/inbound", content=body, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_signature", r.text
        tampered = twilio_form({**params, "From": "+12025550199"})
        r = await a.client.post("/v1/sms/inbound", content=tampered, headers={**form, "X-Twilio-Signature": good})
        assert r.status_code == 401
        assert _written(a) == before and not a.rt.suppressions.check("sms", "phone", "+12025550143")
        r = await a.client.post("/v1/sms/inbound", content=body, headers={**form, "X-Twilio-Signature": good})
        assert r.status_code == 200 and r.json()["action"] == "opt_out", r.text
        assert a.rt.suppressions.check("sms", "phone", "+12025550143")
        # a JSON body is no Twilio post: it needs the generic signature
        r = await a.client.post("/v1/sms/inbound", json={"from": "+12025550144", "text": "STOP"},
                                headers=basic(a.write_key))  # fmt: skip
        assert r.status_code == 401 and not a.rt.suppressions.check("sms", "phone", "+12025550144")
        r = await a.client.post("/v1/sms/inbound", **signed({"from": "+12025550144", "text": "STOP"}, a.write_key))
        assert r.status_code == 200


async def test_email_feedback_from_sendgrid_and_sns_needs_their_signatures(
    make_settings: Callable[..., Settings], ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey,
    tmp_path: Path,
) -> None:  # fmt: skip
    cert = _certificate(rsa_key, tmp_path / "sns.pem")
    settings = provider_settings(make_settings(), sendgrid_public_key=_spki_b64(ec_key),
                                 sns_certificate=str(cert), sns_topic_arns=TOPIC)  # fmt: skip
    async with api(settings) as a:
        key = basic(a.write_key)
        before = _written(a)
        events = orjson.dumps([{"event": "spamreport", "email": "grid@example.org"}])
        replay = sendgrid_headers(ec_key, events, ts=int(time.time()) - 3600)
        for headers in ({"Content-Type": "application/json"}, replay,
                        sendgrid_headers(ec.generate_private_key(ec.SECP256R1()), events)):  # fmt: skip
            r = await a.client.post("/v1/email/feedback", content=events, headers={**key, **headers})
            assert r.status_code == 401, r.text
        bad_sns = sns_envelope(rsa.generate_private_key(public_exponent=65537, key_size=2048), COMPLAINT)
        r = await a.client.post("/v1/email/feedback", json=bad_sns, headers=key)
        assert r.status_code == 401
        unsigned = {"type": "complaint", "email": "plain@example.org"}
        r = await a.client.post("/v1/email/feedback", json=unsigned, headers=key)
        assert r.status_code == 401 and "CANDOR_FEEDBACK_SECRET" in r.json()["error"]["message"]
        assert _written(a) == before  # nothing suppressed, no consent withdrawn
        r = await a.client.post("/v1/email/feedback", content=events,
                                headers={**key, **sendgrid_headers(ec_key, events)})  # fmt: skip
        assert r.status_code == 200 and r.json()["complaints"] == 1, r.text
        r = await a.client.post("/v1/email/feedback", json=sns_envelope(rsa_key, COMPLAINT), headers=key)
        assert r.status_code == 200 and r.json()["complaints"] == 1, r.text
        assert a.rt.suppressions.check("email", "email", "grid@example.org")
        assert a.rt.suppressions.check("email", "email", "angry@example.org")
        assert not a.rt.suppressions.check("email", "email", "plain@example.org")
