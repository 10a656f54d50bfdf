"""Tests for crirt.oci.spec_userns and the user-namespace parts of the pod and container specs."""

from __future__ import annotations

from typing import Any

import pytest

from crirt._gen import api_pb2
from crirt.errors import InvalidArgument
from crirt.oci.spec import build_container_spec, build_sandbox_spec
from crirt.oci.spec_userns import (
    IdMapping,
    PodUserns,
    check_container_userns,
    mount_mappings,
    pod_userns,
)
from tests.unit.oci.test_spec import cinput, container_config, pod_config, roundtrip, sinput

CRITEST_MAPPING = [api_pb2.IDMapping(container_id=0, host_id=1000, length=100000)]


def nso(
    mode: int | None,
    uids: list[api_pb2.IDMapping] | None = None,
    gids: list[api_pb2.IDMapping] | None = None,
    **modes: api_pb2.NamespaceMode,
) -> api_pb2.NamespaceOption:
    out = api_pb2.NamespaceOption(
        network=modes.get("network", api_pb2.POD),
        pid=modes.get("pid", api_pb2.CONTAINER),
        ipc=modes.get("ipc", api_pb2.POD),
    )
    if mode is not None:
        out.userns_options.mode = mode  # type: ignore[assignment]
        out.userns_options.uids.extend(uids or [])
        out.userns_options.gids.extend(gids or [])
    return out


def userns_pod(**kw: Any) -> api_pb2.PodSandboxConfig:
    cfg = pod_config(**kw)
    cfg.linux.security_context.namespace_options.userns_options.CopyFrom(
        api_pb2.UserNamespace(mode=api_pb2.POD, uids=CRITEST_MAPPING, gids=CRITEST_MAPPING)
    )
    return cfg


POD_USERNS = PodUserns((IdMapping(0, 1000, 100000),), (IdMapping(0, 1000, 100000),))


def test_no_options_or_node_mode_share_the_host_user_namespace() -> None:
    assert pod_userns(nso(None)) is None
    assert pod_userns(nso(api_pb2.NODE)) is None


def test_pod_mode_with_critest_mapping() -> None:
    # Given critest's NamespaceMode_POD spec: 0 -> 1000, 100000 ids
    userns = pod_userns(nso(api_pb2.POD, CRITEST_MAPPING, CRITEST_MAPPING))
    # Then the pod's root is host 1000, and the OCI mappings say so
    assert userns == POD_USERNS
    assert userns.root == (1000, 1000)
    assert userns.host_uid(65534) == 66534
    assert userns.oci_linux() == {
        "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 100000}],
        "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 100000}],
    }
    assert userns.proc_map("uid") == "0 1000 100000\n"


def test_unmapped_id_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="not mapped"):
        POD_USERNS.host_uid(100000)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        # critest: "runtime should fail if more than one mapping provided"
        (
            nso(
                api_pb2.POD,
                [*CRITEST_MAPPING, api_pb2.IDMapping(container_id=0, host_id=2000, length=100000)],
                [*CRITEST_MAPPING, api_pb2.IDMapping(container_id=0, host_id=2000, length=100000)],
            ),
            "more than one",
        ),
        # critest: "runtime should fail if container ID 0 is not mapped"
        (
            nso(
                api_pb2.POD,
                [api_pb2.IDMapping(container_id=1, host_id=1000, length=100000)],
                [api_pb2.IDMapping(container_id=1, host_id=1000, length=100000)],
            ),
            "0 is not mapped",
        ),
        # critest: "runtime should fail with NamespaceMode_CONTAINER" / "_TARGET"
        (nso(api_pb2.CONTAINER), "CONTAINER is not supported"),
        (nso(api_pb2.TARGET), "TARGET is not supported"),
        (nso(api_pb2.POD), "needs uid mappings"),
        (nso(api_pb2.POD, CRITEST_MAPPING), "needs gid mappings"),
        (nso(api_pb2.NODE, CRITEST_MAPPING, CRITEST_MAPPING), "takes no ID mappings"),
        (
            nso(
                api_pb2.POD,
                [api_pb2.IDMapping(container_id=0, host_id=1000, length=0)],
                CRITEST_MAPPING,
            ),
            "length 0",
        ),
        (
            nso(
                api_pb2.POD,
                [api_pb2.IDMapping(container_id=0, host_id=2**32 - 10, length=100)],
                CRITEST_MAPPING,
            ),
            "overflows",
        ),
        (nso(api_pb2.POD, CRITEST_MAPPING, CRITEST_MAPPING, network=api_pb2.NODE), "network"),
        (nso(api_pb2.POD, CRITEST_MAPPING, CRITEST_MAPPING, pid=api_pb2.NODE), "host pid"),
        (nso(api_pb2.POD, CRITEST_MAPPING, CRITEST_MAPPING, ipc=api_pb2.NODE), "host ipc"),
    ],
)
def test_invalid_pod_user_namespaces(options: api_pb2.NamespaceOption, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        pod_userns(options)


def test_container_restating_the_pod_user_namespace_is_fine() -> None:
    check_container_userns(POD_USERNS, nso(api_pb2.POD, CRITEST_MAPPING, CRITEST_MAPPING))
    check_container_userns(POD_USERNS, nso(api_pb2.POD))
    check_container_userns(POD_USERNS, nso(None))
    check_container_userns(None, nso(api_pb2.NODE))
    check_container_userns(None, None)


@pytest.mark.parametrize(
    ("pod", "options"),
    [
        (None, nso(api_pb2.POD, CRITEST_MAPPING, CRITEST_MAPPING)),
        (POD_USERNS, nso(api_pb2.NODE)),
        (POD_USERNS, nso(api_pb2.CONTAINER)),
        (
            POD_USERNS,
            nso(
                api_pb2.POD,
                [api_pb2.IDMapping(container_id=0, host_id=5000, length=100000)],
                CRITEST_MAPPING,
            ),
        ),
    ],
)
def test_container_cannot_change_the_pod_user_namespace(
    pod: PodUserns | None, options: api_pb2.NamespaceOption
) -> None:
    with pytest.raises(InvalidArgument):
        check_container_userns(pod, options)


def test_mount_mappings() -> None:
    m = api_pb2.Mount(container_path="/v", host_path="/h")
    assert mount_mappings(m) == {}
    m.uidMappings.extend(CRITEST_MAPPING)
    with pytest.raises(InvalidArgument, match="both"):
        mount_mappings(m)
    m.gidMappings.extend(CRITEST_MAPPING)
    assert mount_mappings(m)["gidMappings"] == [{"containerID": 0, "hostID": 1000, "size": 100000}]


# --- specs ------------------------------------------------------------------------------------


def test_sandbox_spec_creates_the_user_namespace() -> None:
    spec = build_sandbox_spec(sinput(userns_pod(pid=api_pb2.POD), userns=POD_USERNS))
    assert {"type": "user"} in spec["linux"]["namespaces"]
    assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 1000, "size": 100000}]
    assert spec["linux"]["gidMappings"] == spec["linux"]["uidMappings"]
    # Joining the pinned namespace (that owns the pod's netns): the runtime reads its mappings.
    pinned = build_sandbox_spec(
        sinput(userns_pod(pid=api_pb2.POD), userns=POD_USERNS, userns_path="/run/crirt/userns/p")
    )
    assert {"type": "user", "path": "/run/crirt/userns/p"} in pinned["linux"]["namespaces"]
    assert "uidMappings" not in pinned["linux"]
    # Without one, nothing changes.
    plain = build_sandbox_spec(sinput(pod_config(pid=api_pb2.POD)))
    assert all(ns["type"] != "user" for ns in plain["linux"]["namespaces"])
    assert "uidMappings" not in plain["linux"]


