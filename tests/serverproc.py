"""Run the real ``candor serve`` in a subprocess, for the few tests that talk to it over TCP.

A :class:`ServerProcess` owns one data directory. It starts the server on a free localhost port,
waits until ``/healthz`` answers 200, and can stop it gracefully (SIGTERM) or crash it (SIGKILL)
and start it again on the same data directory. The server's output goes to a log file (by default
inside the data directory, so the privacy tests grep it too).

Nothing here prints request bodies or other personal data: errors name the command, the exit code
and the tail of Candor's own log, which must itself never hold personal data.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from candor.testing import candor_command, free_port

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
LOG_TAIL_LINES = 20
# uvicorn shuts down gracefully on SIGTERM, then re-raises the signal: -15 is a clean stop too.
GRACEFUL_EXIT_CODES = (0, -signal.SIGTERM)


class ServerError(RuntimeError):
    """The server did not start, did not stop, or a CLI command failed."""


def clean_env(data_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without any CANDOR_* setting, plus this server's data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANDOR_")}
    env["CANDOR_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    # these servers test transport and storage: an opt-out jurisdiction stores analytics events
    # without a recorded choice (consent gating has its own tests; the product default is EU)
    env["CANDOR_DEFAULT_JURISDICTION"] = "US"
    env.update(extra or {})
    return env


class ServerProcess:
    """``candor serve`` as a subprocess on its own data directory.

    Use as a context manager (starts on enter, SIGTERM on exit), or call :meth:`start`,
    :meth:`kill`, :meth:`terminate` and :meth:`restart` directly.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
        start_timeout: float = START_TIMEOUT,
        workers: int = 1,
    ) -> None:
        self.workers = workers
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path) if log_path else self.data_dir / "logs" / "candor-serve.log"
        self.env = clean_env(self.data_dir, env)
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    # -- addresses -----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self.port is None:
            raise ServerError("the server has not been started")
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- reading what the server stored ---------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.data_dir / "candor.db"

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one read-only SQL statement on the server's database (safe while it runs).

        SQLite by default; the server's PostgreSQL when its environment names one (``params``
        are then bound positionally as ``%s``)."""
        url = self.env.get("CANDOR_DATABASE_URL")
        if url:
            from sqlalchemy import create_engine

            engine = create_engine(url)
            try:
                with engine.connect() as conn:
                    return [tuple(r) for r in conn.exec_driver_sql(sql, tuple(params)).fetchall()]
            finally:
                engine.dispose()
        uri = self.db_path.resolve().as_uri() + "?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as conn:
            return conn.execute(sql, params).fetchall()

    def stats(self, token: str) -> dict[str, Any]:
        """``GET /v1/stats`` with a staff token."""
        response = httpx.get(f"{self.base_url}/v1/stats", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        if response.status_code != 200:
            raise ServerError(f"GET /v1/stats answered {response.status_code}")
        data: dict[str, Any] = response.json()
        return data

    def source_stats(self, token: str, source: str) -> dict[str, Any]:
        """The ``/v1/stats`` entry of one source (by name)."""
        for entry in self.stats(token)["sources"]:
            if entry["source"] == source:
                return dict(entry)
        raise ServerError(f"no source named {source!r} in /v1/stats")

    # -- the CLI on the same data dir ----------------------------------------------------------
    def cli(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``candor ARGS`` on this data dir and return its standard output (stripped)."""
        result = subprocess.run(
            [*candor_command(), *args],
            env=self.env,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            # The CLI's errors name settings and ids, never event contents.
            raise ServerError(
                f"candor {args[0] if args else ''} exited with {result.returncode}: "
                f"{result.stderr.decode(errors='replace')[-2000:]}"
            )
        return result.stdout.decode().strip()

    def create_source(self, name: str, *options: str) -> str:
        """Create a source and return its write key."""
        return self.cli("sources", "create", name, *options).splitlines()[-1].strip()

    def create_token(self, role: str = "owner") -> str:
        """Create a staff API token and return it."""
        return self.cli("tokens", "create", "--role", role).splitlines()[-1].strip()

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, port: int | None = None) -> ServerProcess:
        """Start the server (on ``port``, the previous port, or a free one) and wait for /healthz.

        When the chosen port turns out to be taken, a fresh one is tried (twice more). On any
        failure the process is killed and its log handle closed before the error is raised.
        """
        if self.running():
            raise ServerError("the server is already running")
        for directory in (self.data_dir, self.log_path.parent):
            # private from the start, as the server keeps it (it would chmod it 0700 itself)
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        wanted = port or self.port
        last_error: ServerError | None = None
        for _attempt in range(3):
            self.port = wanted or free_port()
            wanted = None
            try:
                self._spawn_and_wait()
                self.starts += 1
                return self
            except ServerError as exc:
                last_error = exc
                self._reap(signal.SIGKILL)
                if "address already in use" not in str(exc).lower():
                    break
        assert last_error is not None
        raise last_error

    def _spawn_and_wait(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap
        self._log.write(f"--- start #{self.starts + 1} on port {self.port}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            [*candor_command(), "serve", "--host", HOST, "--port", str(self.port), "--workers", str(self.workers)],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: signals reach it alone
        )
        deadline = time.monotonic() + self.start_timeout
        url = f"{self.base_url}/healthz"
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = self.proc.poll()
                if code is not None:
                    raise ServerError(f"candor serve exited with {code} while starting\n{self.log_tail()}")
                try:
                    if client.get(url).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise ServerError(
                        f"candor serve did not answer /healthz within {self.start_timeout:.0f} s\n{self.log_tail()}"
                    )
                time.sleep(0.05)

    def _signal(self, sig: signal.Signals) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)  # the group this helper created for the server
        except ProcessLookupError:
            pass
        except PermissionError:
            proc.send_signal(sig)

    def _reap(self, sig: signal.Signals, timeout: float = STOP_TIMEOUT) -> int | None:
        """Send ``sig``, wait for the exit (SIGKILL after ``timeout``), close the log handle."""
        proc = self.proc
        code: int | None = None
        try:
            if proc is not None:
                self._signal(sig)
                try:
                    code = proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._signal(signal.SIGKILL)
                    proc.wait(STOP_TIMEOUT)
                    raise ServerError(
                        f"candor serve did not exit within {timeout:.0f} s of {sig.name}; killed it"
                    ) from None
        finally:
            self.proc = None
            if self._log is not None:
                self._log.close()
                self._log = None
        return code

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Graceful stop (SIGTERM); returns the exit code (one of GRACEFUL_EXIT_CODES after a clean
        shutdown). Raises if it had to be killed."""
        return self._reap(signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        """Crash the server (SIGKILL): no shutdown code runs. Returns the exit code (-9)."""
        return self._reap(signal.SIGKILL)

    def restart(self, *, crash: bool = False) -> ServerProcess:
        """Stop (SIGKILL when ``crash``, else SIGTERM) and start again on the same data dir."""
        if crash:
            self.kill()
        else:
            self.terminate()
        return self.start()

    def close(self) -> None:
        """Stop the server if it runs (SIGTERM, then SIGKILL); safe to call many times."""
        if self.proc is not None:
            with contextlib.suppress(ServerError):
                self.terminate()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ServerProcess:
        if not self.running():
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:  # last resort: never leave a server behind
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(STOP_TIMEOUT)
            except (OSError, subprocess.TimeoutExpired):
                pass
        log = getattr(self, "_log", None)
        if log is not None:
            log.close()
