"""Next best action: the content or offer for one person at one placement, from ordered rules.

Rules live in a JSON or YAML file (CANDOR_DECIDE_RULES_FILE; built-in ``DEFAULT`` otherwise)::

    placements:
      home-hero:
        rules:
          - name: jazz-fans
            when: {all: [{trait: interests, contains: jazz}, {consent: marketing.email}]}
            offer: {id: jazz-week, title: "Jazz week: 20% off"}
          - name: picked-for-you
            offer: {id: for-you, title: "Picked for you", recommendations: 4}
        default: {id: welcome, title: "New this week", recommendations: 4}

The first rule whose ``when`` holds wins (no ``when``: always). Conditions: ``{consent: purpose}``,
``{segment: name}`` (current member), ``{trait: name, equals|contains|in|exists: ...}``, and
``all``/``any``/``not`` of conditions. Segment and trait conditions are *personal*: for a person without
``personalization`` consent a rule that uses them is skipped, never evaluated. An offer with
``recommendations: n`` carries n items, personal only with consent (bestsellers otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select

from candor.store.schema import segment_members, segments

MAX_RULES = 200
MAX_DEPTH = 8
TRAIT_OPS = ("equals", "contains", "in", "exists")
DEFAULT: dict[str, Any] = {
    "placements": {
        "home": {
            "rules": [
                {
                    "name": "picked-for-you",
                    "when": {"consent": "personalization"},
                    "offer": {"id": "for-you", "title": "Picked for you", "recommendations": 4},
                }
            ],
            "default": {"id": "bestsellers", "title": "Our bestsellers", "recommendations": 4},
        }
    }
}


class DecideError(ValueError):
    """A malformed rule (the message says where), or an unknown placement (status 404)."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_rules") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Cond:
    kind: str  # consent | segment | trait | all | any | not
    name: str = ""
    op: str = ""
    value: Any = None
    parts: tuple[Cond, ...] = ()

    @property
    def personal(self) -> bool:
        return self.kind in ("segment", "trait") or any(p.personal for p in self.parts)


@dataclass(frozen=True)
class Offer:
    id: str
    title: str
    content: dict[str, Any] = field(default_factory=dict)
    recommendations: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "content": self.content}


@dataclass(frozen=True)
class Rule:
    name: str
    when: Cond | None
    offer: Offer

    @property
    def personal(self) -> bool:
        return self.when is not None and self.when.personal


@dataclass(frozen=True)
class Placement:
    name: str
    rules: tuple[Rule, ...]
    default: Offer | None


def _name(value: Any, where: str, limit: int = 100) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit or not value.isprintable():
        raise DecideError(f"{where}: a name of 1 to {limit} printable characters is required")
    return value


