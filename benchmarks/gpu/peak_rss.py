"""Run a command; print its wall time and the peak resident memory of its largest process.

    python3 benchmarks/gpu/peak_rss.py OUT.json -- COMMAND...

(`/usr/bin/time -v` is not on every machine; getrusage(RUSAGE_CHILDREN) after the wait is.)
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    out, command = Path(sys.argv[1]), sys.argv[sys.argv.index("--") + 1 :]
    started = time.monotonic()
    code = subprocess.call(command)
    seconds = time.monotonic() - started
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    report = {
        "command": command,
        "exit": code,
        "seconds": round(seconds, 1),
        "peak_rss_gib": round(peak_gib, 2),
    }
    out.write_text(json.dumps(report))
    print(json.dumps(report), file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
