"""ImageService end to end against a real docker-registry on a free loopback port.

Each test pushes small images it builds itself (tests/helpers/registry.py), pulls them through
a registries.conf that maps ``example.test`` to that registry, and checks the store on disk.
Needs root (ownership, device nodes, trusted.* xattrs, overlay mounts).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from crirt.config import ImageConfig
from crirt.errors import DigestMismatch, ImageNotFound, InvalidArgument, RegistryError
from crirt.image import ImageService
from crirt.registry import RegistriesConfig
from crirt.registry.client import RegistryClient
from crirt.sansio.tarplan import UnsafeTarEntry
from crirt.storage import chain_ids, rootfs
from crirt.storage.images import ImageInUse
from tests.helpers.registry import (
    Entry,
    LocalRegistry,
    PushedImage,
    available,
    make_tar,
    push_image,
    push_index,
    sha256,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not available(), reason="docker-registry is not installed"),
]

T = TypeVar("T")
LAYER1 = [
    Entry("etc", "dir", mode=0o755),
    Entry("etc/hello", data=b"hello\n", mode=0o640),
    Entry("etc/gone", data=b"soon whited out\n"),
    Entry("bin", "dir", mode=0o755),
    Entry("bin/tool", data=b"#!/bin/sh\necho tool\n", mode=0o4755, uid=1000, gid=1001),
    Entry("bin/tool-link", "hardlink", link="bin/tool"),
    Entry("bin/sym", "symlink", link="tool"),
    Entry("opq", "dir", mode=0o750),
    Entry("opq/old", data=b"old\n"),
    Entry("run", "dir", mode=0o755),
    Entry("run/fifo", "fifo", mode=0o600),
    Entry("xa", data=b"x", xattrs={"user.crirt": "yes"}),
]
LAYER2 = [
    Entry("etc", "dir", mode=0o755),
    Entry("etc/.wh.gone"),
    Entry("opq", "dir", mode=0o750),
    Entry("opq/.wh..wh..opq"),
    Entry("opq/new", data=b"new\n"),
]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def conf(registry: LocalRegistry) -> RegistriesConfig:
    return RegistriesConfig.parse(
        (
            "test",
            f'[[registry]]\nprefix = "example.test"\nlocation = "{registry.host}"\n'
            "insecure = true\n",
        )
    )


@pytest.fixture
def svc(tmp_path: Path, conf: RegistriesConfig) -> Iterator[ImageService]:
    s = ImageService(tmp_path / "root", conf, 3)
    yield s
    s.close()


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    # One repository per test: registry state never leaks between tests.
    name: str = request.node.name
    return "t/" + name.lower().replace("_", "-")[:60].strip("-")


def _push_two(registry: LocalRegistry, repo: str, tag: str = "v1") -> PushedImage:
    return push_image(
        registry.url,
        repo,
        tag,
        [make_tar(LAYER1), make_tar(LAYER2)],
        config={"User": "www-data:1004", "Env": ["PATH=/bin"], "Cmd": ["sh"]},
    )


def _layers_dir(svc: ImageService) -> Path:
    return svc.store.path / "layers"


def test_pull_extracts_layers(svc: ImageService, registry: LocalRegistry, repo: str) -> None:
    # Given a two-layer image with a whiteout, an opaque dir, links, a FIFO and an xattr
    img = _push_two(registry, repo)
    # When it is pulled through the example.test mapping
    rec = run(svc.pull(f"example.test/{repo}:v1"))
    # Then the record carries the upstream name and the config digest as id
    assert rec.id == img.config_digest
    assert rec.repo_tags == (f"example.test/{repo}:v1",)
    assert rec.repo_digests == (f"example.test/{repo}@{img.manifest_digest}",)
    assert rec.manifest_digest == img.manifest_digest
    assert rec.layers == tuple(chain_ids(img.diff_ids))
    assert (rec.uid, rec.username) == (None, "www-data")
    assert rec.config.cmd == ("sh",)
    assert rec.size > 0
    # And the layers are on disk, bottom layer first in the record, topmost first as lowers
    lowers = svc.lower_dirs(rec.id)
    top, bottom = lowers
    assert bottom == _layers_dir(svc) / rec.layers[0].split(":")[1] / "diff"
    hello = bottom / "etc/hello"
    assert hello.read_bytes() == b"hello\n"
    assert stat.S_IMODE(hello.stat().st_mode) == 0o640
    tool = (bottom / "bin/tool").stat()
    assert stat.S_IMODE(tool.st_mode) == 0o4755
    assert (tool.st_uid, tool.st_gid) == (1000, 1001)
    assert (bottom / "bin/tool-link").stat().st_ino == tool.st_ino
    assert os.readlink(bottom / "bin/sym") == "tool"
    assert stat.S_ISFIFO((bottom / "run/fifo").lstat().st_mode)
    assert os.getxattr(bottom / "xa", "user.crirt") == b"yes"
    assert stat.S_IMODE((bottom / "opq").stat().st_mode) == 0o750
    assert (bottom / "etc").stat().st_mtime == 1_600_000_000
    # And the whiteout is a 0:0 char device, the opaque dir carries the overlay xattr
    wh = (top / "etc/gone").lstat()
    assert stat.S_ISCHR(wh.st_mode)
    assert wh.st_rdev == os.makedev(0, 0)
    assert os.getxattr(top / "opq", "trusted.overlay.opaque") == b"y"
    assert not (top / "opq/.wh..wh..opq").exists()
    # And nothing temporary is left
    assert not [p for p in _layers_dir(svc).iterdir() if p.name.startswith("tmp-")]
    assert svc.fs_info().used_bytes > 0


def test_status_by_id_tag_digest_is_identical(
    svc: ImageService, registry: LocalRegistry, repo: str
) -> None:
    _push_two(registry, repo)
    rec = run(svc.pull(f"example.test/{repo}:v1"))
    by = [
        svc.status(rec.id),
        svc.status(rec.id.split(":")[1]),
        svc.status(f"example.test/{repo}:v1"),
        svc.status(rec.repo_digests[0]),
        svc.status(rec.id[7:20]),  # the IMAGE ID column of `crictl images`
        svc.status(rec.id[7:10]),
    ]
    assert all(r == rec for r in by)
    assert svc.status(rec.id[7:9]) is None  # 2 digits: a (missing) name, as in CRI-O
    assert svc.list() == [rec]
    assert svc.status(f"example.test/{repo}:v2") is None
    assert svc.status("sha256:" + "0" * 64) is None
    with pytest.raises(InvalidArgument):
        svc.status("Not/Valid")


def test_verbose_info_holds_the_image_config(
    svc: ImageService, registry: LocalRegistry, repo: str
) -> None:
    _push_two(registry, repo)
    rec = run(svc.pull(f"example.test/{repo}:v1"))
    info = json.loads(svc.verbose_info(rec))
    assert info["imageSpec"]["config"] == {
        "User": "www-data:1004",
        "Env": ["PATH=/bin"],
        "Cmd": ["sh"],
    }
    assert "labels" not in info  # none in the config: omitted, as CRI-O's omitempty


def test_untagged_pull_and_status_use_latest(
    svc: ImageService, registry: LocalRegistry, repo: str
) -> None:
    _push_two(registry, repo, "latest")
    rec = run(svc.pull(f"example.test/{repo}"))
    assert rec.repo_tags == (f"example.test/{repo}:latest",)
    assert svc.status(f"example.test/{repo}") == rec


def test_remove_by_tag_removes_everything(
    svc: ImageService, registry: LocalRegistry, repo: str
) -> None:
    # Given one image under two tags
    _push_two(registry, repo, "v1")
    _push_two(registry, repo, "v2")
    a = run(svc.pull(f"example.test/{repo}:v1"))
    b = run(svc.pull(f"example.test/{repo}:v2"))
    assert a.id == b.id
    assert svc.status(a.id).repo_tags == (  # type: ignore[union-attr]
        f"example.test/{repo}:v1",
        f"example.test/{repo}:v2",
    )
    # When it is removed through one tag
    run(svc.remove(f"example.test/{repo}:v1"))
    # Then the image, both tags, its layers and blobs are gone
    assert svc.status(f"example.test/{repo}:v2") is None
    assert svc.status(a.id) is None
    assert svc.list() == []
    assert list(_layers_dir(svc).iterdir()) == []
    assert list((svc.store.path / "blobs/sha256").iterdir()) == []
    # And removing again is fine
    run(svc.remove(a.id))
    run(svc.remove(f"example.test/{repo}:v1"))


def test_removed_layers_leave_the_store_at_once_and_their_files_soon_after(
    svc: ImageService, registry: LocalRegistry, repo: str
) -> None:
    _push_two(registry, repo)
    rec = run(svc.pull(f"example.test/{repo}:v1"))
    assert [p for p in _layers_dir(svc).iterdir() if not p.name.startswith("tmp-")]

    async def remove_and_watch() -> None:
        await svc.remove(rec.id)
        # No committed layer is left when RemoveImage answers (detached: renamed to tmp-del-*)
        assert [p for p in _layers_dir(svc).iterdir() if not p.name.startswith("tmp-")] == []
        # And a worker deletes the detached files after the call
        for _ in range(200):
            if not list(_layers_dir(svc).iterdir()):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"left: {list(_layers_dir(svc).iterdir())}")

    run(remove_and_watch())


def test_concurrent_removes(svc: ImageService, registry: LocalRegistry, repo: str) -> None:
    _push_two(registry, repo)
    rec = run(svc.pull(f"example.test/{repo}:v1"))

    async def five() -> None:
        await asyncio.gather(*(svc.remove(rec.id) for _ in range(5)))
        assert svc.status(rec.id) is None

    run(five())
    assert list(_layers_dir(svc).iterdir()) == []


def test_tag_moves_to_the_newer_image(
    svc: ImageService, registry: LocalRegistry, repo: str
) -> None:
    push_image(registry.url, repo, "t", [make_tar([Entry("a", data=b"1")])])
    old = run(svc.pull(f"example.test/{repo}:t"))
    push_image(registry.url, repo, "t", [make_tar([Entry("a", data=b"2")])])
    new = run(svc.pull(f"example.test/{repo}:t"))
    assert old.id != new.id
    assert svc.status(f"example.test/{repo}:t") == new
    kept = svc.status(old.id)
    assert kept is not None
    assert kept.repo_tags == ()
    assert kept.repo_digests == old.repo_digests


def test_shared_layers_survive_removal(
    svc: ImageService, registry: LocalRegistry, repo: str
) -> None:
    base = make_tar([Entry("base", data=b"shared")])
    a = push_image(registry.url, repo, "a", [base, make_tar([Entry("a", data=b"a")])])
    b = push_image(registry.url, repo, "b", [base, make_tar([Entry("b", data=b"b")])])
    ra = run(svc.pull(f"example.test/{repo}:a"))
    rb = run(svc.pull(f"example.test/{repo}:b"))
    assert ra.layers[0] == rb.layers[0]
    assert len(list(_layers_dir(svc).iterdir())) == 3
    run(svc.remove(ra.id))
    assert sorted(p.name for p in _layers_dir(svc).iterdir()) == sorted(
        lid.split(":")[1] for lid in rb.layers
    )
    assert (svc.lower_dirs(rb.id)[-1] / "base").read_bytes() == b"shared"
    del a, b


def test_index_by_tag_and_by_digest(svc: ImageService, registry: LocalRegistry, repo: str) -> None:
    # Given an index with an arm64 and an amd64 image
    arm = push_image(registry.url, repo, "arm", [make_tar([Entry("arch", data=b"arm64")])])
    amd = push_image(registry.url, repo, "amd", [make_tar([Entry("arch", data=b"amd64")])])
    index = push_index(
        registry.url,
        repo,
        "multi",
        [
            (arm.manifest_digest, arm.manifest_size, "arm64"),
            (amd.manifest_digest, amd.manifest_size, "amd64"),
        ],
    )
    # When pulled by tag / Then linux/amd64 is chosen and the index digest is the repo digest
    rec = run(svc.pull(f"example.test/{repo}:multi"))
    assert rec.id == amd.config_digest
    assert rec.repo_digests == (f"example.test/{repo}@{index}",)
    assert rec.manifest_digest == amd.manifest_digest
    assert (svc.lower_dirs(rec.id)[0] / "arch").read_bytes() == b"amd64"
    run(svc.remove(rec.id))
    # When pulled by digest / Then there is no tag, and the digest is exactly the pulled ref
    ref = f"example.test/{repo}@{index}"
    rec = run(svc.pull(ref))
    assert rec.repo_tags == ()
    assert rec.repo_digests == (ref,)
    assert svc.status(ref) == rec


def test_diffid_mismatch_is_refused(svc: ImageService, registry: LocalRegistry, repo: str) -> None:
    # Given an image whose config claims another layer's DiffID
    other = make_tar([Entry("other", data=b"x")])
    good = make_tar([Entry("good", data=b"y")])
    push_image(registry.url, repo, "bad", [good], diff_ids=[sha256(other)])
    # When pulled / Then DigestMismatch, no layer dir, nothing recorded
    with pytest.raises(DigestMismatch, match="DiffID"):
        run(svc.pull(f"example.test/{repo}:bad"))
    assert list(_layers_dir(svc).iterdir()) == []
    assert svc.list() == []


def test_size_mismatch_is_refused(svc: ImageService, registry: LocalRegistry, repo: str) -> None:
    layer = make_tar([Entry("f", data=b"z" * 1000)])
    img = push_image(registry.url, repo, "short", [layer], layer_sizes=[10])
    with pytest.raises(DigestMismatch, match="more than the 10 bytes"):
        run(svc.pull(f"example.test/{repo}:short"))
    assert list(_layers_dir(svc).iterdir()) == []
    del img


def test_missing_image(svc: ImageService, registry: LocalRegistry, repo: str) -> None:
    _push_two(registry, repo)
    with pytest.raises(ImageNotFound, match=f"example.test/{repo}:nope"):
        run(svc.pull(f"example.test/{repo}:nope"))
    with pytest.raises(ImageNotFound):
        run(svc.pull("example.test/no/such-repo:v1"))
    with pytest.raises(ImageNotFound):
        run(svc.pull(f"example.test/{repo}@sha256:" + "0" * 64))


def test_unreachable_registry(tmp_path: Path) -> None:
    conf = RegistriesConfig.parse(
        ("t", '[[registry]]\nprefix = "example.test"\nlocation = "127.0.0.1:9"\ninsecure = true\n')
    )
    s = ImageService(tmp_path / "root", conf, 1, request_timeout=2)
    try:
        with pytest.raises(RegistryError, match=r"cannot reach registry 127\.0\.0\.1:9"):
            run(s.pull("example.test/a/b:1"))
    finally:
        s.close()


def test_path_escape_is_refused(
    svc: ImageService, registry: LocalRegistry, repo: str, tmp_path: Path
) -> None:
    # Given a layer with a "../" entry
    push_image(registry.url, repo, "dotdot", [make_tar([Entry("../../../../escape", data=b"!")])])
    with pytest.raises(UnsafeTarEntry, match="escapes"):
        run(svc.pull(f"example.test/{repo}:dotdot"))
    # And a layer that plants a symlink to a host dir and then writes through it
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = make_tar([Entry("evil", "symlink", link=str(outside)), Entry("evil/pwned", data=b"!")])
    push_image(registry.url, repo, "symlink", [evil])
    with pytest.raises(UnsafeTarEntry, match="not a directory"):
        run(svc.pull(f"example.test/{repo}:symlink"))
    # And a hard link to a host file
    push_image(
        registry.url,
        repo,
        "hardlink",
        [make_tar([Entry("h", "hardlink", link="../../etc/passwd")])],
    )
    with pytest.raises(UnsafeTarEntry):
        run(svc.pull(f"example.test/{repo}:hardlink"))
    # Then nothing landed outside and nothing was committed
    assert list(outside.iterdir()) == []
    assert not any(p.name == "escape" for p in tmp_path.rglob("escape"))
    assert list(_layers_dir(svc).iterdir()) == []


class _CountingClient(RegistryClient):
    def __init__(self) -> None:
        super().__init__(timeout=10)
        self.manifests = 0
        self._count_lock = threading.Lock()

    def get_manifest(self, *a: Any, **kw: Any) -> Any:
        with self._count_lock:
            self.manifests += 1
        return super().get_manifest(*a, **kw)


def test_identical_pulls_are_coalesced(
    tmp_path: Path, conf: RegistriesConfig, registry: LocalRegistry, repo: str
) -> None:
    _push_two(registry, repo)
    client = _CountingClient()
    s = ImageService(tmp_path / "root", conf, 3, client=client)
    try:

        async def five() -> list[Any]:
            return await asyncio.gather(*(s.pull(f"example.test/{repo}:v1") for _ in range(5)))

        recs = run(five())
        assert len({r.id for r in recs}) == 1
        assert client.manifests == 1
    finally:
        s.close()


def test_store_is_shared_and_reloaded(
    tmp_path: Path, conf: RegistriesConfig, registry: LocalRegistry, repo: str
) -> None:
    # Given two services on one root, as crirt and a CLI would be (the CLI opens from config)
    _push_two(registry, repo)
    conf_file = tmp_path / "registries.conf"
    conf_file.write_text(
        f'[[registry]]\nprefix = "example.test"\nlocation = "{registry.host}"\ninsecure = true\n'
    )
    a = ImageService(tmp_path / "root", conf, 3)
    b = ImageService.from_config(
        tmp_path / "root",
        ImageConfig(registries_conf=str(conf_file), registries_conf_d=str(tmp_path / "none")),
    )
    try:
        # When one pulls / Then the other sees it without restarting, and sees its removal
        rec = run(a.pull(f"example.test/{repo}:v1"))
        assert b.status(rec.id) == rec
        run(b.remove(rec.id))
        assert a.status(rec.id) is None
        # And the CLI side can pull with its own registries config
        assert run(b.pull(f"example.test/{repo}:v1")).id == rec.id
        assert a.status(f"example.test/{repo}:v1") is not None
    finally:
        a.close()
        b.close()


def test_crash_leftovers_are_cleaned(
    tmp_path: Path, conf: RegistriesConfig, registry: LocalRegistry, repo: str
) -> None:
    s = ImageService(tmp_path / "root", conf, 3)
    layers = s.store.path / "layers"
    s.close()
    # Given a temp dir of a dead process and a layer no image records
    (layers / "tmp-999999999-abc/diff").mkdir(parents=True)
    (layers / ("ab" * 32) / "diff").mkdir(parents=True)
    # When the store is opened / Then both are gone
    s = ImageService(tmp_path / "root", conf, 3)
    try:
        assert list(layers.iterdir()) == []
    finally:
        s.close()


def test_rootfs_overlay(
    svc: ImageService, registry: LocalRegistry, repo: str, tmp_path: Path
) -> None:
    _push_two(registry, repo)
    rec = run(svc.pull(f"example.test/{repo}:v1"))
    target = tmp_path / "rootfs"
    target.mkdir()
    # Given a container rootfs on the image
    rfs = rootfs.create(svc.store, "c1", rec.id)
    assert rfs.lower == tuple(svc.lower_dirs(rec.id))
    rootfs.mount(svc.store, "c1", target)
    try:
        # Then the merged view applies whiteouts and the opaque dir
        assert (target / "etc/hello").read_bytes() == b"hello\n"
        assert not (target / "etc/gone").exists()
        assert sorted(os.listdir(target / "opq")) == ["new"]
        assert (target / "bin/tool-link").read_bytes() == b"#!/bin/sh\necho tool\n"
        # And writes land in the upper dir only
        (target / "written").write_text("w")
        assert (rfs.upper / "written").read_text() == "w"
        assert not (svc.lower_dirs(rec.id)[0] / "written").exists()
        # When the image is removed while the container exists / Then it is refused, naming
        # the container, and the image and its layers stay
        with pytest.raises(ImageInUse, match="in use by container c1"):
            run(svc.remove(rec.id))
        assert svc.status(rec.id) is not None
        assert (target / "etc/hello").exists()
        assert len(list(_layers_dir(svc).iterdir())) == 2
    finally:
        rootfs.unmount(target)
    rootfs.unmount(target)  # idempotent
    # When the container goes / Then its dirs go, and the image can be removed with its layers
    rootfs.remove(svc.store, "c1", target)
    rootfs.remove(svc.store, "c1", target)
    assert not rfs.dir.exists()
    run(svc.remove(rec.id))
    assert list(_layers_dir(svc).iterdir()) == []


def test_rootfs_discard_unpins_at_once_and_the_trash_goes_at_the_next_open(
    tmp_path: Path, conf: RegistriesConfig, registry: LocalRegistry, repo: str
) -> None:
    _push_two(registry, repo)
    svc = ImageService(tmp_path / "root", conf, 3)
    try:
        rec = run(svc.pull(f"example.test/{repo}:v1"))
        target = tmp_path / "rootfs"
        target.mkdir()
        # Given a container rootfs, mounted volatile (its syncs and unmount skip the journal)
        rfs = rootfs.create(svc.store, "c3", rec.id)
        rootfs.mount(svc.store, "c3", target)
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
            opts = [ln for ln in mountinfo if ln.split()[4] == os.path.realpath(target)]
            assert "volatile" in opts[0]
            (target / "written").write_text("w")
        finally:
            rootfs.unmount(target)
        # When it is discarded
        trash = rootfs.discard(svc.store, "c3")
        # Then its dirs left the containers dir in one rename, so the image is free at once
        assert trash is not None
        assert trash.parent == svc.store.trash_dir
        assert (trash / "upper" / "written").exists()
        assert not rfs.dir.exists()
        assert rootfs.discard(svc.store, "c3") is None  # idempotent
        run(svc.remove(rec.id))
    finally:
        svc.close()
    # And a trash its process never deleted (it died) goes when the store is opened again
    svc = ImageService(tmp_path / "root", conf, 3)
    try:
        assert list(svc.store.trash_dir.iterdir()) == []
    finally:
        svc.close()


def test_rootfs_without_layers_uses_empty_lower(
    svc: ImageService, registry: LocalRegistry, repo: str, tmp_path: Path
) -> None:
    push_image(registry.url, repo, "empty", [])
    rec = run(svc.pull(f"example.test/{repo}:empty"))
    target = tmp_path / "rootfs"
    target.mkdir()
    rfs = rootfs.create(svc.store, "c2", rec.id)
    assert rfs.lower == (svc.store.path / "empty",)
    rootfs.mount(svc.store, "c2", target)
    try:
        assert os.listdir(target) == []
    finally:
        rootfs.remove(svc.store, "c2", target)


def test_failed_pull_leaves_no_layers(
    svc: ImageService, registry: LocalRegistry, repo: str
) -> None:
    # Given a three-layer image whose last layer lies about its DiffID
    tars = [make_tar([Entry(f"f{i}", data=bytes([65 + i]) * 5000)]) for i in range(3)]
    diff_ids = [sha256(t) for t in tars[:2]] + [sha256(b"lie")]
    push_image(registry.url, repo, "v1", tars, diff_ids=diff_ids)
    # When pulled / Then it fails, and the good layers it committed are gone again
    with pytest.raises(DigestMismatch):
        run(svc.pull(f"example.test/{repo}:v1"))
    assert list(_layers_dir(svc).iterdir()) == []


def test_concurrent_pulls_sharing_a_layer(
    svc: ImageService, registry: LocalRegistry, repo: str
) -> None:
    # Given two images on a common base that is not yet present
    base = make_tar([Entry(f"d/{i}", data=b"x" * 100) for i in range(200)])
    push_image(registry.url, repo, "a", [base, make_tar([Entry("a", data=b"a")])])
    push_image(registry.url, repo, "b", [base, make_tar([Entry("b", data=b"b")])])

    async def both() -> tuple[Any, Any]:
        return await asyncio.gather(
            svc.pull(f"example.test/{repo}:a"), svc.pull(f"example.test/{repo}:b")
        )

    # When both are pulled at once / Then both succeed and share one base layer dir
    a, b = run(both())
    assert a.layers[0] == b.layers[0]
    assert len(list(_layers_dir(svc).iterdir())) == 3
    assert (svc.lower_dirs(a.id)[-1] / "d/199").read_bytes() == b"x" * 100
