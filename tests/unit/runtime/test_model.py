"""The records' state machine: the tables of allowed moves, the methods that make them, and the
rule that nothing outside the model assigns a state."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from crirt._gen import api_pb2
from crirt.errors import FailedPrecondition
from crirt.runtime.model import (
    CONTAINER_MOVES,
    Container,
    ContainerState,
    InvalidTransition,
    Sandbox,
    SandboxState,
)

CRIRT = Path(__file__).resolve().parents[3] / "crirt"
C, R, E, U = (
    ContainerState.CREATED,
    ContainerState.RUNNING,
    ContainerState.EXITED,
    ContainerState.UNKNOWN,
)


def container(state: ContainerState = C) -> Container:
    return Container(
        id="c1",
        name="k8s_c",
        sandbox_id="p1",
        config=api_pb2.ContainerConfig(),
        handler="runc",
        image_id="sha256:1",
        image_name="busybox",
        image_ref="busybox@sha256:1",
        created_at=100,
        dir="/x",
        state=state,
    )


def test_the_table_is_the_cri_lifecycle() -> None:
    assert {C: {R, E}, R: {E, U}, U: {E}, E: set()} == CONTAINER_MOVES


def test_start_then_exit() -> None:
    c = container()
    c.mark_starting(200)
    assert (c.state, c.started_at, c.starting) == (C, 200, True)
    c.mark_running(42, 7)
    assert (c.state, c.pid, c.pid_start, c.starting) == (R, 42, 7, False)
    c.mark_exited(137, 300, oom_killed=True)
    assert (c.state, c.exit_code, c.finished_at, c.reason) == (E, 137, 300, "OOMKilled")


@pytest.mark.parametrize(("code", "reason"), [(0, "Completed"), (1, "Error"), (3, "Error")])
def test_exit_reasons(code: int, reason: str) -> None:
    c = container(R)
    c.mark_exited(code, 1, oom_killed=False)
    assert (c.reason, c.exit_code) == (reason, code)


@pytest.mark.parametrize("state", [R, E, U])
def test_only_a_created_container_starts(state: ContainerState) -> None:
    c = container(state)
    # A refused StartContainer is FailedPrecondition to the client (api.proto: it starts a
    # created container)
    with pytest.raises(FailedPrecondition, match="only a created container can start"):
        c.mark_starting(1)
    assert c.state is state


@pytest.mark.parametrize(
    ("state", "move"),
    [
        (E, lambda c: c.mark_running(1, 1)),
        (R, lambda c: c.mark_running(1, 1)),
        (U, lambda c: c.mark_running(1, 1)),
        (E, lambda c: c.mark_exited(0, 1, False)),
        (C, lambda c: c.mark_unknown()),
        (E, lambda c: c.mark_unknown()),
        (R, lambda c: c.mark_start_failed("x")),
        (R, lambda c: c.mark_start_undone()),
        (E, lambda c: c.mark_stopped_unstarted(1)),
        (R, lambda c: c.mark_stopped_unstarted(1)),
    ],
)
def test_refused_moves_raise_and_change_nothing(state: ContainerState, move: object) -> None:
    c = container(state)
    before = c.to_json()
    with pytest.raises(InvalidTransition):
        move(c)  # type: ignore[operator]
    assert c.to_json() == before


def test_failed_start_is_exited_with_start_error() -> None:
    c = container()
    c.mark_starting(200)
    c.mark_start_failed("runc: boom")
    assert (c.state, c.exit_code, c.reason, c.message) == (E, 128, "StartError", "runc: boom")
    assert c.started_at == c.finished_at == c.created_at
    assert not c.starting


def test_an_undone_start_is_created_again() -> None:
    c = container()
    c.mark_starting(200)
    c.pid = 5
    c.mark_start_undone()
    assert (c.state, c.started_at, c.pid, c.starting) == (C, 0, 0, False)


def test_unknown_then_exited() -> None:
    c = container(R)
    c.mark_unknown()
    assert c.state is U
    c.mark_exited(1, 5, False)
    assert c.state is E


def test_sandbox_not_ready_once() -> None:
    sb = Sandbox(
        id="p1",
        name="k8s_POD",
        config=api_pb2.PodSandboxConfig(),
        handler="runc",
        created_at=1,
        dir="/x",
    )
    assert sb.mark_not_ready() is True
    assert sb.state is SandboxState.NOTREADY
    assert sb.mark_not_ready() is False


def test_records_round_trip_their_state() -> None:
    c = container(R)
    assert Container.from_json(c.to_json()) == c


def test_nothing_outside_the_model_assigns_a_state() -> None:
    offenders = []
    for path in CRIRT.rglob("*.py"):
        if (path.name == "model.py" and path.parent.name == "runtime") or "_gen" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, (ast.AugAssign, ast.AnnAssign))
                else []
            )
            for t in targets:
                for el in t.elts if isinstance(t, ast.Tuple) else [t]:
                    if isinstance(el, ast.Attribute) and el.attr == "state":
                        offenders.append(f"{path.relative_to(CRIRT.parent)}:{el.lineno}")
    assert offenders == []
