"""The consent banner (``/banner.js``) in a real browser, on a brand's site on another origin.

One ``candor serve`` per module (EU default: nothing without consent), one static brand site, a
fresh browser context (no cookies) per test. The ledger is read from the server's database.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from tests.serverproc import ServerProcess
from tests.web.browser import StaticSite, axe_violations, browser, screenshot  # noqa: F401

BANNER = Path(__file__).resolve().parents[2] / "src" / "candor" / "web" / "static" / "banner.js"
NONCE = "r4nd0mN0nce"
TAGGED = """
<script type="text/plain" data-purpose="analytics" nonce="{nonce}">
  window.__analyticsRan = true; document.cookie = "_brand_analytics=1; path=/";
</script>
<script type="text/plain" data-purpose="advertising" src="/ads.js"></script>
<script type="text/plain" data-purpose="analytics advertising" nonce="{nonce}">window.__bothRan = true;</script>
"""
STUBS = """
<script nonce="{nonce}">
  window.__gtag = [];
  window.gtag = function () {{ window.__gtag.push(Array.prototype.slice.call(arguments)); }};
  window.__middleware = [];
  window.analytics = {{
    addSourceMiddleware: function (fn) {{ window.__middleware.push(fn); }},
    user: function () {{ return {{ anonymousId: function () {{ return window.__ajsId || null; }} }}; }}
  }};
</script>
"""


def brand_page(api: str, key: str, notice: str, head: str = "") -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Brand shop</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
{head}
{STUBS.format(nonce=NONCE)}
<script src="{api}/banner.js" data-write-key="{key}" data-notice="{notice}" data-language="en"
  nonce="{NONCE}"></script>
</head><body><main><h1>Brand shop</h1><p>Shoes, boots and socks.</p></main>
{TAGGED.format(nonce=NONCE)}
</body></html>"""


Env = dict[str, Any]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("banner")
    site = StaticSite({})
    server = ServerProcess(tmp / "data", env={"CANDOR_CORS_ORIGINS": site.origin, "CANDOR_DEFAULT_JURISDICTION": "EU"})
    with site, server:
        key = server.create_source("brand-web")
        for notice, text in (("site", "We use your data as described here (version 1)."), ("reask", "Notice v1.")):
            f = tmp / f"{notice}.txt"
            f.write_text(text)
            server.cli("notices", "add", notice, "--version", "1", "--file", str(f))
        api = server.base_url
        csp = (
            f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            f"script-src 'nonce-{NONCE}'; connect-src {api}; style-src 'none'; img-src 'none'\">"
        )
        site.pages.update(
            {
                "/": brand_page(api, key, "site"),
                "/reask.html": brand_page(api, key, "reask"),
                "/csp.html": brand_page(api, key, "site", head=csp),
                "/ads.js": 'window.__adsRan = true; document.cookie = "_brand_ads=1; path=/";',
            }
        )
        yield {"server": server, "site": site, "key": key, "tmp": tmp, "token": server.create_token("owner")}


def last_seq(server: ServerProcess) -> int:
    return int(server.query("SELECT COALESCE(MAX(seq), 0) FROM consent_records")[0][0])


def records_after(server: ServerProcess, seq: int) -> list[dict[str, Any]]:
    cols = ("seq", "granted", "denied", "source", "notice_id", "notice_version", "ui_action")
    rows = server.query(f"SELECT {', '.join(cols)} FROM consent_records WHERE seq > ? ORDER BY seq", (seq,))
    out = [dict(zip(cols, r, strict=True)) for r in rows]
    for r in out:
        r["granted"], r["denied"] = set(json.loads(r["granted"])), set(json.loads(r["denied"]))
    return out


def new_page(chromium: Any, gpc: bool = False, **options: Any) -> tuple[Any, Any]:
    if gpc:
        options["extra_http_headers"] = {"Sec-GPC": "1"}
    context = chromium.new_context(**options)
    if gpc:
        context.add_init_script("Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true})")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type in ("error", "warning") and not m.location.get("url", "").endswith("/favicon.ico")
            else None
        ),
    )
    page.errors = errors
    return context, page


