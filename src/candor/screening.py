"""What collection does with the personal data in an event before it is stored.

The validator (events.py) hands every message's properties, traits and context to
:meth:`Screen.apply`, which, by the source's data dictionary (dictionary.py) and policy:

1. **never stores** payment card numbers (Presidio's recognizer, with the Luhn checksum, on every
   string anywhere in the event: cut out of the text, or the field removed when it is the whole
   value) and fields whose name or declaration says ``credentials`` (``password``, ``cvv``, ...);
   the event is kept without them and the removal counted in the privacy inbox;
2. **scans undeclared properties and traits** (detect.py: a cheap pre-filter, then Presidio on the
   plausible values only) and matches their field names against ``CANDOR_PII_FIELD_NAMES``. A
   finding in a property is handled by the source's policy: ``encrypt`` (the default: sealed and
   flagged), ``redact`` (kept in clear with the personal part masked, ``<EMAIL_ADDRESS>``) or
   ``drop``; traits are sealed anyway and only flagged. Every finding goes to the inbox (field,
   guessed category, count; never the value);
3. **holds back special categories** (declared, or suggested by the field name): a value is kept
   only if the person opted in to its category; the writer decides (ingest.py), because only it
   knows the subject;
4. **coarsens coordinates** (``context.location`` and properties named latitude/longitude/lat/lng/lon)
   to about 1 km; the precise values are held back like a special category (``precise_location``);
5. **truncates the IP address** for analytics (location.py); the full address is sealed apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from candor.detect import Scan, Scanner, field_category, mask
from candor.dictionary import CATEGORIES, SourceDictionary
from candor.location import COORD_KEYS, coarse, coarsen_location, is_precise, truncate_ip

POLICIES = ("encrypt", "redact", "drop")
DEFAULT_POLICY = "encrypt"
REMOVED = "<REMOVED>"  # what stands where a card number was cut out of a text
_GONE = object()
_SPECIAL = frozenset(c.name for c in CATEGORIES.values() if c.special)
_PLAIN, _WALK, _DECLARED = 0, 1, 2  # what a field name says to the fast path (Screen._key_verdict)


@dataclass(slots=True)
class Held:
    """A value kept only if the subject opted in to its category (decided by the writer)."""

    category: str
    scope: str  # traits | properties | context
    path: str  # dotted, list items by index
    value: Any
    detector: str | None = None  # set when the field was not declared (found by detection)


@dataclass(slots=True)
class Screened:
    properties: dict[str, Any]
    traits: dict[str, Any]
    context: dict[str, Any]
    sealed_properties: dict[str, Any] = field(default_factory=dict)  # dotted path → undeclared personal value
    findings: list[tuple[str, str, str, str, str]] = field(
        default_factory=list
    )  # scope, path, category, detector, action
    held: list[Held] = field(default_factory=list)
    ip: str | None = None  # the full address (sealed apart by the writer)
    ip_network: str | None = None  # the truncated address, for analytics


class Screen:
    """The screening of one source's events (built per source and dictionary version, reused)."""

    def __init__(
        self,
        dictionary: SourceDictionary,
        *,
        scanner: Scanner | None,
        names: dict[str, str],
        policy: str = DEFAULT_POLICY,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}")
        self.policy = policy
        self.scanner = scanner  # None: detection switched off (CANDOR_PII_DETECTION=off)
        self.cards = scanner.only({"credentials"}) if scanner is not None else None
        self.names = names
        self.declared = {s: dictionary.declared(s) for s in ("traits", "properties", "context")}
        self.declared_cat = {
            s: {
                **{d.name: d.category for d in dictionary.by_scope(s).values()},
                **{p: d.category for p, d in dictionary.by_scope(s).items()},
            }
            for s in ("traits", "properties", "context")
        }
        self._name_cache: dict[str, str | None] = {}
        # the fast path (see _needs_walk): per scope, a test for strings and a cache of key verdicts
        card_gate = self.cards.plausible_or_encoded if self.cards is not None else None
        full_gate = scanner.plausible_or_encoded if scanner is not None else None
        self._gate: dict[str, Any] = {"properties": full_gate, "traits": full_gate, "context": card_gate}
        self._interesting: dict[str, dict[str, int]] = {"properties": {}, "traits": {}, "context": {}}

    # -- helpers ------------------------------------------------------------------------------------
    def _name_cat(self, key: str) -> str | None:
        hit = self._name_cache.get(key, _GONE)
        if hit is _GONE:
            hit = field_category(key, self.names)
            if len(self._name_cache) > 20_000:
                self._name_cache.clear()
            self._name_cache[key] = hit
        return hit  # type: ignore[return-value]

    def _cut_cards(self, value: str, out: Screened, scope: str, path: str) -> Any:
        """``value`` without card numbers (the whole value gone when it is one); counted."""
        if self.cards is None or len(value) < 13:
            return value
        scan = self.cards.scan(value)
        if not scan.spans:
            return value
        out.findings.append((scope, _agg(path), "credentials", scan.spans[0].detector, "removed"))
        rest = mask(value, scan.spans, lambda _s: REMOVED)
        return _GONE if rest.strip() == REMOVED else rest

    # -- the walk ------------------------------------------------------------------------------------
    def _walk(self, node: Any, scope: str, path: str, declared: bool, out: Screened, top: bool) -> Any:
        """The node with what must not be stored removed; findings, holds and seals recorded in ``out``."""
        if isinstance(node, dict):
            copy: dict[str, Any] | None = None
            for k, v in node.items():
                where = f"{path}.{k}" if path else k
                new = self._field(k, v, scope, where, declared, out, top)
                if new is not v:
                    if copy is None:
                        copy = dict(node)
                    if new is _GONE:
                        del copy[k]
                    else:
                        copy[k] = new
            return node if copy is None else copy
        if isinstance(node, list):
            items: list[Any] | None = None
            for i, v in enumerate(node):
                new = self._field(None, v, scope, f"{path}.{i}", declared, out, False)
                if new is not v:
                    if items is None:
                        items = list(node)
                    items[i] = None if new is _GONE else new
            return node if items is None else items
        return node

    def _field(self, key: str | None, v: Any, scope: str, where: str, declared: bool, out: Screened, top: bool) -> Any:
        cat = None
        if key is not None:
            dcat = self.declared_cat[scope].get(key) if not declared else None
            if dcat is None and not declared and where in self.declared_cat[scope]:
                dcat = self.declared_cat[scope][where]
            if dcat is not None:
                if CATEGORIES[dcat].never_stored:
                    out.findings.append((scope, _agg(where), dcat, "dictionary", "removed"))
                    return _GONE
                if dcat in _SPECIAL and dcat != "precise_location" and scope != "context":
                    out.held.append(Held(dcat, scope, where, v))
                    return _GONE
                declared = True
            if key in COORD_KEYS and is_precise(v):
                out.held.append(Held("precise_location", scope, where, v))
                v = coarse(v)
                if declared or scope != "properties":
                    return v
                cat = "location"
            elif self.scanner is not None and not declared:
                cat = self._name_cat(key)
                if cat is not None and CATEGORIES[cat].never_stored:
                    out.findings.append((scope, _agg(where), cat, "field_name", "removed"))
                    return _GONE
        if isinstance(v, dict | list):
            return self._walk(v, scope, where, declared, out, False)
        if self.scanner is None:
            return v
        if type(v) is int and 13 <= len(str(abs(v))) <= 19:  # a card number sent as a JSON number
            assert self.cards is not None
            if self.cards.scan(str(v)).spans:
                out.findings.append((scope, _agg(where), "credentials", "presidio:CREDIT_CARD", "removed"))
                return _GONE
        if declared or scope == "context":
            return self._cut_cards(v, out, scope, where) if isinstance(v, str) else v
        # an undeclared value of a property or trait: scan it
        scan: Scan | None = None
        if isinstance(v, str):
            v = self._cut_cards(v, out, scope, where)
            if v is _GONE:
                return v
            scan = self.scanner.scan(v)
        if cat is None and (scan is None or not scan.found):
            return v
        if cat is not None:
            detector, category = "field_name", cat
        elif scan is not None and scan.spans:
            detector, category = scan.spans[0].detector, scan.spans[0].category
        else:  # a detector failed or the text was too long to scan whole: treated as personal free text
            detector, category = "unscannable", "communications"
        if category in _SPECIAL and category != "precise_location" and detector != "unscannable":
            out.held.append(Held(category, scope, where, v, detector))  # the writer records the finding
            return _GONE
        if scope != "properties":
            out.findings.append((scope, _agg(where), category, detector, "encrypted"))
            return v
        policy = self.policy
        if policy == "redact":
            out.findings.append((scope, _agg(where), category, detector, "redacted"))
            if scan is not None and scan.spans and not scan.failed:
                return mask(v, scan.spans)
            return f"<{category.upper()}>"
        if policy == "drop":
            out.findings.append((scope, _agg(where), category, detector, "dropped"))
            return _GONE
        out.findings.append((scope, _agg(where), category, detector, "encrypted"))
        out.sealed_properties[where] = v
        return _GONE

    # -- the entry point -----------------------------------------------------------------------------
    def _needs_walk(self, node: dict[str, Any], scope: str) -> bool:
        """The fast path: whether anything in ``node`` could need screening (an interesting field name,
        a string the pre-filter finds plausible, a number as long as a card). Most events need none,
        and this look costs a fraction of the full walk: no copies, no paths, cached key verdicts.
        Under a declared field only card numbers can change anything (the walk only cuts those out),
        so its strings pass the card test alone: a declared email no longer costs a walk."""
        verdicts = self._interesting[scope]
        gate = self._gate[scope]
        card_gate = self._gate["context"]
        cards = self.cards is not None
        stack: list[tuple[Any, bool]] = [(node, False)]
        while stack:
            n, under = stack.pop()  # under: beneath a declared field (the walk then looks at no names)
            items = n.items() if type(n) is dict else ((None, v) for v in n)
            for k, v in items:
                declared = under
                if k is not None and under:
                    if k in COORD_KEYS:
                        return True
                elif k is not None:
                    hit = verdicts.get(k)
                    if hit is None:
                        hit = self._key_verdict(k, scope)
                        if len(verdicts) > 20_000:
                            verdicts.clear()
                        verdicts[k] = hit
                    if hit == _WALK:
                        return True
                    declared = hit == _DECLARED
                t = type(v)
                if t is str:
                    vg = card_gate if declared else gate
                    if vg is not None and len(v) >= 5 and vg(v):
                        return True
                elif t is dict or t is list:
                    stack.append((v, declared))
                elif t is int and cards and not -(10**12) < v < 10**12:
                    return True
                elif t is not bool and t is not float and v is not None and t is not int:
                    return True  # an odd type: let the full walk decide
        return False

    def _key_verdict(self, key: str, scope: str) -> int:
        """_WALK: the field name alone needs the walk; _DECLARED: declared (only card numbers matter
        beneath it); _PLAIN: neither (its values are judged by the scope's pre-filter)."""
        if key in COORD_KEYS:
            return _WALK
        dcat = self.declared_cat[scope].get(key)
        if dcat is not None and (CATEGORIES[dcat].never_stored or (dcat in _SPECIAL and scope != "context")):
            return _WALK
        if dcat is not None:
            return _DECLARED
        if self.scanner is None:
            return _PLAIN
        cat = self._name_cat(key)
        hit = cat == "credentials" if scope == "context" else cat is not None
        return _WALK if hit else _PLAIN

    def apply(self, properties: dict[str, Any], traits: dict[str, Any], context: dict[str, Any]) -> Screened:
        out = Screened(properties, traits, context)
        if properties and self._needs_walk(properties, "properties"):
            out.properties = self._walk(properties, "properties", "", False, out, True)
        if traits and self._needs_walk(traits, "traits"):
            out.traits = self._walk(traits, "traits", "", False, out, True)
        if context:
            ctx = context
            ip = ctx.get("ip")
            if ip is not None:
                ctx = {k: v for k, v in ctx.items() if k != "ip"}
                if isinstance(ip, str) and (net := truncate_ip(ip)) is not None:
                    out.ip, out.ip_network = ip.strip(), net
                else:  # not an address: kept sealed with the context, as before
                    ctx["ip"] = ip
            ctx, precise = coarsen_location(ctx)
            if precise:
                out.held.extend(Held("precise_location", "context", f"location.{k}", v) for k, v in precise.items())
            if self._needs_walk(ctx, "context"):
                out.context = self._walk(ctx, "context", "", False, out, True)
            else:
                out.context = ctx
        return out


