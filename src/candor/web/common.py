"""What the server-rendered pages share: templates, signed tokens, sessions, CSRF, translations.

Pages are rendered with Jinja2 (autoescaping on, so a trait like ``<script>`` shows as text) and
need no JavaScript. Every page carries a strict Content-Security-Policy of its own: no scripts at
all, styles and images from this origin only, forms posting only here, no framing.

Signed values (preference-center links, session cookies) are ``payload.signature`` where the
signature is an HMAC under the installation's pseudonym key (vault) over a purpose label and the
payload: a link cannot be replayed as a cookie, and nothing can be forged without the key.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from pathlib import Path
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from candor.store import now_ms

HERE = Path(__file__).parent
TEMPLATES = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


class BadToken(Exception):
    """A signed value that is forged, tampered with, for another purpose, or expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    def __init__(self, vault: Any) -> None:
        self.vault = vault

    def _mac(self, purpose: str, body: str) -> str:
        return str(self.vault.pseudonym("signed:" + purpose, body))

    def sign(self, purpose: str, payload: dict[str, Any], ttl_ms: int) -> str:
        body = _b64(orjson.dumps({**payload, "exp": now_ms() + ttl_ms, "n": secrets.token_hex(8)}))
        return f"{body}.{self._mac(purpose, body)}"

    def verify(self, purpose: str, token: str) -> dict[str, Any]:
        body, _, mac = (token or "").partition(".")
        if not body or not mac or len(token) > 4096:
            raise BadToken("malformed")
        # bytes: compare_digest refuses non-ASCII text, and a forged token may hold any
        if not hmac.compare_digest(mac.encode(), self._mac(purpose, body).encode()):
            raise BadToken("signature")
        try:
            payload = orjson.loads(_unb64(body))
        except (ValueError, orjson.JSONDecodeError):
            raise BadToken("malformed") from None
        if not isinstance(payload, dict) or int(payload.get("exp", 0)) < now_ms():
            raise BadToken("expired")
        return payload


def csrf_for(session: dict[str, Any]) -> str:
    return str(session.get("csrf", ""))


def check_csrf(session: dict[str, Any], given: str | None) -> bool:
    expected = csrf_for(session)
    return bool(expected) and bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


# -- translations ----------------------------------------------------------------------------------
MESSAGES: dict[str, dict[str, str]] = {
    "en": {},
    "de": {
        "Your privacy choices": "Ihre Datenschutz-Einstellungen",
        "How we may use your data": "Wofür wir Ihre Daten verwenden dürfen",
        "Save my choices": "Meine Auswahl speichern",
        "Allowed": "Erlaubt",
        "Not allowed": "Nicht erlaubt",
        "Always on": "Immer aktiv",
        "What we know about you": "Was wir über Sie wissen",
        "Your data": "Ihre Daten",
        "Download my data": "Meine Daten herunterladen",
        "Delete me": "Mich löschen",
        "Do Not Sell or Share My Personal Information": "Meine Daten nicht verkaufen oder weitergeben",
        "Limit the Use of My Sensitive Personal Information": "Nutzung sensibler Daten einschränken",
        "Your interests": "Ihre Interessen",
        "How you hear from us": "Wie Sie von uns hören",
        "How often": "Wie oft",
        "Saved.": "Gespeichert.",
        "This link is not valid": "Dieser Link ist ungültig",
        "Sign out": "Abmelden",
    },
}
LANGUAGES = tuple(MESSAGES)


def language_of(request: Request) -> str:
    header = request.headers.get("accept-language", "")
    for part in header.split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in MESSAGES:
            return code
    return "en"


def page(
    request: Request, template: str, context: dict[str, Any], status: int = 200, language: str | None = None
) -> HTMLResponse:
    lang = language or language_of(request)
    table = MESSAGES.get(lang, {})
    html = TEMPLATES.get_template(template).render(
        **context, lang=lang, _=lambda text: table.get(text, text), request_path=request.url.path
    )
    return HTMLResponse(
        html,
        status_code=status,
        headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store"},
    )


def set_cookie(response: Any, request: Request, name: str, value: str, max_age: int, samesite: str) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite=samesite,
        secure=request.url.scheme == "https",
        path="/",
    )
