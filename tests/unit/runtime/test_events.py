"""The lifecycle event broadcaster: fan-out, copies, bounded queues that drop and count."""

from __future__ import annotations

import asyncio

from crirt._gen import api_pb2
from crirt.runtime.events import EventBroadcaster, EventType
from crirt.runtime.model import Container, ContainerState, Sandbox


def _sandbox() -> Sandbox:
    return Sandbox("s1", "k8s_POD_x", api_pb2.PodSandboxConfig(), "runc", 1, "/tmp/s1")


def _container() -> Container:
    return Container(
        "c1", "k8s_c_x", "s1", api_pb2.ContainerConfig(), "runc", "sha256:a", "a", "a", 1, "/d"
    )


def test_no_subscriber_costs_nothing() -> None:
    b = EventBroadcaster()
    b.publish(EventType.CREATED, "c1", _sandbox(), [_container()])
    assert (b.published, b.dropped) == (0, 0)


def test_every_subscriber_gets_a_snapshot() -> None:
    async def main() -> None:
        b = EventBroadcaster()
        c = _container()
        with b.subscribe() as s1, b.subscribe() as s2:
            b.publish(EventType.STARTED, c.id, _sandbox(), [c])
            c.state = ContainerState.EXITED  # later changes do not reach the queued event
            for sub in (s1, s2):
                ev = await sub.get()
                assert ev.type is EventType.STARTED
                assert ev.id == "c1"
                assert ev.created_at > 0
                assert ev.containers[0].state is ContainerState.CREATED
        assert b.subscribers == 0

    asyncio.run(main())


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    async def main() -> None:
        b = EventBroadcaster(queue_size=2)
        with b.subscribe() as slow:
            for t in (EventType.CREATED, EventType.STARTED, EventType.STOPPED):
                b.publish(t, "c1", None)
            assert b.dropped == 1
            assert (await slow.get()).type is EventType.CREATED
            assert (await slow.get()).type is EventType.STARTED

    asyncio.run(main())