def test_golden_container_in_pod_user_namespace(golden: Any) -> None:
    # Given a container of a user-namespaced pod with an idmapped volume (what the kubelet sends)
    vol = api_pb2.Mount(
        container_path="/data",
        host_path="/var/lib/kubelet/pods/uid-1/volumes/data",
        uidMappings=CRITEST_MAPPING,
        gidMappings=CRITEST_MAPPING,
    )
    cfg = container_config(command=["cat", "/proc/self/uid_map"], mounts=[vol])
    paths = {
        "network": "/run/netns/crirt-abc",
        "ipc": "/proc/4242/ns/ipc",
        "uts": "/proc/4242/ns/uts",
        "user": "/proc/4242/ns/user",
    }
    inp = cinput(cfg, userns_pod(), namespace_paths=paths, userns=POD_USERNS, idmap_mounts=True)
    # When / Then: it joins the pod's namespace, whose mappings runc reads itself
    golden("container_userns", roundtrip(build_container_spec(inp)))
    # Without a path (no pod namespace to join) it gets a new one with the mappings.
    del paths["user"]
    fresh = build_container_spec(
        cinput(cfg, userns_pod(), namespace_paths=paths, userns=POD_USERNS, idmap_mounts=True)
    )
    assert {"type": "user"} in fresh["linux"]["namespaces"]
    assert fresh["linux"]["gidMappings"] == [{"containerID": 0, "hostID": 1000, "size": 100000}]


def test_idmapped_mount_needs_a_runtime_that_can() -> None:
    vol = api_pb2.Mount(
        container_path="/data",
        host_path="/h",
        uidMappings=CRITEST_MAPPING,
        gidMappings=CRITEST_MAPPING,
    )
    with pytest.raises(InvalidArgument, match="idmapped mounts are not supported"):
        build_container_spec(cinput(container_config(mounts=[vol]), idmap_mounts=False))


def test_recursive_read_only_needs_a_runtime_that_can() -> None:
    # Given a valid RRO mount (read-only, private propagation)
    rro = api_pb2.Mount(
        container_path="/m", host_path="/h", readonly=True, recursive_read_only=True
    )
    cfg = container_config(mounts=[rro])
    # Then it becomes the "rro" option where the handler has it, and an error where it does not
    mount = next(m for m in build_container_spec(cinput(cfg))["mounts"] if m["destination"] == "/m")
    assert mount["options"] == ["rbind", "rprivate", "ro", "rro"]
    with pytest.raises(InvalidArgument, match="not supported by this runtime handler"):
        build_container_spec(cinput(cfg, rro_mounts=False))


def test_recursive_read_only_must_be_readonly_even_where_unsupported() -> None:
    rro = api_pb2.Mount(container_path="/m", host_path="/h", recursive_read_only=True)
    with pytest.raises(InvalidArgument, match="needs readonly"):
        build_container_spec(cinput(container_config(mounts=[rro]), rro_mounts=False))
