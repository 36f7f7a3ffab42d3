"""Campaign templates: the one place messages are rendered (Jinja2 sandbox).

Every template sees the same context, built by :func:`context`. Features that add to what a
template may use (recommendations, loyalty) add a key there, nowhere else. The personalised
template sees ``traits`` only for recipients with ``personalization`` consent; the generic one and
the subject see an empty context.
"""

from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

SAMPLE_TRAITS: tuple[dict[str, Any], ...] = (
    {},
    {"firstName": "Ann", "lastName": "Lee", "email": "ann@example.com", "address": {"city": "Salem"}},
    {"firstName": "Zoë", "interests": ["jazz", "crime"], "loyaltyTier": "gold"},
)

STRICT = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
LENIENT = SandboxedEnvironment(autoescape=False)
_TEMPLATES: dict[tuple[int, str], Any] = {}


def compiled(env: SandboxedEnvironment, text: str) -> Any:
    """Templates compile once per process (compiling costs more than rendering)."""
    key = (id(env), text)
    tpl = _TEMPLATES.get(key)
    if tpl is None:
        if len(_TEMPLATES) > 256:
            _TEMPLATES.clear()
        tpl = _TEMPLATES[key] = env.from_string(text)
    return tpl


def sample_recommendations(n: int = 3) -> list[dict[str, Any]]:
    """``recommendations(n)`` while a template is checked: a fixed list, nobody's data."""
    sample = {"product_id": "B-1001", "name": "The Lighthouse Ledger", "category": "Fiction",
              "why": "popular with our customers"}  # fmt: skip
    return [dict(sample) for _ in range(max(0, min(int(n), 10)))]


def context(traits: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What a template may use: ``traits`` (empty unless personalised), ``first_name``,
    ``recommendations(n)`` (recommend/service.py: personal only with consent, bestsellers otherwise), and
    ``extra``."""
    extra.setdefault("recommendations", sample_recommendations)
    return {"traits": traits, "first_name": traits.get("firstName", ""), **extra}


def render_body(text: str, traits: dict[str, Any], personal: bool, **extra: Any) -> str:
    """The message body: the personalised template (lenient: a missing trait renders empty) or the generic one."""
    return str(compiled(LENIENT if personal else STRICT, text).render(context(traits if personal else {}, **extra)))


def render_subject(text: str) -> str:
    return str(compiled(STRICT, text).render(context({})))


def check(where: str, text: str, personal: bool) -> None:
    """Render against sample profiles; raises ``ValueError`` naming the field on any template error."""
    try:
        tpl = LENIENT.from_string(text) if personal else STRICT.from_string(text)
        for traits in SAMPLE_TRAITS if personal else ({},):
            tpl.render(context(traits))
    except TemplateError as exc:
        raise ValueError(f"{where}: {type(exc).__name__}: {exc}") from None
