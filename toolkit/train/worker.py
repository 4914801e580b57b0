"""The training process: `python -m toolkit.train.worker JOB_DIR`, alone or as one torchrun rank.

`toolkit.train.launcher` prepares JOB_DIR (job.json) and starts it; each rank trains with the
run's saved recipe and data, and reports back through files in JOB_DIR: `pid-<rank>` (so the
launcher can reap it), `error-<rank>.json` when it fails, and rank 0's `outcome.json`.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from toolkit.core.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, TuneserveError


def record_error(job_dir: Path, rank: int, message: str, hint: str | None, code: int) -> None:
    first_line = (message.strip().splitlines() or ["(no message)"])[0][:400]
    report = {"rank": rank, "message": first_line, "hint": hint, "exit_code": code}
    report["time"] = time.time()  # the first rank to fail is the cause; later ones are echoes
    (job_dir / f"error-{rank}.json").write_text(json.dumps(report))


def run_rank(job: dict[str, Any], rank: int) -> Any:
    if job["backend"] == "unsloth":
        # Unsloth patches transformers, PEFT and TRL when imported: it must come before them
        # (on the GPU machine a later import warned that optimizations may not apply).
        import unsloth  # noqa: F401

    from toolkit.core.quiet import quiet_libraries
    from toolkit.recipe.loader import load_recipe
    from toolkit.train.parallel import ParallelPlan
    from toolkit.train.session import run_session

    quiet_libraries()
    _restore_indexed_cpu_locations()
    folder = Path(job["folder"])
    recipe = load_recipe(folder / "recipe.yaml")  # the resolved recipe the launcher saved
    lines = (folder / "data" / "train.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    main = rank == 0
    return run_session(
        recipe,
        job["backend"],
        Path(job["model_path"]),
        rows,
        folder,
        Path(job["resume_from"]) if job["resume_from"] else None,
        job["progress"] and main,
        lambda _: None,  # the launching process already said what this process would say
        ParallelPlan(**job["plan"]),
    )


def _restore_indexed_cpu_locations() -> None:
    """Let `torch.load(..., map_location="cpu:0")` work: transformers resumes a multi-process
    run's optimizer with map_location=args.device, which is `cpu:0` under gloo, and torch only
    knows how to restore `cpu` (RuntimeError "don't know how to restore data location")."""
    import torch.serialization

    def restore(storage: Any, location: str) -> Any:
        return storage if location.startswith("cpu:") else None

    torch.serialization.register_package(5, lambda storage: None, restore)


def main(argv: list[str]) -> int:
    job_dir = Path(argv[1])
    rank = int(os.environ.get("RANK", "0"))
    (job_dir / f"pid-{rank}").write_text(str(os.getpid()))
    if rank != 0:
        os.dup2(2, 1)  # only rank 0 talks to the user; the others' output goes to the log
    try:
        outcome = run_rank(json.loads((job_dir / "job.json").read_text()), rank)
    except TuneserveError as exc:
        record_error(job_dir, rank, exc.message, exc.hint, exc.exit_code)
        return exc.exit_code
    except BaseException as exc:  # noqa: BLE001 (a rank's crash must reach the launcher)
        traceback.print_exc()
        message = f"{type(exc).__name__}: {exc}"
        interrupted = isinstance(exc, KeyboardInterrupt)
        code = EXIT_INTERRUPTED if interrupted else EXIT_INTERNAL
        record_error(job_dir, rank, message, None, code)
        return code
    _leave_process_group()  # not after a failure: a peer may be stuck in a collective
    if rank == 0:
        (job_dir / "outcome.json").write_text(json.dumps(asdict(outcome)))
    return 0


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
