"""Who may post provider callbacks (bounces, complaints, inbound SMS), and their signatures.

A callback can put people on a do-not-contact list and withdraw their consent, so it is accepted
only when both hold:

1. **the source**: the write key (HTTP Basic user name) belongs to a source named in
   ``CANDOR_FEEDBACK_SOURCES``. Empty (the default) accepts none: browser write keys are public;
2. **the signature** of the body, checked before anything is parsed or written:

   - a generic HMAC-SHA256 (``Candor-Timestamp``, ``Candor-Signature: v1=<hex>`` over
     ``"<timestamp>.<body>"`` under ``CANDOR_FEEDBACK_SECRET``, the format of campaigns/signing.py)
     is accepted for any body, e.g. from a relay of your own, and is the only way for the generic
     JSON formats (and Vonage's form) in;
   - **Twilio** (a form with Twilio's ``From``/``Body``/``AccountSid``): ``X-Twilio-Signature``, the
     base64 HMAC-SHA1 under ``CANDOR_TWILIO_AUTH_TOKEN`` of the URL Twilio posted to
     (``CANDOR_PUBLIC_URL`` + the path) followed by every form parameter, sorted by name, as
     name + value;
   - **SendGrid's Event Webhook** (a JSON list of events): the ECDSA P-256 / SHA-256 signature
     ``X-Twilio-Email-Event-Webhook-Signature`` (base64 DER) over the
     ``X-Twilio-Email-Event-Webhook-Timestamp`` header followed by the raw body, under the
     verification key of ``CANDOR_SENDGRID_PUBLIC_KEY`` (base64 DER or PEM, as SendGrid shows it);
   - **Amazon SES through SNS** (an SNS envelope): the SNS message signature (SignatureVersion 1,
     RSA SHA-1; 2, RSA SHA-256) over SNS's canonical string, against the certificate in the PEM file
     ``CANDOR_SNS_CERTIFICATE`` (never fetched from ``SigningCertURL``: no network), and the topic
     must be one of ``CANDOR_SNS_TOPIC_ARNS`` (any AWS account's topic is signed by the same key).

Signed timestamps (SendGrid, SNS, the generic HMAC) must be within ``CANDOR_CALLBACK_MAX_AGE_SECONDS``
of the clock: a captured request cannot be replayed later. Twilio signs no time; a replayed STOP
repeats an opt-out, which changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson

from candor.auth import AuthError
from candor.campaigns import signing


def allowed_sources(setting: str) -> list[str]:
    return [s.strip() for s in setting.split(",") if s.strip()]


def check_source(settings: Any, name: str) -> None:
    allowed = allowed_sources(settings.feedback_sources)
    if not allowed:
        raise AuthError(
            403,
            "forbidden",
            "no source may post provider callbacks yet: name the provider's source in CANDOR_FEEDBACK_SOURCES",
        )
    if name not in allowed:
        raise AuthError(
            403, "forbidden", "this source may not post provider callbacks; add it to CANDOR_FEEDBACK_SOURCES"
        )


def _reject(what: str) -> AuthError:
    return AuthError(401, "invalid_signature", what)


def _fresh(ts: float, settings: Any, now: float) -> bool:
    return abs(now - ts) <= settings.callback_max_age_seconds


# -- the generic HMAC ---------------------------------------------------------------------------------
def _generic_ok(settings: Any, headers: Mapping[str, str], body: bytes, now: float) -> bool:
    secret = settings.feedback_secret
    if not secret or not headers.get("candor-signature"):
        return False
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        ts = int(lower.get("candor-timestamp", ""))
    except ValueError:
        return False
    return _fresh(ts, settings, now) and signing.verify(secret, lower, body, now=ts)


# -- Twilio ---------------------------------------------------------------------------------------------
def twilio_signature(token: str, url: str, params: list[tuple[str, str]]) -> str:
    data = url + "".join(k + v for k, v in sorted(params, key=lambda kv: kv[0]))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def _twilio(settings: Any, headers: Mapping[str, str], body: bytes, url: str) -> None:
    token = settings.twilio_auth_token
    if not token:
        raise AuthError(403, "forbidden", "Twilio callbacks are refused until CANDOR_TWILIO_AUTH_TOKEN is set")
    given = headers.get("x-twilio-signature", "")
    if not given:
        raise _reject("X-Twilio-Signature is missing")
    params = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    expected = twilio_signature(token, url, params)
    if not hmac.compare_digest(expected.encode(), given.strip().encode()):
        raise _reject("X-Twilio-Signature does not match (is CANDOR_PUBLIC_URL the URL Twilio posts to?)")


# -- SendGrid ---------------------------------------------------------------------------------------------
def _load_public_key(text: str) -> Any:
    from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            return load_pem_public_key(text.encode())
        return load_der_public_key(base64.b64decode(text))
    except (ValueError, binascii.Error):
        raise AuthError(
            403, "forbidden", "CANDOR_SENDGRID_PUBLIC_KEY is not a public key (base64 DER or PEM)"
        ) from None


def _sendgrid(settings: Any, headers: Mapping[str, str], body: bytes, now: float) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    if not settings.sendgrid_public_key:
        raise AuthError(403, "forbidden", "SendGrid callbacks are refused until CANDOR_SENDGRID_PUBLIC_KEY is set")
    sig = headers.get("x-twilio-email-event-webhook-signature", "")
    ts = headers.get("x-twilio-email-event-webhook-timestamp", "")
    if not sig or not ts:
        raise _reject("the SendGrid signature or timestamp header is missing")
    try:
        when = int(ts)
        raw = base64.b64decode(sig, validate=True)
    except (ValueError, binascii.Error):
        raise _reject("the SendGrid signature or timestamp is malformed") from None
    if not _fresh(when, settings, now):
        raise _reject("the SendGrid timestamp is outside the accepted window (a replay?)")
    key = _load_public_key(settings.sendgrid_public_key)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise AuthError(403, "forbidden", "CANDOR_SENDGRID_PUBLIC_KEY is not an elliptic-curve key")
    try:
        key.verify(raw, ts.encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise _reject("the SendGrid signature does not match") from None


# -- SNS --------------------------------------------------------------------------------------------------
SNS_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}


def sns_string_to_sign(doc: Mapping[str, Any]) -> bytes:
    """SNS's canonical form: ``name\\nvalue\\n`` for each signed field present, in this order."""
    fields = SNS_FIELDS.get(str(doc.get("Type")), ())
    return "".join(f"{k}\n{doc[k]}\n" for k in fields if isinstance(doc.get(k), str)).encode()


