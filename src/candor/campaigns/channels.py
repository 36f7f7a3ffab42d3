"""Channels: one small interface, and a registry that the built-ins (email, SMS, webhook) join the
same way any other channel would (``register``).

A channel says which contact it needs (an email address, a phone number, or none), which do-not-
contact list applies, what it checks beyond consent (SMS: written proof), how a rendered message is
framed (footers, headers, tracking) and how it is delivered (``open`` returns a ``Sender``). Deciding
who may receive it, rendering the template, the send log, caps and quiet hours are the campaign's
and the same for every channel (campaigns/core.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from candor.campaigns.definition import CampaignError


@dataclass(frozen=True)
class Outgoing:
    """One message to one recipient, ready to deliver."""

    campaign_id: int
    campaign: str
    purpose: str
    profile: str
    to: str | None  # the address on the channel's contact (email, E.164 phone); None without one
    subject: str
    text: str
    variant: str  # personalised | generic
    key: str  # stable per campaign and recipient: the idempotency key receivers may deduplicate on
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    ref: str | None = None  # the pseudonymous id a destination knows the person by (candorId)
    unsubscribe_url: str | None = None


@dataclass(frozen=True)
class Compose:
    """What the campaign hands a channel to frame one message."""

    campaign_id: int
    definition: Any  # campaigns.definition.Definition
    profile: str
    address: str | None
    subject: str
    body: str
    personal: bool
    tracked: bool  # the recipient agreed to analytics: opens and clicks may be measured
    unsubscribe_url: str


class DeliveryError(Exception):
    """A message was not delivered. ``transient``: worth retrying (unreachable, 429, 5xx)."""

    def __init__(self, reason: str, transient: bool = True) -> None:
        super().__init__(reason)
        self.transient = transient


class DeliveryUnconfirmed(DeliveryError):
    """The message was handed over and then the connection failed: it may have been delivered. It is
    recorded as ``unconfirmed`` and never sent again (at most once)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, transient=False)


class Sender(Protocol):
    attempts: int  # how many attempts the last ``deliver`` took

    def deliver(self, message: Outgoing) -> str:
        """Deliver, retrying as the channel sees fit; returns a message id or raises DeliveryError."""
        ...

    def close(self) -> None: ...


class Channel:
    """The interface. Subclass, set the class attributes, and ``register`` an instance."""

    name: ClassVar[str] = ""
    contact: ClassVar[str | None] = None  # trait holding the address: "email", "phone", or None
    required: ClassVar[tuple[str, ...]] = ()  # definition fields this channel needs
    destination_kind: ClassVar[str | None] = None  # the kind of destination it delivers to, if any

    def contact_for(self, rt: Any, definition: Any) -> str | None:
        return self.contact

    def suppression_channel(self, rt: Any, definition: Any) -> str:
        """The do-not-contact list that applies (``all`` always applies too)."""
        return self.name

    def validate(self, rt: Any, definition: Any) -> None:
        """Refuse a campaign this channel cannot send (raise CampaignError)."""
        if self.destination_kind is not None:
            dest = rt.campaigns.destinations.find(definition.destination)
            if dest is None or dest.kind != self.destination_kind:
                raise CampaignError(
                    f"destination: no {self.destination_kind} destination named {definition.destination!r}"
                )

    def check(self, rt: Any, conn: Any, profile: str, definition: Any) -> str | None:
        """A reason to skip this recipient beyond the common checks (``skipped:<reason>``), or None."""
        return None

    def compose(self, rt: Any, c: Compose) -> Outgoing:
        raise NotImplementedError

    def open(self, rt: Any, definition: Any) -> Sender:
        raise NotImplementedError

    def connections(self, rt: Any) -> int:
        """How many senders a campaign opens and delivers through at once (each used by one thread)."""
        return 1


REGISTRY: dict[str, Channel] = {}


def register(channel: Channel) -> Channel:
    if not channel.name:
        raise ValueError("a channel needs a name")
    REGISTRY[channel.name] = channel
    return channel


def get(name: str) -> Channel:
    _builtins()
    found = REGISTRY.get(name)
    if found is None:
        raise CampaignError(f"channel: one of {', '.join(sorted(REGISTRY))}, not {name!r}")
    return found


def names() -> list[str]:
    _builtins()
    return sorted(REGISTRY)


def _builtins() -> None:
    """The built-in channels register on first use, like a plugin would."""
    if "email" not in REGISTRY:
        from candor.campaigns import email, sms, webhook  # noqa: F401 - importing registers them
