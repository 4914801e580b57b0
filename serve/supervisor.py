"""Engine child processes: start in their own process group, wait for readiness, restart on
crash with backoff, stop the whole group (no orphans)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from serve.engines.base import Engine, EngineError, free_port
from toolkit.core.orphans import die_with_parent


def last_lines(path: Path, count: int = 20) -> str:
    """The end of a log file, for error messages."""
    try:
        with path.open(errors="replace") as handle:
            return "".join(deque(handle, maxlen=count)).rstrip()
    except OSError:
        return "(no log)"


# What engines log when their port was taken between free_port() and their bind: llama-server
# (cpp-httplib), then vLLM and llama-cpp-python's server (uvicorn, or Python's own OSError).
PORT_TAKEN = ("couldn't bind http server socket", "address already in use")
PORT_ATTEMPTS = 3  # starts on fresh ports before a lost port is reported like any other exit


def _is_ready(url: str, api_key: str | None) -> bool:
    request = urllib.request.Request(url)
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class PointsAtAnEngine(Protocol):
    upstream: str  # the engine's base URL (a ModelRoute, a Replica)


class Supervisor:
    """Keeps one engine process alive.

    `start()` returns once the engine answers its readiness URL, or raises EngineError quoting
    the log. A watcher thread restarts a crashed engine with exponential backoff (1 s .. 30 s)
    until `stop()`. `ready` tells the gateway whether to answer 503 right away.

    An engine that exits because another process took its port is started again on a fresh
    port; what `keep_pointed` was given follows it there.
    """

    def __init__(
        self,
        engine: Engine,
        log_path: Path,
        *,
        ready_timeout: float = 300.0,
        restart: bool = True,
        max_backoff: float = 30.0,
    ) -> None:
        self.engine = engine
        self.log_path = log_path
        self.ready_timeout = ready_timeout
        self.restart = restart
        self.max_backoff = max_backoff
        self.restarts = 0
        self.ready = False
        self._process: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._log_offset = 0  # where this start's lines begin in the log
        self._on_new_port: list[Callable[[str, str], None]] = []

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def exited(self) -> bool:
        """Whether the engine process has ended (and not yet been restarted)."""
        return self._process is not None and self._process.poll() is not None

    def start(self) -> None:
        """Launch, wait until ready, then keep it alive."""
        self.launch()
        self.wait_ready()
        self.start_watching()

    def launch(self) -> None:
        """Start the process without waiting (several engines can load side by side)."""
        self._stopping.clear()
        self._spawn()

    def wait_ready(self) -> None:
        self._wait_ready()

    def start_watching(self) -> None:
        if self.restart and self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, daemon=True, name="supervisor")
            self._watcher.start()

    def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = self.engine.argv()
        with self._lock, self.log_path.open("ab") as log:
            log.write(f"\n--- start: {' '.join(argv)}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            try:
                self._process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **self.engine.env()},
                    start_new_session=True,  # its own process group: stop() kills all of it
                    preexec_fn=die_with_parent(),
                )
            except OSError as exc:
                raise EngineError(
                    f"cannot start the {self.engine.kind} engine: {exc}",
                    "install it (e.g. `pip install vllm` on a GPU machine for vllm) "
                    "or pick another engine with --engine",
                ) from None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        process = self._process
        assert process is not None
        fresh_ports = PORT_ATTEMPTS
        while time.monotonic() < deadline and not self._stopping.is_set():
            if process.poll() is not None:
                if fresh_ports and self._lost_its_port():
                    fresh_ports -= 1
                    self._move_to_fresh_port()
                    process = self._process
                    assert process is not None
                    continue
                raise EngineError(
                    f"{self.engine.kind} engine for {self.engine.name!r} exited with code "
                    f"{process.returncode} before it was ready; its log ends with:\n"
                    f"{last_lines(self.log_path)}",
                    f"full log: {self.log_path}",
                )
            if _is_ready(self.engine.readiness_url, self.engine.api_key):
                self.ready = True
                return
            time.sleep(0.2)
        self._kill_group()
        raise EngineError(
            f"{self.engine.kind} engine for {self.engine.name!r} was not ready after "
            f"{self.ready_timeout:.0f} s; its log ends with:\n{last_lines(self.log_path)}",
            f"full log: {self.log_path}; a larger model may need a longer --ready-timeout",
        )

    def keep_pointed(self, target: PointsAtAnEngine) -> None:
        """Move `target.upstream` along when the engine has to start on a fresh port, unless
        something else was put there in between (a test's recording proxy)."""

        def follow(old: str, new: str) -> None:
            if target.upstream == old:
                target.upstream = new

        self._on_new_port.append(follow)

    def _lost_its_port(self) -> bool:
        """Whether the last start's log says the port was already taken."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                started = log.read().decode(errors="replace").lower()
        except OSError:
            return False
        return any(mark in started for mark in PORT_TAKEN)

    def _move_to_fresh_port(self) -> None:
        old = self.engine.base_url
        self.engine.port = free_port(self.engine.host)
        for follow in self._on_new_port:
            follow(old, self.engine.base_url)
        self._spawn()

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            process = self._process
            if process is None or process.poll() is None:
                self._stopping.wait(0.2)
                continue
            self.ready = False
            if self._stopping.wait(backoff):
                return
            self.restarts += 1
            try:
                self._spawn()
                self._wait_ready()
                backoff = 1.0
            except EngineError:
                backoff = min(backoff * 2, self.max_backoff)

    def kill(self) -> None:
        """Kill the engine as a crash would (the watcher restarts it); for tests and drills."""
        self.ready = False
        self._kill_group(graceful=False)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL what is left after `timeout` seconds."""
        self._stopping.set()
        self.ready = False
        self._kill_group(timeout=timeout)
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None

    def _kill_group(self, graceful: bool = True, timeout: float = 10.0) -> None:
        with self._lock:
            process = self._process
            if process is None:
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
            # children that outlived the leader still carry the group id
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
