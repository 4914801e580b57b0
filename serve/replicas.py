"""Several engine processes of one model behind one name (`tuneserve serve --replicas N`).

Each request goes to the live replica with the fewest requests in flight (ties rotate, so a
quiet pool still spreads work). A replica is out of rotation while its supervisor says it is
down, and for EJECT_SECONDS after a connection to it failed (its crash may not be noticed yet);
a failed connection is retried once on another replica. A restarted replica rejoins as soon as
its supervisor sees it ready.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from serve.protocol import GatewayError
from toolkit.core.errors import TuneserveError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from serve.engines.base import Engine
    from serve.supervisor import Supervisor

EJECT_SECONDS = 5.0


@dataclass(frozen=True)
class ScaleOut:
    """How many engines serve each model and how many GPUs each one spans."""

    replicas: int = 1
    gpus: int | None = None  # GPUs per engine (None: the engine's default, one or none)
    pipeline_parallel: int = 1  # vLLM only: pipeline stages over those GPUs
    models: int = 1  # models served side by side, each with `replicas` engines
    vllm_models: int = 0  # how many of them run on vLLM (they share each GPU's memory)

    @property
    def cpu_threads(self) -> int | None:
        """Threads per llama.cpp engine on CPU: every engine gets its share of the cores.

        llama.cpp's threads spin while they wait, so two engines each given every core slow
        each other down several times over (seen: base and tuned served together on 2 cores).
        """
        engines = self.replicas * self.models
        return max(1, (os.cpu_count() or 1) // engines) if engines > 1 else None

    @property
    def vllm_memory_fraction(self) -> float:
        """--gpu-memory-utilization of each vLLM engine. vLLM claims that share of a GPU up
        front, so two models side by side asking 0.9 each would not both start."""
        return round(0.9 / max(1, self.vllm_models), 3)

    def vllm_sizes(self) -> tuple[int, int]:
        """(tensor, pipeline) parallel sizes: --gpus N spans N GPUs, N/P per pipeline stage."""
        gpus = self.gpus or self.pipeline_parallel
        if gpus % self.pipeline_parallel:
            raise TuneserveError(
                f"--gpus {gpus} cannot be split into --pipeline-parallel "
                f"{self.pipeline_parallel} equal stages",
                "make --gpus a multiple of --pipeline-parallel",
            )
        return gpus // self.pipeline_parallel, self.pipeline_parallel


@dataclass
class Replica:
    """One engine process of a pooled model, with its load counters."""

    index: int
    upstream: str
    supervisor: Supervisor | None = None
    engine: Engine | None = None
    in_flight: int = 0
    served: int = 0
    _ejected_at: float | None = field(default=None, repr=False)
    _ejected_restarts: int = field(default=0, repr=False)

    @property
    def restarts(self) -> int:
        return self.supervisor.restarts if self.supervisor is not None else 0

    @property
    def up(self) -> bool:
        if self.supervisor is not None and not self.supervisor.ready:
            return False
        if self._ejected_at is None:
            return True
        if self.restarts > self._ejected_restarts:  # restarted since: a fresh process
            self._ejected_at = None
            return True
        return time.monotonic() - self._ejected_at > EJECT_SECONDS

    def eject(self) -> None:
        self._ejected_at, self._ejected_restarts = time.monotonic(), self.restarts


class ReplicaPool:
    """Least-busy routing over the replicas of one model."""

    def __init__(self, name: str, replicas: list[Replica]) -> None:
        self.name = name
        self.replicas = replicas
        self._turn = itertools.count()

    @property
    def up(self) -> bool:
        return any(replica.up for replica in self.replicas)

    @property
    def supervisors(self) -> list[Supervisor]:
        return [r.supervisor for r in self.replicas if r.supervisor is not None]

    def pick(self, exclude: set[int] = frozenset()) -> Replica | None:  # type: ignore[assignment]
        """The live replica with the fewest requests in flight, or None when all are down."""
        live = [r for r in self.replicas if r.index not in exclude and r.up]
        if not live:
            return None
        start = next(self._turn) % len(self.replicas)
        rotated = sorted(live, key=lambda r: (r.index - start) % len(self.replicas))
        return min(rotated, key=lambda r: r.in_flight)

    async def send(
        self,
        send: Callable[[Any, Any], Awaitable[Any]],
        request: Any,
        prepared: Any,
    ) -> Any:
        """Call the gateway's `send(request, prepared)` on a picked replica; a replica that
        cannot be reached (GatewayError 503 from a transport failure) is ejected, and the
        request tried on another one when it never reached the first, or when the first's
        process died with it (else it could be generated twice: the 503 goes to the client,
        whose own retry policy decides)."""
        tried: set[int] = set()
        while True:
            replica = self.pick(tried)
            if replica is None:
                raise GatewayError(
                    503, f"every replica of {self.name!r} is down; they are being restarted"
                )
            prepared.upstream = replica.upstream
            prepared.upstream_key = replica.engine.api_key if replica.engine else None
            replica.in_flight += 1
            try:
                response = await send(request, prepared)
            except GatewayError as exc:
                replica.in_flight -= 1
                if exc.status != 503:
                    raise
                replica.eject()
                if not exc.unsent and not await _died(replica):
                    raise
                tried.add(replica.index)
                continue
            except BaseException:
                replica.in_flight -= 1
                raise
            replica.served += 1
            body = getattr(response, "body_iterator", None)
            if body is None:
                replica.in_flight -= 1
            else:  # a stream: the replica is busy until its last chunk
                response.body_iterator = _ReleaseAtEnd(body, replica)
            return response

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Per-replica gauges on the gateway's /metrics."""
        from prometheus_client import Gauge

        labels = ["model", "replica"]
        gauges = {
            "in_flight": Gauge(
                "tuneserve_replica_in_flight", "Requests in flight", labels, registry=registry
            ),
            "served": Gauge(
                "tuneserve_replica_served", "Requests served since start", labels, registry=registry
            ),
            "up": Gauge("tuneserve_replica_up", "1 while in rotation", labels, registry=registry),
            "restarts": Gauge(
                "tuneserve_replica_restarts", "Restarts after a crash", labels, registry=registry
            ),
        }
        for replica in self.replicas:
            for key, gauge in gauges.items():
                gauge.labels(self.name, str(replica.index)).set_function(
                    lambda replica=replica, key=key: float(getattr(replica, key))
                )


