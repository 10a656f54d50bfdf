"""The image side under stress: hostile layers, compression formats, crashes, many processes on
one store, stalls, and the ``crirt image`` tools (inspect --remote, copy, mount).

Each test pushes images it builds itself to a private docker-registry on loopback, usually
behind tests/helpers/proxy.py, which counts requests and throttles or stalls blob bodies.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import zstandard

from crirt.errors import DeadlineExceeded, DigestMismatch, InvalidArgument
from crirt.image import ImageService
from crirt.image.service import pinned_patterns
from crirt.sansio.tarplan import UnsafeTarEntry
from crirt.storage import chain_ids
from crirt.storage.images import ImageInUse
from tests.helpers.crirt import REPO
from tests.helpers.proxy import RegistryProxy
from tests.helpers.registry import (
    OCI_CONFIG,
    OCI_MANIFEST,
    Entry,
    LocalRegistry,
    available,
    make_tar,
    push_blob,
    push_image,
    push_manifest,
    sha256,
)
from tests.integration.conftest import conf_text, image_config

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not available(), reason="docker-registry is not installed"),
]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def cli(
    root: Path, conf_file: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [
            sys.executable, "-m", "crirt", "image", "--config", "/nonexistent",
            "--root", str(root), "--image-registries-conf", str(conf_file),
            "--image-registries-conf-d", "/nonexistent", *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )  # fmt: skip
    if check and res.returncode != 0:
        raise AssertionError(f"crirt image {' '.join(args)}: {res.stderr}")
    return res


def _layers(svc: ImageService) -> list[Path]:
    return sorted((svc.store.path / "layers").iterdir())


# -- hostile layers ---------------------------------------------------------------------------

CORPUS: list[tuple[str, list[Entry], str]] = [
    ("dotdot", [Entry("../../../escape", data=b"!")], "escapes the layer root"),
    ("dotdot-nested", [Entry("a", "dir"), Entry("a/../../escape", data=b"!")], "escapes"),
    (
        "symlinked-parent",
        [Entry("evil", "symlink", link="{outside}"), Entry("evil/pwned", data=b"!")],
        "not a directory",
    ),
    (
        "symlinked-parent-relative",
        [Entry("evil", "symlink", link="../../../../../../.."), Entry("evil/tmp/x", data=b"!")],
        "not a directory",
    ),
    ("hardlink-outside", [Entry("h", "hardlink", link="../../etc/passwd")], "escapes"),
    (
        "hardlink-through-symlink",
        [Entry("evil", "symlink", link="/etc"), Entry("h", "hardlink", link="evil/passwd")],
        "not a directory",
    ),
    ("whiteout-outside", [Entry("../.wh.passwd")], "escapes"),
    (
        "whiteout-through-symlink",
        [Entry("evil", "symlink", link="{outside}"), Entry("evil/.wh.keep")],
        "not a directory",
    ),
    (
        "opaque-through-symlink",
        [Entry("evil", "symlink", link="{outside}"), Entry("evil/.wh..wh..opq")],
        "not a directory",
    ),
    ("block-device", [Entry("dev/sda", "block")], "block device"),
    ("char-device-mem", [Entry("dev/mem", "char")], "character device 1:1 refused"),
    ("overlay-xattr", [Entry("x", data=b"1", xattrs={"trusted.overlay.redirect": "/"})], ""),
]


def _raw_tar_with_huge_pax() -> bytes:
    """A tar whose PAX header claims 64 MiB (tarfile would read it all into memory)."""
    hdr = bytearray(512)
    name = b"././@PaxHeader"
    hdr[: len(name)] = name
    hdr[100:108] = b"0000644\0"
    hdr[108:116] = b"0000000\0"
    hdr[116:124] = b"0000000\0"
    hdr[124:136] = b"%011o\0" % (64 << 20)
    hdr[136:148] = b"00000000000\0"
    hdr[156:157] = b"x"
    hdr[257:263] = b"ustar\0"
    hdr[263:265] = b"00"
    hdr[148:156] = b"        "
    hdr[148:156] = b"%06o\0 " % sum(hdr)
    return bytes(hdr) + b"1 x\n" * 2048


@pytest.mark.parametrize(("name", "entries", "match"), CORPUS, ids=[c[0] for c in CORPUS])
def test_malicious_layers_never_write_outside(
    svc: ImageService,
    registry: LocalRegistry,
    repo: str,
    tmp_path: Path,
    name: str,
    entries: list[Entry],
    match: str,
) -> None:
    # Given a layer from the corpus, aimed at a directory outside the store
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    fixed = [
        Entry(e.name, e.kind, e.data, e.mode, link=e.link.replace("{outside}", str(outside)),
              xattrs=e.xattrs)
        for e in entries
    ]  # fmt: skip
    tar = _make_tar_with_devices(fixed)
    push_image(registry.url, repo, "v1", [tar])
    # When it is pulled
    if match:
        # Then it is refused with a clear error
        with pytest.raises(UnsafeTarEntry, match=match):
            run(svc.pull(f"example.test/{repo}:v1"))
        assert _layers(svc) == []
    else:
        # (xattrs that could redirect overlay lookups are dropped, the file is kept)
        rec = run(svc.pull(f"example.test/{repo}:v1"))
        lower = svc.lower_dirs(rec.id)[0]
        assert os.listxattr(lower / "x") == []
    # And nothing outside changed, and nothing temporary is left
    assert sorted(p.name for p in outside.iterdir()) == ["keep"]
    assert not (tmp_path / "escape").exists()
    assert not list((svc.store.path / "layers").glob("tmp-*"))
    assert Path("/etc/passwd").stat().st_size > 0


def _make_tar_with_devices(entries: list[Entry]) -> bytes:
    """make_tar, plus block and char device entries (1:1 for char, 8:0 for block)."""
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            if e.kind in ("block", "char"):
                ti = tarfile.TarInfo(e.name)
                ti.type = tarfile.BLKTYPE if e.kind == "block" else tarfile.CHRTYPE
                ti.devmajor, ti.devminor = (8, 0) if e.kind == "block" else (1, 1)
                tf.addfile(ti)
            else:
                tf.addfile(*_tarinfo(e))
    return buf.getvalue()


def _tarinfo(e: Entry) -> tuple[Any, Any]:
    one = make_tar([e])
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(one)) as tf:
        (ti,) = tf.getmembers()
        data = tf.extractfile(ti).read() if ti.isreg() else None  # type: ignore[union-attr]
    return ti, (io.BytesIO(data) if data is not None else None)


def test_oversized_headers_are_refused(
    svc: ImageService, registry: LocalRegistry, repo: str
) -> None:
    # A PAX header of 64 MiB is refused before it is read into memory
    push_image(registry.url, repo, "pax", [_raw_tar_with_huge_pax()])
    with pytest.raises(UnsafeTarEntry, match="larger than the 1048576 byte limit"):
        run(svc.pull(f"example.test/{repo}:pax"))
    assert _layers(svc) == []


def test_absolute_names_land_inside_the_layer(
    svc: ImageService, registry: LocalRegistry, repo: str
) -> None:
    # As in containers/storage and containerd: "/etc/x" means <layer>/etc/x, never the host's.
    push_image(registry.url, repo, "abs", [make_tar([Entry("/crirt-abs-test", data=b"in")])])
    rec = run(svc.pull(f"example.test/{repo}:abs"))
    assert (svc.lower_dirs(rec.id)[0] / "crirt-abs-test").read_bytes() == b"in"
    assert not Path("/crirt-abs-test").exists()


# -- formats and digests ----------------------------------------------------------------------

ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
PLAIN = "application/vnd.oci.image.layer.v1.tar"


def _push_custom(url: str, repo: str, tag: str, blobs: list[tuple[bytes, bytes, str]]) -> str:
    """Push layers given as (uncompressed tar, blob, media type); returns the manifest digest."""
    digests = [push_blob(url, repo, blob) for _, blob, _ in blobs]
    cfg = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [sha256(t) for t, _, _ in blobs]},
        }
    ).encode()
    cfg_digest = push_blob(url, repo, cfg)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cfg_digest, "size": len(cfg)},
        "layers": [
            {"mediaType": mt, "digest": d, "size": len(b)}
            for (_, b, mt), d in zip(blobs, digests, strict=True)
        ],
    }
    return push_manifest(url, repo, tag, json.dumps(manifest).encode(), OCI_MANIFEST)


def test_zstd_gzip_and_plain_layers(svc: ImageService, registry: LocalRegistry, repo: str) -> None:
    # Given one image with a zstd (two frames), a multi-member gzip and an uncompressed layer
    t1 = make_tar([Entry("z", data=b"zstd" * 5000)])
    t2 = make_tar([Entry("g", data=b"gzip" * 5000)])
    t3 = make_tar([Entry("p", data=b"plain")])
    c = zstandard.ZstdCompressor()
    zst = c.compress(t1[:1000]) + c.compress(t1[1000:])
    gz = gzip.compress(t2[:700], mtime=0) + gzip.compress(t2[700:], mtime=0)
    _push_custom(
        registry.url, repo, "v1", [(t1, zst, ZSTD), (t2, gz, PLAIN + "+gzip"), (t3, t3, PLAIN)]
    )
    # When it is pulled / Then every layer is extracted and verified
    rec = run(svc.pull(f"example.test/{repo}:v1"))
    top, mid, bottom = svc.lower_dirs(rec.id)
    assert (bottom / "z").read_bytes() == b"zstd" * 5000
    assert (mid / "g").read_bytes() == b"gzip" * 5000
    assert (top / "p").read_bytes() == b"plain"


def test_media_type_that_lies_is_refused(
    svc: ImageService, registry: LocalRegistry, repo: str
) -> None:
    t = make_tar([Entry("a", data=b"a")])
    _push_custom(registry.url, repo, "v1", [(t, t, ZSTD)])
    with pytest.raises(Exception, match="is not zstd"):
        run(svc.pull(f"example.test/{repo}:v1"))


def test_corrupt_zstd_data_with_a_matching_digest_is_refused(
    svc: ImageService, registry: LocalRegistry, repo: str
) -> None:
    # Given a zstd layer whose bytes match its digest but are not a valid zstd frame
    t = make_tar([Entry("a", data=b"a")])
    blob = bytes.fromhex("28b52ffd") + b"\xff" * 64
    _push_custom(registry.url, repo, "v1", [(t, blob, ZSTD)])
    # When it is pulled / Then the pull fails naming the data, and nothing is left behind
    with pytest.raises(Exception, match="invalid layer data"):
        run(svc.pull(f"example.test/{repo}:v1"))
    layers = svc.store.path / "layers"
    assert not list(layers.glob("tmp-*"))
    assert not [d for d in layers.iterdir() if (d / "layer.json").exists()]


def test_corrupted_blob_is_refused(
    svc: ImageService, registry: LocalRegistry, proxy: RegistryProxy, repo: str
) -> None:
    # Given a registry (behind the proxy) that flips one byte in every blob
    push_image(registry.url, repo, "v1", [make_tar([Entry("f", data=os.urandom(50000))])])
    proxy.corrupt = True
    # When pulled / Then the digest check refuses it (the config blob first)
    with pytest.raises(DigestMismatch):
        run(svc.pull(f"example.test/{repo}:v1"))
    assert _layers(svc) == []
    assert svc.list() == []


def test_manifest_by_digest_is_verified(
    svc: ImageService, registry: LocalRegistry, repo: str
) -> None:
    # A registry that serves a manifest under the wrong digest: ask by the digest of the
    # manifest of another tag, served from a repository path where only one exists.
    img = push_image(registry.url, repo, "v1", [make_tar([Entry("a", data=b"1")])])
    bad = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(Exception, match=r"not found|digest"):
        run(svc.pull(f"example.test/{repo}@{bad}"))
    rec = run(svc.pull(f"example.test/{repo}@{img.manifest_digest}"))
    assert rec.repo_digests == (f"example.test/{repo}@{img.manifest_digest}",)


# -- crashes and many processes ---------------------------------------------------------------


def _big_image(registry: LocalRegistry, repo: str, tag: str = "v1") -> dict[str, dict[str, int]]:
    """Three layers: two of incompressible data, one of 2,000 small files. Returns, per chain
    id, the files the layer must contain with their sizes."""
    rnd = random.Random(1234)
    tars = [
        make_tar([Entry("d", "dir"), Entry("d/blob1", data=rnd.randbytes(3 << 20))]),
        make_tar([Entry("many", "dir")] + [
            Entry(f"many/f{i:04d}", data=rnd.randbytes(rnd.randrange(10, 3000)))
            for i in range(2000)
        ]),
        make_tar([Entry("e", "dir"), Entry("e/blob2", data=rnd.randbytes(2 << 20))]),
    ]  # fmt: skip
    img = push_image(registry.url, repo, tag, tars)
    expect: dict[str, dict[str, int]] = {}
    import tarfile

    for lid, tar in zip(chain_ids(img.diff_ids), tars, strict=True):
        with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
            expect[lid] = {m.name: m.size for m in tf.getmembers() if m.isreg()}
    return expect


def _check_store(root: Path, expect: dict[str, dict[str, int]]) -> None:
    """Every committed layer is whole; the index only names layers and blobs that exist."""
    storage = root / "storage"
    layers = storage / "layers"
    if not layers.exists():
        return
    for d in layers.iterdir():
        if d.name.startswith("tmp-"):
            continue
        info = json.loads((d / "layer.json").read_text())
        files = expect.get(info["id"])
        assert files is not None, f"unknown layer {d.name}"
        for name, size in files.items():
            assert (d / "diff" / name).stat().st_size == size, f"{d.name}: {name} is not whole"
    index = storage / "images.json"
    if index.exists():
        doc = json.loads(index.read_text())
        for image_id, e in doc["images"].items():
            assert (storage / "blobs/sha256" / image_id.split(":")[1]).exists()
            for lid in e["layers"]:
                assert (layers / lid.split(":")[1] / "layer.json").exists()


def test_sigkill_at_random_instants_never_corrupts(
    tmp_path: Path, registry: LocalRegistry, proxy: RegistryProxy, conf_file: Path, repo: str
) -> None:
    # Given a multi-layer image served slowly (so that a pull takes about a second)
    expect = _big_image(registry, repo)
    proxy.rate = 6 << 20
    root = tmp_path / "root"
    rnd = random.Random(42)
    killed_in_flight = 0
    for _ in range(14):
        # When `crirt image pull` is SIGKILLed at a random instant (start-up, download,
        # extraction, commit)
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "crirt", "image", "--config", "/nonexistent", "--root",
                str(root), "--image-registries-conf", str(conf_file), "pull", "-q",
                f"example.test/{repo}:v1",
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(rnd.uniform(0.3, 1.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_in_flight += proc.returncode == -signal.SIGKILL
        # Then the store holds only whole layers and a consistent index
        _check_store(root, expect)
        # (an image that got recorded is removed again, so that every kill hits a cold store)
        cli(root, conf_file, "rm", f"example.test/{repo}:v1")
    assert killed_in_flight >= 8
    # And the next pull succeeds, and the leftovers of the dead pulls are gone
    proxy.rate = 0
    out = cli(root, conf_file, "pull", "-q", f"example.test/{repo}:v1").stdout
    assert out.startswith("sha256:")
    _check_store(root, expect)
    assert not list((root / "storage/layers").glob("tmp-*"))
    assert sorted(p.name for p in (root / "storage/layers").iterdir()) == sorted(
        lid.split(":")[1] for lid in expect
    )
    # And the next opening of the store keeps only the lock files of layers that exist
    cli(root, conf_file, "ls", "-q")
    assert sorted(p.name for p in (root / "storage/locks").iterdir()) == sorted(
        lid.split(":")[1] + ".lock" for lid in expect
    )


def test_two_processes_pull_the_same_image_once(
    tmp_path: Path, registry: LocalRegistry, proxy: RegistryProxy, conf_file: Path, repo: str
) -> None:
    # Given a slow registry
    expect = _big_image(registry, repo)
    proxy.rate = 8 << 20
    root = tmp_path / "root"
    cmd = [
        sys.executable, "-m", "crirt", "image", "--config", "/nonexistent", "--root", str(root),
        "--image-registries-conf", str(conf_file), "pull", "-q", f"example.test/{repo}:v1",
    ]  # fmt: skip
    # When two processes pull the same image at the same time
    procs = [
        subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    # Then both succeed with the same id, the store holds one copy of each layer, and every
    # layer blob was downloaded once (the second process waited for the first one's layer)
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0]
    assert len(list((root / "storage/layers").iterdir())) == 3
    _check_store(root, expect)
    layer_gets = [d for d in proxy.blob_gets() if d in {*_layer_digests(root)}]
    assert sorted(layer_gets) == sorted(set(layer_gets)), proxy.blob_gets()


def _layer_digests(root: Path) -> list[str]:
    out = []
    for d in (root / "storage/layers").iterdir():
        out.append(json.loads((d / "layer.json").read_text())["compressed_digest"])
    return out


def test_store_opening_does_not_race_a_live_pull(
    tmp_path: Path, registry: LocalRegistry, proxy: RegistryProxy, conf_file: Path, repo: str
) -> None:
    # Given a pull in progress in another process
    _big_image(registry, repo)
    proxy.rate = 4 << 20
    root = tmp_path / "root"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "crirt", "image", "--config", "/nonexistent", "--root",
            str(root), "--image-registries-conf", str(conf_file), "pull", "-q",
            f"example.test/{repo}:v1",
        ],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # When other processes keep opening the store (start-up cleanup and orphan GC) meanwhile
    deadline = time.monotonic() + 60
    opened = 0
    while proc.poll() is None and time.monotonic() < deadline:
        ImageService.from_config(root, image_config(conf_file, tmp_path)).close()
        opened += 1
        time.sleep(0.05)
    _, err = proc.communicate(timeout=60)
    # Then the pull neither failed nor had to download a layer twice
    assert proc.returncode == 0, err
    assert opened > 3
    gets = proxy.blob_gets()
    assert len(gets) == len(set(gets)), gets


def test_stalled_pull_is_cancelled(
    tmp_path: Path, registry: LocalRegistry, proxy: RegistryProxy, conf_file: Path, repo: str
) -> None:
    # Given a registry that stops sending in the middle of a layer
    push_image(registry.url, repo, "v1", [make_tar([Entry("f", data=os.urandom(1 << 20))])])
    proxy.stall_after = 100_000
    s = ImageService.from_config(
        tmp_path / "root", image_config(conf_file, tmp_path, pull_progress_timeout=1.5)
    )
    try:
        # When pulled / Then DeadlineExceeded after the progress timeout, nothing left over
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceeded, match=r"no progress for 1\.5 s"):
            run(s.pull(f"example.test/{repo}:v1"))
        assert time.monotonic() - t0 < 20
        assert _layers(s) == []
    finally:
        s.close()


def test_cancelled_pull_stops_and_cleans_up(
    svc: ImageService, registry: LocalRegistry, proxy: RegistryProxy, repo: str
) -> None:
    # Given a slow pull
    push_image(registry.url, repo, "v1", [make_tar([Entry("f", data=os.urandom(4 << 20))])])
    proxy.rate = 1 << 20

    async def give_up() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(svc.pull(f"example.test/{repo}:v1"), 0.5)

    # When its only caller gives up (a gRPC deadline does this)
    run(give_up())
    # Then the download stops, and its temp dir and lock go away
    deadline = time.monotonic() + 10
    while list((svc.store.path / "layers").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _layers(svc) == []
    assert svc.list() == []
    # And a later pull works
    proxy.rate = 0
    assert run(svc.pull(f"example.test/{repo}:v1")).repo_tags == (f"example.test/{repo}:v1",)


# -- configuration ----------------------------------------------------------------------------


def test_short_names_aliases_and_reload(
    tmp_path: Path, registry: LocalRegistry, proxy: RegistryProxy, repo: str
) -> None:
    push_image(registry.url, repo, "v1", [make_tar([Entry("a", data=b"1")])])
    conf = tmp_path / "registries.conf"
    conf.write_text(
        'unqualified-search-registries = ["example.test", "other.test"]\n' + conf_text(proxy.host)
    )
    s = ImageService.from_config(tmp_path / "root", image_config(conf, tmp_path))
    try:
        # An ambiguous short name is refused, never guessed
        with pytest.raises(InvalidArgument, match="ambiguous"):
            run(s.pull(f"{repo}:v1"))
        # After an alias is added and the configuration reloaded (what SIGHUP does), it works
        conf.write_text(conf.read_text() + f'[aliases]\n"{repo}" = "example.test/{repo}"\n')
        assert s.reload()
        rec = run(s.pull(f"{repo}:v1"))
        assert rec.repo_tags == (f"example.test/{repo}:v1",)
        assert s.status(f"{repo}:v1") == rec
        # A broken file keeps the old configuration
        conf.write_text("[[registry]\n")
        assert not s.reload()
        assert s.status(f"{repo}:v1") == rec
    finally:
        s.close()


def test_pinned_images_and_real_usage(
    tmp_path: Path, registry: LocalRegistry, conf_file: Path, repo: str
) -> None:
    push_image(registry.url, repo, "v1", [make_tar([Entry("big", data=os.urandom(300_000))])])
    push_image(registry.url, repo, "v2", [make_tar([Entry("small", data=b"s")])])
    s = ImageService.from_config(
        tmp_path / "root",
        image_config(conf_file, tmp_path, pinned_images=[f"example.test/{repo}:v1"]),
        pinned=pinned_patterns((), f"example.test/{repo}:v2"),
    )
    try:
        a = run(s.pull(f"example.test/{repo}:v1"))
        b = run(s.pull(f"example.test/{repo}:v2"))
        assert a.pinned
        assert b.pinned
        used, inodes = s.store.usage()
        # Disk blocks of what was written (not the compressed sizes), and the inodes
        assert 300_000 <= used < 400_000
        assert inodes >= 2
        c = run(s.container_fs_info())
        assert c.mountpoint.endswith("storage/containers")
    finally:
        s.close()


# -- the tools --------------------------------------------------------------------------------


def test_inspect_remote_downloads_no_layer(
    tmp_path: Path, registry: LocalRegistry, proxy: RegistryProxy, conf_file: Path, repo: str
) -> None:
    img = push_image(
        registry.url,
        repo,
        "v1",
        [make_tar([Entry("a", data=os.urandom(1000))]), make_tar([Entry("b", data=b"b")])],
        config={"User": "1002", "Env": ["A=1"]},
    )
    push_image(registry.url, repo, "v2", [make_tar([Entry("c", data=b"c")])])
    out = cli(tmp_path / "root", conf_file, "inspect", "--remote", f"example.test/{repo}:v1")
    doc = json.loads(out.stdout)
    # Manifest, config, layers with sizes and the repository's tags
    assert doc["Name"] == f"example.test/{repo}"
    assert doc["Digest"] == img.manifest_digest
    assert doc["RepoTags"] == ["v1", "v2"]
    assert doc["Layers"] == img.layer_digests
    assert [layer["Size"] for layer in doc["LayersData"]] == [
        d["size"] for d in doc["Manifest"]["layers"]
    ]
    assert doc["Config"]["config"]["User"] == "1002"
    # And the registry saw no layer blob requested: only the config
    assert proxy.blob_gets() == [img.config_digest]
    assert not any("/tags/list" not in p and "/blobs/" not in p and "/manifests/" not in p
                   and p != "/v2/" for _, p in proxy.requests)  # fmt: skip
    assert not (tmp_path / "root/storage/layers").exists() or _no_layers(tmp_path / "root")


def _no_layers(root: Path) -> bool:
    return not list((root / "storage/layers").iterdir())


def test_copy_round_trip_keeps_digests(
    tmp_path: Path, registry: LocalRegistry, proxy: RegistryProxy, conf_file: Path, repo: str
) -> None:
    # Given an image in the registry
    img = push_image(
        registry.url,
        repo,
        "v1",
        [make_tar([Entry("a", data=os.urandom(5000))]), make_tar([Entry("b", data=b"b")])],
    )
    root = tmp_path / "root"
    oci = tmp_path / "layout"
    # When it is copied registry -> OCI layout -> registry (another repository)
    d1 = cli(root, conf_file, "copy", "-q", f"docker://example.test/{repo}:v1", f"oci:{oci}:one")
    cli(root, conf_file, "copy", "-q", f"oci:{oci}:one", f"docker://example.test/{repo}-copy:v9")
    # Then the manifest digest is the same everywhere, and skopeo reads the layout
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{oci}:one"], capture_output=True, check=True
    ).stdout
    assert sha256(raw) == img.manifest_digest
    out = cli(root, conf_file, "inspect", "--remote", "--no-tags", f"example.test/{repo}-copy:v9")
    assert json.loads(out.stdout)["Digest"] == img.manifest_digest
    del d1
    # And an OCI archive round trip keeps it too, and it imports into the local store
    arc = tmp_path / "img.tar"
    cli(root, conf_file, "copy", "-q", f"oci:{oci}:one", f"oci-archive:{arc}:x")
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci-archive:{arc}:x"], capture_output=True, check=True
    ).stdout
    assert sha256(raw) == img.manifest_digest
    cli(
        root,
        conf_file,
        "copy",
        "-q",
        f"oci-archive:{arc}:x",
        "containers-storage:example.test/imported:1",
    )
    ls = json.loads(cli(root, conf_file, "ls", "--json").stdout)["images"]
    assert [(i["id"], i["repoTags"]) for i in ls] == [
        (img.config_digest, ["example.test/imported:1"])
    ]
    # And skopeo's own copy of the registry image holds the same blobs as ours
    sk = tmp_path / "skopeo-layout"
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", f"docker://{registry.host}/{repo}:v1",
         f"oci:{sk}:one"],
        capture_output=True, check=True,
    )  # fmt: skip
    ours = sorted(p.name for p in (oci / "blobs/sha256").iterdir())
    assert sorted(p.name for p in (sk / "blobs/sha256").iterdir()) == ours


def test_copy_out_of_the_local_store(
    tmp_path: Path, registry: LocalRegistry, conf_file: Path, repo: str
) -> None:
    push_image(
        registry.url,
        repo,
        "v1",
        [
            make_tar([Entry("etc", "dir"), Entry("etc/gone", data=b"x"), Entry("o", "dir"),
                      Entry("o/old", data=b"o")]),
            make_tar([Entry("etc", "dir"), Entry("etc/.wh.gone"), Entry("o", "dir"),
                      Entry("o/.wh..wh..opq"), Entry("o/new", data=b"n")]),
        ],
    )  # fmt: skip
    root = tmp_path / "root"
    cli(root, conf_file, "pull", "-q", f"example.test/{repo}:v1")
    oci = tmp_path / "export"
    cli(root, conf_file, "copy", "-q", f"containers-storage:example.test/{repo}:v1", f"oci:{oci}:x")
    # The exported layers carry OCI whiteouts again, and the image imports back identically
    cli(root, conf_file, "copy", "-q", f"oci:{oci}:x", "containers-storage:example.test/back:1")
    s = ImageService.from_config(root, image_config(conf_file, tmp_path))
    try:
        top = s.lower_dirs(s.require("example.test/back:1").id)[0]
        assert os.stat(top / "etc/gone", follow_symlinks=False).st_rdev == 0
        assert os.getxattr(top / "o", "trusted.overlay.opaque") == b"y"
    finally:
        s.close()


def test_mount_umount_and_refused_removal(
    tmp_path: Path, registry: LocalRegistry, conf_file: Path, repo: str
) -> None:
    push_image(
        registry.url,
        repo,
        "v1",
        [make_tar([Entry("a", data=b"bottom")]), make_tar([Entry("b", data=b"top")])],
    )
    root = tmp_path / "root"
    ref = f"example.test/{repo}:v1"
    cli(root, conf_file, "pull", "-q", ref)
    # When the image is mounted (twice: the store counts mounts)
    path = Path(cli(root, conf_file, "mount", ref).stdout.strip())
    assert Path(cli(root, conf_file, "mount", ref).stdout.strip()) == path
    # Then its merged filesystem is there, read-only
    assert (path / "a").read_bytes() == b"bottom"
    assert (path / "b").read_bytes() == b"top"
    with pytest.raises(OSError, match="Read-only"):
        (path / "new").write_text("x")
    # And removing it is refused at once, naming the mount
    res = cli(root, conf_file, "rm", ref, check=False)
    assert res.returncode == 1
    assert f"in use by mount {path}" in res.stderr
    s = ImageService.from_config(root, image_config(conf_file, tmp_path))
    try:
        with pytest.raises(ImageInUse, match=f"mount {path}"):
            run(s.remove(ref))
    finally:
        s.close()
    # When unmounted once / Then still mounted; twice / then gone and removable
    assert "still mounted" in cli(root, conf_file, "umount", ref).stdout
    assert (path / "a").exists()
    cli(root, conf_file, "umount", ref)
    assert not path.exists() or not os.path.ismount(path)
    cli(root, conf_file, "rm", ref)
    assert json.loads(cli(root, conf_file, "ls", "--json").stdout)["images"] == []


def test_ls_columns_and_json(
    tmp_path: Path, registry: LocalRegistry, conf_file: Path, repo: str
) -> None:
    img = push_image(registry.url, repo, "v1", [make_tar([Entry("a", data=b"1")])])
    root = tmp_path / "root"
    cli(root, conf_file, "pull", "-q", f"example.test/{repo}:v1")
    lines = cli(root, conf_file, "ls").stdout.splitlines()
    assert lines[0].split() == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"]
    assert lines[1].split()[:3] == [f"example.test/{repo}", "v1", img.config_digest[7:20]]
    assert cli(root, conf_file, "ls", "-q").stdout == img.config_digest + "\n"
    doc = json.loads(cli(root, conf_file, "inspect", f"example.test/{repo}:v1").stdout)
    assert doc["id"] == img.config_digest
    assert doc["usedBy"] == []


def test_large_layer_count_mounts(
    svc: ImageService, registry: LocalRegistry, repo: str, tmp_path: Path
) -> None:
    # Given an image with more layers than absolute lowerdir paths fit in one page
    tars = [make_tar([Entry(f"f{i:03d}", data=str(i).encode())]) for i in range(60)]
    push_image(registry.url, repo, "v1", tars)
    rec = run(svc.pull(f"example.test/{repo}:v1"))
    # When it is mounted / Then every layer is visible
    path = run(svc.mount(rec.id))
    try:
        assert len(os.listdir(path)) == 60
        assert (path / "f059").read_bytes() == b"59"
    finally:
        run(svc.unmount(rec.id))


def test_present_image_is_not_downloaded_again(
    svc: ImageService, registry: LocalRegistry, proxy: RegistryProxy, repo: str
) -> None:
    img = push_image(registry.url, repo, "v1", [make_tar([Entry("a", data=os.urandom(1000))])])
    first = run(svc.pull(f"example.test/{repo}:v1"))
    proxy.reset()
    # By tag: one manifest GET, no blob
    assert run(svc.pull(f"example.test/{repo}:v1")) == first
    assert proxy.blob_gets() == []
    assert [p for _, p in proxy.requests if "/manifests/" in p] == [f"/v2/{repo}/manifests/v1"]
    # By digest of content already present: nothing at all
    proxy.reset()
    run(svc.pull(f"example.test/{repo}@{img.manifest_digest}"))
    proxy.reset()
    run(svc.pull(f"example.test/{repo}@{img.manifest_digest}"))
    assert proxy.requests == []


def test_progress_only_on_a_terminal(
    tmp_path: Path, registry: LocalRegistry, proxy: RegistryProxy, conf_file: Path, repo: str
) -> None:
    import pty

    push_image(registry.url, repo, "v1", [make_tar([Entry("a", data=os.urandom(3 << 20))])])
    proxy.rate = 4 << 20
    # On a pipe: the id alone
    piped = cli(tmp_path / "a", conf_file, "pull", f"example.test/{repo}:v1").stdout
    assert piped.startswith("sha256:")
    assert piped.count("\n") == 1
    # On a terminal: redrawn progress lines before the id
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "crirt", "image", "--config", "/nonexistent", "--root",
            str(tmp_path / "b"), "--image-registries-conf", str(conf_file), "pull",
            f"example.test/{repo}:v1",
        ],
        cwd=REPO, stdout=slave, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(60) == 0
    assert b"\rPulling" in out or b"\r\x1b[KPulling" in out
    assert b"sha256:" in out
