"""The one error type users see; the CLI turns it into `error:`/`hint:` lines and an exit code."""

from __future__ import annotations

# Exit codes, one meaning each, so CI can tell "the model regressed" from "the tool broke".
EXIT_OK = 0
EXIT_CHECK_FAILED = 1  # a check ran and failed: a regression gate, `verify`
EXIT_USAGE = 2  # bad input or config: the user can fix it
EXIT_INTERNAL = 70  # a bug in tuneserve (EX_SOFTWARE in sysexits.h); report it
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM
EXIT_CODES_HELP = """\
Exit codes:
  0    ok
  1    a check failed (e.g. --fail-on-regression, verify)
  2    usage or config error (the message names the file/field and the fix)
  70   internal error: a bug in tuneserve, not in your model or recipe
  130  interrupted (Ctrl-C or SIGTERM)"""


class TuneserveError(Exception):
    """A problem the user can fix: bad input, missing file, wrong config. Exit code 2."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class CheckFailed(TuneserveError):
    """A check that ran and failed (a regression gate, a verification). Exit code 1."""

    exit_code = EXIT_CHECK_FAILED
