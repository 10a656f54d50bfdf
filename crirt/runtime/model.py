"""Typed state of sandboxes and containers, and their on-disk codec.

Rule: every state change goes through the ``mark_*`` methods here, which check it against the
tables of allowed moves (``CONTAINER_MOVES``, ``SANDBOX_MOVES``) and refuse the others; nothing
else assigns ``state`` (tests/unit/runtime/test_model.py checks the tree). The use-cases persist
the record after each change (atomic write, see ``crirt.runtime.store``). The CRI configs are
kept as protobuf messages (plain data) and serialised as base64 protobuf so a restarted server
sees exactly what the kubelet sent.
"""

from __future__ import annotations

import base64
import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from crirt._gen import api_pb2
from crirt.errors import FailedPrecondition


class SandboxState(enum.Enum):
    READY = "ready"
    NOTREADY = "notready"

    def to_pb(self) -> int:
        return api_pb2.SANDBOX_READY if self is SandboxState.READY else api_pb2.SANDBOX_NOTREADY


class ContainerState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"

    def to_pb(self) -> int:
        return {
            ContainerState.CREATED: api_pb2.CONTAINER_CREATED,
            ContainerState.RUNNING: api_pb2.CONTAINER_RUNNING,
            ContainerState.EXITED: api_pb2.CONTAINER_EXITED,
            ContainerState.UNKNOWN: api_pb2.CONTAINER_UNKNOWN,
        }[self]

    def can_start(self) -> bool:
        return self is ContainerState.CREATED

    def has_process(self) -> bool:
        """The monitor may still hold a live container process (a created container has one
        only while StartContainer runs)."""
        return self in (ContainerState.CREATED, ContainerState.RUNNING, ContainerState.UNKNOWN)


# The moves a record may make; anything else is a bug (or a request the use-case should have
# refused first) and raises InvalidTransition. api.proto's ContainerState: created → running
# → exited, with unknown for a process crirt lost track of (its monitor died without a record).
CONTAINER_MOVES: dict[ContainerState, frozenset[ContainerState]] = {
    # started; or exited: a failed start, a stop before the start, an exit folded in mid-start
    ContainerState.CREATED: frozenset({ContainerState.RUNNING, ContainerState.EXITED}),
    # its exit; or unknown: at restart its monitor is gone and left no exit record
    ContainerState.RUNNING: frozenset({ContainerState.EXITED, ContainerState.UNKNOWN}),
    # the record turns up after all, or a stop finds runc's state gone
    ContainerState.UNKNOWN: frozenset({ContainerState.EXITED}),
    ContainerState.EXITED: frozenset(),
}
SANDBOX_MOVES: dict[SandboxState, frozenset[SandboxState]] = {
    SandboxState.READY: frozenset({SandboxState.NOTREADY}),
    SandboxState.NOTREADY: frozenset(),
}


class InvalidTransition(FailedPrecondition):
    """A state change the tables do not allow."""


def _encode(rec: Any) -> dict[str, Any]:
    d = asdict(rec)
    d["config"] = base64.b64encode(rec.config.SerializeToString(deterministic=True)).decode()
    d["state"] = rec.state.value
    return d


def _decode(d: dict[str, Any], config_type: type[Any], state_type: type[Any]) -> dict[str, Any]:
    d = dict(d)
    cfg = config_type()
    cfg.ParseFromString(base64.b64decode(d.pop("config")))
    d["config"] = cfg
    d["state"] = state_type(d["state"])
    return d


