"""Helpers for benchmarks: a real ``candor serve`` in a subprocess, and ways to watch it.

* :class:`BenchServer` owns one data directory: it runs ``candor`` CLI commands on it, starts
  ``candor serve`` on a free localhost port, waits for ``/healthz`` and stops it (SIGTERM, then
  SIGKILL).
* :class:`ProcSampler` samples a process's resident memory (VmRSS) every 100 ms in a thread and
  reads its CPU time, from ``/proc`` (Linux), so no extra package is needed.
* :class:`Profiler` attaches ``py-spy record`` to a running server and :func:`summarise_collapsed`
  turns its raw (collapsed-stack) output into "top functions by own and cumulative time".
* :func:`machine_info` describes the machine for BENCHMARKS.md and the JSON results.

Benchmarks talk to the server over TCP from their own client processes, never from inside the
server process. The server's output goes to a log file in its data directory.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from candor.testing import candor_command, free_port

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class BenchServerError(RuntimeError):
    """The server did not start or stop, or a CLI command failed."""


def server_env(data_dir: Path, log_level: str = "warning", extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without any CANDOR_* setting, plus the data dir and log level."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANDOR_")}
    env["CANDOR_DATA_DIR"] = str(data_dir)
    env["CANDOR_LOG_LEVEL"] = log_level
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class BenchServer:
    """``candor serve`` on its own data directory, for benchmarks.

    Use as a context manager (start on enter, stop on exit) or call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        log_level: str = "warning",
        env: dict[str, str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.env = server_env(self.data_dir, log_level, env)
        self.start_timeout = start_timeout
        self.log_path = self.data_dir / "bench-serve.log"
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise BenchServerError("the server has not been started")
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchServerError("the server is not running")
        return self.proc.pid

    @property
    def db_path(self) -> Path:
        return self.data_dir / "candor.db"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- the CLI on the same data dir ----------------------------------------------------------
    def cli(self, *args: str, timeout: float = 120.0) -> str:
        """Run ``candor ARGS`` on this data dir; return its standard output (stripped)."""
        result = subprocess.run(
            [*candor_command(), *args], env=self.env, capture_output=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise BenchServerError(
                f"candor {' '.join(args[:2])} exited with {result.returncode}: "
                f"{result.stderr.decode(errors='replace')[-2000:]}"
            )
        return result.stdout.decode().strip()

    def create_source(self, name: str, *options: str) -> str:
        """Create a source; return its write key."""
        return self.cli("sources", "create", name, *options).splitlines()[-1].strip()

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> BenchServer:
        if self.running():
            raise BenchServerError("the server is already running")
        self.port = free_port()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*candor_command(), "serve", "--host", HOST, "--port", str(self.port)],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.start_timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = self.proc.poll()
                if code is not None:
                    tail = self.log_tail()
                    self.stop()
                    raise BenchServerError(f"candor serve exited with {code} while starting\n{tail}")
                try:
                    if client.get(f"{self.base_url}/healthz").status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    tail = self.log_tail()
                    self.stop()
                    raise BenchServerError(
                        f"candor serve did not answer /healthz in {self.start_timeout:.0f} s\n{tail}"
                    )
                time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful: the writer drains its queue), SIGKILL after ``timeout``."""
        proc, code = self.proc, None
        try:
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    code = proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
                    raise BenchServerError(f"candor serve did not stop within {timeout:.0f} s; killed it") from None
            elif proc is not None:
                code = proc.returncode
        finally:
            self.proc = None
            if self._log is not None:
                self._log.close()
                self._log = None
        return code

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def __enter__(self) -> BenchServer:
        if not self.running():
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(BenchServerError):
            self.stop()


# -- watching a process --------------------------------------------------------------------------
def _status_kb(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


_TREE_CACHE: dict[int, tuple[float, list[int]]] = {}


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (a server with several worker processes counts as one).

    Walking /proc costs CPU that the server under test needs, so the answer is reused for 5 s.
    """
    hit = _TREE_CACHE.get(pid)
    if hit is not None and time.monotonic() - hit[0] < 5.0:
        return hit[1]
    tree = _walk_tree(pid)
    _TREE_CACHE[pid] = (time.monotonic(), tree)
    return tree


def _walk_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _tree_kb(pid: int, field: str) -> int | None:
    values = [_status_kb(p, field) for p in process_tree(pid)]
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def rss_bytes(pid: int) -> int | None:
    """Current resident set size of ``pid`` and its worker processes (VmRSS), or None when gone."""
    kb = _tree_kb(pid, "VmRSS")
    return None if kb is None else kb * 1024


def hwm_bytes(pid: int) -> int | None:
    """Peak resident set size of ``pid`` and its worker processes since they started (VmHWM)."""
    kb = _tree_kb(pid, "VmHWM")
    return None if kb is None else kb * 1024


