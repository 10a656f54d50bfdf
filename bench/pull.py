#!/usr/bin/env python3
"""Cold-pull benchmark: crirt vs Debian's containerd (CRI plugin), same image, same registry.

Builds a reproducible multi-layer image (layers of incompressible data from a seeded PRNG plus a
layer of real files from this machine), pushes it to the test registry (127.0.0.1:5000, see
testbed/), then times CRI PullImage against a fresh ``crirt serve`` and a fresh containerd
(own temp root, state and socket, registry mapping through ``certs.d`` as in
shared/reference/testbed.md §4, restrict_oom_score_adj), alternating, each run on a cold store.
Prints a table and JSON (``--json FILE`` also writes it). Both daemons are started and stopped
by this script; nothing outside its temp dir is touched.

    python3 bench/pull.py [-n 3] [--layers 4 --layer-mb 48] [--json out.json]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import grpc  # noqa: E402
from peers import REGISTRY, containerd, crirt  # noqa: E402

from crirt._gen import api_pb2, api_pb2_grpc  # noqa: E402

MTIME = 1700000000
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CACHE = Path(os.environ.get("CRIRT_BENCH_CACHE", "/var/tmp/crirt-bench"))


# -- the image ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    path: Path
    digest: str
    size: int


def _tar_entry(tf: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime = len(data), mode, MTIME
    tf.addfile(ti, io.BytesIO(data))


def _dir_entry(tf: tarfile.TarFile, name: str) -> None:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, MTIME
    tf.addfile(ti)


def _write_layer(out: Path, fill: Any) -> tuple[Blob, str]:
    """Write ``fill(tarfile)`` as a gzip layer blob; return it and its DiffID."""
    raw = out.with_suffix(".tar")
    with open(raw, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tf:
        fill(tf)
    diff = hashlib.sha256()
    with open(raw, "rb") as src, open(out, "wb") as dst:
        gz = gzip.GzipFile(fileobj=dst, mode="wb", compresslevel=6, mtime=0, filename="")
        while chunk := src.read(1 << 20):
            diff.update(chunk)
            gz.write(chunk)
        gz.close()
    raw.unlink()
    return _blob(out), "sha256:" + diff.hexdigest()


def _blob(path: Path) -> Blob:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return Blob(path, "sha256:" + h.hexdigest(), path.stat().st_size)


def _real_files(limit: int) -> list[Path]:
    """Shared libraries of this machine, sorted, up to ``limit`` bytes (compressible data)."""
    out: list[Path] = []
    total = 0
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/bin"):
        for p in sorted(Path(d).iterdir()):
            if p.is_file() and not p.is_symlink():
                size = p.stat().st_size
                if total + size > limit:
                    return out
                out.append(p)
                total += size
    return out


def build_image(layers: int, layer_mb: int, real_mb: int) -> tuple[list[Blob], list[str], Path]:
    """The layer blobs, their DiffIDs and the directory they live in (cached by parameters)."""
    key = f"v1-{layers}x{layer_mb}-real{real_mb}"
    d = CACHE / key
    meta = d / "layers.json"
    if meta.exists():
        doc = json.loads(meta.read_text())
        return (
            [Blob(Path(b["path"]), b["digest"], b["size"]) for b in doc["blobs"]],
            doc["diff_ids"],
            d,
        )
    d.mkdir(parents=True, exist_ok=True)
    blobs: list[Blob] = []
    diff_ids: list[str] = []
    for i in range(layers):
        rnd = random.Random(1000 + i)

        def fill(tf: tarfile.TarFile, i: int = i, rnd: random.Random = rnd) -> None:
            _dir_entry(tf, f"data{i}")
            left = layer_mb << 20
            n = 0
            while left > 0:
                size = min(left, rnd.choice((1 << 20, 4 << 20, 16 << 20)))
                _tar_entry(tf, f"data{i}/chunk{n:03d}", rnd.randbytes(size))
                left -= size
                n += 1

        b, diff = _write_layer(d / f"layer{i}.tar.gz", fill)
        blobs.append(b)
        diff_ids.append(diff)
        print(f"[bench] built layer {i}: {b.size >> 20} MiB", file=sys.stderr)
    files = _real_files(real_mb << 20)

    def fill_real(tf: tarfile.TarFile) -> None:
        _dir_entry(tf, "real")
        for p in files:
            _tar_entry(tf, f"real/{p.parent.name}-{p.name}", p.read_bytes(), 0o755)

    b, diff = _write_layer(d / "layer-real.tar.gz", fill_real)
    blobs.append(b)
    diff_ids.append(diff)
    meta.write_text(
        json.dumps(
            {
                "blobs": [{"path": str(x.path), "digest": x.digest, "size": x.size} for x in blobs],
                "diff_ids": diff_ids,
            }
        )
    )
    return blobs, diff_ids, d


def _call(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    conn = http.client.HTTPConnection(REGISTRY, timeout=300)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), data


def push(repo: str, tag: str, blobs: list[Blob], diff_ids: list[str]) -> tuple[str, int]:
    """Push the image (skipping blobs the registry has); return manifest digest and size."""

    def put_blob(digest: str, size: int, data: Any) -> None:
        status, _, _ = _call("HEAD", f"/v2/{repo}/blobs/{digest}")
        if status == 200:
            return
        status, headers, body = _call("POST", f"/v2/{repo}/blobs/uploads/")
        assert status == 202, body
        loc = headers["Location"]
        loc = loc.split(REGISTRY, 1)[1] if "://" in loc else loc
        sep = "&" if "?" in loc else "?"
        status, _, body = _call(
            "PUT",
            f"{loc}{sep}digest={digest}",
            data,
            {"Content-Length": str(size), "Content-Type": "application/octet-stream"},
        )
        assert status == 201, body

    for b in blobs:
        with open(b.path, "rb") as f:
            put_blob(b.digest, b.size, f)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2023-11-14T22:13:20Z",
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    cdigest = "sha256:" + hashlib.sha256(config).hexdigest()
    put_blob(cdigest, len(config), config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": cdigest, "size": len(config)},
            "layers": [{"mediaType": MT_LAYER, "digest": b.digest, "size": b.size} for b in blobs],
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    status, _, body = _call(
        "PUT", f"/v2/{repo}/manifests/{tag}", manifest, {"Content-Type": MT_MANIFEST}
    )
    assert status == 201, body
    return "sha256:" + hashlib.sha256(manifest).hexdigest(), sum(b.size for b in blobs)


# -- the runtimes: bench/peers.py ---------------------------------------------------------------


def pull_once(sock: Path, ref: str) -> float:
    with grpc.insecure_channel(f"unix://{sock}") as ch:
        stub = api_pb2_grpc.ImageServiceStub(ch)  # type: ignore[no-untyped-call]
        os.sync()
        t0 = time.perf_counter()
        resp = stub.PullImage(
            api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=ref)), timeout=600
        )
        dt = time.perf_counter() - t0
        assert resp.image_ref, resp
    return dt


def _du(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=False)
    return int(out.stdout.split()[0]) if out.stdout else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", "--runs", type=int, default=3, help="runs per runtime (>= 3)")
    ap.add_argument("--layers", type=int, default=4, help="incompressible layers")
    ap.add_argument("--layer-mb", type=int, default=48, help="MiB per incompressible layer")
    ap.add_argument("--real-mb", type=int, default=48, help="MiB of real files (one layer)")
    ap.add_argument("--only", choices=("crirt", "containerd"), help="time one runtime only")
    ap.add_argument("--json", dest="json_out", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/pull.py needs root (overlay mounts)", file=sys.stderr)
        return 2
    registry_sh = str(REPO / "testbed" / "registry.sh")
    subprocess.run([registry_sh, "start"], check=True, capture_output=True)
    blobs, diff_ids, _ = build_image(args.layers, args.layer_mb, args.real_mb)
    repo, tag = "bench/pull", f"{args.layers}x{args.layer_mb}-real{args.real_mb}"
    digest, compressed = push(repo, tag, blobs, diff_ids)
    ref = f"{REGISTRY}/{repo}:{tag}"
    print(
        f"[bench] image {ref} ({digest[:19]}): {len(blobs)} layers, "
        f"{compressed / 1e6:.1f} MB compressed",
        file=sys.stderr,
    )
    runtimes = {"crirt": crirt, "containerd": containerd}
    names = [args.only] if args.only else ["crirt", "containerd"]
    times: dict[str, list[float]] = {n: [] for n in names}
    disk: dict[str, int] = {}
    for i in range(args.runs):
        order = names if i % 2 == 0 else list(reversed(names))
        for name in order:
            with tempfile.TemporaryDirectory(prefix=f"crirt-bench-{name}-", dir="/var/tmp") as t:
                tmp = Path(t)
                with runtimes[name](tmp) as sock:
                    dt = pull_once(sock, ref)
                    disk[name] = _du(tmp / "root")
                times[name].append(dt)
                print(f"[bench] run {i + 1} {name}: {dt:.2f} s", file=sys.stderr)
    medians = {n: statistics.median(v) for n, v in times.items()}
    result: dict[str, Any] = {
        "image": ref,
        "manifest_digest": digest,
        "layers": len(blobs),
        "compressed_bytes": compressed,
        "runs": args.runs,
        "seconds": times,
        "median_seconds": medians,
        "root_disk_bytes": disk,
        "cpus": os.cpu_count(),
    }
    if len(medians) == 2:
        result["ratio_crirt_over_containerd"] = medians["crirt"] / medians["containerd"]
    print(f"\n{'runtime':<12} {'median s':>9} {'min s':>7} {'max s':>7}   runs")
    for n, v in times.items():
        runs = " ".join(f"{x:.2f}" for x in v)
        print(f"{n:<12} {medians[n]:>9.2f} {min(v):>7.2f} {max(v):>7.2f}   {runs}")
    if "ratio_crirt_over_containerd" in result:
        print(f"ratio crirt/containerd: {result['ratio_crirt_over_containerd']:.2f}")
    print(json.dumps(result))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
