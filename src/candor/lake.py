"""The analytics store: a columnar copy of the events as Parquet files under the data directory.

Analytical queries (segments, insights) scan events by the million; reading them out of SQLite or
PostgreSQL row by row is what made them slow. This module keeps a copy that is fast to scan:

- **only clear, pseudonymous columns** (``COLUMNS``): the subject, type, event name, times, source,
  the clear ``properties`` JSON and a few clear facts taken out of it and of the clear context
  (library, channel hint, campaign, revenue). Never a sealed value, a pseudonym of an identifier,
  a messageId or the clear context as a whole;
- **Parquet**, which DuckDB reads now and Spark reads later (issue 11): one directory per
  *generation* (``analytics/events/g000001/part-000001.parquet``) and a ``manifest.json`` naming its
  files; ``analytics/CURRENT`` names the live generation. Temporary files start with ``_`` so that
  Spark and DuckDB globs skip them;
- **kept current incrementally** by a watermark on ``events.id`` (the highest id in the copy, whose
  row is checked against the store on every refresh: a restored or replaced database rebuilds the
  copy), ids skipped by transactions still in flight (PostgreSQL) are looked at again for a few
  minutes, and subject ids rewritten by identity splits are reconciled;
- **purged on erasure**: ``purge(subjects)`` rewrites every file that holds a row of them, in every
  generation, and deletes the old files (on DuckDB, or on Spark when ``engine`` is a Spark engine);
  the erasure journal is applied on start, so an analytics
  directory restored from a backup loses the people erased since; a rebuild never copies a
  journaled subject.

Writers (refresh, purge, rebuild) hold an exclusive lock file, across processes. Readers take no
lock: they read the manifest of the live generation and the files it names, and retry once when a
file went away under them (``Analytics.fetch``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import orjson
from sqlalchemy import and_, func, select
from sqlalchemy.engine import make_url

from candor.store import Store, now_ms
from candor.store.schema import events, identity_jobs, sources

log = logging.getLogger("candor.lake")

# the layout of the files: 2 added the p_<property> columns (PROMOTED). Generations of an older
# format are still read by purges; a refresh rebuilds them, and readers get them only after that.
FORMAT = 2
REHOME_MARK = "rehome"  # identity/service.py writes it when a split moves events to a new subject
CHUNK_ROWS = 1_000_000  # rows per part file written by a rebuild
COMPACT_PARTS = 24  # more part files than this in a generation: the small ones are merged
SMALL_PART_ROWS = 200_000
GAP_SECONDS = 600  # ids skipped by in-flight transactions are looked at again for this long
MAX_GAPS = 1000
RETIRED_GRACE_SECONDS = 60  # files replaced by a compaction are deleted after this (readers may hold them)

# Properties of Segment's e-commerce spec (v2) copied out of the JSON into columns of their own, as
# the text ``json_extract_string`` gives (so a reader gets exactly what it would get from the JSON):
# a segment filtering on a category or summing revenue reads a small column instead of parsing every
# event's properties, which was most of its cost. Columns ``p_<name>``; other properties stay in the JSON.
PROMOTED: tuple[str, ...] = (
    "category", "product_id", "sku", "brand", "price", "quantity",
    "revenue", "total", "value", "currency", "order_id", "coupon",
)  # fmt: skip
# every property read while copying, parsed once per row (``_select``)
_EXTRACTED: tuple[str, ...] = (*PROMOTED, "channel", "campaign_id")


def _prop(name: str) -> str:
    """The text of clear property ``name`` of the row being copied (parsed once with the others)."""
    return f"e._props[{_EXTRACTED.index(name) + 1}]"


# The columns of the copy and how each is derived from a row ``e`` of the store's events (and its
# source ``src``). Every value is clear: ``properties`` is the clear part the collector kept (personal
# properties were sealed at collection), and the context fields below are clear context keys.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("id", "BIGINT", "e.id"),
    ("source_id", "INTEGER", "e.source_id"),
    ("source", "VARCHAR", "src.name"),
    ("type", "VARCHAR", "e.type"),
    ("event", "VARCHAR", "e.event"),
    ("subject_id", "VARCHAR", "e.subject_id"),
    ("ts_ms", "BIGINT", "e.ts_ms"),
    ("received_ms", "BIGINT", "e.received_ms"),
    ("properties", "VARCHAR", "e.properties"),
    ("library", "VARCHAR", "json_extract_string(e.context, '$.library.name')"),
    ("in_app", "BOOLEAN", "json_extract(e.context, '$.app') IS NOT NULL"),
    ("channel_hint", "VARCHAR", f"lower(coalesce({_prop('channel')}, json_extract_string(e.context, '$.channel')))"),
    ("utm_medium", "VARCHAR", "lower(json_extract_string(e.context, '$.campaign.medium'))"),
    ("utm_source", "VARCHAR", "lower(json_extract_string(e.context, '$.campaign.source'))"),
    ("campaign", "VARCHAR", f"coalesce({_prop('campaign_id')}, json_extract_string(e.context, '$.campaign.name'))"),
    ("revenue", "DOUBLE", f"TRY_CAST(coalesce({_prop('revenue')}, {_prop('total')}) AS DOUBLE)"),
    *((f"p_{name}", "VARCHAR", _prop(name)) for name in PROMOTED),
)
COLUMN_NAMES = tuple(c[0] for c in COLUMNS)


class LakeError(RuntimeError):
    """The analytics store cannot be read or written; the message says where and what to do."""


@dataclass
class Part:
    name: str
    rows: int
    min_id: int
    max_id: int

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "rows": self.rows, "min_id": self.min_id, "max_id": self.max_id}


@dataclass
class Manifest:
    generation: int
    store: str  # fingerprint of the database the copy was made from
    parts: list[Part] = field(default_factory=list)
    high: int = 0  # the highest events.id in the copy
    high_key: list[Any] | None = None  # (source_id, message_id) of that row, to recognise it in the store
    scanned: int = 0  # the highest events.id looked at (rows of erased subjects are skipped, not copied)
    gaps: list[list[int]] = field(default_factory=list)  # [first, last, seen_ms]: ids to look at again
    next_part: int = 1
    journal_offset: int = 0  # bytes of the erasure journal applied to this generation
    rehome_ms: int = 0  # the identity split marker last reconciled
    complete: bool = False  # a rebuild caught up with the store (live generations always are)
    refreshed_ms: int = 0
    retired: list[list[Any]] = field(default_factory=list)  # [file name, retired_ms] after a compaction
    format: int = FORMAT  # of the files (an older one: rebuilt by the next refresh)

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts)

    def as_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "generation": self.generation,
            "store": self.store,
            "parts": [p.as_json() for p in self.parts],
            "high": self.high,
            "high_key": self.high_key,
            "scanned": self.scanned,
            "gaps": self.gaps,
            "next_part": self.next_part,
            "journal_offset": self.journal_offset,
            "rehome_ms": self.rehome_ms,
            "complete": self.complete,
            "refreshed_ms": self.refreshed_ms,
            "retired": self.retired,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        fmt = d.get("format")
        if not isinstance(fmt, int) or isinstance(fmt, bool) or not 1 <= fmt <= FORMAT:
            raise LakeError(f"analytics manifest format {fmt!r} is not one this version reads; "
                "run: candor analytics rebuild")
        return cls(
            generation=int(d["generation"]),
            store=str(d["store"]),
            parts=[Part(p["name"], int(p["rows"]), int(p["min_id"]), int(p["max_id"])) for p in d["parts"]],
            high=int(d["high"]),
            high_key=d.get("high_key"),
            scanned=int(d.get("scanned", d["high"])),
            gaps=[list(g) for g in d.get("gaps", [])],
            next_part=int(d["next_part"]),
            journal_offset=int(d.get("journal_offset", 0)),
            rehome_ms=int(d.get("rehome_ms", 0)),
            complete=bool(d.get("complete", False)),
            refreshed_ms=int(d.get("refreshed_ms", 0)),
            retired=[list(r) for r in d.get("retired", [])],
            format=fmt,
        )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"_{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def read_journal(path: Path, offset: int = 0) -> tuple[list[str], int]:
    """Subject ids in the erasure journal from byte ``offset`` on, and the offset after them."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return [], 0
    if size == offset:  # nothing new: the common case, checked before every query
        return [], offset
    data = path.read_bytes()
    if offset > len(data):  # a shorter journal than we applied: start over (applying twice is harmless)
        offset = 0
    out: list[str] = []
    end = data.rfind(b"\n") + 1  # a line being written (no newline yet) is read next time
    for line in data[offset:end].splitlines():
        try:
            out.extend(str(s) for s in orjson.loads(line)["subjects"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("skipping an unreadable line of the erasure journal")
    return out, max(end, offset)


@dataclass
class RefreshResult:
    copied: int = 0
    rebuilt: bool = False
    reconciled: int = 0
    purged: int = 0
    seconds: float = 0.0


class Lake:
    """The Parquet copy of the events. ``attach`` gives a DuckDB connection the store as ``store``."""

    def __init__(
        self,
        store: Store,
        root: Path,
        attach: Callable[[duckdb.DuckDBPyConnection], Callable[[str], str]],
        store_query: Callable[[str], str],
        journal: Path,
        threads: int = 2,
    ) -> None:
        self.store = store
        self.root = root
        self.events_dir = root / "events"
        self._attach = attach
        self.store_query = store_query
        self.store_sql: Callable[[str], str] = lambda t: t
        self.journal = journal
        self.threads = threads
        self.fingerprint = self._fingerprint(store.url)
        # what rewrites files on erasure: None is DuckDB in this process; a candor.engines engine (Spark,
        # CANDOR_ANALYTICS_PURGE_ENGINE or ``candor analytics purge --engine spark``) otherwise
        self.engine: Any = None

    @staticmethod
    def _fingerprint(url: str) -> str:
        u = make_url(url)
        safe = u.set(password=None).render_as_string(hide_password=False) if u.password else str(u)
        return hashlib.sha256(safe.encode()).hexdigest()[:16]

    # -- files and manifests -----------------------------------------------------------------------
    def _gen_dir(self, generation: int) -> Path:
        return self.events_dir / f"g{generation:06d}"

    def _current_generation(self) -> int | None:
        path = self.root / "CURRENT"
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def _load(self, generation: int) -> Manifest | None:
        path = self._gen_dir(generation) / "manifest.json"
        try:
            return Manifest.from_json(orjson.loads(path.read_bytes()))
        except FileNotFoundError:
            return None
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise LakeError(f"{path} is unreadable ({type(exc).__name__}); run: candor analytics rebuild") from None

    def _save(self, m: Manifest) -> None:
        d = self._gen_dir(m.generation)
        d.mkdir(parents=True, exist_ok=True)
        _write_atomic(d / "manifest.json", orjson.dumps(m.as_json()))

    def _generations(self) -> list[int]:
        if not self.events_dir.exists():
            return []
        out = []
        for p in self.events_dir.iterdir():
            if p.is_dir() and p.name.startswith("g") and p.name[1:].isdigit():
                out.append(int(p.name[1:]))
        return sorted(out)

    def live(self) -> Manifest | None:
        """The manifest of the live generation, or None before the first build."""
        gen = self._current_generation()
        return None if gen is None else self._load(gen)

    def files(self) -> list[str]:
        """The Parquet files of the live generation (for readers)."""
        m = self.live()
        if m is None:
            return []
        if m.format != FORMAT:
            raise LakeError("the analytics store was built by an older version; run: candor analytics rebuild")
        d = self._gen_dir(m.generation)
        return [str(d / p.name) for p in m.parts]

    def all_files(self) -> list[Path]:
        """Every Parquet file under the analytics directory, in any generation (for purges and tests)."""
        if not self.root.exists():
            return []
        return sorted(p for p in self.root.rglob("*.parquet"))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(self.root, 0o700)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(
            config={"autoinstall_known_extensions": False, "autoload_known_extensions": False, "threads": self.threads}
        )
        if not self.store.is_sqlite:
            self.store_sql = self._attach(con)
        return con

    def _rows(self, con: duckdb.DuckDBPyConnection, sql: str, columns: list[tuple[str, Any]]) -> str:
        """A DuckDB relation of what ``sql`` selects in the store.

        PostgreSQL: the SQL runs in the database through the scanner. SQLite: it runs through this
        process's own SQLite (SQLAlchemy) and the rows are handed over as Arrow: DuckDB's scanner
        carries a second copy of SQLite, and when it closes the file, POSIX drops every lock this
        process holds on it — the writer's included (SQLite's "multiple copies of SQLite in one
        process" hazard), which let readers in other processes miss committed rows."""
        if not self.store.is_sqlite:
            return self.store_query(sql)
        import pyarrow as pa

        data: list[list[Any]] = [[] for _ in columns]
        from candor.analytics import sqlite_batches

        with self.store.engine.connect() as conn, conn.begin():
            for batch in sqlite_batches(conn, sql):
                for i, col in enumerate(zip(*batch, strict=True)):
                    data[i].extend(col)
        name = f"lake_src_{secrets.token_hex(4)}"
        con.register(name, pa.table({n: pa.array(v, type=t) for (n, t), v in zip(columns, data, strict=True)}))
        return name

    # -- copying ---------------------------------------------------------------------------------
    def _select(self, con: duckdb.DuckDBPyConnection, where: str) -> str:
        """Rows of the store's events matching ``where`` (SQL run *in the store*, so its indexes serve
        the id range), with the derived columns computed by DuckDB. ``where`` holds integers only."""
        events_t, subjects_t = self.store_sql("events"), self.store_sql("subjects")
        inner = (
            "SELECT id, source_id, type, event, subject_id, ts_ms, received_ms, properties, context "
            f"FROM {events_t} WHERE ({where}) AND subject_id NOT IN "
            f"(SELECT subject_id FROM {subjects_t} WHERE state = 'erased')"
        )
        import pyarrow as pa

        source = self._rows(con, inner, [
            ("id", pa.int64()), ("source_id", pa.int32()), ("type", pa.string()), ("event", pa.string()),
            ("subject_id", pa.string()), ("ts_ms", pa.int64()), ("received_ms", pa.int64()),
            ("properties", pa.string()), ("context", pa.string()),
        ])  # fmt: skip
        cols = ", ".join(f"CAST({expr} AS {typ}) AS {name}" for name, typ, expr in COLUMNS)
        paths = ", ".join(f"'$.\"{name}\"'" for name in _EXTRACTED)  # names of letters and _ only
        return (
            f"SELECT {cols} FROM (SELECT *, json_extract_string(properties, [{paths}]) AS _props FROM {source}) e "
            "LEFT JOIN lake_sources src ON src.id = e.source_id "
            "WHERE e.subject_id NOT IN (SELECT subject_id FROM lake_erased) ORDER BY e.id"
        )

    def _erased_table(self, con: duckdb.DuckDBPyConnection) -> None:
        people, _ = read_journal(self.journal)
        con.execute("CREATE OR REPLACE TEMP TABLE lake_erased (subject_id VARCHAR)")
        if people:
            con.execute("INSERT INTO lake_erased SELECT unnest($ids)", {"ids": sorted(set(people))})
        with self.store.engine.connect() as conn:
            names = [(int(i), str(n)) for i, n in conn.execute(select(sources.c.id, sources.c.name))]
        con.execute("CREATE OR REPLACE TEMP TABLE lake_sources (id INTEGER, name VARCHAR)")
        if names:
            con.executemany("INSERT INTO lake_sources VALUES (?, ?)", names)

    def _write_part(self, con: duckdb.DuckDBPyConnection, m: Manifest, query: str, params: Any = None) -> Part | None:
        d = self._gen_dir(m.generation)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f"_tmp-{secrets.token_hex(6)}.parquet"
        con.execute(f"CREATE OR REPLACE TEMP TABLE lake_chunk AS {query}", params or {})
        row = con.execute("SELECT count(*), min(id), max(id) FROM lake_chunk").fetchone()
        assert row is not None
        n = int(row[0])
        if n == 0:
            return None
        con.execute(f"COPY lake_chunk TO {_sql_text(str(tmp))} (FORMAT parquet, COMPRESSION zstd)")
        _fsync_file(tmp)
        name = f"part-{m.next_part:06d}.parquet"
        os.replace(tmp, d / name)
        _fsync_dir(d)
        m.next_part += 1
        part = Part(name, n, int(row[1]), int(row[2]))
        m.parts.append(part)
        return part

    def _top_key(self, m: Manifest) -> None:
        """Record (source_id, message_id) of the highest row of the copy, to recognise it in the store."""
        m.high = max((p.max_id for p in m.parts), default=0)
        m.high_key = self._key_of(m.high)

    def _store_max(self) -> int:
        with self.store.engine.connect() as conn:
            return int(conn.execute(select(func.max(events.c.id))).scalar() or 0)

    def _store_matches(self, m: Manifest) -> bool:
        """The store still holds the row the copy ends with (else: a restored or different database)."""
        if m.store != self.fingerprint or m.format != FORMAT:
            return False
        if m.high == 0 or m.high_key is None:
            return self._store_max() >= m.scanned or m.scanned == 0
        with self.store.engine.connect() as conn:
            row = conn.execute(select(events.c.source_id, events.c.message_id).where(events.c.id == m.high)).first()
        return row is not None and [int(row[0]), str(row[1])] == list(m.high_key)

    def _rehome_ms(self) -> int:
        with self.store.engine.connect() as conn:
            v = conn.execute(select(identity_jobs.c.updated_ms).where(identity_jobs.c.name == REHOME_MARK)).scalar()
        return int(v or 0)

    def _copy_new(self, con: duckdb.DuckDBPyConnection, m: Manifest, upto: int, *, gap_floor: int) -> int:
        """Copy rows with ids in (m.scanned, upto] and any gap that filled; return how many.

        Ids missing from the copied range at or above ``gap_floor`` are remembered as gaps: on
        PostgreSQL a transaction still in flight may commit a lower id than one already visible."""
        copied = 0
        now = now_ms()
        if m.gaps:
            alive = [g for g in m.gaps if now - g[2] < GAP_SECONDS * 1000]
            if alive:
                where = " OR ".join(f"(id BETWEEN {int(a)} AND {int(b)})" for a, b, _ in alive)
                part = self._write_part(con, m, self._select(con, where))
                if part is not None:
                    copied += part.rows
                    filled = {int(r[0]) for r in con.execute("SELECT id FROM lake_chunk").fetchall()}
                    alive = _without(alive, filled)
            m.gaps = alive
        if upto > m.scanned:
            lo = m.scanned
            part = self._write_part(con, m, self._select(con, f"id > {int(lo)} AND id <= {int(upto)}"))
            if part is not None:
                copied += part.rows
                if upto >= gap_floor:
                    holes = con.execute(
                        "SELECT id + 1, nxt - 1 FROM (SELECT id, lead(id, 1, $hi + 1) OVER (ORDER BY id) AS nxt"
                        " FROM (SELECT id FROM lake_chunk UNION ALL SELECT $lo))"
                        " WHERE nxt > id + 1 AND nxt - 1 >= $floor"
                        " ORDER BY id",
                        {"lo": lo, "hi": upto, "floor": gap_floor},
                    ).fetchall()
                    m.gaps.extend([int(a), int(b), now] for a, b in holes)
            elif upto >= gap_floor:
                m.gaps.append([max(lo + 1, gap_floor), upto, now])
            m.gaps = m.gaps[-MAX_GAPS:]
            m.scanned = upto
        return copied

    # -- the public operations -------------------------------------------------------------------
    def refresh(self, *, progress: Callable[[int, int], None] | None = None) -> RefreshResult:
        """Bring the live generation up to date with the store (building it the first time)."""
        started = time.perf_counter()
        out = RefreshResult()
        with self.locked():
            m = self.live()
            if m is None or not self._store_matches(m):
                if m is not None and m.format != FORMAT:
                    log.warning("the analytics store was built by an older version: rebuilding it")
                elif m is not None:
                    log.warning("the analytics store no longer matches the database (restored?): rebuilding it")
                out.rebuilt = True
                out.copied = self._rebuild_locked(progress)
                out.seconds = time.perf_counter() - started
                return out
            out.purged = self._apply_journal_locked(m)
            upto = self._store_max()
            if upto < m.scanned:
                # the rows above were deleted (an erasure of the newest events, rows skipped as erased):
                # SQLite hands their ids out again, so look from the copy's own top row up
                m.scanned = max(m.high, upto)
                m.gaps = [g for g in m.gaps if g[0] <= m.scanned]
            rehome = self._rehome_ms()
            if upto <= m.scanned and not m.gaps and rehome == m.rehome_ms:
                self._sweep(m)
                out.seconds = time.perf_counter() - started
                return out
            con = self._connect()
            try:
                self._erased_table(con)
                if rehome != m.rehome_ms:
                    out.reconciled = self._reconcile(con, m, m.rehome_ms)
                    m.rehome_ms = rehome
                out.copied = self._copy_new(con, m, upto, gap_floor=m.scanned + 1)
                self._compact(con, m)
                self._top_key(m)
            finally:
                con.close()
            m.refreshed_ms = now_ms()
            self._save(m)
            self._sweep(m)
        out.seconds = time.perf_counter() - started
        return out

    def rebuild(self, *, progress: Callable[[int, int], None] | None = None) -> RefreshResult:
        """Build a new generation from the whole store, then make it live (resumes an interrupted one)."""
        started = time.perf_counter()
        with self.locked():
            copied = self._rebuild_locked(progress)
        return RefreshResult(copied=copied, rebuilt=True, seconds=time.perf_counter() - started)

    def _rebuild_locked(self, progress: Callable[[int, int], None] | None) -> int:
        current = self._current_generation()
        gens = self._generations()
        # an interrupted rebuild (a generation newer than the live one, not complete) is resumed
        m = None
        for g in reversed(gens):
            if current is None or g > current:
                cand = self._load(g)
                if cand is not None and not cand.complete and cand.store == self.fingerprint and cand.format == FORMAT:
                    m = cand
                    break
        if m is None:
            gen = max([*gens, current or 0]) + 1
            m = Manifest(generation=gen, store=self.fingerprint, rehome_ms=self._rehome_ms())
            _, m.journal_offset = read_journal(self.journal)
            self._save(m)
        copied = 0
        con = self._connect()
        try:
            self._erased_table(con)
            total = self._store_max()
            with self.store.engine.connect() as conn:
                first = conn.execute(select(func.min(events.c.id)).where(events.c.id > m.scanned)).scalar()
            m.scanned = max(m.scanned, int(first) - 1 if first is not None else total)
            if progress:
                progress(m.scanned, total)
            while m.scanned < total:
                upto = min(total, m.scanned + CHUNK_ROWS)
                copied += self._copy_new(con, m, upto, gap_floor=total - 1000)
                self._top_key(m)
                self._save(m)  # each chunk is durable: an interrupted rebuild resumes here
                if progress:
                    progress(m.scanned, total)
                total = max(total, self._store_max())
            self._compact(con, m)
            self._top_key(m)
        finally:
            con.close()
        m.complete = True
        m.refreshed_ms = now_ms()
        self._save(m)
        _write_atomic(self.root / "CURRENT", f"{m.generation}\n".encode())
        for g in self._generations():
            if g != m.generation:
                self._drop_generation(g)
        if progress:
            progress(m.scanned, m.scanned)
        return copied

    def _drop_generation(self, generation: int) -> None:
        d = self._gen_dir(generation)
        for f in d.iterdir():
            _remove(f)
        with contextlib.suppress(OSError):
            d.rmdir()

    def _rewrite(self, con: duckdb.DuckDBPyConnection, m: Manifest, part: Part, query: str) -> Part | None:
        """Replace ``part`` by the rows ``query`` selects from it (``lake_part``); None when none remain."""
        d = self._gen_dir(m.generation)
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW lake_part AS SELECT * FROM read_parquet({_sql_text(str(d / part.name))})"
        )
        con.execute(f"CREATE OR REPLACE TEMP TABLE lake_chunk AS {query}")
        row = con.execute("SELECT count(*), min(id), max(id) FROM lake_chunk").fetchone()
        assert row is not None
        m.parts.remove(part)
        if int(row[0]):
            tmp = d / f"_tmp-{secrets.token_hex(6)}.parquet"
            con.execute(f"COPY lake_chunk TO {_sql_text(str(tmp))} (FORMAT parquet, COMPRESSION zstd)")
            _fsync_file(tmp)
            name = f"part-{m.next_part:06d}.parquet"
            m.next_part += 1
            os.replace(tmp, d / name)
            new: Part | None = Part(name, int(row[0]), int(row[1]), int(row[2]))
            m.parts.append(new)  # type: ignore[arg-type]
            m.parts.sort(key=lambda p: p.min_id)
        else:
            new = None
        return new

    def _reconcile(self, con: duckdb.DuckDBPyConnection, m: Manifest, since_ms: int) -> int:
        """Rows whose subject an identity split changed: rewrite the files holding them.

        A split moves events to a subject it creates, so only events of subjects created since the
        last reconciliation (less a second) can have moved."""
        events_t, subjects_t = self.store_sql("events"), self.store_sql("subjects")
        inner = (
            f"SELECT id, subject_id FROM {events_t} WHERE subject_id IN "
            f"(SELECT subject_id FROM {subjects_t} WHERE created_ms >= {int(since_ms) - 1000})"
        )
        import pyarrow as pa

        moved = self._rows(con, inner, [("id", pa.int64()), ("subject_id", pa.string())])
        con.execute(f"CREATE OR REPLACE TEMP TABLE lake_moved AS SELECT * FROM {moved}")
        d = self._gen_dir(m.generation)
        changed = 0
        for part in list(m.parts):
            con.execute(
                f"CREATE OR REPLACE TEMP VIEW lake_part AS SELECT * FROM read_parquet({_sql_text(str(d / part.name))})"
            )
            n = con.execute(
                "SELECT count(*) FROM lake_part p JOIN lake_moved e ON e.id = p.id WHERE e.subject_id <> p.subject_id"
            ).fetchone()
            if not n or not n[0]:
                continue
            changed += int(n[0])
            cols = ", ".join(
                "coalesce(e.subject_id, p.subject_id) AS subject_id" if c == "subject_id" else f"p.{c}"
                for c in COLUMN_NAMES
            )
            self._rewrite(
                con, m, part, f"SELECT {cols} FROM lake_part p LEFT JOIN lake_moved e ON e.id = p.id ORDER BY p.id"
            )
            (d / part.name).unlink(missing_ok=True)
        return changed

    def _compact(self, con: duckdb.DuckDBPyConnection, m: Manifest) -> None:
        if len(m.parts) <= COMPACT_PARTS:
            return
        small = [p for p in m.parts if p.rows < SMALL_PART_ROWS]
        if len(small) < 2:
            return
        d = self._gen_dir(m.generation)
        files = ", ".join(_sql_text(str(d / p.name)) for p in small)
        before = m.next_part
        part = self._write_part(con, m, f"SELECT * FROM read_parquet([{files}]) ORDER BY id")
        if part is None:
            return
        assert m.next_part == before + 1
        for p in small:
            m.parts.remove(p)
            m.retired.append([p.name, now_ms()])
        m.parts.sort(key=lambda p: p.min_id)

    def _sweep(self, m: Manifest) -> None:
        """Delete files a compaction replaced once readers have had time to finish with them."""
        if not m.retired:
            return
        now = now_ms()
        keep = []
        for name, at in m.retired:
            if now - int(at) >= RETIRED_GRACE_SECONDS * 1000:
                (self._gen_dir(m.generation) / str(name)).unlink(missing_ok=True)
            else:
                keep.append([name, at])
        if keep != m.retired:
            m.retired = keep
            self._save(m)

    # -- erasure ---------------------------------------------------------------------------------
    def purge(self, subjects: Iterable[str]) -> int:
        """Delete every row of ``subjects``, and of anyone the erasure journal names that a generation
        has not purged yet, from every analytics file in every generation."""
        people = set(subjects)
        if not self.events_dir.exists():
            return 0
        with self.locked():
            offsets = {}
            for g in self._generations():
                m = self._load(g)
                if m is not None:
                    more, offsets[g] = read_journal(self.journal, m.journal_offset)
                    people.update(more)
            removed = self._purge_locked(sorted(people)) if people else 0
            for g, end in offsets.items():
                m = self._load(g)
                if m is not None and m.journal_offset != end:
                    m.journal_offset = end
                    self._save(m)
            return removed

    def _purge_locked(self, people: list[str]) -> int:
        if not self.events_dir.exists():
            return 0
        removed = 0
        con = duckdb.connect(
            config={"autoinstall_known_extensions": False, "autoload_known_extensions": False, "threads": self.threads}
        )
        try:
            con.execute("CREATE TEMP TABLE lake_gone AS SELECT unnest($ids) AS subject_id", {"ids": people})
            for g in self._generations():
                m = self._load(g)
                if m is None:
                    continue
                d = self._gen_dir(g)
                dirty = False
                for part in list(m.parts):
                    if self.engine is not None and getattr(self.engine, "name", "duckdb") != "duckdb":
                        gone = self._purge_part_with(self.engine, m, part, people)
                        if gone:
                            removed += gone
                            dirty = True
                        continue
                    con.execute(
                        "CREATE OR REPLACE TEMP VIEW lake_part AS SELECT * FROM "
                        f"read_parquet({_sql_text(str(d / part.name))})"
                    )
                    hit = con.execute(
                        "SELECT count(*) FROM lake_part WHERE subject_id IN (SELECT subject_id FROM lake_gone)"
                    ).fetchone()
                    if not hit or not hit[0]:
                        continue
                    removed += int(hit[0])
                    self._rewrite(
                        con,
                        m,
                        part,
                        "SELECT * FROM lake_part WHERE subject_id NOT IN (SELECT subject_id FROM lake_gone)"
                        " ORDER BY id",
                    )
                    self._save(m)  # the new file is named before the old one goes
                    (d / part.name).unlink(missing_ok=True)
                    dirty = True
                # files a compaction retired may still hold the person: they go now
                for name, _ in m.retired:
                    (d / str(name)).unlink(missing_ok=True)
                if m.retired:
                    m.retired = []
                    dirty = True
                if dirty:
                    m.high = max((p.max_id for p in m.parts), default=0)
                    m.high_key = self._key_of(m.high)
                    self._save(m)
                for stray in d.glob("_tmp-*"):
                    _remove(stray)
        finally:
            con.close()
        return removed

    # -- rows changed in the store (field retention) ---------------------------------------------
    def recopy(self, ids: Iterable[int]) -> int:
        """Copy the rows ``ids`` again from the store into every file that holds them, in every
        generation (the retention job removed a field from them); returns the rows rewritten."""
        wanted = sorted({int(i) for i in ids})
        if not wanted or not self.events_dir.exists():
            return 0
        import bisect

        rewritten = 0
        with self.locked():
            live = self.live()
            if live is not None and live.format != FORMAT:
                # files of an older layout: built again first (a resumed rebuild may hold rows copied
                # before the change, so the rows are copied again below all the same)
                self._rebuild_locked(None)
            con = self._connect()
            try:
                self._erased_table(con)
                for g in self._generations():
                    m = self._load(g)
                    if m is None:
                        continue
                    d = self._gen_dir(g)
                    for part in list(m.parts):
                        lo = bisect.bisect_left(wanted, part.min_id)
                        hi = bisect.bisect_right(wanted, part.max_id)
                        if lo == hi:
                            continue
                        mine = wanted[lo:hi]
                        first = True
                        for i in range(0, len(mine), 2000):
                            where = "id IN (" + ", ".join(str(int(x)) for x in mine[i : i + 2000]) + ")"
                            verb = "CREATE OR REPLACE TEMP TABLE lake_fresh AS" if first else "INSERT INTO lake_fresh"
                            con.execute(f"{verb} {self._select(con, where)}")
                            first = False
                        con.execute(
                            "CREATE OR REPLACE TEMP VIEW lake_part AS SELECT * FROM "
                            f"read_parquet({_sql_text(str(d / part.name))})"
                        )
                        hit = con.execute(
                            "SELECT count(*) FROM lake_fresh WHERE id IN (SELECT id FROM lake_part)"
                        ).fetchone()
                        if not hit or not hit[0]:
                            continue
                        rewritten += int(hit[0])
                        self._rewrite(
                            con,
                            m,
                            part,
                            "SELECT * FROM lake_part WHERE id NOT IN (SELECT id FROM lake_fresh) UNION ALL "
                            "SELECT * FROM lake_fresh WHERE id IN (SELECT id FROM lake_part) ORDER BY id",
                        )
                        self._save(m)  # the new file is named before the old one goes
                        (d / part.name).unlink(missing_ok=True)
                    # files a compaction retired may still hold the old values: they go now
                    if m.retired:
                        for name, _ in m.retired:
                            (d / str(name)).unlink(missing_ok=True)
                        m.retired = []
                        self._save(m)
            finally:
                con.close()
        return rewritten

    def _purge_part_with(self, engine: Any, m: Manifest, part: Part, people: list[str]) -> int:
        """``_rewrite`` on another engine (Spark): the rows of ``part`` not of ``people`` go to a new file,
        named in the manifest before the old file is deleted. Returns the rows removed."""
        d = self._gen_dir(m.generation)
        tmp = d / f"_tmp-{secrets.token_hex(6)}.parquet"
        removed, kept, lo, hi = engine.purge_parquet(d / part.name, people, tmp)
        if not removed:
            return 0
        m.parts.remove(part)
        if kept:
            _fsync_file(tmp)
            name = f"part-{m.next_part:06d}.parquet"
            m.next_part += 1
            os.replace(tmp, d / name)
            _fsync_dir(d)
            m.parts.append(Part(name, kept, lo, hi))
            m.parts.sort(key=lambda p: p.min_id)
        self._save(m)  # the new file is named before the old one goes
        (d / part.name).unlink(missing_ok=True)
        return removed

    def purge_journal(self) -> tuple[int, int]:
        """Rewrite every analytics file without anyone in the whole erasure journal (a sweep after
        restoring analytics files from elsewhere, or to prove none is left): (subjects, rows removed)."""
        people, _ = read_journal(self.journal)
        everyone = sorted(set(people))
        if not everyone or not self.events_dir.exists():
            return len(everyone), 0
        with self.locked():
            return len(everyone), self._purge_locked(everyone)

    def _key_of(self, event_id: int) -> list[Any] | None:
        if not event_id:
            return None
        with self.store.engine.connect() as conn:
            row = conn.execute(
                select(events.c.source_id, events.c.message_id).where(and_(events.c.id == event_id))
            ).first()
        return [int(row[0]), str(row[1])] if row else None

    def _apply_journal_locked(self, live: Manifest | None = None) -> int:
        """Purge the people erased since each generation last looked at the erasure journal."""
        removed = 0
        for g in self._generations():
            m = live if live is not None and live.generation == g else self._load(g)
            if m is None:
                continue
            people, end = read_journal(self.journal, m.journal_offset)
            if end == m.journal_offset:
                continue
            if people:
                removed += self._purge_locked(sorted(set(people)))
                fresh = self._load(g)
                if fresh is not None:
                    m.parts, m.high, m.high_key, m.next_part, m.retired = (
                        fresh.parts,
                        fresh.high,
                        fresh.high_key,
                        fresh.next_part,
                        fresh.retired,
                    )
            m.journal_offset = end
            self._save(m)
        return removed

    def apply_journal(self) -> int:
        """On start: people erased since the analytics files were written (a restored backup) go."""
        if not self.events_dir.exists():
            return 0
        with self.locked():
            return self._apply_journal_locked()

    def status(self) -> dict[str, Any]:
        m = self.live()
        if m is None:
            return {"built": False, "root": str(self.root)}
        return {
            "built": True,
            "root": str(self.root),
            "generation": m.generation,
            "files": len(m.parts),
            "rows": m.rows,
            "high_id": m.high,
            "scanned_id": m.scanned,
            "pending_gaps": len(m.gaps),
            "refreshed_ms": m.refreshed_ms,
            "bytes": sum(
                (self._gen_dir(m.generation) / p.name).stat().st_size
                for p in m.parts
                if (self._gen_dir(m.generation) / p.name).exists()
            ),
        }


def _remove(path: Path) -> None:
    """A file, or a scratch directory another engine wrote (Spark writes a directory of files)."""
    if path.is_dir():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _without(gaps: list[list[int]], filled: set[int]) -> list[list[int]]:
    """Gap ranges minus the ids that have now arrived."""
    out: list[list[int]] = []
    for a, b, seen in gaps:
        a, b = int(a), int(b)
        hits = sorted(i for i in filled if a <= i <= b) if filled else []
        start = a
        for h in hits:
            if h > start:
                out.append([start, h - 1, seen])
            start = h + 1
        if start <= b:
            out.append([start, b, seen])
    return out
