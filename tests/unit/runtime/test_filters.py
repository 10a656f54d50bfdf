from crirt._gen import api_pb2
from crirt.runtime.filters import container_matches, sandbox_matches
from crirt.runtime.model import Container, ContainerState, Sandbox, SandboxState


def _sb(sid: str, labels: dict[str, str], state: SandboxState) -> Sandbox:
    cfg = api_pb2.PodSandboxConfig(labels=labels)
    sb = Sandbox(id=sid, name=sid, config=cfg, handler="runc", created_at=0, dir="/")
    sb.state = state
    return sb


def _c(cid: str, pod: str, labels: dict[str, str], state: ContainerState) -> Container:
    c = Container(
        id=cid,
        name=cid,
        sandbox_id=pod,
        config=api_pb2.ContainerConfig(labels=labels),
        handler="runc",
        image_id="i",
        image_name="i",
        image_ref="i",
        created_at=0,
        dir="/",
    )
    c.state = state
    return c


def test_sandbox_filters_by_prefix_state_and_labels() -> None:
    sb = _sb("abc123", {"app": "web", "tier": "1"}, SandboxState.READY)
    assert sandbox_matches(sb, None)
    assert sandbox_matches(sb, api_pb2.PodSandboxFilter())
    assert sandbox_matches(sb, api_pb2.PodSandboxFilter(id="abc"))
    assert not sandbox_matches(sb, api_pb2.PodSandboxFilter(id="abd"))
    ready = api_pb2.PodSandboxStateValue(state=api_pb2.SANDBOX_READY)
    notready = api_pb2.PodSandboxStateValue(state=api_pb2.SANDBOX_NOTREADY)
    assert sandbox_matches(sb, api_pb2.PodSandboxFilter(state=ready))
    assert not sandbox_matches(sb, api_pb2.PodSandboxFilter(state=notready))
    assert sandbox_matches(sb, api_pb2.PodSandboxFilter(label_selector={"app": "web"}))
    assert not sandbox_matches(sb, api_pb2.PodSandboxFilter(label_selector={"app": "db"}))
    # Stats filters carry no state field.
    assert sandbox_matches(
        sb, api_pb2.PodSandboxStatsFilter(id="abc", label_selector={"tier": "1"})
    )
    assert not sandbox_matches(sb, api_pb2.PodSandboxStatsFilter(label_selector={"x": "y"}))


def test_container_filters_by_pod_state_and_labels() -> None:
    c = _c("c1", "pod9", {"foo": "bar"}, ContainerState.EXITED)
    exited = api_pb2.ContainerStateValue(state=api_pb2.CONTAINER_EXITED)
    running = api_pb2.ContainerStateValue(state=api_pb2.CONTAINER_RUNNING)
    assert container_matches(c, api_pb2.ContainerFilter(pod_sandbox_id="pod", state=exited))
    assert not container_matches(c, api_pb2.ContainerFilter(state=running))
    assert not container_matches(c, api_pb2.ContainerFilter(pod_sandbox_id="other"))
    assert container_matches(c, api_pb2.ContainerStatsFilter(label_selector={"foo": "bar"}))
    assert not container_matches(c, api_pb2.ContainerStatsFilter(label_selector={"foo": "baz"}))