def _sns(settings: Any, doc: dict[str, Any], now: float) -> None:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    if not settings.sns_certificate:
        raise AuthError(403, "forbidden", "SNS callbacks are refused until CANDOR_SNS_CERTIFICATE is set")
    topics = allowed_sources(settings.sns_topic_arns)
    if doc.get("TopicArn") not in topics:
        raise AuthError(403, "forbidden", "this SNS topic is not in CANDOR_SNS_TOPIC_ARNS")
    version = str(doc.get("SignatureVersion", ""))
    algorithm: hashes.HashAlgorithm
    if version == "1":
        algorithm = hashes.SHA1()  # noqa: S303 - SNS's own SignatureVersion 1
    elif version == "2":
        algorithm = hashes.SHA256()
    else:
        raise _reject("SignatureVersion: 1 or 2")
    try:
        when = datetime.fromisoformat(str(doc.get("Timestamp", "")).replace("Z", "+00:00")).timestamp()
        raw = base64.b64decode(str(doc.get("Signature", "")), validate=True)
    except (ValueError, binascii.Error):
        raise _reject("the SNS signature or timestamp is malformed") from None
    if not _fresh(when, settings, now):
        raise _reject("the SNS timestamp is outside the accepted window (a replay?)")
    try:
        cert = x509.load_pem_x509_certificate(Path(settings.sns_certificate).read_bytes())
    except (OSError, ValueError):
        raise AuthError(403, "forbidden", "CANDOR_SNS_CERTIFICATE is not a readable PEM certificate") from None
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise AuthError(403, "forbidden", "CANDOR_SNS_CERTIFICATE does not hold an RSA key")
    try:
        key.verify(raw, sns_string_to_sign(doc), padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise _reject("the SNS signature does not match") from None


# -- what each endpoint calls -------------------------------------------------------------------------
def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def verify_email_feedback(settings: Any, headers: Mapping[str, str], body: bytes, now: float | None = None) -> None:
    """Raise AuthError unless ``body`` carries a valid signature for its format."""
    now = time.time() if now is None else now
    h = _lower(headers)
    if _generic_ok(settings, h, body, now):
        return
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and doc.get("Type") in SNS_FIELDS:
        _sns(settings, doc, now)
    elif isinstance(doc, list) and any(isinstance(e, dict) and "event" in e for e in doc):
        _sendgrid(settings, h, body, now)
    else:
        raise _reject(
            "sign the body with CANDOR_FEEDBACK_SECRET (Candor-Timestamp, Candor-Signature: v1=HMAC-SHA256 of "
            '"<timestamp>.<body>")'
        )


def verify_sms_inbound(
    settings: Any, headers: Mapping[str, str], body: bytes, content_type: str, path: str, now: float | None = None
) -> None:
    now = time.time() if now is None else now
    h = _lower(headers)
    if _generic_ok(settings, h, body, now):
        return
    if "json" not in content_type:
        fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if "AccountSid" in fields or "x-twilio-signature" in h or ("From" in fields and "Body" in fields):
            _twilio(settings, h, body, settings.public_url.rstrip("/") + path)
            return
    raise _reject(
        "sign the body with CANDOR_FEEDBACK_SECRET (Candor-Timestamp, Candor-Signature: v1=HMAC-SHA256 of "
        '"<timestamp>.<body>"), or set CANDOR_TWILIO_AUTH_TOKEN for Twilio'
    )
