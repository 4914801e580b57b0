"""Counters the reliability suite prints at the end of `make test`: inputs tried, faults
survived, requests served and errors, each broken down by what was counted."""

from __future__ import annotations

from collections import Counter

GROUPS = ("inputs tried", "faults survived", "requests served", "errors")
COUNTS: Counter[str] = Counter()
GROUP_OF: dict[str, str] = {}
MEASURES: dict[str, str] = {}

# Fault tests that live beside the code they break (training, export, eval, serving): the
# summary counts them as survived when they passed in the same session.
FAULT_TESTS = {
    "test_resume_after_kill_reaches_the_same_loss_as_a_straight_run": (
        "kill -9 during training, --resume reached the same loss"
    ),
    "test_killed_export_leaves_nothing_complete_looking_and_rerun_finishes": (
        "kill -9 during GGUF export, nothing half-written, re-run finished"
    ),
    "test_killed_eval_resumes_from_its_cache_without_repeating_requests": (
        "kill -9 during eval, re-run sent only the missing requests"
    ),
    "test_crash_gives_503_then_the_engine_is_restarted": (
        "engine killed: 503 at once, restarted, serving again"
    ),
    "test_sigterm_of_tuneserve_serve_leaves_no_process": "SIGTERM of serve left no process",
}


def record(what: str, n: int = 1, group: str = "inputs tried") -> None:
    """Count `n` of `what` under one of GROUPS (the default suits the fuzz tests)."""
    assert group in GROUPS, group
    GROUP_OF[what] = group
    COUNTS[what] += n


def measure(what: str, value: str) -> None:
    """A figure to print beside the counts (fds and RSS before/after a load run, rates)."""
    MEASURES[what] = value


def passed_fault_tests(nodeids: list[str]) -> dict[str, int]:
    """The FAULT_TESTS among passed test ids, by description (parametrized ids count each)."""
    found: Counter[str] = Counter()
    for nodeid in nodeids:
        name = nodeid.rsplit("::", 1)[-1].split("[", 1)[0]
        if name in FAULT_TESTS:
            found[FAULT_TESTS[name]] += 1
    return dict(found)
