"""Write the seed corpus (``corpus/<target>/seed-*``) from the unit tests' literals:

    python3 -m tests.fuzz.seeds

Seeds are named by their content's hash, so rerunning adds nothing twice; inputs that once
crashed a target (``crash-*``, added by hand once fixed) are left alone.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import tarfile
from pathlib import Path

from crirt.sansio import crilog, manifest, remotecommand
from tests.fuzz.targets import TARGETS, TEMPLATE
from tests.unit.registry.test_config import MAIN as REGISTRIES_MAIN
from tests.unit.sansio.test_cgroupstats import NET_DEV, V1_MEMORY_STAT, V2_MEMORY_STAT
from tests.unit.sansio.test_cni import BRIDGE, BRIDGE_RESULT, PORTMAP
from tests.unit.sansio.test_http1 import CRICTL_SPDY
from tests.unit.sansio.test_spdy import CRICTL_EXEC, CRICTL_PORTFORWARD

CORPUS = Path(__file__).parent / "corpus"
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def template(count: int, *parts: bytes) -> bytes:
    """An input ``targets.expand`` turns into ``head + unit1*count + mid + unit2*count + tail``."""
    return TEMPLATE + struct.pack(">H", count) + b"\xfe".join(parts)


def _j(doc: object) -> bytes:
    return json.dumps(doc).encode()


def _spdy_record(ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    return bytes([ftype, flags]) + struct.pack(">IH", sid, len(payload)) + payload


def _ws_record(b0: int, payload: bytes) -> bytes:
    return bytes([b0, len(payload)]) + payload


def _tar(*members: tuple[str, bytes, str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, link in members:
            ti = tarfile.TarInfo(name)
            ti.type = kind
            ti.linkname = link
            if kind == tarfile.REGTYPE:
                ti.size = 2
            if kind == tarfile.CHRTYPE:
                ti.devmajor, ti.devminor = 1, 3
            if name.endswith("x"):
                ti.pax_headers = {"SCHILY.xattr.user.a": "1", "SCHILY.xattr.trusted.x": "2"}
            tf.addfile(ti, io.BytesIO(b"hi"))
    return out.getvalue()


def _text(s: str) -> bytes:
    b = s.encode()
    return bytes([len(b)]) + b


def _header_fields(name: str, kind: int, link: str = "") -> bytes:
    """One entry of targets.fuzz_tarplan's mode 0 (a tarplan.Header): name, type, linkname,
    mode 0644, uid and gid 0, size 2, device 1:3, one xattr."""
    return (
        _text(name)
        + bytes([kind])
        + _text(link)
        + b"\x00\x01\xa4\x00\x08\x00\x08\x04\x01\x03"
        + _text("user.a")
    )


def _tarinfo_fields(name: str, kind: int, link: str = "") -> bytes:
    """One entry of targets.fuzz_tarplan's mode 1 (a TarInfo written with tarfile): name, type,
    linkname, mode 0644, uid and gid 0, device 0:0, size 2 for files, one PAX xattr."""
    size = b"\x02" if kind == 0 else b""
    return (
        _text(name)
        + bytes([kind])
        + _text(link)
        + b"\x01\xa4\x00\x00\x00\x00\x00\x00"
        + size
        + b"\x01"
        + _text("user.a")
        + _text("1")
    )


def seeds() -> dict[str, list[bytes]]:
    index = {
        "schemaVersion": 2,
        "mediaType": manifest.DOCKER_MANIFEST_LIST,
        "manifests": [
            {
                "mediaType": manifest.DOCKER_MANIFEST,
                "digest": D1,
                "size": 1,
                "platform": {"os": "linux", "architecture": "amd64"},
            },
            {
                "mediaType": manifest.DOCKER_MANIFEST,
                "digest": D2,
                "size": 1,
                "platform": {"os": "linux", "architecture": "arm", "variant": "v7"},
            },
        ],
    }
    image_manifest = {
        "schemaVersion": 2,
        "mediaType": manifest.OCI_MANIFEST,
        "config": {"mediaType": manifest.OCI_CONFIG, "digest": D1, "size": 10},
        "layers": [{"mediaType": manifest.OCI_LAYER_GZIP, "digest": D2, "size": 20}],
    }
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": "1000:1000",
            "Env": ["PATH=/bin"],
            "Entrypoint": ["/bin/sh"],
            "Cmd": ["-c", "true"],
            "WorkingDir": "/",
            "Labels": {"a": "b"},
            "StopSignal": "SIGTERM",
            "ExposedPorts": {"80/tcp": {}},
            "Volumes": {"/data": {}},
        },
        "rootfs": {"type": "layers", "diff_ids": [D1]},
    }
    auth = {
        "auths": {
            "quay.io": {"auth": base64.b64encode(b"host:pw").decode()},
            "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
            "http://reg.local:5000/": {"identitytoken": "refresh-me"},
        },
        "credHelpers": {"ecr.example.com": "ecr-login"},
        "credsStore": "desktop",
    }
    ts = crilog.format_timestamp(1_764_315_525_271_487_372).encode()
    conflist = {"cniVersion": "1.0.0", "name": "crirt", "plugins": [BRIDGE, PORTMAP]}
    return {
        "spdy": [
            b"\x00" + CRICTL_EXEC,
            b"\x04" + CRICTL_PORTFORWARD,
            b"\x01" + CRICTL_EXEC[:60],
            b"\x02"
            + _spdy_record(1, 0, 1, b"streamtype=error\nport=80")
            + _spdy_record(1, 0, 3, b"streamtype=data\nport=80\nrequestid=0")
            + _spdy_record(0, 1, 3, b"hi")
            + _spdy_record(6, 0, 1, b"\x00\x00\x00\x01")
            + _spdy_record(3, 0, 0, b"\x00\x00\x00\x03\x00\x00\x00\x05")
            + _spdy_record(4, 0, 0, b"\x00\x00\x00\x01\x00\x00\x00\x07\x00\x00\x00\x01"),
            b"\x06"
            + _spdy_record(0x81, 0, 1, b"\x00\x00\x00\x01\x00\x00\x00\x01a\x00\x00\x00\x00"),
        ],
        "websocket": [
            b"\x01"
            + _ws_record(0x81, b"\x00stdin")
            + _ws_record(0x02, b"\x01par")
            + _ws_record(0x80, b"t")
            + _ws_record(0x89, b"ping")
            + _ws_record(0x88, b"\x03\xe8bye"),
            b"\x03" + _ws_record(0x81, "é".encode()) + _ws_record(0x8A, b""),
            b"\x00\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",  # RFC 6455 5.7 "Hello"
        ],
        "http1": [
            b"\x00" + CRICTL_SPDY,
            b"\x05GET /portforward/x?port=80&port=81,82 HTTP/1.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nrest",
            b"\x09" + template(40, b"GET / HTTP/1.1\r\n", b"a: b\r\n", b"\r\n"),
        ],
        "resize": [
            b"\x00" + remotecommand.encode_size(80, 24) + b'\n{"Width":1,"Height":2}',
            b'\x07 {"Width": 100, "Height": 50, "x": "a}\\"{"}{}',
            b"\x03\x01\x02\x03",
            b"\x0b" + template(3, b'{"Width":', b"[", b"1", b"]", b"}"),
        ],
        "portforward": [
            b"a|80|error|1\na|80|data|1\n!\n~\na|8080|data|-\na|8080|error|-",
            b"80\n65535\n0\n65536\n\xc2\xb2\na|1|data|2\na|-|error|3",
        ],
        "manifest": [
            b"\x00" + _j(image_manifest),
            b"\x00" + _j(index),
            b"\x00" + _j(config),
            b"\x03" + _j({"schemaVersion": 2, "config": {}, "layers": []}),
            b"\x00" + template(3, b'{"schemaVersion":2,"manifests":', b"[", b"", b"]", b"}"),
            b"\x00" + template(3, b'{"schemaVersion":2,"manifests":[],"n":', b"1", b"", b"", b"}"),
        ],
        "reference": [
            b"busybox",
            b"docker.io/library/busybox:1.36",
            b"localhost:5000/a/b-c__d.e@" + D1.encode(),
            b"[::1]:5000/x:tag",
            b"quay.io/ns/repo:v1@" + D2.encode(),
            ("a" * 64).encode(),
        ],
        "tarplan": [
            b"\x0c"
            + _header_fields("a/b", 0)
            + _header_fields("../x", 2, "l")
            + _header_fields("d/.wh..wh..opq", 1)
            + _header_fields("dev/null", 4),
            b"\x0d"
            + _tarinfo_fields("dir/", 4)
            + _tarinfo_fields("dir/.wh.f", 0)
            + _tarinfo_fields("l", 5, "/etc/passwd")
            + _tarinfo_fields("h", 6, "dir/x"),
            b"\x0e"
            + _tar(
                ("dir", tarfile.DIRTYPE, ""),
                ("dir/x", tarfile.REGTYPE, ""),
                ("dir/.wh..wh..opq", tarfile.REGTYPE, ""),
                ("dev/null", tarfile.CHRTYPE, ""),
                ("h", tarfile.LNKTYPE, "dir/x"),
            ),
        ],
        "challenge": [
            b'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            b'scope="repository:library/busybox:pull"',
            b'Basic realm="r", Bearer realm="http://h:5000/t?a=b" , Negotiate dXNlcg==',
            b'{"token": "t", "expires_in": 300}',
            b'{"access_token": "a", "expires_in": true}',
        ],
        "authfile": [
            _j(auth),
            b'{"Username": "<token>", "Secret": "s"}',
            template(3, b'{"auths":', b"[", b"", b"]", b"}"),
        ],
        "registries_conf": [
            REGISTRIES_MAIN.encode(),
            b'[aliases]\n"pause" = "registry.k8s.io/pause"\n#---\n'
            b'unqualified-search-registries = ["quay.io"]\nbusybox:1',
            b'[registries.search]\nregistries = ["docker.io"]\n[registries.insecure]\n'
            b'registries = ["h:5000"]\n[registries.block]\nregistries = ["bad.io"]\n',
            b'[registries]\nsearch.registries = ["docker.io"]\ninsecure.registries = ["h:5000"]\n'
            b'block.registries = ["bad.io"]\n',
            template(3, b'unqualified-search-registries = ["a"]\nn = ', b"1", b"", b"", b"\n"),
        ],
        "crilog": [
            b"\x00\x10" + ts + b" stdout P log content 1\n" + ts + b" stderr F log content 2\n",
            b"\x03\x05hello\nworld, a long line\n\nunterminated",
            b"\x01\x00" + b"2016-10-06T00:17:09+02:00 stdout F:x y\n2016-10-06T00:17:09.1Z x F\n",
        ],
        "cni": [
            b"\x00" + _j(conflist),
            b"\x01" + _j({"cniVersion": "0.3.1", "name": "n", "type": "bridge"}),
            b"\x00" + _j(BRIDGE_RESULT),
            b"\x02" + _j({"cniVersion": "0.2.0", "ip4": {"ip": "10.3.0.4/24", "gateway": "1"}}),
            b"\x00" + _j({"code": 7, "msg": "bad", "details": "d"}),
            b"\x00"
            + template(3, b'{"cniVersion":"1.0.0","name":"n","plugins":', b"[", b"", b"]", b"}"),
        ],
        "cgroupstats": [
            b"26000000\n\x00" + V1_MEMORY_STAT.encode() + b"\x009223372036854771712\n",
            b"max\n\x00" + V2_MEMORY_STAT.encode() + b"\x00max",
            NET_DEV.encode(),
            b"some avg10=0.12 avg60=0.00 avg300=0.00 total=123\n"
            b"full avg10=0.00 avg60=0.00 avg300=0.00 total=45\n",
        ],
    }


def main() -> None:
    all_seeds = seeds()
    assert set(all_seeds) == set(TARGETS), set(all_seeds) ^ set(TARGETS)
    for target, inputs in all_seeds.items():
        d = CORPUS / target
        d.mkdir(parents=True, exist_ok=True)
        for data in inputs:
            (d / f"seed-{hashlib.sha1(data).hexdigest()[:16]}").write_bytes(data)


if __name__ == "__main__":
    main()
