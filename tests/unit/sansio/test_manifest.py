"""crirt.sansio.manifest: media types, manifest/index parsing, platform pick, image config."""

from __future__ import annotations

import json
from typing import Any

import pytest

from crirt.errors import ImageNotFound, InvalidArgument
from crirt.sansio import manifest as m

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def _b(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _manifest(media_type: str | None = m.OCI_MANIFEST) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "config": {"mediaType": m.OCI_CONFIG, "digest": D1, "size": 10},
        "layers": [{"mediaType": m.OCI_LAYER_GZIP, "digest": D2, "size": 20}],
    }
    if media_type:
        doc["mediaType"] = media_type
    return doc


def test_parse_oci_manifest() -> None:
    got = m.parse_manifest(_b(_manifest()))
    assert got == m.Manifest(
        m.OCI_MANIFEST,
        m.Descriptor(m.OCI_CONFIG, D1, 10),
        (m.Descriptor(m.OCI_LAYER_GZIP, D2, 20),),
    )


def test_media_type_from_header_or_shape() -> None:
    # Given OCI documents without mediaType / Then the header, else the shape, decides.
    body = _b(_manifest(None))
    assert m.parse_manifest(body, m.DOCKER_MANIFEST).media_type == m.DOCKER_MANIFEST
    assert m.parse_manifest(body, "application/json").media_type == m.OCI_MANIFEST
    index = _b({"schemaVersion": 2, "manifests": []})
    assert isinstance(m.parse_manifest(index), m.Index)


def _index(entries: list[dict[str, Any]]) -> bytes:
    return _b({"schemaVersion": 2, "mediaType": m.DOCKER_MANIFEST_LIST, "manifests": entries})


def _entry(digest: str, os: str, arch: str, variant: str = "", mt: str = m.DOCKER_MANIFEST) -> Any:
    p = {"os": os, "architecture": arch}
    if variant:
        p["variant"] = variant
    return {"mediaType": mt, "digest": digest, "size": 1, "platform": p}


def test_select_platform() -> None:
    idx = m.parse_manifest(
        _index(
            [
                _entry(D1, "linux", "arm64", "v8"),
                _entry(D3, "unknown", "unknown"),  # attestation
                _entry(D2, "linux", "amd64"),
            ]
        )
    )
    assert isinstance(idx, m.Index)
    assert m.select_platform(idx).digest == D2
    assert m.select_platform(idx, "linux", "arm64", "v8").digest == D1
    with pytest.raises(ImageNotFound, match="linux/s390x"):
        m.select_platform(idx, "linux", "s390x")


def test_select_platform_prefers_no_variant() -> None:
    idx = m.parse_manifest(
        _index([_entry(D1, "linux", "amd64", "v3"), _entry(D2, "linux", "amd64")])
    )
    assert isinstance(idx, m.Index)
    assert m.select_platform(idx).digest == D2


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (_b({"schemaVersion": 1, "name": "x"}), "schema1"),
        (_b({**_manifest(), "schemaVersion": 3}), "schemaVersion"),
        (_b({**_manifest(), "mediaType": "application/x-weird"}), "unsupported manifest media"),
        (_b({**_manifest(), "layers": [{"digest": "sha256:12", "size": 1}]}), "invalid digest"),
        (_b({**_manifest(), "layers": [{"digest": D1, "size": -1}]}), "no valid size"),
        (_b({**_manifest(), "config": None}), "not an object"),
    ],
)
def test_invalid_manifests(body: bytes, needle: str) -> None:
    with pytest.raises(InvalidArgument, match=needle):
        m.parse_manifest(body)


def test_parse_image_config() -> None:
    body = _b(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "User": "www-data:1004",
                "Env": ["PATH=/bin", "A=b"],
                "Entrypoint": ["/entry"],
                "Cmd": None,
                "WorkingDir": "/w",
                "Labels": {"k": "v"},
                "StopSignal": "SIGQUIT",
                "ExposedPorts": {"80/tcp": {}, "443/tcp": {}},
                "Volumes": {"/data": {}},
            },
            "rootfs": {"type": "layers", "diff_ids": [D1, D2]},
        }
    )
    cfg = m.parse_image_config(body)
    assert cfg == m.OciImageConfig(
        user="www-data:1004",
        env=("PATH=/bin", "A=b"),
        entrypoint=("/entry",),
        cmd=None,
        working_dir="/w",
        labels={"k": "v"},
        stop_signal="SIGQUIT",
        exposed_ports=("443/tcp", "80/tcp"),
        volumes=("/data",),
        diff_ids=(D1, D2),
        os="linux",
        architecture="amd64",
    )


def test_minimal_config() -> None:
    cfg = m.parse_image_config(b'{"rootfs": {"type": "layers", "diff_ids": []}, "config": null}')
    assert cfg == m.OciImageConfig()


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"rootfs": {"type": "other"}}, "rootfs type"),
        ({"rootfs": {"diff_ids": ["nope"]}}, "diff_id"),
        ({"config": {"Env": "A=b"}}, "'Env' must be a list"),
        ({"config": {"Labels": {"a": 1}}}, "Labels"),
        ({"config": {"User": 5}}, "'User' must be a string"),
    ],
)
def test_invalid_config(doc: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidArgument, match=needle):
        m.parse_image_config(_b(doc))


@pytest.mark.parametrize(
    ("user", "want"),
    [
        ("", (None, "")),
        ("1002", (1002, "")),
        ("www-data", (None, "www-data")),
        ("1003:1004", (1003, "")),
        ("www-data:1004", (None, "www-data")),
        ("0", (0, "")),
    ],
)
def test_parse_image_user(user: str, want: tuple[int | None, str]) -> None:
    # critest "image status get image fields should not have Uid|Username empty"
    assert m.parse_image_user(user) == want


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # past the recursion limit: json raised RecursionError
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        # Within the recursion limit, but deeper than any manifest or config is
        json.dumps(
            {"schemaVersion": 2, "annotations": {"a": json.loads("[" * 500 + "]" * 500)}}
        ).encode(),
    ],
)
def test_json_nested_too_deep_is_a_parse_error(body: bytes) -> None:
    # Issue 15: RecursionError went past the error types (UNKNOWN, mirror fallback skipped).
    for parse in (
        lambda: m.parse_manifest(body),
        lambda: m.detect_media_type(body, None),
        lambda: m.parse_image_config(body),
        lambda: m.loads_json(body, "document"),
    ):
        with pytest.raises(InvalidArgument, match="nested too deep"):
            parse()


def test_json_number_past_the_int_digit_limit_is_a_parse_error() -> None:
    # json.loads raised a bare ValueError (not JSONDecodeError) for a number of more than
    # 4,300 digits: past the error types, like RecursionError was (found by tests/fuzz manifest).
    body = b'{"schemaVersion": 2, "manifests": [], "n": ' + b"1" * 5000 + b"}"
    for parse in (
        lambda: m.parse_manifest(body),
        lambda: m.detect_media_type(body, None),
        lambda: m.parse_image_config(body),
        lambda: m.loads_json(body, "document"),
    ):
        with pytest.raises(InvalidArgument, match="not JSON"):
            parse()


def test_loads_json_keeps_ordinary_documents() -> None:
    doc = {"a": [{"b": {"c": [1, 2, {"d": None}]}}]}
    assert m.loads_json(json.dumps(doc).encode(), "x") == doc
    with pytest.raises(InvalidArgument, match="not JSON"):
        m.loads_json(b"{", "x")
