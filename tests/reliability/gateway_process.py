"""The real gateway in its own process, in front of an engine already listening at UPSTREAM, so
the load tests can measure its file descriptors and memory apart from the clients'.

python -m tests.reliability.gateway_process UPSTREAM PORT [API_KEY]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from serve.launcher import run_forever
from serve.model_source import ModelSource


def main() -> None:
    upstream, port = sys.argv[1], int(sys.argv[2])
    api_key = sys.argv[3] if len(sys.argv) > 3 else None
    logs = Path(tempfile.mkdtemp(prefix="gateway-logs-"))
    run_forever(
        [ModelSource(name="fake", url=upstream, engine="vllm")],
        port=port,
        api_key=api_key,
        log_dir=logs,
    )


if __name__ == "__main__":
    main()