class _ReleaseAtEnd:
    """A stream's body that frees its replica once: at the last chunk, an error, or aclose()
    (the response closes it when the client goes away, even before the first chunk)."""

    def __init__(self, body: AsyncIterator[bytes], replica: Replica) -> None:
        self.body, self.replica, self.released = body, replica, False

    def __aiter__(self) -> _ReleaseAtEnd:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.body.__anext__()
        except BaseException:  # StopAsyncIteration included: the stream is over
            self._release()
            raise

    async def aclose(self) -> None:
        self._release()
        closer = getattr(self.body, "aclose", None)
        if closer is not None:
            await closer()

    def _release(self) -> None:
        if not self.released:
            self.released = True
            self.replica.in_flight -= 1


async def _died(replica: Replica, within: float = 0.5) -> bool:
    """Whether the replica's engine process has exited, or exits within `within` seconds.

    A request written to an engine that died is not being generated anywhere, so it may go to
    another replica. The wait is for a killed engine: its sockets are reset while the process
    is exiting, a moment before the OS reports it gone (seen with SIGKILL: a connection made
    to the dying llama-server was reset, and the request was refused with a 503)."""
    supervisor = replica.supervisor
    if supervisor is None:
        return False
    deadline = time.monotonic() + within
    while not supervisor.exited:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def device_groups(replicas: int, gpus: int | None, visible: str | None) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES of each replica: replica i gets the i-th block of `gpus` devices.

    One replica, or no --gpus, keeps the parent's devices (None). `visible` is the parent's
    CUDA_VISIBLE_DEVICES (None: devices 0..N-1).
    """
    if replicas == 1 or not gpus:
        return [None] * replicas
    devices = [d.strip() for d in visible.split(",") if d.strip()] if visible else None
    if devices is None:
        devices = [str(i) for i in range(replicas * gpus)]
    if len(devices) < replicas * gpus:
        raise TuneserveError(
            f"--replicas {replicas} x --gpus {gpus} needs {replicas * gpus} GPUs and "
            f"CUDA_VISIBLE_DEVICES lists {len(devices)}",
            "lower --replicas or --gpus, or list more devices in CUDA_VISIBLE_DEVICES",
        )
    return [",".join(devices[i * gpus : (i + 1) * gpus]) for i in range(replicas)]
