"""Audience exports for ad platforms (Customer Match, Custom Audiences, ...): SHA-256 of the
normalised email (lower-case, as email-validator normalises it) and phone (E.164, ``+15551234567``),
only for members who agree to ``advertising`` (``can_use``) and are on no ``all`` do-not-contact
list, refused below 100 such members (small audiences single people out). Every export is in the
audit log. Pushed to a destination of kind ``ad_audience`` (signed, retried, dead-lettered, and
remembered so an erasure reaches it) or written to a CSV file (a file cannot be recalled: the
audit entry says who exported what, and when).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from pathlib import Path
from typing import Any

from sqlalchemy import select

from candor import audit, normalize
from candor.campaigns.channels import DeliveryError
from candor.campaigns.definition import CampaignError
from candor.store.schema import identifiers, profile_subjects, sources, suppressions

MINIMUM = 100
CHUNK = 5000


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class Audiences:
    def __init__(self, rt: Any) -> None:
        self.rt = rt

    def rows(self, segment: str) -> tuple[list[dict[str, str]], list[str], dict[str, int]]:
        """The hashed rows of the members who may be used for advertising, their profiles, and why the
        others are not."""
        rt = self.rt
        if rt.segments.get(segment) is None:
            raise CampaignError(f"segment: no segment named {segment!r}", 404)
        members = rt.segments.evaluate(segment)
        skipped = {"no_consent": 0, "suppressed": 0, "no_contact": 0}
        out: list[tuple[str, dict[str, str]]] = []
        region = rt.settings.default_phone_region
        with rt.store.engine.connect() as conn:
            names = dict(conn.execute(select(sources.c.id, sources.c.name)).all())
            for i in range(0, len(members), 500):
                chunk = members[i : i + 500]
                groups: dict[str, list[str]] = {p: [] for p in chunk}
                for sid, pid in conn.execute(
                    select(profile_subjects.c.subject_id, profile_subjects.c.profile_id).where(
                        profile_subjects.c.profile_id.in_(chunk)
                    )
                ):
                    groups[pid].append(sid)
                for p, ms in groups.items():
                    if not ms:
                        ms.append(p)
                everyone = [m for ms in groups.values() for m in ms]
                rt.consent.preload(everyone, conn)
                owner = {m: p for p, ms in groups.items() for m in ms}
                blocked: set[str] = set()
                for sid, _h in conn.execute(
                    select(identifiers.c.subject_id, identifiers.c.contact_hash)
                    .join(suppressions, suppressions.c.hash == identifiers.c.contact_hash)
                    .where(identifiers.c.subject_id.in_(everyone), suppressions.c.channel == "all")
                ):
                    blocked.add(owner[sid])
                allowed = [p for p in chunk if rt.consent.can_use(p, "advertising", conn=conn).allowed]
                skipped["no_consent"] += len(chunk) - len(allowed)
                usable = [p for p in allowed if p not in blocked]
                skipped["suppressed"] += len(allowed) - len(usable)
                traits = rt.profiles.golden_many({p: groups[p] for p in usable}, conn, names)
                for p in usable:
                    t = traits.get(p, {})
                    email = normalize.email(t.get("email"))
                    phone = normalize.phone(t.get("phone"), region)
                    if not email and not phone:
                        skipped["no_contact"] += 1
                        continue
                    out.append(
                        (
                            p,
                            {
                                "email_sha256": sha256(email) if email else "",
                                "phone_sha256": sha256(phone) if phone else "",
                            },
                        )
                    )
        return [r for _, r in out], [p for p, _ in out], skipped

    def export(
        self, segment: str, *, destination: str | None = None, out: Path | None = None, actor: str
    ) -> dict[str, Any]:
        if (destination is None) == (out is None):
            raise CampaignError("give exactly one of destination or an output file")
        dest = None
        if destination is not None:
            dest = self.rt.campaigns.destinations.get(destination)
            if dest.kind != "ad_audience":
                raise CampaignError(f"destination {destination!r} is a {dest.kind} destination, not ad_audience")
        rows, profiles, skipped = self.rows(segment)
        if len(rows) < MINIMUM:
            raise CampaignError(
                f"only {len(rows)} members of {segment!r} may be used for advertising; an audience needs at "
                f"least {MINIMUM}, so that nobody is singled out",
                409,
            )
        result: dict[str, Any] = {"segment": segment, "members": len(rows), "skipped": skipped}
        if dest is not None:
            destinations = self.rt.campaigns.destinations
            poster = destinations.poster(dest)
            refs = destinations.refs(dest.id, profiles)
            error = None
            try:
                for i in range(0, len(rows), CHUNK):
                    part = [
                        {"candorId": refs[p], **r}
                        for p, r in zip(profiles[i : i + CHUNK], rows[i : i + CHUNK], strict=True)
                    ]
                    poster.post(
                        {
                            "type": "audience",
                            "audience": segment,
                            "part": i // CHUNK + 1,
                            "total": len(rows),
                            "members": part,
                        },
                        f"audience:{segment}:{i // CHUNK + 1}"[:200],
                    )
            except DeliveryError as exc:
                error = str(exc)
            finally:
                poster.close()
            with self.rt.store.write() as conn:
                if error is None:
                    destinations.remember(conn, dest.id, refs)
                else:
                    destinations.dead(
                        conn,
                        dest.id,
                        "audience",
                        campaign_id=None,
                        profile=None,
                        payload={"segment": segment},
                        attempts=poster.attempts,
                        error=error,
                    )
                audit.record(
                    conn,
                    actor,
                    "audience.exported",
                    target=f"destination:{dest.id}",
                    details={"segment": segment, "members": len(rows), "delivered": error is None},
                )
            if error is not None:
                raise CampaignError(
                    f"the destination did not take the audience ({error}); it is in the dead-letter queue", 502
                )
            result["destination"] = dest.name
        else:
            assert out is not None
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=["email_sha256", "phone_sha256"])
            writer.writeheader()
            writer.writerows(rows)
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(buf.getvalue())
            with self.rt.store.write() as conn:
                audit.record(
                    conn, actor, "audience.exported", target="file", details={"segment": segment, "members": len(rows)}
                )
            result["file"] = str(out)
        return result
