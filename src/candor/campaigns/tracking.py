"""Email engagement: opens and clicks, only for recipients who agreed to ``analytics``.

A tracked message has its links rewritten to ``/v1/t/c/{token}`` (a signed token naming the
campaign, the profile and the link, so the redirect can only go where the message pointed) and an
HTML part with a 1×1 image at ``/v1/t/o/{token}``. Everyone else gets the plain-text message with
the original links: no HTML part, so no image. A hit is recorded only if the person still agrees to analytics at that
moment. Bounces and complaints arrive through ``/v1/email/feedback`` (campaigns/feedback.py).
"""

from __future__ import annotations

import html
import re
from typing import Any

from candor.store import now_ms
from candor.store.schema import engagements
from candor.web.common import BadToken, Signer

URL = re.compile(r"https?://[^\s<>\"')\]]+")
TTL_MS = 400 * 86_400_000
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


def _token(rt: Any, cid: int, profile: str, url: str | None) -> str:
    payload: dict[str, Any] = {"c": cid, "s": profile}
    if url is not None:
        payload["u"] = url
    return Signer(rt.vault).sign("track", payload, TTL_MS)


def rewrite(rt: Any, cid: int, profile: str, text: str, keep: set[str]) -> str:
    """``text`` with every link but those in ``keep`` (the unsubscribe link) sent through the click tracker."""
    base = rt.settings.public_url.rstrip("/")

    def swap(m: re.Match[str]) -> str:
        url = m.group(0)
        return url if url in keep else f"{base}/v1/t/c/{_token(rt, cid, profile, url)}"

    return URL.sub(swap, text)


def pixel_url(rt: Any, cid: int, profile: str) -> str:
    return f"{rt.settings.public_url.rstrip('/')}/v1/t/o/{_token(rt, cid, profile, None)}"


def html_part(text: str, pixel: str | None) -> str:
    """The HTML alternative of a plain-text message: escaped, links clickable, the pixel if tracked."""
    out = []
    pos = 0
    for m in URL.finditer(text):
        out.append(html.escape(text[pos : m.start()]))
        url = html.escape(m.group(0), quote=True)
        out.append(f'<a href="{url}">{url}</a>')
        pos = m.end()
    out.append(html.escape(text[pos:]))
    body = "".join(out).replace("\n", "<br>\n")
    img = f'<img src="{html.escape(pixel, quote=True)}" width="1" height="1" alt="">' if pixel else ""
    return f'<!doctype html><html><body><div style="white-space:normal">{body}</div>{img}</body></html>'


def hit(rt: Any, token: str, kind: str) -> str | None:
    """Record an open or a click (if the person still agrees to analytics); returns the link of a click.
    Raises BadToken for a token that is not ours."""
    payload = Signer(rt.vault).verify("track", token)
    cid, profile = int(payload["c"]), str(payload["s"])
    url = payload.get("u")
    if kind == "click" and not isinstance(url, str):
        raise BadToken("not a link")
    if rt.consent.can_use(profile, "analytics").allowed:
        with rt.store.write() as conn:
            conn.execute(
                engagements.insert(),
                {"campaign_id": cid, "subject_id": profile, "kind": kind, "ts_ms": now_ms(), "detail": None},
            )
    return url if isinstance(url, str) else None
