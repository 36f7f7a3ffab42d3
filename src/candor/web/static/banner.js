/*! Candor consent banner. Add to a page:
  <script src="https://CANDOR/banner.js" data-write-key="WRITE_KEY" data-notice="NOTICE_ID" async></script>
  Optional: data-api (default: this script's origin), data-language (default: the browser's, then en),
  data-ttl-days (default 395), data-purposes (space-separated subset of the purposes to offer).
  Tag non-essential scripts: <script type="text/plain" data-purpose="analytics"> (several purposes:
  space-separated, all needed; data-type="module" for a module). They run only after consent.
  API: window.candor.consent.get() / .onChange(fn) / .open(); window event "candor:consent".
  The cookie candor_consent holds no personal data: notice id and version, the purpose booleans,
  the time, how the choice was made, whether the proof was stored, and a random consent id. */
(function (w, d) {
  "use strict";
  if (w.candor && w.candor.consent) return; // loaded twice
  var me = d.currentScript || d.querySelector("script[data-notice][data-write-key]");
  if (!me) return;
  function attr(n) {
    var v = me.getAttribute("data-" + n);
    return v == null || v === "" ? null : v;
  }
  var KEY = attr("write-key"), NOTICE = attr("notice");
  var API = (attr("api") || new URL(me.src, location.href).origin).replace(/\/+$/, "");
  var LANG = attr("language") || navigator.language || "en";
  var TTL = Math.max(1, parseInt(attr("ttl-days"), 10) || 395) * 864e5;
  var ONLY = attr("purposes") ? attr("purposes").split(/\s+/) : null;
  var NONCE = me.nonce || me.getAttribute("nonce") || "";
  var GPC = navigator.globalPrivacyControl === true;
  var GPC_OFF = ["sale_sharing", "advertising"];
  var NAME = "candor_consent";
  var ACTIONS = { a: "accept_all", r: "reject_all", c: "custom" };
  var TEXT = {
    en: {
      title: "Your privacy choices",
      intro: "With your permission we and our partners use cookies and similar tools for the purposes below. " +
        "Nothing beyond what the site needs to work runs until you choose. You can change your mind at any time.",
      accept: "Accept all", reject: "Reject all", custom: "Customise", save: "Save my choices",
      notice: "Privacy notice", choose: "Choose what we may do", always: "Always on",
      necessary: "Necessary", gpc: "Your browser sends a Global Privacy Control signal: we will not sell or share " +
        "your data or use it for targeted advertising, whatever you choose here.",
      gpcOff: "Off: your browser sends Global Privacy Control."
    },
    de: {
      title: "Ihre Datenschutz-Einstellungen",
      intro: "Mit Ihrer Erlaubnis verwenden wir und unsere Partner Cookies und ähnliche Werkzeuge für die unten " +
        "genannten Zwecke. Bis Sie wählen, läuft nur, was die Website zum Funktionieren braucht. Sie können Ihre " +
        "Wahl jederzeit ändern.",
      accept: "Alle akzeptieren", reject: "Alle ablehnen", custom: "Anpassen", save: "Meine Auswahl speichern",
      notice: "Datenschutzhinweis", choose: "Wählen Sie, was wir tun dürfen", always: "Immer aktiv",
      necessary: "Notwendig", gpc: "Ihr Browser sendet Global Privacy Control: Wir verkaufen oder teilen Ihre " +
        "Daten nicht und nutzen sie nicht für gezielte Werbung, unabhängig von Ihrer Wahl hier.",
      gpcOff: "Aus: Ihr Browser sendet Global Privacy Control."
    }
  };
  var T = TEXT[LANG.slice(0, 2).toLowerCase()] || TEXT.en;
  var LABELS = { sale_sharing: "Sale and sharing of data" };

  var stored = readCookie(), state = null, notice = null, purposes = null;
  var listeners = [], ran = {}, hooked = false, wantOpen = false, host = null, ui = null, returnFocus = null;

  function warn(e) { if (w.console) w.console.warn("Candor banner:", e && e.message ? e.message : e); }
  function gpcOff(p) { return GPC && GPC_OFF.indexOf(p) >= 0; }
  function fresh(c) { return c && Date.now() - c.t < TTL; }

  // -- the first-party cookie ----------------------------------------------------------------
  function readCookie() {
    var m = d.cookie.match(/(?:^|;\s*)candor_consent=([^;]*)/);
    if (!m) return null;
    try {
      var c = JSON.parse(decodeURIComponent(m[1]));
      return c && typeof c.p === "object" && typeof c.t === "number" ? c : null;
    } catch (e) { return null; }
  }
  function writeCookie(c) {
    d.cookie = NAME + "=" + encodeURIComponent(JSON.stringify(c)) + "; Max-Age=" + Math.floor(TTL / 1000) +
      "; Path=/; SameSite=Lax" + (location.protocol === "https:" ? "; Secure" : "");
  }
  function randomId() {
    var b = new Uint8Array(16), s = "";
    (w.crypto || w.msCrypto).getRandomValues(b);
    for (var i = 0; i < 16; i++) s += (b[i] + 256).toString(16).slice(1);
    return s;
  }

  // -- the Candor API ------------------------------------------------------------------------
  function getJSON(path) {
    return fetch(API + path, { credentials: "omit" }).then(function (r) {
      if (r.ok) return r.json();
      var e = new Error("GET " + path.split("?")[0] + " answered " + r.status);
      e.status = r.status;
      throw e;
    });
  }
  function getNotice() {
    var langs = [LANG, LANG.split("-")[0], "en"].filter(function (l, i, a) { return a.indexOf(l) === i; });
    var i = 0;
    function next() {
      return getJSON("/v1/notices/" + encodeURIComponent(NOTICE) + "?language=" + encodeURIComponent(langs[i]))
        .catch(function (e) { if (e.status === 404 && ++i < langs.length) return next(); throw e; });
    }
    return next();
  }
  function anonymousId(c) {
    try { // analytics.js on the page: the ledger ties to the same browser as its events
      var a = w.analytics.user().anonymousId();
      if (a) return String(a);
    } catch (e) { /* not loaded */ }
    return c.id;
  }
  function post(c) {
    var granted = [], denied = [];
    for (var k in c.p) if (Object.prototype.hasOwnProperty.call(c.p, k)) (c.p[k] ? granted : denied).push(k);
    var body = {
      anonymousId: anonymousId(c), granted: granted, denied: denied,
      notice: { id: notice.id, version: notice.version, language: notice.language },
      uiAction: ACTIONS[c.a] || "custom", source: "banner",
      timestamp: new Date(c.t).toISOString(), messageId: "consent-" + c.id + "-" + c.t
    };
    return fetch(API + "/v1/consent", {
      method: "POST", mode: "cors", credentials: "omit", body: JSON.stringify(body),
      headers: { Authorization: "Basic " + btoa(KEY + ":"), "Content-Type": "application/json" }
    }).then(function (r) {
      if (!r.ok) throw new Error("POST /v1/consent answered " + r.status);
      c.s = 1; // the proof is stored; otherwise it is sent again on the next page
      if (stored === c) writeCookie(c);
    });
  }

  // -- applying a choice ---------------------------------------------------------------------
  function prefs() {
    var out = {};
    for (var k in state.p) if (Object.prototype.hasOwnProperty.call(state.p, k)) out[k] = state.p[k] === true;
    return out;
  }
  function get() {
    if (!state) return null;
    return {
      categoryPreferences: prefs(), notice: { id: state.n, version: state.v },
      time: new Date(state.t).toISOString(), uiAction: ACTIONS[state.a] || "custom", gpc: GPC
    };
  }
  function whenReady(fn) {
    if (d.readyState === "loading") d.addEventListener("DOMContentLoaded", fn);
    else fn();
  }
  function activate() {
    var list = d.querySelectorAll('script[type="text/plain"][data-purpose]:not([data-candor-activated])');
    for (var i = 0; i < list.length; i++) {
      var old = list[i], need = old.getAttribute("data-purpose").split(/\s+/).filter(Boolean);
      if (!need.length || !need.every(function (p) { return p === "necessary" || state.p[p] === true; })) continue;
      var s = d.createElement("script"), at = old.attributes;
      for (var j = 0; j < at.length; j++) {
        if (["type", "data-type", "nonce"].indexOf(at[j].name) < 0) s.setAttribute(at[j].name, at[j].value);
      }
      if (old.getAttribute("data-type")) s.type = old.getAttribute("data-type");
      if (old.nonce || NONCE) s.nonce = old.nonce || NONCE; // a strict CSP on the page allows it
      if (old.src) s.async = false; // external scripts run in document order
      else s.text = old.text;
      old.setAttribute("data-candor-activated", "");
      need.forEach(function (p) { ran[p] = true; });
      old.parentNode.insertBefore(s, old.nextSibling);
    }
  }
  function gtagUpdate() {
    if (typeof w.gtag !== "function") return;
    var g = function (x) { return state.p[x] === true ? "granted" : "denied"; };
    w.gtag("consent", "update", {
      analytics_storage: g("analytics"), ad_storage: g("advertising"),
      ad_user_data: g("advertising"), ad_personalization: g("advertising")
    });
  }
  function hookAnalytics() { // Segment's context.consent.categoryPreferences on every event
    var a = w.analytics;
    if (hooked || !a || typeof a.addSourceMiddleware !== "function") return;
    hooked = true;
    a.addSourceMiddleware(function (m) {
      var o = m.payload && m.payload.obj;
      if (o && state) {
        o.context = o.context || {};
        o.context.consent = o.context.consent || {};
        o.context.consent.categoryPreferences = prefs();
      }
      m.next(m.payload);
    });
  }
  function apply(c) {
    state = c;
    hookAnalytics();
    gtagUpdate();
    whenReady(function () { activate(); hookAnalytics(); });
    var now = get();
    listeners.slice().forEach(function (fn) { try { fn(now); } catch (e) { warn(e); } });
    try { w.dispatchEvent(new CustomEvent("candor:consent", { detail: now })); } catch (e) { /* old browser */ }
  }
  function choose(kind) {
    var p = {}, revoked = false;
    offered().forEach(function (x) {
      var on = kind === "a" ? true : kind === "r" ? false : ui.boxes[x.name].checked;
      p[x.name] = on && !gpcOff(x.name);
      if (!p[x.name] && state && state.p[x.name] && ran[x.name]) revoked = true;
    });
    var c = { n: notice.id, v: notice.version, p: p, t: Date.now(), id: (stored && stored.id) || randomId(), a: kind, s: 0 };
    stored = c;
    writeCookie(c);
    hide();
    var sent = post(c).catch(warn);
    // scripts that already ran cannot be stopped: a reload starts the page without them
    if (revoked) sent.then(function () { location.reload(); });
    else apply(c);
  }

  // -- the banner ----------------------------------------------------------------------------
  var CSS = ":host{all:initial}" +
    ".b{position:fixed;left:0;right:0;bottom:0;z-index:2147483647;box-sizing:border-box;max-height:90vh;" +
    "overflow:auto;background:#fff;color:#1b1b1b;border-top:3px solid #1b1b1b;padding:1rem 1.25rem;" +
    "font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;box-shadow:0 -4px 16px rgba(0,0,0,.2)}" +
    ".i{max-width:60rem;margin:0 auto}" +
    "h2{font-size:1.15rem;margin:0 0 .4rem}p{margin:0 0 .6rem}" +
    ".n{max-height:7rem;overflow:auto;white-space:pre-line;border:1px solid #6b6b6b;padding:.5rem;margin:0 0 .75rem;" +
    "font-size:.9rem}" +
    ".g{background:#eef3ff;border-left:4px solid #1d4ed8;padding:.5rem}" +
    "fieldset{border:1px solid #6b6b6b;margin:0 0 .75rem;padding:.5rem .75rem}legend{font-weight:600}" +
    ".p{display:flex;gap:.6rem;align-items:flex-start;padding:.35rem 0}" +
    ".p input{width:1.2rem;height:1.2rem;margin:.15rem 0 0;flex:none}.p span{display:block;font-size:.9rem}" +
    ".a{display:grid;grid-template-columns:repeat(3,1fr);gap:.6rem}" +
    "button{font:inherit;font-weight:600;min-height:2.75rem;padding:.5rem 1rem;border:2px solid #1b1b1b;" +
    "background:#1b1b1b;color:#fff;border-radius:4px;cursor:pointer;width:100%}" +
    "button:hover{background:#333}" +
    "button:focus-visible,input:focus-visible,.n:focus-visible{outline:3px solid #1d4ed8;outline-offset:2px}" +
    ".s{margin:0 0 .75rem}[hidden]{display:none!important}" +
    "@media (max-width:600px){.a{grid-template-columns:1fr}.b{padding:.75rem}}";

  function el(tag, props, kids) {
    var e = d.createElement(tag);
    for (var k in props) {
      if (k === "text") e.textContent = props[k];
      else if (k === "hidden") e.hidden = props[k];
      else e.setAttribute(k, props[k]);
    }
    (kids || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }
  function offered() {
    return (purposes || []).filter(function (p) {
      // opt-ins per special category (sensitive.*) are asked for where the data is, never in the banner
      return p.name !== "necessary" && !p.channel && p.name.indexOf("sensitive.") !== 0 &&
        (!ONLY || ONLY.indexOf(p.name) >= 0);
    });
  }
  function label(name) {
    return LABELS[name] || name.charAt(0).toUpperCase() + name.slice(1).replace(/[_.]/g, " ");
  }
  function build() {
    var boxes = {};
    var rows = [el("div", { class: "p" }, [
      el("input", { type: "checkbox", id: "cp-necessary", checked: "", disabled: "" }),
      el("label", { for: "cp-necessary" }, [el("b", { text: T.necessary }),
        el("span", { text: T.always })])
    ])];
    offered().forEach(function (p) {
      var id = "cp-" + p.name.replace(/[^a-z0-9_-]/gi, "-");
      var box = el("input", { type: "checkbox", id: id, name: p.name });
      if (gpcOff(p.name)) box.disabled = true;
      boxes[p.name] = box;
      rows.push(el("div", { class: "p" }, [box, el("label", { for: id }, [
        el("b", { text: label(p.name) }), el("span", { text: p.description }),
        gpcOff(p.name) ? el("span", { text: T.gpcOff }) : null
      ])]));
    });
    var panel = el("div", { id: "cp-panel", hidden: true }, [
      el("fieldset", {}, [el("legend", { text: T.choose })].concat(rows)),
      el("div", { class: "s" }, [el("button", { type: "button", "data-a": "c", text: T.save })])
    ]);
    var more = el("button", { type: "button", "aria-expanded": "false", "aria-controls": "cp-panel", text: T.custom });
    var box = el("div", {
      class: "b", role: "dialog", "aria-modal": "false", "aria-labelledby": "cp-title",
      "aria-describedby": "cp-intro", lang: (notice.language || "en")
    }, [el("div", { class: "i" }, [
      el("h2", { id: "cp-title", text: T.title }),
      el("p", { id: "cp-intro", text: T.intro }),
      GPC ? el("p", { class: "g", text: T.gpc }) : null,
      el("div", {
        class: "n", tabindex: "0", role: "region", "aria-label": T.notice + " (" + notice.version + ")",
        text: notice.text
      }),
      panel,
      el("div", { class: "a" }, [
        el("button", { type: "button", "data-a": "a", text: T.accept }),
        el("button", { type: "button", "data-a": "r", text: T.reject }),
        more
      ])
    ])]);
    box.addEventListener("click", function (ev) {
      var t = ev.target.closest && ev.target.closest("button");
      if (!t) return;
      if (t === more) {
        panel.hidden = !panel.hidden;
        more.setAttribute("aria-expanded", String(!panel.hidden));
        if (!panel.hidden) (rows[1] ? rows[1].querySelector("input") : t).focus();
      } else if (t.getAttribute("data-a")) choose(t.getAttribute("data-a"));
    });
    host = el("div", { id: "candor-consent" });
    var root = host.attachShadow({ mode: "open" });
    try { // a constructed style sheet is not an inline style: a strict style-src allows it
      var sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
      root.adoptedStyleSheets = [sheet];
    } catch (e) {
      var st = el("style", { text: CSS });
      if (NONCE) st.nonce = NONCE;
      root.appendChild(st);
    }
    root.appendChild(box);
    ui = { box: box, panel: panel, more: more, boxes: boxes };
  }
  function show(focus) {
    var p = purposes ? Promise.resolve(purposes) : getJSON("/v1/purposes");
    p.then(function (list) {
      purposes = list;
      if (!ui) build();
      for (var k in ui.boxes) ui.boxes[k].checked = !!(state && state.p[k] === true && !gpcOff(k));
      whenReady(function () {
        if (!host.isConnected) d.body.insertBefore(host, d.body.firstChild); // first in the tab order
        ui.box.hidden = false;
        if (focus) ui.box.querySelector("button").focus();
      });
    }).catch(warn);
  }
  function hide() {
    if (ui) ui.box.hidden = true;
    if (returnFocus && returnFocus.focus) returnFocus.focus();
    returnFocus = null;
  }

  w.candor = w.candor || {};
  w.candor.consent = {
    get: get,
    onChange: function (fn) {
      listeners.push(fn);
      if (state) fn(get());
      return function () { listeners = listeners.filter(function (f) { return f !== fn; }); };
    },
    open: function () {
      returnFocus = d.activeElement;
      if (notice) show(true);
      else wantOpen = true;
    }
  };

  if (!KEY || !NOTICE) {
    warn("data-write-key and data-notice are required on the banner's script tag");
    return;
  }
  getNotice().then(function (n) {
    notice = n;
    if (fresh(stored) && stored.n === n.id && stored.v === n.version) {
      apply(stored);
      if (!stored.s) post(stored).catch(warn);
      if (wantOpen) show(true);
    } else show(wantOpen); // no choice yet, a new notice version, or the choice expired
  }, function (e) {
    warn(e); // Candor unreachable: a stored, unexpired choice still applies; without one nothing runs
    if (fresh(stored)) apply(stored);
  });
})(window, document);
