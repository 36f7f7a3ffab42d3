"""The framing between HTTP workers and the writer process (writer.py): length-prefixed orjson.

A frame is a 4-byte big-endian length followed by that many bytes of JSON: ``[id, op, payload]``
from a worker, ``[id, status, payload]`` back from the writer. Work travels as plain lists (a
:class:`~candor.events.Message` as the tuple of its fields), so nothing but JSON is ever decoded
from the socket. The socket lives in a private directory (mode 0700) of the server's own user: the
values in transit are those the worker already holds in memory, never written to disk.
"""

from __future__ import annotations

import struct
from dataclasses import fields
from typing import Any

import orjson

from candor.events import Message, Rejection
from candor.ingest import Work, WriteResult
from candor.screening import Held

HEADER = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024  # far above any request the collection API accepts

# ops (worker → writer) and statuses (writer → worker)
WORK = "w"
FORGET = "f"
PING = "p"
OK = 0
UNAVAILABLE = 1  # the store is down: the worker answers 503
FAILED = 2  # anything else: 500

_FIELDS = tuple(f.name for f in fields(Message))


def frame(obj: Any) -> bytes:
    body = orjson.dumps(obj)
    return HEADER.pack(len(body)) + body


def _message_out(m: Message) -> list[Any]:
    return [
        m.type,
        m.message_id,
        m.event,
        m.ts_ms,
        m.received_ms,
        m.user_pid,
        m.anon_pid,
        m.identifiers,
        m.previous_pids,
        None if m.legacy is None else [[t, p, olds] for (t, p), olds in m.legacy.items()],
        m.properties,
        m.context,
        m.sealed_doc.decode(),  # orjson output: always UTF-8
        m.required,
        m.signals,
        m.raw_signal,
        m.gpc,
        None if m.consent_update is None else [sorted(m.consent_update[0]), sorted(m.consent_update[1])],
        None if m.contacts is None else [[t, p, h] for (t, p), h in m.contacts.items()],
        m.findings,
        None if m.held is None else [[h.category, h.scope, h.path, h.value, h.detector] for h in m.held],
        m.ip,
    ]


def _message_in(v: list[Any]) -> Message:
    (
        type_,
        message_id,
        event,
        ts_ms,
        received_ms,
        user_pid,
        anon_pid,
        identifiers,
        previous,
        legacy,
        properties,
        context,
        sealed_doc,
        required,
        signals,
        raw_signal,
        gpc,
        update,
        contacts,
        findings,
        held,
        ip,
    ) = v
    return Message(
        type=type_,
        message_id=message_id,
        event=event,
        ts_ms=ts_ms,
        received_ms=received_ms,
        user_pid=user_pid,
        anon_pid=anon_pid,
        identifiers=[(t, p) for t, p in identifiers],
        previous_pids=None if previous is None else (previous[0], previous[1]),
        legacy=None if legacy is None else {(t, p): list(olds) for t, p, olds in legacy},
        properties=properties,
        context=context,
        sealed_doc=sealed_doc.encode(),
        required=tuple(required),
        signals=signals,
        raw_signal=raw_signal,
        gpc=gpc,
        consent_update=None if update is None else (frozenset(update[0]), frozenset(update[1])),
        contacts=None if contacts is None else {(t, p): h for t, p, h in contacts},
        findings=None if findings is None else [tuple(f) for f in findings],
        held=None if held is None else [Held(c, s, p, val, d) for c, s, p, val, d in held],
        ip=ip,
    )


def work_out(w: Work) -> list[Any]:
    return [
        w.source_id,
        w.received_ms,
        [_message_out(m) for m in w.messages],
        [[r.reason, r.field, r.type, r.message_id, r.index] for r in w.rejections],
    ]


def work_in(v: list[Any]) -> Work:
    source_id, received_ms, messages, rejections = v
    return Work(
        int(source_id),
        [_message_in(m) for m in messages],
        [Rejection(*r) for r in rejections],
        int(received_ms),
    )


def result_out(r: WriteResult) -> list[int]:
    return [r.accepted, r.duplicates, r.rejected, r.no_consent]


def result_in(v: list[int]) -> WriteResult:
    return WriteResult(*v)


assert len(_FIELDS) == 22, "wire.py encodes every Message field: update it with the dataclass"
