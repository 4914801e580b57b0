"""Child processes that cannot outlive tuneserve, even when it is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` for subprocess: the kernel kills the child when tuneserve dies, so no
    orphan keeps writing a file or holding a model after its parent is gone. None off Linux."""
    if sys.platform != "linux":
        return None
    parent = os.getpid()

    def arm() -> None:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        # The parent may have died between fork and prctl; the signal then never comes, and
        # the child would run on as an orphan (seen: a converter writing a temp file after the
        # re-run had cleaned the folder).
        if os.getppid() != parent:
            os._exit(1)

    return arm
