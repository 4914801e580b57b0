"""Hugging Face Hub model ids (`org/name[@revision]`): parsed, downloaded through huggingface_hub's
cache (HF_HOME / HF_HUB_CACHE, HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE as it reads them), and its
failures turned into one-line errors that name the id and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from toolkit.core.artifacts import is_disk_full
from toolkit.core.errors import TuneserveError

# What transformers, PEFT, tokenizers and llama.cpp's converter read from a model folder.
# Not .bin/.pth/.gguf/.onnx/.h5 weights: only safetensors are trained and exported here.
ALLOW_PATTERNS = [
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "*.model",  # sentencepiece
    "chat_template.jinja",
    "chat_template.json",
]
# transformers loads the top level only: subfolders (`original/`, `onnx/`, ...) hold other
# formats. Mistral repos add `consolidated.safetensors`, the same weights in Mistral's own
# layout: downloading it would double the download for nothing transformers reads.
IGNORE_PATTERNS = ["*/*", "consolidated*.safetensors"]

# The Hub's rules for a repo id (huggingface_hub's validate_repo_id): word characters, `-` and
# `.`, no `--` or `..`, at most 96 characters; so never a path starting with `.`, `/` or `~`.
# A revision is a branch, tag or commit after `@` (a branch may hold `/`: refs/pr/3).
_HUB_ID = re.compile(r"(?P<repo>\w[\w.-]*/\w[\w.-]*)(?:@(?P<revision>[^\s@]+))?", re.ASCII)


@dataclass(frozen=True)
class HubId:
    repo_id: str
    revision: str | None = None  # None: the repo's default branch

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id


def parse_hub_id(text: str) -> HubId | None:
    """`org/name` or `org/name@revision` as a HubId; None for anything else (a path, a builtin)."""
    match = _HUB_ID.fullmatch(text)
    if match is None:
        return None
    repo = match["repo"]
    if "--" in repo or ".." in repo or len(repo) > 96 or repo.endswith((".", "-", ".git")):
        return None
    return HubId(repo, match["revision"])


def download(hub_id: HubId) -> Path:
    """The snapshot folder of `hub_id` in the Hub cache (its name is the commit it resolved to),
    downloading only what training and export read; cached files are not fetched again."""
    from huggingface_hub import snapshot_download

    pinned = cached_commit(hub_id)
    if pinned is not None:
        return pinned
    try:
        with _progress_bars_shown():
            folder = Path(
                snapshot_download(
                    hub_id.repo_id,
                    revision=hub_id.revision,
                    allow_patterns=ALLOW_PATTERNS,
                    ignore_patterns=IGNORE_PATTERNS,
                )
            )
    except Exception as exc:
        error = explain(hub_id, exc)
        if error is None:
            raise
        raise error from exc
    if not any(folder.glob("*.safetensors")):
        raise _no_safetensors(hub_id, folder)
    return folder


def cached_commit(hub_id: HubId) -> Path | None:
    """The cached snapshot of a revision that is a full commit hash, if it holds weights.

    A commit never changes, so nothing needs asking; huggingface_hub would still list the repo
    tree when its own tree cache is missing (caches written by older versions), which fails
    offline (seen: a run pinned to its training's commit could not export with HF_HUB_OFFLINE=1).
    """
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    if not hub_id.revision or not re.fullmatch(r"[0-9a-f]{40}", hub_id.revision):
        return None
    storage = Path(constants.HF_HUB_CACHE) / repo_folder_name(
        repo_id=hub_id.repo_id, repo_type="model"
    )
    folder = storage / "snapshots" / hub_id.revision
    return folder if any(folder.glob("*.safetensors")) else None


def snapshot_commit(folder: Path) -> str | None:
    """The commit a Hub cache snapshot folder holds (`.../snapshots/<commit>`), else None."""
    if folder.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", folder.name):
        return folder.name
    return None


def snapshot_file_sha256(path: Path) -> str | None:
    """The sha256 of a file in a Hub cache snapshot without reading it: an LFS file's blob is
    named by its sha256 (a plain git file's by its 40-hex git hash, which is not one)."""
    if not path.is_symlink():
        return None
    blob = path.resolve().name
    return blob if re.fullmatch(r"[0-9a-f]{64}", blob) else None


def explain(hub_id: HubId, exc: BaseException) -> TuneserveError | None:
    """huggingface_hub's failure as one line naming the id and the fix; None if not a Hub failure."""
    import httpx
    from huggingface_hub import constants, errors, get_token

    endpoint, cache = constants.ENDPOINT, constants.HF_HUB_CACHE
    page = f"{endpoint}/{hub_id.repo_id}"
    where = f"model.name {hub_id}"
    local = "or give a local model folder"
    no_token = get_token() is None
    if isinstance(exc, errors.GatedRepoError):  # a subclass of RepositoryNotFoundError
        whose = (
            "no token was sent" if no_token else "the token's account has not been granted access"
        )
        return TuneserveError(
            f"{where}: the Hub repo is gated and {whose}",
            f"accept the license on {page} while logged in, then use that account's token "
            "(HF_TOKEN=... or `hf auth login`)",
        )
    if isinstance(exc, errors.RepositoryNotFoundError):
        why = "no token was sent" if no_token else "the token in use has no access to it"
        return TuneserveError(
            f"{where}: not a local folder, and the Hub at {endpoint} has no repo "
            f"{hub_id.repo_id} (or it is private and {why})",
            "check the id on the Hub; for a private repo set HF_TOKEN or run `hf auth login`; "
            "for a local folder give a path that exists (./ or / first)",
        )
    if isinstance(exc, errors.RevisionNotFoundError):
        revision = hub_id.revision or "main"
        return TuneserveError(
            f"{where}: revision {revision!r} does not exist in Hub repo {hub_id.repo_id}",
            f"use a branch, tag or commit listed on {page}, or drop '@{revision}' for the "
            "default branch",
        )
    offline = isinstance(exc, errors.OfflineModeIsEnabled)
    if offline or isinstance(exc, errors.LocalEntryNotFoundError):  # IncompleteSnapshot too
        if offline or constants.HF_HUB_OFFLINE:
            return TuneserveError(
                f"{where}: HF_HUB_OFFLINE is set and the Hub cache {cache} holds no complete "
                "snapshot of it",
                "download it once with the network on (unset HF_HUB_OFFLINE), point HF_HUB_CACHE "
                "at a cache that holds it, " + local,
            )
        cause = exc.__cause__  # what the Hub call met before the cache was looked in
        met = (
            f"the Hub at {endpoint} answered HTTP {cause.response.status_code}"
            if isinstance(cause, errors.HfHubHTTPError) and cause.response is not None
            else f"cannot reach the Hub at {endpoint}"
        )
        return TuneserveError(
            f"{where}: {met} and the cache {cache} does not hold it",
            "check the network, proxy and HF_ENDPOINT; or copy a cache that holds it and set "
            "HF_HUB_OFFLINE=1; " + local,
        )
    if isinstance(exc, errors.HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status in (401, 403):
            whose = "an anonymous request" if no_token else "the token in use"
            return TuneserveError(
                f"{where}: the Hub at {endpoint} refused {whose} (HTTP {status})",
                "set a valid token in HF_TOKEN or run `hf auth login` again",
            )
        return TuneserveError(
            f"{where}: the Hub at {endpoint} answered HTTP {status}",
            "try again later (files already downloaded stay in the cache)",
        )
    if isinstance(exc, httpx.HTTPError):
        return TuneserveError(
            f"{where}: the download from {endpoint} failed ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})",
            "run the command again: files already downloaded stay in the cache and are not "
            "fetched again",
        )
    if is_disk_full(exc):
        return TuneserveError(
            f"{where}: no space left on device while downloading into {cache}",
            "free some disk space or point HF_HUB_CACHE (or HF_HOME) at a larger disk",
        )
    return None


def _no_safetensors(hub_id: HubId, folder: Path) -> TuneserveError:
    try:
        from huggingface_hub import get_cached_repo_tree

        listed = [f.path for f in get_cached_repo_tree(hub_id.repo_id, revision=folder.name)]
    except Exception:  # no listing cached (an offline copy), or an older huggingface_hub
        listed = []
    other = sorted(p for p in listed if p.endswith((".bin", ".pth", ".pt", ".gguf", ".h5")))
    found = f"only {', '.join(other[:3])}{' ...' if len(other) > 3 else ''}" if other else "none"
    return TuneserveError(
        f"model.name {hub_id}: the Hub repo has no .safetensors weights ({found}); tuneserve "
        "trains and exports safetensors only",
        "pick a repo with safetensors (for a -GGUF repo, the model it was made from), or "
        "convert: load it with transformers, save_pretrained(DIR) (safetensors by default), "
        "and give DIR as model.name",
    )


@contextmanager
def _progress_bars_shown() -> Iterator[None]:
    """tuneserve silences the libraries' progress bars while training, but a download of
    gigabytes wants one; HF_HUB_DISABLE_PROGRESS_BARS=1 still turns it off."""
    from huggingface_hub import constants
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    silenced = are_progress_bars_disabled() and constants.HF_HUB_DISABLE_PROGRESS_BARS is not True
    if silenced:
        enable_progress_bars()
    try:
        yield
    finally:
        if silenced:
            disable_progress_bars()
