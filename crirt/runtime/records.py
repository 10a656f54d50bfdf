"""Where the lifecycle keeps its records: the state directory's layout, the in-memory indexes,
the per-object locks, and the creations in progress.

Invariant: the indexes are the only source the hot paths (List*, *Status) read; they are
rebuilt from the ``*.json`` records under the state directory when the server starts
(``Records.load``). Every record is written whole (``store.write_json_atomic``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crirt.linux.tree import remove_tree
from crirt.log import get_logger
from crirt.runtime.model import Container, Sandbox
from crirt.runtime.store import Index, write_json_atomic

log = get_logger(__name__)


def discard_tree(path: Path) -> bool:
    """Delete a tree crirt no longer needs, whatever its shape (``remove_tree``: iterative, no
    depth or path-length limit); a failure is logged, never raised, so start-up always goes on
    (the next start tries again). True if it is gone."""
    try:
        remove_tree(path)
    except OSError as exc:
        log.warning("cannot delete directory", path=str(path), error=str(exc))
        return False
    return True


@dataclass(frozen=True)
class Paths:
    """Where crirt keeps runtime state (tmpfs: gone after reboot, as containers are)."""

    state: Path

    @property
    def sandboxes(self) -> Path:
        return self.state / "sandboxes"

    @property
    def containers(self) -> Path:
        return self.state / "containers"

    @property
    def exits(self) -> Path:
        return self.state / "exits"

    @property
    def netns(self) -> Path:
        return self.state / "netns"

    @property
    def userns(self) -> Path:
        """Pins of pods' own user namespaces (each owns its pod's network namespace)."""
        return self.state / "userns"

    @property
    def trash(self) -> Path:
        """Removed containers' state dirs until a worker thread deletes them."""
        return self.state / "trash"

    def sandbox_dir(self, sid: str) -> Path:
        return self.sandboxes / sid

    def container_dir(self, cid: str) -> Path:
        return self.containers / cid

    def exit_file(self, obj_id: str) -> Path:
        return self.exits / obj_id

    def create(self) -> None:
        for p in (self.exits, self.netns, self.trash):
            p.mkdir(parents=True, exist_ok=True, mode=0o700)
        for child in self.trash.iterdir():  # left by a crirt that died before deleting them
            discard_tree(child)
        # Traversable, not listable: a user-namespaced pod's runtime resolves its rootfs path
        # from inside the namespace. Each object's own directory is private (0700), or 0710
        # for the pod's root group (crirt.runtime.idmap.private_dir).
        for p in (self.sandboxes, self.containers):
            p.mkdir(parents=True, exist_ok=True, mode=0o711)
            p.chmod(0o711)


class Records:
    """The sandboxes and containers crirt knows, in memory and on disk."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.sandboxes: Index[Sandbox] = Index("sandbox")
        self.containers: Index[Container] = Index("container")
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Creations in progress by reserved name: (request key, task). A retried request joins
        # the task instead of failing on the reserved name.
        self.inflight: dict[str, tuple[bytes, asyncio.Task[str]]] = {}

    # ----- persistence -----------------------------------------------------------------------

    def save_sandbox(self, sb: Sandbox) -> None:
        write_json_atomic(Path(sb.dir) / "sandbox.json", sb.to_json())

    def save_container(self, c: Container) -> None:
        write_json_atomic(Path(c.dir) / "container.json", c.to_json())

    def load(self) -> tuple[list[Sandbox], list[Container]]:
        """Every record on disk, sandboxes then containers (none is indexed yet).

        A directory without a readable record is creation that died before its intent record:
        it holds nothing a client has been told about, and goes.
        """
        sbs = [Sandbox.from_json(d) for d in self._load(self.paths.sandboxes, "sandbox.json")]
        cs = [Container.from_json(d) for d in self._load(self.paths.containers, "container.json")]
        return sbs, cs

    @staticmethod
    def _load(base: Path, name: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not base.is_dir():
            return out
        for d in sorted(base.iterdir()):
            try:
                out.append(json.loads((d / name).read_text()))
            except (OSError, ValueError):
                log.warning("dropping incomplete record", path=str(d))
                discard_tree(d)
        return out

    # ----- concurrency -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def locked(self, obj_id: str) -> AsyncIterator[None]:
        lock = self._locks[obj_id]
        async with lock:
            yield
        if not lock.locked() and not lock._waiters:
            self._locks.pop(obj_id, None)

    def spawn(self, name: str, key: bytes, coro: Coroutine[Any, Any, str]) -> asyncio.Task[str]:
        """Run a creation as its own task (shielded from the caller), tracked by name."""
        task = asyncio.get_running_loop().create_task(coro)
        self.inflight[name] = (key, task)

        def done(t: asyncio.Task[str]) -> None:
            if name in self.inflight and self.inflight[name][1] is t:
                del self.inflight[name]
            if not t.cancelled():
                t.exception()  # mark it retrieved: a caller still waiting reports it

        task.add_done_callback(done)
        return task

    def containers_of(self, sandbox_id: str) -> list[Container]:
        return [c for c in self.containers if c.sandbox_id == sandbox_id]
