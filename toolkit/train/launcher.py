"""Training in child processes: one `toolkit.train.worker`, or `python -m torch.distributed.run`
starting one per rank. The caller's process never imports the training stack, so its GPU memory
is freed when training ends and Unsloth's patches never reach export or serving. Ctrl-C/SIGTERM
are forwarded (ranks checkpoint and stop together), no process outlives the launcher (not even
after a SIGKILL of it), and a failing rank becomes one clear error."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import toolkit
from toolkit.core.errors import EXIT_INTERNAL, TuneserveError
from toolkit.core.orphans import die_with_parent
from toolkit.train.parallel import ParallelPlan

# torchrun gives its ranks 30 s to stop after SIGTERM; a checkpoint save fits in that.
GRACE_SECONDS = 90.0


class RankFailed(TuneserveError):
    """A rank of a multi-process run failed; exit code is the rank's own."""

    def __init__(self, message: str, hint: str | None, exit_code: int) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code


def last_checkpoint(folder: Path) -> Path | None:
    found = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)


def worker_command(plan: ParallelPlan, job_dir: Path) -> list[str]:
    """One process: the worker itself. Several: torchrun, which starts a worker per rank."""
    if not plan.distributed:
        return [sys.executable, "-m", "toolkit.train.worker", str(job_dir)]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a local rendezvous on a free port: runs side by side never collide
        f"--nproc_per_node={plan.world_size}",
        "--max_restarts=0",
        "-m",
        "toolkit.train.worker",
        str(job_dir),
    ]


def child_env(plan: ParallelPlan, cuda: bool) -> dict[str, str]:
    """The parent's environment (NCCL_* settings included) plus what the ranks need."""
    env = dict(os.environ)
    repo = str(Path(toolkit.__file__).resolve().parent.parent)  # `-m toolkit...` works uninstalled
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not cuda and "OMP_NUM_THREADS" not in env:
        # torchrun would pin every rank to 1 thread; share the cores out instead
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // plan.world_size))
    return env


def launch(
    plan: ParallelPlan,
    job: dict[str, Any],
    folder: Path,
    cuda: bool,
    progress: bool,
) -> dict[str, Any]:
    """Run the ranks; return rank 0's outcome (SessionOutcome fields), or raise RankFailed.

    `job` holds what every rank needs (see toolkit.train.worker). Rank 0's output reaches the
    user when `progress` is on; every rank's output is kept in <run>/logs/train-ranks.log.
    """
    job_dir = Path(tempfile.mkdtemp(prefix=".launch-", suffix=".tmp", dir=folder))
    log = folder / "logs" / "train-ranks.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        (job_dir / "job.json").write_text(json.dumps({**job, "plan": plan.__dict__}))
        with log.open("ab") as handle:
            handle.write(f"\n--- {' '.join(worker_command(plan, job_dir))}\n".encode())
            handle.flush()
            process = subprocess.Popen(
                worker_command(plan, job_dir),
                stdin=subprocess.DEVNULL,
                stdout=None if progress else handle,
                stderr=handle,
                env=child_env(plan, cuda),
                start_new_session=True,  # a terminal's Ctrl-C reaches only us; we forward it
                preexec_fn=die_with_parent(),  # a SIGKILL of tuneserve takes training with it
            )
        interrupted = _wait(process, job_dir)
        return _outcome(process.returncode, job_dir, folder, log, interrupted, plan.world_size)
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)


def _wait(process: subprocess.Popen, job_dir: Path) -> bool:
    """Wait for torchrun; forward the first Ctrl-C/SIGTERM, kill everything on the second one
    or when the ranks have not stopped GRACE_SECONDS after the first."""
    stops: list[float] = []  # when each signal came

    def forward(signum: int, frame: Any) -> None:
        stops.append(time.monotonic())
        if len(stops) == 1:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)  # torchrun passes it to every rank

    in_main = threading.current_thread() is threading.main_thread()
    signals = (signal.SIGINT, signal.SIGTERM) if in_main else ()
    previous = {sig: signal.signal(sig, forward) for sig in signals}
    try:
        while process.poll() is None:
            if len(stops) > 1 or (stops and time.monotonic() - stops[0] > GRACE_SECONDS):
                break
            time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _reap(process, job_dir)
    return bool(stops)


def _reap(process: subprocess.Popen, job_dir: Path) -> None:
    """Leave nothing running: torchrun's group, then each rank (ranks run in their own sessions)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for pid_file in job_dir.glob("pid-*"):
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def _outcome(
    code: int, job_dir: Path, folder: Path, log: Path, interrupted: bool, world: int
) -> dict[str, Any]:
    outcome = job_dir / "outcome.json"
    if outcome.is_file():
        return json.loads(outcome.read_text())
    if interrupted:
        checkpoint = last_checkpoint(folder / "checkpoints")
        steps = int(checkpoint.name.split("-")[-1]) if checkpoint else 0
        return {"steps": steps, "final_loss": float("nan"), "interrupted": True}
    errors = [json.loads(path.read_text()) for path in job_dir.glob("error-*.json")]
    if errors:
        first = min(errors, key=lambda error: error["time"])
        where = f" on rank {first['rank']} of {world}" if world > 1 else ""
        raise RankFailed(
            f"training failed{where}: {first['message']}",
            first["hint"] or f"every rank's output is in {log}",
            first["exit_code"],
        )
    raise RankFailed(
        f"the training process{'es' if world > 1 else ''} exited with code {code} and did not "
        "say why (killed from outside, or out of memory?)",
        f"every rank's output is in {log}",
        EXIT_INTERNAL,
    )
