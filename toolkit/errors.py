"""The one error type users see; the CLI turns it into `error:`/`hint:` lines and an exit code."""

from __future__ import annotations


class TuneserveError(Exception):
    """A problem the user can fix: bad input, missing file, wrong config. Exit code 2."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class CheckFailed(TuneserveError):
    """A check that ran and failed (a regression gate, a verification). Exit code 1."""

    exit_code = 1