def _cpu_one(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` and its worker processes (all threads) in seconds."""
    values = [_cpu_one(p) for p in process_tree(pid)]
    known = [v for v in values if v is not None]
    return sum(known) if known else None


class ProcSampler:
    """Samples VmRSS of a process every ``interval`` seconds in a daemon thread.

    ``with ProcSampler(pid) as s: ...`` then read ``s.peak``, ``s.mean``, ``s.cpu`` (CPU seconds
    used while sampling) and ``s.wall``.
    """

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._cpu0: float | None = None
        self._t0 = 0.0
        self.cpu = 0.0
        self.wall = 0.0

    def _run(self) -> None:
        while True:
            rss = rss_bytes(self.pid)
            if rss is not None:
                self.samples.append(rss)
            if self._stop.wait(self.interval):
                return

    def start(self) -> ProcSampler:
        self._cpu0 = cpu_seconds(self.pid)
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> ProcSampler:
        self._stop.set()
        self._thread.join()
        rss = rss_bytes(self.pid)
        if rss is not None:
            self.samples.append(rss)
        cpu1 = cpu_seconds(self.pid)
        self.wall = time.monotonic() - self._t0
        if cpu1 is not None and self._cpu0 is not None:
            self.cpu = cpu1 - self._cpu0
        return self

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)

    @property
    def mean(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else 0.0

    def __enter__(self) -> ProcSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- profiling with py-spy -------------------------------------------------------------------------
def py_spy_command() -> str | None:
    script = Path(sys.executable).with_name("py-spy")
    if script.exists():
        return str(script)
    return shutil.which("py-spy")


class Profiler:
    """``py-spy record`` attached to ``pid`` until :meth:`stop`, writing collapsed stacks.

    The output has one line per distinct stack: ``thread;frame;frame;... count``, with frames
    aggregated per function (``--function``). With ``gil=True`` only the thread holding the GIL is
    sampled: for a Python server that runs on about one core, that is where the time goes. Sampling
    pauses the target briefly for each sample, so a profiled run is slower: measure without it.
    """

    def __init__(self, pid: int, output: Path, rate: int = 100, gil: bool = True) -> None:
        exe = py_spy_command()
        if exe is None:
            raise BenchServerError("py-spy is not installed: .venv/bin/pip install py-spy")
        self.output = Path(output)
        self.cmd = [
            exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
            "--function", "--threads", "--output", str(self.output), *(["--gil"] if gil else []),
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> Profiler:
        self._log = open(self.output.with_suffix(".log"), "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        time.sleep(0.5)  # py-spy attaches and starts sampling
        if self.proc.poll() is not None:
            self.stop()
            raise BenchServerError(f"py-spy exited at once; see {self.output.with_suffix('.log')}")
        return self

    def stop(self) -> Path:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                try:
                    self.proc.wait(60)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.output


# Leaf frames of a thread that is waiting, not working (py-spy does not always see that).
IDLE_LEAVES = ("Condition.wait ", "Event.wait ", "Queue.get ", "SimpleQueue.get ", "Thread.join ", "sleep ")
# A thread's role, from a function anywhere on its stack.
THREAD_ROLES = (
    ("Ingestor._run ", "writer thread"),
    ("WorkerThread.run ", "anyio worker threads"),
    ("Timer.run ", "timer threads"),
    ("Server.run ", "event loop (main thread)"),
)


def _short(frame: str) -> str:
    """``func (path/to/module.py:12)`` with site-packages and repo prefixes removed."""
    for marker in ("site-packages/", "/src/", "lib/python3"):
        i = frame.find(marker)
        if i != -1:
            j = frame.rfind("(", 0, i)
            head = frame[: j + 1] if j != -1 else ""
            return head + frame[i + len(marker) :].lstrip("/")
    return frame


def _package(frame: str) -> str:
    """The package a frame's file belongs to: ``candor``, ``sqlalchemy``, ... or ``stdlib``."""
    i = frame.rfind("(")
    where = frame[i + 1 :] if i != -1 else frame
    if "/" not in where or where.startswith("<"):
        return "stdlib"
    first = where.split("/", 1)[0]
    return "stdlib" if first.startswith("python3") or first in ("asyncio", "concurrent", "json", "re") else first


def summarise_collapsed(path: Path, top: int = 15) -> dict[str, Any]:
    """Top functions from py-spy's raw (collapsed-stack) output.

    Returns a dict with ``samples`` (working samples), ``idle`` (samples of waiting threads, left
    out of everything else), ``roles`` (samples per thread role), ``own`` (top functions by own
    time), ``cumulative`` (top Candor functions by cumulative time: the framework frames above
    them are in every stack and say nothing) and ``packages`` (own time per package). Each entry
    is ``{"function" or "package", "samples", "percent"}``, percent of the working samples.
    """
    own: Counter[str] = Counter()
    cum: Counter[str] = Counter()
    roles: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = idle = 0
    with open(path) as fh:
        for line in fh:
            stack, _, count_s = line.rstrip("\n").rpartition(" ")
            try:
                count = int(count_s)
            except ValueError:
                continue
            frames = stack.split(";")
            if frames and frames[0].startswith("thread "):
                frames = frames[1:]
            if not frames:
                continue
            leaf = frames[-1]
            if leaf.startswith(IDLE_LEAVES) or any(f.startswith("WorkerThread.run ") for f in frames):
                idle += count
                continue
            total += count
            role = next((r for marker, r in THREAD_ROLES if any(f.startswith(marker) for f in frames)), "other")
            roles[role] += count
            names = [_short(f) for f in frames]
            own[names[-1]] += count
            packages[_package(names[-1])] += count
            for name in set(names):
                if "(candor/" in name:
                    cum[name] += count

    def pct(n: int) -> float:
        return round(100.0 * n / total, 1) if total else 0.0

    return {
        "samples": total,
        "idle": idle,
        "roles": [{"role": k, "samples": n, "percent": pct(n)} for k, n in roles.most_common()],
        "own": [{"function": k, "samples": n, "percent": pct(n)} for k, n in own.most_common(top)],
        "cumulative": [{"function": k, "samples": n, "percent": pct(n)} for k, n in cum.most_common(top)],
        "packages": [{"package": k, "samples": n, "percent": pct(n)} for k, n in packages.most_common(top)],
    }


# -- the machine -----------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """CPU model, core count, memory and OS: the facts BENCHMARKS.md records with each result."""
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_total = None
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
                break
    return {
        "cpu_model": model,
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "mem_total_bytes": mem_total,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