def dialog(page: Any) -> Any:
    return page.get_by_role("dialog", name="Your privacy choices")


def flags(page: Any) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(
        "() => ({analytics: window.__analyticsRan === true, ads: window.__adsRan === true, "
        "both: window.__bothRan === true})"
    )
    return result


def click_and_wait_post(page: Any, name: str) -> None:
    """Click a banner button and wait until the proof is stored (POST /v1/consent answered)."""
    with page.expect_response(lambda r: r.url.endswith("/v1/consent") and r.request.method == "POST") as info:
        page.get_by_role("button", name=name, exact=True).click()
    assert info.value.status == 200, info.value.text()


def consent_cookie(context: Any, only: bool = False) -> dict[str, Any]:
    cookies = context.cookies()
    if only:
        assert [c["name"] for c in cookies] == ["candor_consent"], "no cookie but the consent cookie"
    [c] = [c for c in cookies if c["name"] == "candor_consent"]
    assert c["sameSite"] == "Lax" and c["path"] == "/"
    value: dict[str, Any] = json.loads(unquote(c["value"]))
    assert set(value) <= {"n", "v", "p", "t", "id", "a", "s"}, "the cookie holds only the choice"
    assert len(value["id"]) == 32 and int(value["id"], 16) >= 0  # random, not derived from anything
    return value


def settled(page: Any) -> None:
    """Wait until the banner decided (a stored choice applied, or the dialog shown)."""
    page.wait_for_function("() => window.candor && window.candor.consent && window.candor.consent.get() !== null")