@dataclass
class Sandbox:
    id: str
    name: str  # the reserved unique name (k8s_POD_…)
    config: api_pb2.PodSandboxConfig
    handler: str
    created_at: int
    dir: str
    state: SandboxState = SandboxState.READY
    netns_path: str = ""  # empty: host network
    ip: str = ""
    additional_ips: list[str] = field(default_factory=list)
    infra_pid: int = 0
    cgroup_parent: str = ""
    shm_path: str = ""  # a tmpfs crirt mounted; empty when the pod uses the host IPC
    network_set_up: bool = False
    # False from the intent record until creation finished: a restart rolls incomplete ones back.
    complete: bool = True

    def mark_not_ready(self) -> bool:
        """The pod stopped, or its infra process died; False if it was not ready already."""
        if self.state is SandboxState.NOTREADY:
            return False
        _check(SANDBOX_MOVES, "pod sandbox", self.id, self.state, SandboxState.NOTREADY)
        self.state = SandboxState.NOTREADY
        return True

    def to_json(self) -> dict[str, Any]:
        return _encode(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Sandbox:
        return cls(**_decode(d, api_pb2.PodSandboxConfig, SandboxState))


@dataclass
class Container:
    id: str
    name: str  # the reserved unique name (k8s_<ctr>_<pod>_…)
    sandbox_id: str
    config: api_pb2.ContainerConfig
    handler: str
    image_id: str  # sha256:<config digest>: Container.image_id / ContainerStatus.image_id
    image_name: str  # what the client asked for, echoed in ContainerStatus.image
    image_ref: str  # the digested reference (repo@sha256:…), or the id when there is none
    created_at: int
    dir: str
    log_path: str = ""
    state: ContainerState = ContainerState.CREATED
    pid: int = 0
    pid_start: int = 0  # the pid's start time (clock ticks since boot): guards against reuse
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    uid: int = 0
    gid: int = 0
    groups: list[int] = field(default_factory=list)
    stop_signal: str = ""
    rootfs_mounted: bool = False
    # False from the intent record until creation finished: a restart rolls incomplete ones back.
    complete: bool = True
    # True from StartContainer's intent record (saved before the monitor is forked) until its
    # outcome is saved: a restart completes the start or rolls it back (ContainerOps.converge).
    starting: bool = False

    def _move(self, to: ContainerState) -> None:
        _check(CONTAINER_MOVES, "container", self.id, self.state, to)
        self.state = to

    def mark_starting(self, now: int) -> None:
        """StartContainer's intent: set before the monitor runs, so that an exit reported
        during the call finds ``started_at`` set (started_at <= finished_at always holds)."""
        if not self.state.can_start():
            # api.proto: StartContainer starts a *created* container; a second call finds it
            # running or exited (containerd and CRI-O answer an error too).
            raise InvalidTransition(
                f"container {self.id} is {self.state.value}; only a created container can start"
            )
        self.started_at = now
        self.starting = True

    def mark_running(self, pid: int, pid_start: int) -> None:
        """The monitor reported the container's process: it runs. Still created only."""
        self._move(ContainerState.RUNNING)
        self.pid = pid
        self.pid_start = pid_start
        self.starting = False

    def mark_start_undone(self) -> None:
        """A start that a crash interrupted before it happened: created again, to be retried."""
        if self.state is not ContainerState.CREATED:
            raise InvalidTransition(f"container {self.id} is {self.state.value}, not starting")
        self.starting = False
        self.started_at = 0
        self.pid = self.pid_start = 0

    def mark_unknown(self) -> None:
        """Its monitor is gone and left no exit record: the process's fate is unknown."""
        self._move(ContainerState.UNKNOWN)

    def mark_exited(self, exit_code: int, finished_at: int, oom_killed: bool) -> None:
        self._move(ContainerState.EXITED)
        self.starting = False
        self.exit_code = exit_code
        self.finished_at = finished_at
        # Same reasons as CRI-O/containerd: the kubelet shows them to users.
        if oom_killed:
            self.reason = "OOMKilled"
        elif exit_code == 0:
            self.reason = "Completed"
        else:
            self.reason = "Error"

    def mark_start_failed(self, message: str) -> None:
        """StartContainer failed (runc create/start): exited for good, with the error.

        As CRI-O (``Container.SetStartFailed``): started and finished at the creation time, the
        error as the message; reason and exit code as containerd's (``StartError``, 128), which
        tell the user that the process never ran.
        """
        if self.state is not ContainerState.CREATED:
            raise InvalidTransition(f"container {self.id} is {self.state.value}, not starting")
        self._move(ContainerState.EXITED)
        self.starting = False
        self.pid = 0
        self.pid_start = 0
        self.started_at = self.finished_at = self.created_at
        self.exit_code = 128
        self.reason = "StartError"
        self.message = message

    def mark_stopped_unstarted(self, finished_at: int) -> None:
        """StopContainer of a created container: there is no process to signal. CRI-O moves it
        to exited (it kills the runc init waiting to exec), and so does crirt, with a SIGKILL's
        137: the kubelet never waits for a container that can no longer run."""
        if self.state is not ContainerState.CREATED:
            raise InvalidTransition(f"container {self.id} is {self.state.value}, not created")
        self.mark_exited(137, finished_at, False)
        self.message = "stopped before it was started"

    def to_json(self) -> dict[str, Any]:
        return _encode(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Container:
        return cls(**_decode(d, api_pb2.ContainerConfig, ContainerState))


def _check(moves: dict[Any, frozenset[Any]], kind: str, obj_id: str, cur: Any, to: Any) -> None:
    if to not in moves[cur]:
        raise InvalidTransition(f"{kind} {obj_id} is {cur.value}; it cannot become {to.value}")
