"""Offline records: rows from POS, CRM or call-center exports, imported as source records.

Each row becomes an ``identify`` of a *record* identifier (``record`` = HMAC of ``source:id``), with
its mapped traits sealed under the record's own data key like any other personal value. Its email,
phone and custom ids are identifiers too, so deterministic stitching links the record to the online
profile it shares them with; probabilistic matching (identity/resolve.py) handles the rest.

A row is re-imported as a new version only when its content changed (the message id carries a hash
of the row); malformed rows are reported one by one and change nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from candor.events import Message, Rejection
from candor.forking import can_fork, cores, forked_pool
from candor.store import now_ms

# Segment's reserved trait names an import may map columns to, plus ext:NAME and userId.
RESERVED_TRAITS = (
    "firstName",
    "lastName",
    "name",
    "email",
    "phone",
    "birthday",
    "gender",
    "title",
    "company",
    "website",
    "address.street",
    "address.city",
    "address.postalCode",
    "address.state",
    "address.country",
)
# rows per writer transaction. Pseudonyms are HMACs, so each row lands at a random place of every
# index: in a large store nearly every row dirties pages of its own, and each commit (with the WAL
# checkpoint it triggers) writes them all. Larger transactions share pages between rows; 20,000 rows
# halved the write time of a 600k-row store against 2,000 (BENCHMARKS.md, Identity).
BATCH = 20_000
MAX_FIELD_CHARS = 2000


class ImportError_(Exception):
    """The file or the mapping cannot be imported at all (the message says why and what to do)."""


@dataclass
class RowError:
    row: int  # 1-based data row (the header is row 0)
    error: str


@dataclass
class ImportReport:
    rows: int = 0
    imported: int = 0
    unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "imported": self.imported,
            "unchanged": self.unchanged,
            "errors": [{"row": e.row, "error": e.error} for e in self.errors],
        }


def parse_mapping(spec: str) -> dict[str, str]:
    """``col=trait,col2=address.city,card=ext:loyalty_card`` -> {column: target}."""
    out: dict[str, str] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        col, sep, target = part.partition("=")
        col, target = col.strip(), target.strip()
        if not sep or not col or not target:
            raise ImportError_(f"--map entry {part.strip()!r}: write column=trait, e.g. 'fname=firstName'")
        if col in out:
            raise ImportError_(f"--map names the column {col!r} twice")
        out[col] = target
    return out


def _rows(path: Path) -> Iterator[dict[str, str]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportError_(
            f"{path.name} is not UTF-8 (byte {exc.start} cannot be decoded): export it as UTF-8 and try again"
        ) from None
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=dialect)
    yield from reader


class Importer:
    """Turns rows into messages for the writer. ``validator`` and ``pseudonym`` come from the Runtime."""

    def __init__(self, validator: Any, pseudonym: Callable[[str, str], str], source_name: str) -> None:
        self.validator = validator
        self.pseudonym = pseudonym
        self.source = source_name

    def message(self, row: dict[str, str], id_column: str, mapping: dict[str, str]) -> Message | str:
        record_id = (row.get(id_column) or "").strip()
        if not record_id:
            return f"the id column {id_column!r} is empty"
        traits: dict[str, Any] = {}
        ext: list[dict[str, str]] = []
        user_id = None
        ts = None
        for col, target in mapping.items():
            value = (row.get(col) or "").strip()
            if not value:
                continue
            if len(value) > MAX_FIELD_CHARS:
                return f"column {col!r} is longer than {MAX_FIELD_CHARS} characters"
            if target == "userId":
                user_id = value
            elif target == "timestamp":
                ts = value
            elif target.startswith("ext:"):
                ext.append({"type": target[4:], "id": value})
            elif target.startswith("address."):
                traits.setdefault("address", {})[target[8:]] = value
            else:
                traits[target] = value
        digest = hashlib.sha256(orjson.dumps(sorted(row.items()))).hexdigest()[:16]
        key = f"{self.source}:{record_id}"
        msg: dict[str, Any] = {
            "type": "identify",
            "anonymousId": key,  # replaced below by the record identifier
            "messageId": f"import:{key}:{digest}"[:200],
            "traits": traits,
            "context": {"externalIds": ext} if ext else {},
        }
        if user_id:
            msg["userId"] = user_id
        if ts:
            msg["timestamp"] = ts
        out = self.validator.validate(msg, type_="identify", received_ms=now_ms(), sent_at_ms=None, client_ip=None)
        if isinstance(out, Rejection):
            return out.reason
        # the row's own id is a record identifier, not a browser: swap it in
        anon = ("anonymous_id", self.pseudonym("anonymous_id", key))
        record = ("record", self.pseudonym("record", key))
        out.identifiers = [record if i == anon else i for i in out.identifiers]
        out.anon_pid = None
        if out.legacy:
            out.legacy.pop(anon, None)
        doc = orjson.loads(out.sealed_doc)
        doc.pop("anonymousId", None)
        doc["record"] = {"source": self.source, "id": record_id}
        out.sealed_doc = orjson.dumps(doc)
        return out

    def build(self, n: int, row: dict[Any, Any], id_column: str, mapping: dict[str, str]) -> Message | str:
        """Row ``n`` (1-based) as a message, or why it is refused."""
        if None in row:
            return "the row has more fields than the header"
        if any(v is None for v in row.values()):
            return "the row has fewer fields than the header"
        return self.message(row, id_column, mapping)

    def messages(
        self,
        path: Path,
        id_column: str,
        mapping: dict[str, str],
        report: ImportReport,
        batch_rows: int = BATCH,
        workers: int | None = None,
    ) -> Iterator[list[Message]]:
        """Batches of ``batch_rows`` messages; bad rows go to ``report.errors``.

        ``workers`` processes build the messages while the caller writes the batch before (None: one
        for a file of ``PARALLEL_BYTES`` or more when the machine has a second core and forks, else
        none; 0: built here, between the writes). Rows, messages and errors come in file order either way."""
        rows = _rows(path)
        first = next(rows, None)
        if first is None:
            raise ImportError_(f"{path.name} has no rows (a header line and at least one row are needed)")
        columns = set(first)
        missing = [c for c in [id_column, *mapping] if c not in columns]
        if missing:
            raise ImportError_(
                f"{path.name} has no column {', '.join(repr(c) for c in missing)}; "
                f"its columns are {', '.join(sorted(c for c in columns if c))}"
            )
        if workers is None:
            workers = default_workers(path)
        numbered = enumerate(itertools.chain([first], rows), start=1)
        built: Iterator[tuple[int, Message | str]]
        if workers > 0 and can_fork():
            built = self._built_in_workers(numbered, id_column, mapping, workers, batch_rows)
        else:
            built = ((n, self.build(n, row, id_column, mapping)) for n, row in numbered)
        batch: list[Message] = []
        for n, made in built:
            report.rows += 1
            if isinstance(made, str):
                report.errors.append(RowError(n, made))
                continue
            batch.append(made)
            if len(batch) >= batch_rows:
                yield batch
                batch = []
        if batch:
            yield batch

    def _built_in_workers(
        self,
        numbered: Iterator[tuple[int, dict[Any, Any]]],
        id_column: str,
        mapping: dict[str, str],
        workers: int,
        batch_rows: int,
    ) -> Iterator[tuple[int, Message | str]]:
        """(row number, message or error) built by forked processes, in file order.

        The first chunk is built here: it warms what the children inherit (keys loaded lazily from the
        store), so a child never opens a connection of its own. At most about two batches of rows are
        in flight, so memory stays bounded while the caller's writer is the slower end."""
        chunks = (list(c) for c in _chunked(numbered, CHUNK_ROWS))
        head = next(chunks, [])
        for n, row in head:
            yield n, self.build(n, row, id_column, mapping)
        window = max(2, 2 * batch_rows // CHUNK_ROWS)
        with forked_pool(workers, _worker_init, self) as pool:
            pending: deque[Future[list[tuple[int, Message | str]]]] = deque()
            for chunk in chunks:
                pending.append(pool.submit(_worker_build, chunk, id_column, mapping))
                if len(pending) >= window:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()


# rows per task sent to an import worker: large enough that pickling a chunk costs little next to
# building it, small enough that the first batch is not held up
CHUNK_ROWS = 1000
# files from this size on are built in a worker process by default (about 10,000 rows of a CRM export)
PARALLEL_BYTES = 1 << 20


def default_workers(path: Path) -> int:
    if not can_fork() or cores() < 2:
        return 0
    try:
        return 1 if path.stat().st_size >= PARALLEL_BYTES else 0
    except OSError:
        return 0


def _chunked(items: Iterator[Any], size: int) -> Iterator[Iterator[Any]]:
    while True:
        chunk = list(itertools.islice(items, size))
        if not chunk:
            return
        yield iter(chunk)


_WORKER: Importer | None = None


def _worker_init(importer: Importer) -> None:
    # forked: ``importer`` is the parent's object, inherited rather than pickled
    global _WORKER
    _WORKER = importer


def _worker_build(
    chunk: list[tuple[int, dict[Any, Any]]], id_column: str, mapping: dict[str, str]
) -> list[tuple[int, Message | str]]:
    assert _WORKER is not None
    return [(n, _WORKER.build(n, row, id_column, mapping)) for n, row in chunk]
