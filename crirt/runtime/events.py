"""Container lifecycle events for GetContainerEvents (the kubelet's evented PLEG).

The broadcaster is fed from the state transitions (``Emitter``); it never blocks
them: each subscriber has a bounded queue, and an event that does not fit is dropped and
counted (the subscriber's kubelet falls back to relisting). Events carry copies of the records
as they were at the transition, so the RPC layer can build the statuses later.
"""

from __future__ import annotations

import asyncio
import copy
import enum
import time
from dataclasses import dataclass, field

from crirt.runtime.model import Container, Sandbox
from crirt.runtime.records import Records


class EventType(enum.Enum):
    CREATED = "created"
    STARTED = "started"
    STOPPED = "stopped"
    DELETED = "deleted"


@dataclass(frozen=True)
class Event:
    type: EventType
    id: str  # a container id, or a sandbox id for the pod's own events
    created_at: int
    sandbox: Sandbox | None
    containers: tuple[Container, ...] = field(default=())


class EventBroadcaster:
    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self.dropped = 0
        self.published = 0
        self._subs: set[asyncio.Queue[Event]] = set()

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(
        self,
        type_: EventType,
        obj_id: str,
        sandbox: Sandbox | None,
        containers: list[Container] | tuple[Container, ...] = (),
    ) -> None:
        """Queue an event for every subscriber; call on the event loop. Free without them."""
        if not self._subs:
            return
        ev = Event(
            type_,
            obj_id,
            time.time_ns(),
            copy.copy(sandbox) if sandbox is not None else None,
            tuple(copy.copy(c) for c in containers),
        )
        self.published += 1
        for q in self._subs:
            try:
                q.put_nowait(ev)
            except asyncio.QueueFull:
                self.dropped += 1

    def subscribe(self) -> Subscription:
        """Events from now on, until the subscription is closed (use it as a context)."""
        return Subscription(self)


class Subscription:
    def __init__(self, broadcaster: EventBroadcaster) -> None:
        self._b = broadcaster
        self._q: asyncio.Queue[Event] = asyncio.Queue(broadcaster.queue_size)
        broadcaster._subs.add(self._q)

    async def get(self) -> Event:
        return await self._q.get()

    def close(self) -> None:
        self._b._subs.discard(self._q)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Emitter:
    """Publishes lifecycle events with the pod and its containers as they are now."""

    def __init__(self, records: Records, broadcaster: EventBroadcaster) -> None:
        self.records = records
        self.broadcaster = broadcaster

    def emit(self, type_: EventType, obj_id: str, sandbox_id: str) -> None:
        """An event of ``obj_id`` (a container, or the pod itself); free while nobody
        subscribes."""
        if not self.broadcaster.subscribers:
            return
        sb = self.records.sandboxes.find(sandbox_id) if sandbox_id else None
        self.broadcaster.publish(type_, obj_id, sb, self.records.containers_of(sandbox_id))