def _agg(path: str) -> str:
    """A path as the inbox shows it: list positions folded (``products.3.note`` → ``products[].note``)."""
    if not any(c.isdigit() for c in path):
        return path[:200]
    return ".".join("[]" if p.isdigit() else p for p in path.split(".")).replace(".[]", "[]")[:200]


def merge_held(doc: dict[str, Any], held: list[Held]) -> dict[str, Any]:
    """Put held values (the subject opted in) back into the sealed document of an event."""
    for h in held:
        if h.scope == "context":
            ctx = doc.setdefault("context", {})
            node = ctx
            parts = h.path.split(".")
            for p in parts[:-1]:
                nxt = node.get(p)
                if not isinstance(nxt, dict):
                    nxt = node[p] = {}
                node = nxt
            node[parts[-1]] = h.value
        elif h.scope == "traits":
            doc.setdefault("traits", {})[h.path] = h.value
        else:
            doc.setdefault("properties", {})[h.path] = h.value
    return doc


class WriterHooks:
    """The writer's part (ingest.py): held values by the subject's opt-ins, full IPs, inbox findings."""

    def __init__(self, consent: Any, inbox: Any) -> None:
        self.consent = consent
        self.inbox = inbox
        self._ip_sql: str | None = None

    def sealed_doc(self, m: Any, sid: str, conn: Any) -> bytes:
        """The event's sealed document with the held values the subject opted in to (others dropped)."""
        import orjson

        keep: list[Held] = []
        decided: dict[str, bool] = {}
        for h in m.held:
            ok = decided.get(h.category)
            if ok is None:
                ok = decided[h.category] = self._opted_in(m, sid, h.category, conn)
            if ok:
                keep.append(h)
            if h.category != "precise_location" and (h.detector is not None or not ok):
                if m.findings is None:
                    m.findings = []
                action = "encrypted" if ok else "withheld"
                m.findings.append((h.scope, _agg(h.path), h.category, h.detector or "dictionary", action))
        if not keep:
            return bytes(m.sealed_doc)
        return orjson.dumps(merge_held(orjson.loads(m.sealed_doc), keep))

    def _opted_in(self, m: Any, sid: str, category: str, conn: Any) -> bool:
        purpose = f"sensitive.{category}"
        signal = m.signals.get(purpose) if m.signals else None
        if signal is False or self.consent is None:
            return False
        d = self.consent.can_use(sid, "necessary", categories=(category,), conn=conn, remember=False)
        return d.allowed or (signal is True and not d.explicit)

    def after_events(self, conn: Any, vault: Any, fresh: list[Any], final: list[str], aeads: dict[str, Any]) -> None:
        """Full IP addresses (sealed, apart from the events) and the inbox findings of stored events."""
        from candor.location import ip_sql

        ip_rows = [
            (w.source_id, m.message_id, sid, m.received_ms, vault.seal_with(aeads[sid], m.ip.encode(), sid.encode()))
            for (w, m), sid in zip(fresh, final, strict=True)
            if m.ip is not None
        ]
        if ip_rows:
            if self._ip_sql is None:
                self._ip_sql = ip_sql(conn)
            conn.exec_driver_sql(self._ip_sql, ip_rows)
        if self.inbox is not None:
            batches = [(w.source_id, m.received_ms, m.findings) for w, m in fresh if m.findings]
            if batches:
                self.inbox.record(conn, batches)


