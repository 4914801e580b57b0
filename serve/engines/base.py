"""The engine interface: the command to run, where it listens, and how readiness is seen."""

from __future__ import annotations

import secrets
import socket
import threading
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import ClassVar

from serve.chat_template import template_renders_tools
from toolkit.core.errors import TuneserveError


class EngineError(TuneserveError):
    """An engine failed to start or died; the message quotes its last log lines."""


# Ports this process handed out lately. An engine binds its port only once it is running, so
# the OS would happily give the same free port to the next engine started beside it (seen in
# CI: base and tuned engines of one run, one of them then "couldn't bind").
_handed_out: deque[int] = deque(maxlen=1024)
_handing_out = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it), and none this process handed
    out lately. Another process can still take it before the engine binds it: the supervisor
    then starts the engine again on a fresh one (serve/supervisor.py)."""
    with _handing_out:
        for _ in range(64):  # a few draws suffice unless the OS has almost no ports left
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = sock.getsockname()[1]
            if port not in _handed_out:
                break
        _handed_out.append(port)
        return port


def keep_free(port: int) -> None:
    """Never hand out `port` to an engine: the gateway binds it only after its engines are up."""
    with _handing_out:
        _handed_out.append(port)


def new_engine_key() -> str:
    """A fresh random key per engine: only the gateway that started it knows it."""
    return secrets.token_urlsafe(32)


@dataclass
class Engine(ABC):
    """One engine process serving one model under `name` on 127.0.0.1:`port`.

    Every engine requires `api_key` (random unless given): the gateway checks the client's key
    and applies the mode's sampling, so a local process calling the engine's port directly
    must not get around either. The key reaches the engine through its environment
    (`key_environment`), never its command line, which `ps` and the engine log show.
    """

    name: str
    model_path: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    api_key: str | None = field(default_factory=new_engine_key, repr=False)
    visible_devices: str | None = None  # CUDA_VISIBLE_DEVICES of this engine (a replica's GPUs)
    # `tuneserve serve --engine-arg`: passed through verbatim after the launcher's own flags
    extra_args: list[str] = field(default_factory=list)

    kind: ClassVar[str] = "engine"  # "llamacpp", "vllm"
    # True when the gateway renders the chat template and calls /v1/completions (see llamacpp.py)
    renders_chat: ClassVar[bool] = False
    # True when the engine itself renders tools, enforces tool_choice and parses tool calls
    # (vLLM); else the gateway does (serve/tools.py)
    parses_tools: ClassVar[bool] = False
    embeddings: bool = False  # serves /v1/embeddings only (`tuneserve serve --embeddings`)
    # False when /v1/completions ignores `echo` and writes chat-shaped logprobs (llama-server)
    legacy_completions: ClassVar[bool] = True
    # Whether a keep-alive connection to it may carry the next request (see LlamaCppEngine).
    reuses_connections: ClassVar[bool] = True

    @abstractmethod
    def command(self) -> list[str]:
        """The argv that starts the engine."""

    def argv(self) -> list[str]:
        """What the supervisor runs: the launcher's command, then the user's own flags."""
        return [*self.command(), *self.extra_args]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def readiness_url(self) -> str:
        """GET answers 200 once the engine serves requests."""
        return f"{self.base_url}/v1/models"

    def env(self) -> dict[str, str]:
        """Extra environment variables for the child: its devices and its key."""
        extra = self.key_environment() if self.api_key else {}
        if self.visible_devices is not None:
            extra["CUDA_VISIBLE_DEVICES"] = self.visible_devices
        return extra

    @abstractmethod
    def key_environment(self) -> dict[str, str]:
        """The variable(s) through which this engine reads `api_key`."""

    def chat_template(self) -> str | None:
        """The model's chat template, when the gateway can read it."""
        return None

    @cached_property
    def renders_tools(self) -> bool:
        """Whether the model's template writes tool definitions into the prompt."""
        return template_renders_tools(self.chat_template())

    def extra_sampling(self) -> dict[str, float]:
        """Fields sent with every request so the engine's own defaults never leak (SPEC §5)."""
        return {}
