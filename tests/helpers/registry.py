"""A throwaway docker-registry on 127.0.0.1 and a tiny OCI push client for tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import socket
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REGISTRY_BIN = "/usr/bin/docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class LocalRegistry:
    """docker-registry serving ``dir`` on a free loopback port (never 5000: the shared bed)."""

    def __init__(self, dir: Path) -> None:
        self.dir = dir
        port = free_port()
        while port == 5000:
            port = free_port()
        self.host = f"127.0.0.1:{port}"
        self.url = f"http://{self.host}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self) -> None:
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        conf = self.dir / "registry.yml"
        conf.write_text(
            "version: 0.1\n"
            "log: {level: error, accesslog: {disabled: true}}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.dir / 'data'}}}, "
            "delete: {enabled: true}}\n"
            f"http: {{addr: {self.host}}}\n"
        )
        self._log = open(self.dir / "registry.log", "wb")  # noqa: SIM115 (closed in stop)
        self._proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(conf)], stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/v2/", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"docker-registry did not start: {(self.dir / 'registry.log').read_text()}"
        )

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


def available() -> bool:
    return shutil.which(REGISTRY_BIN) is not None


def push_blob(url: str, repo: str, data: bytes) -> str:
    """Monolithic upload: POST to start, PUT with ?digest= to finish."""
    digest = sha256(data)
    r = requests.post(f"{url}/v2/{repo}/blobs/uploads/", timeout=10)
    assert r.status_code == 202, r.text
    loc = r.headers["Location"]
    if loc.startswith("/"):
        loc = url + loc
    sep = "&" if "?" in loc else "?"
    r = requests.put(
        f"{loc}{sep}digest={digest}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    return digest


def push_manifest(url: str, repo: str, ref: str, body: bytes, media_type: str) -> str:
    r = requests.put(
        f"{url}/v2/{repo}/manifests/{ref}",
        data=body,
        headers={"Content-Type": media_type},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    return sha256(body)


@dataclass
class Entry:
    """One tar member to build: ``kind`` is file, dir, symlink, hardlink, char, fifo."""

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    link: str = ""
    xattrs: dict[str, str] = field(default_factory=dict)


_KINDS = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def make_tar(entries: list[Entry]) -> bytes:
    """A reproducible PAX tar (mtime fixed, names taken verbatim, even hostile ones)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            ti = tarfile.TarInfo(e.name)
            ti.type = _KINDS[e.kind]
            ti.mode = e.mode
            ti.uid, ti.gid = e.uid, e.gid
            ti.mtime = 1_600_000_000
            ti.linkname = e.link
            ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e.xattrs.items()}
            if e.kind == "file":
                ti.size = len(e.data)
                tf.addfile(ti, io.BytesIO(e.data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


@dataclass
class PushedImage:
    repo: str
    config_digest: str
    manifest_digest: str
    manifest_size: int
    layer_digests: list[str]
    diff_ids: list[str]


def push_image(
    url: str,
    repo: str,
    tag: str,
    layers: list[bytes],
    *,
    config: dict[str, Any] | None = None,
    diff_ids: list[str] | None = None,
    layer_sizes: list[int] | None = None,
    compress: bool = True,
) -> PushedImage:
    """Push uncompressed layer tars (gzipped unless told otherwise), a config and a manifest.

    ``diff_ids`` and ``layer_sizes`` override the true values, to build lying images.
    """
    blobs = [gz(t) if compress else t for t in layers]
    digests = [push_blob(url, repo, b) for b in blobs]
    true_diff_ids = [sha256(t) for t in layers]
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "config": config or {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids or true_diff_ids},
    }
    cfg_body = json.dumps(cfg, sort_keys=True).encode()
    cfg_digest = push_blob(url, repo, cfg_body)
    sizes = layer_sizes or [len(b) for b in blobs]
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cfg_digest, "size": len(cfg_body)},
        "layers": [
            {
                "mediaType": OCI_LAYER_GZIP
                if compress
                else "application/vnd.oci.image.layer.v1.tar",
                "digest": d,
                "size": s,
            }
            for d, s in zip(digests, sizes, strict=True)
        ],
    }
    body = json.dumps(manifest, sort_keys=True).encode()
    mdigest = push_manifest(url, repo, tag, body, OCI_MANIFEST)
    return PushedImage(repo, cfg_digest, mdigest, len(body), digests, diff_ids or true_diff_ids)


def push_index(url: str, repo: str, tag: str, manifests: list[tuple[str, int, str]]) -> str:
    """Push an OCI index over already pushed manifests given as (digest, size, arch)."""
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": d,
                "size": s,
                "platform": {"os": "linux", "architecture": arch},
            }
            for d, s, arch in manifests
        ],
    }
    return push_manifest(url, repo, tag, json.dumps(index).encode(), OCI_INDEX)
