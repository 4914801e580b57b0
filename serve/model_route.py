"""One served model as the gateway routes to it: where its engine listens, how to treat its
requests, and what watches its engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from serve.engines.base import Engine
from serve.identity import Identity
from serve.replicas import ReplicaPool
from serve.supervisor import Supervisor
from toolkit.core.modes import Mode


@dataclass
class ModelRoute:
    """One served model: where its engine listens and how to treat its requests."""

    name: str
    upstream: str
    server_mode: Mode
    knows_thinking: bool = False
    engine: Engine | None = None
    supervisor: Supervisor | None = None
    upstream_key: str | None = None
    extra_sampling: dict[str, float] = field(default_factory=dict)
    pool: ReplicaPool | None = None  # --replicas N: several engines behind this name
    # fields this name always sends, e.g. llama.cpp's per-request `lora` picking its adapter
    extra_body: dict[str, Any] = field(default_factory=dict)
    identity: Identity | None = None  # what files it serves, shown in /v1/models
    # For an engine started elsewhere (`engine` None): whether a kept-alive connection to it may
    # carry the next request; not to a llama-server (see LlamaCppEngine.reuses_connections).
    external_reuses_connections: bool = True

    @property
    def up(self) -> bool:
        if self.pool is not None:
            return self.pool.up
        return self.supervisor.ready if self.supervisor is not None else True

    @property
    def reuses_connections(self) -> bool:
        if self.engine is not None:
            return self.engine.reuses_connections
        return self.external_reuses_connections

    @property
    def renders_chat(self) -> bool:
        return bool(self.engine is not None and self.engine.renders_chat)
