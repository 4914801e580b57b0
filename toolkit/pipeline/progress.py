"""One progress display across the stages of `tuneserve run`: stage k/n, what it is doing, ETA.

On a terminal it is a rich live line that redraws twice a second; elsewhere (CI logs, pipes)
it prints plain lines, one when the activity changes and one every `plain_every` seconds.
Stages report through a `probe` returning a `StageStatus`, so the training loop, the exporter
and the eval runner need not know about the display.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class StageStatus:
    """What a running stage is doing, with a count when it has one (steps, requests)."""

    doing: str
    done: float | None = None
    total: float | None = None
    unit: str = ""


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def eta_seconds(
    first: tuple[float, float] | None, now: tuple[float, float], total: float | None
) -> float | None:
    """Time left at the rate seen since `first` (time, done); None until the count has moved.

    Measured from the first observation rather than from the stage's start so model loading
    (before step 1) and steps done before a resume do not skew the rate.
    """
    if first is None or total is None:
        return None
    (t0, done0), (t1, done1) = first, now
    if done1 >= total:
        return 0.0
    if done1 <= done0 or t1 <= t0:
        return None
    return (total - done1) * (t1 - t0) / (done1 - done0)


class RunProgress:
    """Shows the current stage; `log` prints above it. Use as a context manager."""

    def __init__(
        self,
        stages: int,
        *,
        live: bool | None = None,
        echo: Callable[[str], None] | None = None,
        plain_every: float = 30.0,
    ) -> None:
        self.stages = stages
        self.live_enabled = sys.stdout.isatty() if live is None else live
        self.echo = echo or (lambda line: print(line, flush=True))
        self.plain_every = plain_every
        self.index = 0
        self.name = ""
        self.probe: Callable[[], StageStatus] | None = None
        self.started = time.monotonic()
        self.first: tuple[float, float] | None = None
        self.estimates: list[float | None] = []
        self._live: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._last_plain = ("", 0.0)

    def __enter__(self) -> RunProgress:
        if self.live_enabled:
            from rich.live import Live

            self._live = Live(get_renderable=self.render, refresh_per_second=2, transient=True)
            self._live.start()
        else:
            self._thread = threading.Thread(target=self._plain_loop, daemon=True, name="progress")
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._live is not None:
            self._live.stop()
        if self._thread is not None:
            self._thread.join(2)

    def log(self, line: str) -> None:
        if self._live is not None:
            self._live.console.print(line, markup=False, highlight=False)
        else:
            self.echo(line)

    def start_stage(
        self,
        index: int,
        name: str,
        describe: str,
        probe: Callable[[], StageStatus] | None,
        later: list[float | None],
    ) -> None:
        """`later`: estimated seconds of the stages after this one (None where unknown)."""
        with self._lock:
            self.index, self.name, self.probe = index, name, probe
            self.started, self.first, self.estimates = time.monotonic(), None, later
            self._last_plain = ("", time.monotonic())
        self.log(f"[{index}/{self.stages}] {name}: {describe}")

    def end_stage(self, verdict: str, seconds: float) -> None:
        with self._lock:
            self.probe = None
        self.log(f"[{self.index}/{self.stages}] {self.name}: {verdict} in {seconds:.1f} s")

    def status(self) -> tuple[StageStatus, float, float | None, float | None]:
        """(status, elapsed, stage eta, run eta) of the current stage, for either display."""
        with self._lock:
            probe, started = self.probe, self.started
        try:
            status = probe() if probe else StageStatus("")
        except Exception:  # a probe reads files a stage is writing; never let it break the run
            status = StageStatus("working")
        now = time.monotonic()
        stage_eta = None
        if status.done:
            with self._lock:
                # The rate starts at the first count seen above zero: loading a model before
                # step 1 is not part of it (a count that went down restarts it).
                if self.first is None or status.done < self.first[1]:
                    self.first = (now, status.done)
                stage_eta = eta_seconds(self.first, (now, status.done), status.total)
        later = self.estimates
        run_eta = None
        if stage_eta is not None and all(e is not None for e in later):
            run_eta = stage_eta + sum(e for e in later if e is not None)
        return status, now - started, stage_eta, run_eta

    def line(self) -> str:
        status, elapsed, stage_eta, run_eta = self.status()
        parts = [f"[{self.index}/{self.stages}] {self.name}: {status.doing}"]
        if status.done is not None and status.total:
            parts.append(f"{status.done:g}/{status.total:g} {status.unit}".rstrip())
        parts.append(f"{clock(elapsed)} elapsed")
        parts.append(f"stage eta {clock(stage_eta)}")
        if self.index < self.stages:
            parts.append(f"run eta {clock(run_eta)}")
        return " · ".join(parts)

    def render(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        if self.probe is None:
            return Table.grid()
        status, *_ = self.status()
        grid = Table.grid(padding=(0, 1))
        fraction = (
            (status.done or 0) / status.total if status.total and status.done is not None else None
        )
        bar = ProgressBar(total=1.0, completed=fraction or 0, width=24, pulse=fraction is None)
        grid.add_row(bar, self.line())
        return grid

    def _plain_loop(self) -> None:
        while not self._stop.wait(0.5):
            if self.probe is None:
                continue
            status, *_ = self.status()
            doing, printed_at = self._last_plain
            if status.doing != doing or time.monotonic() - printed_at >= self.plain_every:
                self._last_plain = (status.doing, time.monotonic())
                self.echo(self.line())
