import json
from pathlib import Path

import pytest

from crirt._gen import api_pb2
from crirt.errors import AlreadyExists, InvalidArgument, NotFound
from crirt.runtime import naming
from crirt.runtime.model import Container, ContainerState, Sandbox, SandboxState
from crirt.runtime.store import Index, write_json_atomic


def _sandbox(sid: str, name: str) -> Sandbox:
    cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="p", namespace="ns", uid="u", attempt=1),
        labels={"a": "b"},
    )
    return Sandbox(id=sid, name=name, config=cfg, handler="runc", created_at=5, dir="/d")


def test_names_are_unique_until_released() -> None:
    idx: Index[Sandbox] = Index("sandbox")
    idx.reserve("n", "id1")
    idx.reserve("n", "id1")  # same holder: fine
    with pytest.raises(AlreadyExists):
        idx.reserve("n", "id2")
    idx.release("n", "id1")
    idx.reserve("n", "id2")


def test_prefix_lookup() -> None:
    idx: Index[Sandbox] = Index("sandbox")
    idx.add(_sandbox("abc123", "n1"))
    idx.add(_sandbox("abd456", "n2"))
    assert idx.get("abc").id == "abc123"
    assert idx.find("zzz") is None
    with pytest.raises(InvalidArgument, match="ambiguous"):
        idx.find("ab")
    with pytest.raises(NotFound):
        idx.get("zzz")
    with pytest.raises(InvalidArgument):
        idx.find("")


def test_records_round_trip_through_json(tmp_path: Path) -> None:
    sb = _sandbox("s1", "n1")
    sb.state = SandboxState.NOTREADY
    sb.additional_ips = ["fd00::1"]
    path = tmp_path / "sandbox.json"
    write_json_atomic(path, sb.to_json())
    back = Sandbox.from_json(json.loads(path.read_text()))
    assert back == sb
    assert back.config.labels["a"] == "b"
    c = Container(
        id="c1",
        name="k8s_c",
        sandbox_id="s1",
        config=api_pb2.ContainerConfig(metadata=api_pb2.ContainerMetadata(name="c")),
        handler="runc",
        image_id="sha256:aa",
        image_name="busybox",
        image_ref="docker.io/library/busybox@sha256:bb",
        created_at=1,
        dir="/c",
    )
    c.mark_exited(137, 9, oom_killed=True)
    back_c = Container.from_json(json.loads(json.dumps(c.to_json())))
    assert back_c == c
    assert back_c.state is ContainerState.EXITED
    assert back_c.reason == "OOMKilled"
    assert not list(tmp_path.glob(".*.tmp"))


def test_names_follow_kubelet_shape() -> None:
    pod = api_pb2.PodSandboxMetadata(name="web", namespace="default", uid="u1", attempt=2)
    assert naming.sandbox_name(pod) == "k8s_POD_web_default_u1_2"
    md = api_pb2.ContainerMetadata(name="nginx", attempt=0)
    assert naming.container_name(md, pod) == "k8s_nginx_web_default_u1_0"
    with pytest.raises(InvalidArgument, match="metadata"):
        naming.sandbox_name(api_pb2.PodSandboxMetadata(name="x"))
    with pytest.raises(InvalidArgument, match=r"metadata\.name"):
        naming.container_name(api_pb2.ContainerMetadata(), pod)
    assert len(naming.new_id()) == 64
