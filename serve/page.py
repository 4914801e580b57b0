"""The compare page at `/` (SPEC §7): a static shell (page/: index.html, its scripts and style) that
holds no data and so needs no key, and the data it reads behind the gateway's key: the eval
report and the training run of `tuneserve serve --report DIR`.

A browser cannot send `Authorization` when it opens a page, so the shell asks for the key once
(kept in the tab's sessionStorage) and sends it as a Bearer key with every data call, exactly as
an OpenAI client does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serve.protocol import error_response
from toolkit.core.errors import TuneserveError

STATIC_DIR = Path(__file__).with_name("page")
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# The shell runs only its own script and stylesheet and talks only to this gateway.
SHELL_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}
# A recipe.yaml written before secrets were kept out of run folders may still hold one.
_SECRET_LINE = re.compile(r"^(\s*api_key\s*:\s*)\S.*$", re.MULTILINE)

KeyCheck = Callable[[Request], Response | None]


def find_report_dir(path: Path) -> Path:
    """The folder `--report` names: an eval folder (report.json, once an eval has written it),
    or a run folder whose eval/ is one. A missing folder is an error before anything starts."""
    path = path.expanduser()
    if (path / "eval" / "report.json").is_file() and not (path / "report.json").is_file():
        path = path / "eval"
    if not path.is_dir():
        raise TuneserveError(
            f"--report {path}: no such folder",
            "give a run's eval folder, e.g. --report models/runs/NAME/eval "
            "(written by `tuneserve run` or `tuneserve eval --report DIR`)",
        )
    return path.resolve()


def read_run(folder: Path) -> dict[str, Any] | None:
    """The training run a report sits in: its loss curve (metrics.jsonl) and its recipe."""
    metrics_path, recipe_path = folder / "metrics.jsonl", folder / "recipe.yaml"
    if not metrics_path.is_file() and not recipe_path.is_file():
        return None
    metrics = []
    if metrics_path.is_file():
        for line in metrics_path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut while training was writing it
                continue
            if isinstance(row, dict):
                metrics.append(row)
    recipe = None
    if recipe_path.is_file():
        recipe = _SECRET_LINE.sub(r"\1<hidden>", recipe_path.read_text(errors="replace"))
    return {"name": folder.name, "folder": str(folder), "metrics": metrics, "recipe": recipe}


def page_routes(check_key: KeyCheck, report_dir: Path | None) -> list[Route]:
    """Routes of the page: the shell (open) and its data (behind `check_key`)."""
    # URL path -> (bytes, media type), read once: a fixed table, so no request names a file.
    shell = {
        "/" if file.name == "index.html" else f"/page/{file.name}": (
            file.read_bytes(),
            MEDIA_TYPES[file.suffix],
        )
        for file in sorted(STATIC_DIR.iterdir())
        if file.suffix in MEDIA_TYPES
    }

    async def static(request: Request) -> Response:
        content, media = shell[request.url.path]
        return Response(content, media_type=media, headers=SHELL_HEADERS)

    async def report(request: Request) -> Response:
        if (denied := check_key(request)) is not None:
            return denied
        if report_dir is None:
            return _not_found(
                "no eval report: start the gateway with --report models/runs/NAME/eval"
            )
        path = report_dir / "report.json"
        if not path.is_file():
            return _not_found(
                f"no report.json in {report_dir} yet: run an eval with --report there"
            )
        try:
            # NaN (a suite whose every answer failed has no latency) is not JSON a browser reads
            data = json.loads(path.read_bytes(), parse_constant=lambda _: None)
        except ValueError as exc:
            return error_response(500, f"{path} is not valid JSON ({exc}); run the eval again")
        return JSONResponse(data)

    async def run(request: Request) -> Response:
        if (denied := check_key(request)) is not None:
            return denied
        found = read_run(report_dir.parent) if report_dir is not None else None
        if found is None:
            return _not_found(
                "no training run: --report names no folder inside a run "
                "(models/runs/NAME/eval, beside metrics.jsonl and recipe.yaml)"
            )
        return JSONResponse(found)

    return [
        *(Route(path, static, methods=["GET"]) for path in shell),
        Route("/page/api/report", report, methods=["GET"]),
        Route("/page/api/run", run, methods=["GET"]),
    ]


def _not_found(message: str) -> Response:
    return error_response(404, message, code="not_found")