def _json_value(value: Any, where: str, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise DecideError(f"{where}: nested too deeply")
    if isinstance(value, str | int | float | bool) or value is None:
        if isinstance(value, str) and len(value) > 2000:
            raise DecideError(f"{where}: texts are at most 2000 characters")
        return value
    if isinstance(value, list):
        return [_json_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {_name(k, f"{where}.{k}"): _json_value(v, f"{where}.{k}", depth + 1) for k, v in value.items()}
    raise DecideError(f"{where}: not a JSON value")


def parse_cond(raw: Any, where: str, depth: int = 0) -> Cond:
    if depth > MAX_DEPTH:
        raise DecideError(f"{where}: conditions nest at most {MAX_DEPTH} deep")
    if not isinstance(raw, dict) or not raw:
        raise DecideError(f"{where}: a condition is an object such as {{consent: personalization}}")
    keys = set(raw)
    if keys & {"all", "any"}:
        (kind,) = keys & {"all", "any"} if len(keys) == 1 else (None,)
        if kind is None:
            raise DecideError(f"{where}: 'all' or 'any' stands alone in its condition")
        parts = raw[kind]
        if not isinstance(parts, list) or not parts:
            raise DecideError(f"{where}.{kind}: a non-empty list of conditions is required")
        return Cond(kind, parts=tuple(parse_cond(p, f"{where}.{kind}[{i}]", depth + 1) for i, p in enumerate(parts)))
    if "not" in keys:
        if len(keys) != 1:
            raise DecideError(f"{where}: 'not' stands alone in its condition")
        return Cond("not", parts=(parse_cond(raw["not"], f"{where}.not", depth + 1),))
    if "consent" in keys:
        if len(keys) != 1:
            raise DecideError(f"{where}: 'consent' takes no other keys")
        return Cond("consent", _name(raw["consent"], f"{where}.consent"))
    if "segment" in keys:
        if len(keys) != 1:
            raise DecideError(f"{where}: 'segment' takes no other keys")
        return Cond("segment", _name(raw["segment"], f"{where}.segment", 200))
    if "trait" in keys:
        trait = _name(raw["trait"], f"{where}.trait")
        ops = keys - {"trait"}
        if len(ops) != 1 or next(iter(ops)) not in TRAIT_OPS:
            raise DecideError(f"{where}: a trait condition needs exactly one of {', '.join(TRAIT_OPS)}")
        op = next(iter(ops))
        value = _json_value(raw[op], f"{where}.{op}")
        if op == "in" and not isinstance(value, list):
            raise DecideError(f"{where}.in: a list of values is required")
        if op == "exists" and not isinstance(value, bool):
            raise DecideError(f"{where}.exists: true or false")
        return Cond("trait", trait, op, value)
    raise DecideError(f"{where}: unknown condition {sorted(keys)[0]!r}; use consent, segment, trait, all, any or not")


def parse_offer(raw: Any, where: str) -> Offer:
    if not isinstance(raw, dict):
        raise DecideError(f"{where}: an offer is an object with id and title")
    unknown = set(raw) - {"id", "title", "content", "recommendations"}
    if unknown:
        raise DecideError(f"{where}: unknown key {sorted(unknown)[0]!r} (id, title, content, recommendations)")
    n = raw.get("recommendations", 0)
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 20:
        raise DecideError(f"{where}.recommendations: a whole number from 0 to 20")
    content = _json_value(raw.get("content", {}), f"{where}.content")
    if not isinstance(content, dict):
        raise DecideError(f"{where}.content: an object")
    title = raw.get("title", "")
    if not isinstance(title, str) or len(title) > 500:
        raise DecideError(f"{where}.title: a text of at most 500 characters")
    return Offer(_name(raw.get("id"), f"{where}.id"), title, content, n)


def parse(raw: Any) -> dict[str, Placement]:
    """Placements from a parsed rules document; raises DecideError naming the place of the first error."""
    if not isinstance(raw, dict) or set(raw) != {"placements"} or not isinstance(raw["placements"], dict):
        raise DecideError("rules: a document with one key, placements (an object of placements)")
    out: dict[str, Placement] = {}
    total = 0
    for pname, body in raw["placements"].items():
        where = f"placements.{pname}"
        _name(pname, where)
        if not isinstance(body, dict) or not set(body) <= {"rules", "default"}:
            raise DecideError(f"{where}: an object with rules (a list) and an optional default offer")
        rules_raw = body.get("rules", [])
        if not isinstance(rules_raw, list):
            raise DecideError(f"{where}.rules: a list of rules")
        rules: list[Rule] = []
        names: set[str] = set()
        for i, r in enumerate(rules_raw):
            rw = f"{where}.rules[{i}]"
            if not isinstance(r, dict) or not set(r) <= {"name", "when", "offer"} or "offer" not in r:
                raise DecideError(f"{rw}: a rule is an object with name, an optional when, and offer")
            name = _name(r.get("name", f"rule-{i + 1}"), f"{rw}.name")
            if name in names:
                raise DecideError(f"{rw}.name: {name!r} is used twice in this placement")
            names.add(name)
            when = parse_cond(r["when"], f"{rw}.when") if r.get("when") is not None else None
            rules.append(Rule(name, when, parse_offer(r["offer"], f"{rw}.offer")))
        total += len(rules)
        if total > MAX_RULES:
            raise DecideError(f"rules: at most {MAX_RULES} rules in all")
        default = parse_offer(body["default"], f"{where}.default") if body.get("default") is not None else None
        out[pname] = Placement(pname, tuple(rules), default)
    return out


def load(path: str) -> dict[str, Placement]:
    """The rules file (JSON, or YAML by its extension), or the built-in placements when ``path`` is empty."""
    if not path:
        return parse(DEFAULT)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise DecideError(f"CANDOR_DECIDE_RULES_FILE: cannot read {p.name} ({type(exc).__name__})") from None
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        else:
            raw = orjson.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse error: where, never the content
        raise DecideError(f"{p.name}: not valid {'YAML' if p.suffix.lower() in ('.yaml', '.yml') else 'JSON'} "
                          f"({type(exc).__name__})") from None  # fmt: skip
    return parse(raw)


class Decider:
    """Decides per request: consent read afresh, personal conditions only with personalization consent."""

    def __init__(self, rt: Any) -> None:
        self.rt = rt
        try:
            self.placements = load(rt.settings.decide_rules_file)
        except DecideError as exc:
            from candor.config import ConfigError

            raise ConfigError(f"CANDOR_DECIDE_RULES_FILE: {exc}") from None

    def _segment(self, name: str, profile: str, conn: Any) -> bool:
        sid = conn.execute(select(segments.c.id).where(segments.c.name == name)).scalar()
        if sid is None:
            return False
        row = conn.execute(
            select(segment_members.c.since_ms)
            .where(
                segment_members.c.segment_id == sid,
                segment_members.c.subject_id == profile,
                segment_members.c.until_ms.is_(None),
            )
            .limit(1)
        ).first()
        return row is not None

    def decide(self, user_id: str | None, anonymous_id: str | None, placement: str) -> dict[str, Any]:
        rec = self.rt.recommend
        place = self.placements.get(placement)
        if place is None:
            raise DecideError(
                f"placement: no placement named {placement[:100]!r} in the rules", 404, "unknown_placement"
            )
        subject = rec.subject(user_id, anonymous_id)
        with self.rt.store.engine.connect() as conn:
            personal = rec.personal(subject, conn)
            profile = self.rt.identity.profile_of(subject, conn) if subject and personal else None
            traits: dict[str, Any] | None = None
            skipped = 0

            def holds(c: Cond) -> bool:
                nonlocal traits
                if c.kind == "all":
                    return all(holds(p) for p in c.parts)
                if c.kind == "any":
                    return any(holds(p) for p in c.parts)
                if c.kind == "not":
                    return not holds(c.parts[0])
                if c.kind == "consent":
                    return subject is not None and bool(self.rt.consent.can_use(subject, c.name, conn=conn).allowed)
                assert profile is not None  # personal conditions run only with consent
                if c.kind == "segment":
                    return self._segment(c.name, profile, conn)
                if traits is None:
                    members = self.rt.identity.members(profile, conn)
                    golden, _, _ = self.rt.profiles.golden(members, conn, {}, scan=50)
                    traits = {k: v["value"] for k, v in golden.items()}
                value = traits.get(c.name)
                if c.op == "exists":
                    return (value is not None) == c.value
                if c.op == "equals":
                    return bool(value == c.value)
                if c.op == "in":
                    return value in c.value
                return isinstance(value, list | str) and c.value in value  # contains

            chosen: tuple[str | None, Offer | None] = (None, place.default)
            for rule in place.rules:
                if rule.personal and profile is None:
                    skipped += 1
                    continue
                if rule.when is None or holds(rule.when):
                    chosen = (rule.name, rule.offer)
                    break
        name, offer = chosen
        body: dict[str, Any] = {"placement": placement, "rule": name, "personalized": False, "offer": None}
        if offer is None:
            return body
        body["offer"] = offer.as_json()
        won = next((r for r in place.rules if r.name == name), None)
        body["personalized"] = bool(won is not None and won.personal and profile is not None)
        if offer.recommendations:
            answer = rec.for_subject(subject, offer.recommendations, allowed=personal)
            body["offer"]["items"] = answer.items
            body["personalized"] = body["personalized"] or answer.personalized
        return body