# -- the script itself -----------------------------------------------------------------------------
def test_banner_js_is_small_cacheable_and_loads_cross_origin(env: Env) -> None:
    base, origin = env["server"].base_url, env["site"].origin
    r = httpx.get(f"{base}/banner.js")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/javascript; charset=utf-8"
    assert r.headers["cache-control"] == "public, max-age=300"
    assert r.headers["cross-origin-resource-policy"] == "cross-origin"
    assert r.content == BANNER.read_bytes()
    size = len(gzip.compress(r.content, 9))
    assert size < 15 * 1024, f"banner.js is {size} bytes gzipped"
    assert httpx.get(f"{base}/banner.js", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    assert "/banner.js" in httpx.get(f"{base}/openapi.json").json()["paths"]
    # a brand origin listed in CANDOR_CORS_ORIGINS may post with a write key from the browser
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    ok = httpx.options(f"{base}/v1/consent", headers={"Origin": origin, **pre})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == origin
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    other = httpx.options(f"{base}/v1/consent", headers={"Origin": "http://elsewhere.example", **pre})
    assert "access-control-allow-origin" not in other.headers


# -- choices -------------------------------------------------------------------------------------------
def test_reject_all_runs_nothing_and_sets_no_other_cookie(env: Env, browser: Any) -> None:  # noqa: F811
    server, site = env["server"], env["site"]
    context, page = new_page(browser)
    try:
        before = last_seq(server)
        page.goto(site.origin + "/")
        banner = dialog(page)
        banner.wait_for()
        assert flags(page) == {"analytics": False, "ads": False, "both": False}, "nothing runs before a choice"
        assert context.cookies() == []
        assert page.evaluate("window.candor.consent.get()") is None
        assert "version 1" in banner.get_by_role("region").inner_text()
        click_and_wait_post(page, "Reject all")
        assert not banner.is_visible()
        assert flags(page) == {"analytics": False, "ads": False, "both": False}
        cookie = consent_cookie(context, only=True)
        assert cookie["n"] == "site" and cookie["v"] == 1 and not any(cookie["p"].values())
        assert page.evaluate("window.__gtag")[-1] == [
            "consent",
            "update",
            {
                "analytics_storage": "denied",
                "ad_storage": "denied",
                "ad_user_data": "denied",
                "ad_personalization": "denied",
            },
        ]
        [rec] = records_after(server, before)
        assert rec["source"] == "banner" and rec["ui_action"] == "reject_all"
        assert (rec["notice_id"], rec["notice_version"]) == ("site", 1)
        assert rec["granted"] == set() and {"analytics", "advertising", "sale_sharing"} <= rec["denied"]
        assert not any(p.startswith("marketing.") for p in rec["denied"]), "channel purposes are not offered"
        # the next page: the choice holds, no banner, nothing runs, nothing posted again
        page.reload()
        settled(page)
        assert page.locator("#candor-consent").count() == 0
        assert flags(page) == {"analytics": False, "ads": False, "both": False}
        assert last_seq(server) == rec["seq"]
        assert page.errors == []
    finally:
        context.close()


def test_accept_all_runs_the_tagged_scripts(env: Env, browser: Any) -> None:  # noqa: F811
    server, site = env["server"], env["site"]
    context, page = new_page(browser)
    try:
        before = last_seq(server)
        page.goto(site.origin + "/")
        dialog(page).wait_for()
        click_and_wait_post(page, "Accept all")
        page.wait_for_function("window.__adsRan === true")
        assert flags(page) == {"analytics": True, "ads": True, "both": True}
        assert {c["name"] for c in context.cookies()} == {"candor_consent", "_brand_analytics", "_brand_ads"}
        assert page.evaluate("window.__gtag")[-1][2] == {
            "analytics_storage": "granted",
            "ad_storage": "granted",
            "ad_user_data": "granted",
            "ad_personalization": "granted",
        }
        [rec] = records_after(server, before)
        assert rec["ui_action"] == "accept_all" and {"analytics", "advertising", "sale_sharing"} <= rec["granted"]
        page.reload()
        page.wait_for_function("window.__adsRan === true && window.__analyticsRan === true")
        assert page.locator("#candor-consent").count() == 0
        assert page.errors == []
    finally:
        context.close()


def test_customise_runs_only_the_chosen_purpose_and_revocation_reloads(env: Env, browser: Any) -> None:  # noqa: F811
    server, site = env["server"], env["site"]
    context, page = new_page(browser)
    context.add_init_script("window.__ajsId = 'ajs-anon-7f3a'")  # analytics.js knows this browser
    try:
        before = last_seq(server)
        page.goto(site.origin + "/")
        dialog(page).wait_for()
        customise = page.get_by_role("button", name="Customise")
        assert customise.get_attribute("aria-expanded") == "false"
        customise.click()
        assert customise.get_attribute("aria-expanded") == "true"
        assert page.locator("#cp-necessary").is_checked() and page.locator("#cp-necessary").is_disabled()
        assert not page.locator("#cp-analytics").is_checked(), "nothing is pre-ticked"
        page.get_by_role("checkbox", name="Analytics").check()
        click_and_wait_post(page, "Save my choices")
        page.wait_for_function("window.__analyticsRan === true")
        assert flags(page) == {"analytics": True, "ads": False, "both": False}
        [rec] = records_after(server, before)
        assert rec["ui_action"] == "custom" and rec["granted"] == {"analytics"}
        assert "advertising" in rec["denied"]
        # the ledger ties to analytics.js's anonymousId
        proof = httpx.get(
            f"{server.base_url}/v1/consent/proof",
            params={"anonymousId": "ajs-anon-7f3a"},
            headers={"Authorization": f"Bearer {env['token']}"},
        ).json()
        assert proof["found"] and proof["records"][-1]["seq"] == rec["seq"]
        # analytics.js events carry Segment's categoryPreferences
        prefs = page.evaluate(
            """() => { let out; const payload = {obj: {type: 'track', event: 'Viewed'}};
            window.__middleware[0]({payload, next: p => { out = p.obj.context.consent.categoryPreferences; }});
            return out; }"""
        )
        assert prefs["analytics"] is True and prefs["advertising"] is False and "necessary" not in prefs
        assert page.evaluate("window.__gtag")[-1][2]["analytics_storage"] == "granted"
        assert page.evaluate("window.__gtag")[-1][2]["ad_storage"] == "denied"
        # window.candor.consent: get, onChange, open (e.g. from a footer link)
        got = page.evaluate("window.candor.consent.get()")
        assert got["categoryPreferences"]["analytics"] is True and got["notice"] == {"id": "site", "version": 1}
        page.evaluate("window.__changes = []; window.candor.consent.onChange(c => window.__changes.push(c))")
        assert page.evaluate("window.__changes.length") == 1  # called at once with the choice in effect
        page.evaluate("window.candor.consent.open()")
        dialog(page).wait_for()
        assert page.locator("#cp-analytics").is_checked(), "the banner shows the current choice"
        # withdrawing a purpose whose scripts ran: proof stored, then a reload stops them
        with page.expect_navigation():
            click_and_wait_post(page, "Reject all")
        settled(page)
        assert flags(page) == {"analytics": False, "ads": False, "both": False}
        assert records_after(server, rec["seq"])[-1]["ui_action"] == "reject_all"
    finally:
        context.close()


def test_gpc_turns_sale_sharing_and_advertising_off_even_on_accept_all(env: Env, browser: Any) -> None:  # noqa: F811
    server, site = env["server"], env["site"]
    context, page = new_page(browser, gpc=True)
    try:
        before = last_seq(server)
        page.goto(site.origin + "/")
        banner = dialog(page)
        banner.wait_for()
        assert "Global Privacy Control" in banner.inner_text()
        page.get_by_role("button", name="Customise").click()
        assert page.locator("#cp-sale_sharing").is_disabled() and page.locator("#cp-advertising").is_disabled()
        click_and_wait_post(page, "Accept all")
        page.wait_for_function("window.__analyticsRan === true")
        assert flags(page) == {"analytics": True, "ads": False, "both": False}
        cookie = consent_cookie(context)
        assert cookie["p"]["analytics"] is True and cookie["p"]["sale_sharing"] is False
        recs = records_after(server, before)
        banner_rec = next(r for r in recs if r["source"] == "banner")
        assert {"sale_sharing", "advertising"} <= banner_rec["denied"] and "analytics" in banner_rec["granted"]
        # the browser's Sec-GPC header reached the server: a GPC record too
        assert any(r["source"] == "gpc" and "sale_sharing" in r["denied"] for r in recs)
        explained = httpx.get(
            f"{server.base_url}/v1/consent/explain",
            params={"anonymousId": cookie["id"]},
            headers={"Authorization": f"Bearer {env['token']}"},
        ).json()
        allowed = {d["purpose"]: d["allowed"] for d in explained["decisions"]}
        assert allowed["sale_sharing"] is False and allowed["advertising"] is False and allowed["analytics"] is True
    finally:
        context.close()


# -- asking again --------------------------------------------------------------------------------------
def test_new_notice_version_asks_again(env: Env, browser: Any) -> None:  # noqa: F811
    server, site = env["server"], env["site"]
    context, page = new_page(browser)
    try:
        page.goto(site.origin + "/reask.html")
        dialog(page).wait_for()
        click_and_wait_post(page, "Accept all")
        page.reload()
        settled(page)
        assert page.locator("#candor-consent").count() == 0
        notice = env["tmp"] / "reask-v2.txt"
        notice.write_text("Notice v2: we now also work with a delivery partner.")
        server.cli("notices", "add", "reask", "--version", "2", "--file", str(notice))
        before = last_seq(server)
        page.reload()
        banner = dialog(page)
        banner.wait_for()
        assert "Notice v2" in banner.get_by_role("region").inner_text()
        assert flags(page) == {"analytics": False, "ads": False, "both": False}, "the old choice is not used"
        click_and_wait_post(page, "Reject all")
        [rec] = records_after(server, before)
        assert (rec["notice_id"], rec["notice_version"]) == ("reask", 2)
        assert consent_cookie(context)["v"] == 2
    finally:
        context.close()


def test_expired_choice_asks_again(env: Env, browser: Any) -> None:  # noqa: F811
    site = env["site"]
    context, page = new_page(browser)
    try:
        old = {"n": "site", "v": 1, "p": {"analytics": True}, "t": int((time.time() - 400 * 86400) * 1000)}
        old |= {"id": "0" * 32, "a": "a", "s": 1}
        value = json.dumps(old, separators=(",", ":"))
        context.add_cookies([{"name": "candor_consent", "value": value, "url": site.origin + "/"}])
        page.goto(site.origin + "/")
        dialog(page).wait_for()
        assert flags(page) == {"analytics": False, "ads": False, "both": False}
    finally:
        context.close()


def test_proof_that_failed_to_send_is_sent_on_the_next_page(env: Env, browser: Any) -> None:  # noqa: F811
    server, site = env["server"], env["site"]
    context, page = new_page(browser)
    try:
        before = last_seq(server)
        page.route("**/v1/consent", lambda route: route.abort())  # Candor unreachable for a moment
        page.goto(site.origin + "/")
        dialog(page).wait_for()
        page.get_by_role("button", name="Reject all").click()
        page.wait_for_function("() => window.candor.consent.get() !== null")
        assert consent_cookie(context)["s"] == 0 and last_seq(server) == before
        page.unroute("**/v1/consent")
        with page.expect_response(lambda r: r.url.endswith("/v1/consent")) as info:
            page.reload()
        assert info.value.status == 200
        [rec] = records_after(server, before)
        assert rec["ui_action"] == "reject_all" and "analytics" in rec["denied"]
        page.wait_for_function("() => document.cookie.includes('%22s%22%3A1')")
    finally:
        context.close()


# -- a strict Content-Security-Policy on the brand's page -----------------------------------------------
def test_works_under_a_strict_csp_with_a_nonce(env: Env, browser: Any) -> None:  # noqa: F811
    site = env["site"]
    context, page = new_page(browser)
    try:
        page.goto(site.origin + "/csp.html")
        dialog(page).wait_for()
        button = page.get_by_role("button", name="Accept all")
        assert button.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(27, 27, 27)", "styles apply"
        click_and_wait_post(page, "Accept all")
        page.wait_for_function("window.__analyticsRan === true && window.__bothRan === true")
        # /ads.js is on the brand's origin, which this policy does not list: blocked, as the brand asked
        assert not any("banner" in e.lower() or "style" in e.lower() for e in page.errors), page.errors
    finally:
        context.close()


# -- accessibility, layout, screenshots ----------------------------------------------------------------
def test_banner_is_accessible_keyboard_reachable_and_even_handed(env: Env, browser: Any) -> None:  # noqa: F811
    site = env["site"]
    for name, viewport in (("desktop", {"width": 1280, "height": 800}), ("mobile", {"width": 390, "height": 844})):
        context, page = new_page(browser, viewport=viewport)
        try:
            page.goto(site.origin + "/")
            dialog(page).wait_for()
            boxes = [
                page.get_by_role("button", name=n, exact=True).bounding_box()
                for n in ("Accept all", "Reject all", "Customise")
            ]
            assert all(b is not None for b in boxes)
            assert len({(round(b["width"]), round(b["height"])) for b in boxes}) == 1, "buttons of equal size"
            styles = page.evaluate(
                """() => [...document.querySelector('#candor-consent').shadowRoot.querySelectorAll('.a button')]
                .map(b => { const s = getComputedStyle(b); return [s.fontWeight, s.backgroundColor, s.color]; })"""
            )
            assert len({tuple(s) for s in styles}) == 1, "buttons of equal weight"
            assert max(b["x"] + b["width"] for b in boxes) <= viewport["width"], "fits the screen"
            screenshot(page, f"banner-{name}")
            page.get_by_role("button", name="Customise").click()
            screenshot(page, f"banner-{name}-customise")
            assert axe_violations(page) == []
            if name == "desktop":  # reachable from the keyboard: the first stops in the page
                page.reload()
                dialog(page).wait_for()
                focused = ""
                for _ in range(4):
                    page.keyboard.press("Tab")
                    focused = page.evaluate(
                        "() => { const h = document.activeElement;"
                        " return (h && h.shadowRoot && h.shadowRoot.activeElement || h).textContent }"
                    )
                    if focused == "Accept all":
                        break
                assert focused == "Accept all"
                with page.expect_response(lambda r: r.url.endswith("/v1/consent")):
                    page.keyboard.press("Enter")
                page.wait_for_function("window.__analyticsRan === true")
        finally:
            context.close()
