"""Prints the reliability suite's counts in pytest's terminal summary."""

from __future__ import annotations

from tests.reliability.counts import COUNTS


def pytest_terminal_summary(terminalreporter) -> None:
    if not COUNTS:
        return
    terminalreporter.section("reliability counts")
    for what, n in sorted(COUNTS.items()):
        terminalreporter.write_line(f"{n:>8}  {what}")