class Screens:
    """One :class:`Screen` per source, rebuilt when its dictionary or policy changes (runtime wiring)."""

    def __init__(self, dictionary: Any, inbox: Any, settings: Any) -> None:
        from candor.detect import Scanner, build_detectors, field_names

        self.dictionary = dictionary
        self.inbox = inbox
        self.enabled = settings.pii_detection == "on"
        self.scanner = Scanner(build_detectors(settings)) if self.enabled else None
        self.names = field_names(settings.pii_field_names)
        self._screens: dict[int, tuple[Any, tuple[str, frozenset[str]], Screen]] = {}

    def warm(self) -> None:
        """Build the detectors' engine now (Presidio's import and recognizers take about a second), so
        that the first plausible value of live traffic does not pay for it in the event loop."""
        if self.scanner is None:
            return
        for d in self.scanner.detectors:
            engine = getattr(d, "engine", None)
            if callable(engine):
                engine()
                return

    def for_source(self, source_id: int, personal: frozenset[str] = frozenset()) -> Screen:
        """The source's screen; ``personal`` are the property names it declared personal when it was
        created (``sources create --personal``): declared, as identifiers, unless the dictionary says more."""
        sd = self.dictionary.for_source(source_id)
        policy = self.inbox.policy_for(source_id)
        hit = self._screens.get(source_id)
        if hit is not None and hit[0] is sd and hit[1] == (policy, personal):
            return hit[2]
        from candor.dictionary import Declaration, SourceDictionary

        known = sd.declared("properties")
        extra = tuple(Declaration("properties", n, "identifier", None, source_id) for n in sorted(personal - known))
        full = SourceDictionary(extra + sd.declarations) if extra else sd
        screen = Screen(full, scanner=self.scanner, names=self.names, policy=policy)
        self._screens[source_id] = (sd, (policy, personal), screen)
        return screen
