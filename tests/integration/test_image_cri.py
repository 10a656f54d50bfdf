"""The image service through a real ``crirt serve``, next to ``crirt image`` processes on the
same store: refused removals (container, mount), changes seen across processes, ImageFsInfo,
SIGHUP reload."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any

import grpc
import pytest

from crirt._gen import api_pb2
from tests.helpers.crirt import REPO, Crirt

pytestmark = [pytest.mark.root, pytest.mark.testbed]

BUSYBOX = "docker.io/library/busybox:latest"


def cli(crirt: Crirt, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``crirt image`` on the server's own root and registries configuration."""
    res = subprocess.run(
        [
            sys.executable, "-m", "crirt", "image", "--config", "/nonexistent",
            "--root", str(crirt.root),
            "--image-registries-conf", str(REPO / "testbed" / "registries.conf"), *args,
        ],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    if check and res.returncode != 0:
        raise AssertionError(f"crirt image {' '.join(args)}: {res.stderr}")
    return res


def _spec(ref: str) -> api_pb2.ImageSpec:
    return api_pb2.ImageSpec(image=ref)


def _status(crirt: Crirt, ref: str) -> Any:
    return crirt.img.ImageStatus(api_pb2.ImageStatusRequest(image=_spec(ref)))


def test_remove_image_used_by_a_container_is_refused(crirt: Crirt) -> None:
    # Given a container created from busybox
    crirt.img.PullImage(api_pb2.PullImageRequest(image=_spec("busybox")))
    pcfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="inuse", namespace="t", uid="inuse-uid")
    )
    pid = crirt.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pcfg)).pod_sandbox_id
    cfg = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="c"),
        image=_spec("busybox"),
        command=["sleep", "3600"],
    )
    cid = crirt.rt.CreateContainer(
        api_pb2.CreateContainerRequest(pod_sandbox_id=pid, config=cfg, sandbox_config=pcfg)
    ).container_id
    try:
        # When the image is removed through the CRI
        with pytest.raises(grpc.RpcError) as info:
            crirt.img.RemoveImage(api_pb2.RemoveImageRequest(image=_spec("busybox")))
        err: Any = info.value
        # Then FailedPrecondition, naming the container, and the image is still there
        assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert f"in use by container {cid}" in err.details()
        assert _status(crirt, "busybox").image.id
        # And the CLI refuses too
        res = cli(crirt, "rm", "busybox", check=False)
        assert res.returncode == 1
        assert cid in res.stderr
    finally:
        crirt.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
        crirt.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pid))
        crirt.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pid))
    # When the container is gone / Then the removal succeeds, and is idempotent
    crirt.img.RemoveImage(api_pb2.RemoveImageRequest(image=_spec("busybox")))
    crirt.img.RemoveImage(api_pb2.RemoveImageRequest(image=_spec("busybox")))
    assert not _status(crirt, "busybox").HasField("image")


def test_cli_and_server_share_the_store(crirt: Crirt) -> None:
    # When the CLI pulls into the server's store / Then the server sees it at once
    image_id = cli(crirt, "pull", "-q", "busybox").stdout.strip()
    st = _status(crirt, "busybox")
    assert st.image.id == image_id
    assert list(st.image.repo_tags) == [BUSYBOX]
    assert [i.id for i in crirt.img.ListImages(api_pb2.ListImagesRequest()).images] == [image_id]
    # When the CLI mounts it / Then a CRI removal is refused, naming the mount
    path = cli(crirt, "mount", "busybox").stdout.strip()
    with pytest.raises(grpc.RpcError) as info:
        crirt.img.RemoveImage(api_pb2.RemoveImageRequest(image=_spec(image_id)))
    err: Any = info.value
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert f"mount {path}" in err.details()
    cli(crirt, "umount", "busybox")
    # When the server removes it / Then the CLI no longer lists it
    crirt.img.RemoveImage(api_pb2.RemoveImageRequest(image=_spec(image_id)))
    assert cli(crirt, "ls", "-q").stdout == ""
    # When the server pulls / Then the CLI sees it
    crirt.img.PullImage(api_pb2.PullImageRequest(image=_spec("busybox")))
    assert cli(crirt, "ls", "-q").stdout.strip() == image_id


def test_image_fs_info_reports_real_usage(crirt: Crirt) -> None:
    before = crirt.img.ImageFsInfo(api_pb2.ImageFsInfoRequest())
    crirt.img.PullImage(api_pb2.PullImageRequest(image=_spec("busybox")))
    after = crirt.img.ImageFsInfo(api_pb2.ImageFsInfoRequest())
    (images,) = after.image_filesystems
    (containers,) = after.container_filesystems
    assert images.fs_id.mountpoint == str(crirt.root / "storage")
    assert containers.fs_id.mountpoint == str(crirt.root / "storage" / "containers")
    grew = images.used_bytes.value - before.image_filesystems[0].used_bytes.value
    # busybox-static is ~1 MB compressed, ~2 MB on disk
    assert grew > 1_000_000
    assert images.inodes_used.value > 100


def test_sighup_reloads_registries(crirt: Crirt) -> None:
    assert crirt.proc is not None
    crirt.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "registries configuration reloaded" not in crirt.log_file.read_text():
        assert time.monotonic() < deadline, "no reload logged"
        time.sleep(0.1)
    # The server is still serving
    assert crirt.img.ListImages(api_pb2.ListImagesRequest()) is not None
