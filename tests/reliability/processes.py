"""Child processes for the reliability suite (the fake engine, gateways of their own) and what
the suite measures of them: open file descriptors, resident memory, listening addresses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from serve.engines import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Child:
    """A started server: its root URL (no /v1) and its process."""

    url: str
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 180.0) -> None:
    """Poll `url` until it answers 200; fail with the child's output if it dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise RuntimeError(f"{process.args} exited with {process.returncode}:\n{output}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextmanager
def started(command: list[str], ready_path: str, port: int, log: Path) -> Iterator[Child]:
    """Run `command` (a server on 127.0.0.1:`port`) until the block ends, then SIGTERM it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "w") as handle:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, text=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_up(url + ready_path, process)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n{log.read_text()[-3000:]}") from None
        yield Child(url, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def fake_engine(log: Path, delay: float = 0.005) -> Iterator[Child]:
    port = free_port()
    command = [sys.executable, "-m", "tests.reliability.fake_engine", "--port", str(port)]
    return started([*command, "--delay", str(delay)], "/v1/models", port, log)


def gateway_over(upstream: str, log: Path, api_key: str | None = None) -> Iterator[Child]:
    """The real gateway in a process of its own (so its fds and memory can be measured) in front
    of an engine that is already running at `upstream`."""
    port = free_port()
    command = [sys.executable, "-m", "tests.reliability.gateway_process", upstream, str(port)]
    return started(command + ([api_key] if api_key else []), "/health", port, log)


def tuneserve_serve(models: list[str], log: Path, api_key: str) -> Iterator[Child]:
    """`tuneserve serve` itself: engines it starts and the gateway in front."""
    port = free_port()
    tuneserve = str(Path(sys.executable).parent / "tuneserve")
    command = [tuneserve, "serve", *models, "--port", str(port), "--api-key", api_key]
    return started(command, "/health", port, log)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _sockets(pid: int, state: str) -> list[tuple[str, str]]:
    """(local, remote) `ip:port` of `pid`'s TCP sockets in `state` (/proc/net/tcp and tcp6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == state and fields[9] in inodes:
                found.append((_address(fields[1]), _address(fields[2])))
    return found


def listening_addresses(pid: int) -> set[str]:
    """`ip:port` of every TCP socket `pid` listens on."""
    return {local for local, _ in _sockets(pid, "0A")}  # 0A: LISTEN


def connections(pid: int) -> list[tuple[str, str]]:
    """(local, remote) of every established TCP connection of `pid`."""
    return _sockets(pid, "01")  # 01: ESTABLISHED


def _address(hex_address: str) -> str:
    import ipaddress

    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    # /proc/net stores each 32-bit word in host (little-endian) order
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return f"{ipaddress.ip_address(words)}:{int(port, 16)}"
