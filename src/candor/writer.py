"""One writer process behind several HTTP workers: ``candor serve --workers N``.

With one worker, the server process parses, validates, screens and pseudonymises in its event loop
and a writer thread commits (ingest.py); both share one GIL, so one core is used. With N workers:

* **N HTTP worker processes** (uvicorn's) do everything up to the store: body parsing, validation,
  sensitive-data screening (screening.py), pseudonymisation; each sends the ready messages of a
  request to the writer over a Unix domain socket (wire.py: length-prefixed orjson) and waits;
* **one writer process** (:class:`WriterProcess`, started and restarted by :class:`Supervisor`)
  runs the same :class:`~candor.ingest.Ingestor` as a single-process server: it group-commits
  everything that is queued from every worker (subjects, data keys, identifiers, sealed events, full
  IP addresses, identity edges, consent, inbox findings, rejected records, counters) and answers each
  request only after its commit. A worker answers its HTTP client only after that answer: a 2xx
  still means committed, and messageId dedupe is the writer's, whatever worker a retry reaches.

When the writer is gone (crashed, restarting), workers answer 503 (never 200; SDKs retry) and
reconnect on the next request; the supervisor starts a new writer at once. SQLite keeps its single
writer; on PostgreSQL the same design keeps dedupe exact and the events table's unique
(source_id, message_id) with ON CONFLICT DO NOTHING backs it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.exc import DBAPIError

from candor import wire
from candor.ingest import Work, WriteResult
from candor.store.engine import StoreUnavailable

log = logging.getLogger("candor.writer")

READY_TIMEOUT = 60.0
STOP_GRACE = 10.0  # how long a stopping writer keeps answering workers that are still finishing


class WriterUnavailable(StoreUnavailable):
    """The writer process cannot be reached: the request is not stored (503, retry)."""


# -- the writer process ---------------------------------------------------------------------------
class WriterProcess:
    """Listens on a Unix socket and commits what workers send, with the store's own Ingestor."""

    def __init__(self, settings: Any, path: str) -> None:
        from candor.consent.ledger import Consent
        from candor.consent.purposes import Taxonomy
        from candor.dictionary import Dictionary
        from candor.identity.service import Identity, identity_rules
        from candor.inbox import Inbox
        from candor.ingest import Ingestor
        from candor.screening import WriterHooks
        from candor.store import Store
        from candor.vault import Vault

        self.path = path
        self.store = Store(settings)
        settings.load_master_keys()
        vault = Vault(self.store, key_loader=settings.load_master_keys)
        consent = Consent(
            self.store,
            vault,
            Taxonomy.load(settings.purposes_file or None),
            default_jurisdiction=settings.default_jurisdiction,
            ttl_days=settings.consent_ttl_days,
        )

        def changed(subjects: set[str]) -> None:
            for sid in subjects:
                consent.invalidate(sid)

        identity = Identity(self.store, vault, identity_rules(settings), on_change=changed)
        inbox = Inbox(self.store, Dictionary(self.store))
        self.ingestor = Ingestor(
            self.store, vault, consent=consent, identity=identity, privacy=WriterHooks(consent, inbox)
        )
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def serve(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        os.chmod(self.path, 0o600)
        listener.listen(128)
        listener.settimeout(0.2)
        self.ingestor.start()
        signal.signal(signal.SIGTERM, lambda *_: self._stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self._stopping.set())
        log.info("writer ready")
        try:
            while not self._stopping.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self._stopping.is_set():
                        break
                    raise
                conn.settimeout(None)
                with self._lock:
                    self._conns.add(conn)
                threading.Thread(target=self._serve_conn, args=(conn,), name="candor-writer-conn", daemon=True).start()
        finally:
            listener.close()
            # workers stopping at the same time finish their requests first: keep answering them
            deadline = time.monotonic() + STOP_GRACE
            while time.monotonic() < deadline:
                with self._lock:
                    if not self._conns:
                        break
                time.sleep(0.05)
            self.ingestor.stop()
            self.store.dispose()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def _serve_conn(self, conn: socket.socket) -> None:
        send_lock = threading.Lock()

        def reply(rid: int, status: int, payload: Any) -> None:
            data = wire.frame([rid, status, payload])
            with send_lock, contextlib.suppress(OSError):
                conn.sendall(data)

        reader = conn.makefile("rb", buffering=1 << 16)
        try:
            while True:
                head = reader.read(wire.HEADER.size)
                if len(head) < wire.HEADER.size:
                    return
                (n,) = wire.HEADER.unpack(head)
                if n > wire.MAX_FRAME:
                    return
                body = reader.read(n)
                if len(body) < n:
                    return
                rid, op, payload = orjson.loads(body)
                try:
                    if op == wire.WORK:
                        fut: concurrent.futures.Future[WriteResult] = concurrent.futures.Future()
                        fut.add_done_callback(partial(_answer, reply, rid))
                        self.ingestor.submit_future(wire.work_in(payload), fut)
                    elif op == wire.FORGET:
                        self.ingestor.forget_subjects(set(payload))
                        reply(rid, wire.OK, None)
                    else:
                        reply(rid, wire.OK, None)
                except (TypeError, ValueError, KeyError) as exc:  # a malformed frame: answer, keep serving
                    log.error("writer: bad request frame: %s", type(exc).__name__)
                    reply(rid, wire.FAILED, None)
        except (OSError, ValueError) as exc:
            log.warning("writer: connection closed: %s", type(exc).__name__)
        finally:
            with contextlib.suppress(OSError):
                reader.close()
                conn.close()
            with self._lock:
                self._conns.discard(conn)


def _answer(reply: Any, rid: int, fut: concurrent.futures.Future[WriteResult]) -> None:
    exc = fut.exception()
    if exc is None:
        reply(rid, wire.OK, wire.result_out(fut.result()))
    elif isinstance(exc, DBAPIError | StoreUnavailable):
        reply(rid, wire.UNAVAILABLE, None)
    else:
        reply(rid, wire.FAILED, None)


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the supervisor dies, so no orphaned writer holds the store."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def main(argv: list[str] | None = None) -> None:
    """``python -m candor.writer SOCKET``: the writer process (started by :class:`Supervisor`)."""
    from candor import logs
    from candor.config import Settings

    args = sys.argv[1:] if argv is None else argv
    _die_with_parent()
    if args == ["--prepare"]:
        _prepare()
        return
    settings = Settings.from_env()
    logs.configure(settings.log_level)
    WriterProcess(settings, args[0]).serve()


def _prepare() -> None:
    """Migrate the store, create the key file, replay the erasure journal: once, before any worker."""
    from candor import logs
    from candor.app import Runtime
    from candor.config import ConfigError, Settings
    from candor.vault import VaultError

    try:
        settings = Settings.from_env()
        logs.configure(settings.log_level)
        Runtime(settings).close()
    except (StoreUnavailable, VaultError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


# -- the supervisor (in the ``candor serve`` process) ------------------------------------------------
class Supervisor:
    """Starts the writer process, restarts it whenever it exits, stops it last."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="candor-writer-"))  # mode 0700
        self.path = str(self.dir / "writer.sock")
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="candor-writer-watch", daemon=True)
        self._watcher.start()

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "candor.writer", self.path], env=self.env, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the writer process exited with {self.proc.returncode} while starting")
            if ping(self.path):
                return
            time.sleep(0.05)
        raise RuntimeError(f"the writer process did not start within {READY_TIMEOUT:.0f} s")

    def _watch(self) -> None:
        while not self._stopping.wait(0.2):
            proc = self.proc
            if proc is None or proc.poll() is None:
                continue
            if self._stopping.is_set():
                return
            log.error("the writer process exited with %s; starting a new one", proc.returncode)
            self.restarts += 1
            try:
                self._spawn()
            except RuntimeError as exc:
                log.error("%s; retrying", exc)
                time.sleep(1.0)

    def stop(self, timeout: float = STOP_GRACE + 10) -> None:
        self._stopping.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def ping(path: str, timeout: float = 2.0) -> bool:
    """Whether a writer answers on ``path``."""
    try:
        _call(path, wire.PING, None, timeout)
    except (OSError, WriterUnavailable):
        return False
    return True


def _call(path: str, op: str, payload: Any, timeout: float) -> Any:
    """One blocking request on a connection of its own (pings, cache invalidation, CLI submits)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(wire.frame([0, op, payload]))
        reader = s.makefile("rb")
        head = reader.read(wire.HEADER.size)
        if len(head) < wire.HEADER.size:
            raise WriterUnavailable("the writer process closed the connection")
        (n,) = wire.HEADER.unpack(head)
        _rid, status, out = orjson.loads(reader.read(n))
    if status == wire.UNAVAILABLE:
        raise StoreUnavailable("the store is unavailable")
    if status != wire.OK:
        raise RuntimeError("the writer could not store the request")
    return out


# -- the worker side -----------------------------------------------------------------------------------
class _Link:
    """One connection of a worker to the writer, with the requests in flight on it."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.loop = asyncio.get_running_loop()

    def usable(self) -> bool:
        return not self.writer.is_closing()


class RemoteIngestor:
    """What an HTTP worker uses instead of an in-process Ingestor: same methods, the writer behind."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._link: _Link | None = None
        self._next = 0
        self._connect_lock: asyncio.Lock | None = None

    # -- lifecycle (the connection opens on the first request) --------------------------------------
    def start(self) -> None:
        return None

    def stop(self, timeout: float = 10.0) -> None:
        link, self._link = self._link, None
        if link is not None:
            # called from a thread of the executor at shutdown: close on the link's own loop
            with contextlib.suppress(RuntimeError):
                link.loop.call_soon_threadsafe(link.writer.close)

    # -- requests -----------------------------------------------------------------------------------
    async def _connect(self) -> _Link:
        link = self._link
        if link is not None and link.usable():
            return link
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            link = self._link
            if link is not None and link.usable():
                return link
            try:
                reader, writer = await asyncio.open_unix_connection(self.path, limit=1 << 20)
            except OSError:
                raise WriterUnavailable("the writer process is not reachable") from None
            link = self._link = _Link(writer)
            asyncio.get_running_loop().create_task(self._read(reader, link))
            return link

    async def _read(self, reader: asyncio.StreamReader, link: _Link) -> None:
        try:
            while True:
                head = await reader.readexactly(wire.HEADER.size)
                (n,) = wire.HEADER.unpack(head)
                rid, status, payload = orjson.loads(await reader.readexactly(n))
                fut = link.pending.pop(rid, None)
                if fut is None or fut.done():
                    continue
                if status == wire.OK:
                    fut.set_result(payload)
                elif status == wire.UNAVAILABLE:
                    fut.set_exception(StoreUnavailable("the store is unavailable"))
                else:
                    fut.set_exception(RuntimeError("the writer could not store the request"))
        except (asyncio.IncompleteReadError, OSError, ValueError):
            pass
        finally:
            if self._link is link:
                self._link = None
            with contextlib.suppress(Exception):
                link.writer.close()
            # what was in flight on this connection is not known to be committed: 503, the client retries
            for fut in link.pending.values():
                if not fut.done():
                    fut.set_exception(WriterUnavailable("the writer process went away"))
            link.pending.clear()

    async def _request(self, op: str, payload: Any) -> Any:
        link = await self._connect()
        self._next += 1
        rid = self._next
        fut: asyncio.Future[Any] = link.loop.create_future()
        link.pending[rid] = fut
        try:
            link.writer.write(wire.frame([rid, op, payload]))
            await link.writer.drain()
        except (OSError, RuntimeError):
            link.pending.pop(rid, None)
            raise WriterUnavailable("the writer process went away") from None
        return await fut

    async def submit(self, work: Work) -> WriteResult:
        return wire.result_in(await self._request(wire.WORK, wire.work_out(work)))

    def submit_sync(self, work: Work, timeout: float = 60.0) -> WriteResult:
        return wire.result_in(_call(self.path, wire.WORK, wire.work_out(work), timeout))

    def forget_subject(self, subject_id: str) -> None:
        self.forget_subjects({subject_id})

    def forget_subjects(self, subject_ids: set[str]) -> None:
        """The writer's identifier cache must not keep mapping to erased or moved subjects."""
        if subject_ids:
            # a writer that is down starts with empty caches: nothing to forget then
            with contextlib.suppress(OSError, WriterUnavailable):
                _call(self.path, wire.FORGET, sorted(subject_ids), 30.0)


if __name__ == "__main__":
    main()
