"""``crirt image …``: the daemonless image tools, on the same store as ``crirt serve``.

Every command opens ``<root>/storage`` directly (file locks make it safe beside a running
server, which notices the changes through the store's write token) and reads the same
crirt.conf (``--config``, ``--root`` and every other ``crirt serve`` flag apply).

Output is for scripts: ``ls`` prints crictl's ``images`` columns (or ``--json``), ``pull``
prints the image id, ``mount`` the mount point; progress goes to stdout only when it is a
terminal, errors go to stderr with exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from crirt import log as crirt_log
from crirt.config import Config
from crirt.errors import CrirtError, InvalidArgument
from crirt.image import transports
from crirt.image.service import ImageService, pinned_patterns
from crirt.registry.credentials import Auth
from crirt.sansio.manifest import MAX_CONFIG_SIZE, loads_json, parse_image_config
from crirt.storage.images import ImageRecord

# Progress lines are redrawn at most this often.
_REDRAW = 0.1


def add_subcommands(parser: argparse.ArgumentParser) -> None:
    """Register the ``crirt image`` actions (every dest starts with ``cli_``)."""
    sub = parser.add_subparsers(dest="cli_action", required=True, metavar="ACTION")
    p = sub.add_parser("pull", help="pull an image into the store; prints its id")
    p.add_argument("cli_ref", metavar="REF")
    p.add_argument("--creds", dest="cli_creds", metavar="USER[:PASSWORD]")
    p.add_argument("-q", "--quiet", dest="cli_quiet", action="store_true")
    p = sub.add_parser("ls", help="list images (crictl images columns)")
    p.add_argument("--json", dest="cli_json", action="store_true", help="JSON output")
    p.add_argument("-q", "--quiet", dest="cli_quiet", action="store_true", help="ids only")
    p.add_argument("--digests", dest="cli_digests", action="store_true")
    p = sub.add_parser("rm", help="remove images (refused while used or mounted)")
    p.add_argument("cli_refs", metavar="REF", nargs="+")
    p = sub.add_parser("inspect", help="show a local image, or with --remote a registry's")
    p.add_argument("cli_ref", metavar="REF")
    p.add_argument("--remote", dest="cli_remote", action="store_true", help="ask the registry")
    p.add_argument("--no-tags", dest="cli_no_tags", action="store_true")
    p.add_argument("--creds", dest="cli_creds", metavar="USER[:PASSWORD]")
    p = sub.add_parser(
        "copy",
        help="copy an image between docker://REF, oci:DIR[:TAG], oci-archive:FILE[:TAG] "
        "and containers-storage:REF",
    )
    p.add_argument("cli_src", metavar="SRC")
    p.add_argument("cli_dst", metavar="DST")
    p.add_argument("--src-creds", dest="cli_src_creds", metavar="USER[:PASSWORD]")
    p.add_argument("--dest-creds", dest="cli_dest_creds", metavar="USER[:PASSWORD]")
    p.add_argument("-q", "--quiet", dest="cli_quiet", action="store_true")
    p = sub.add_parser("mount", help="mount an image read-only; prints the path")
    p.add_argument("cli_ref", metavar="REF")
    p = sub.add_parser("umount", help="undo one mount of an image")
    p.add_argument("cli_ref", metavar="REF")
    p.add_argument("--force", dest="cli_force", action="store_true", help="all mounts")


def _creds(value: str | None) -> Auth | None:
    if not value:
        return None
    user, _, password = value.partition(":")
    return Auth(username=user, password=password)


def human_size(size: float) -> str:
    """docker/go-units ``HumanSizeWithPrecision(size, 3)``, as crictl prints sizes."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    return f"{size:.3g}{units[i]}"


class _Bar:
    """One redrawn progress line on a terminal; silent otherwise."""

    def __init__(self, out: TextIO, label: str) -> None:
        self._out = out
        self._label = label
        self._on = out.isatty()
        self._start = time.monotonic()
        self._last = 0.0
        self._done = 0
        self._lock = threading.Lock()
        self._blobs: dict[str, tuple[int, int]] = {}

    def add(self, n: int) -> None:
        with self._lock:
            self._done += n
            self._draw(f"{human_size(self._done)}")

    def blob(self, digest: str, done: int, total: int) -> None:
        with self._lock:
            self._blobs[digest] = (done, total)
            got = sum(d for d, _ in self._blobs.values())
            want = sum(t for _, t in self._blobs.values())
            self._draw(f"{human_size(got)} / {human_size(want)} ({len(self._blobs)} blobs)")

    def _draw(self, text: str) -> None:
        now = time.monotonic()
        if not self._on or now - self._last < _REDRAW:
            return
        self._last = now
        rate = self._done / max(now - self._start, 1e-3)
        tail = f" {human_size(rate)}/s" if self._done else ""
        self._out.write(f"\r\x1b[K{self._label}: {text}{tail}")
        self._out.flush()

    def close(self) -> None:
        if self._on and self._last:
            self._out.write("\r\x1b[K")
            self._out.flush()


def _record_json(rec: ImageRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "repoTags": list(rec.repo_tags),
        "repoDigests": list(rec.repo_digests),
        "size": rec.size,
        "uid": rec.uid,
        "username": rec.username,
        "pinned": rec.pinned,
    }


def _ls(svc: ImageService, args: argparse.Namespace, out: TextIO) -> int:
    records = sorted(svc.list(), key=lambda r: (r.repo_tags or r.repo_digests or (r.id,))[0])
    if args.cli_json:
        json.dump({"images": [_record_json(r) for r in records]}, out, indent=2)
        out.write("\n")
        return 0
    if args.cli_quiet:
        for r in records:
            out.write(r.id + "\n")
        return 0
    rows = [["IMAGE", "TAG", *(["DIGEST"] if args.cli_digests else []), "IMAGE ID", "SIZE"]]
    for r in records:
        digest = r.repo_digests[0].split("@", 1)[1] if r.repo_digests else ""
        short_digest = digest.split(":", 1)[-1][:13]
        names = [t.rsplit(":", 1) for t in r.repo_tags] or [
            [d.split("@", 1)[0], "<none>"] for d in r.repo_digests[:1]
        ]
        for repo, tag in names or [["<none>", "<none>"]]:
            rows.append(
                [
                    repo,
                    tag,
                    *([short_digest] if args.cli_digests else []),
                    r.id.split(":", 1)[1][:13],
                    human_size(r.size),
                ]
            )
    # crictl's tabwriter: min width 20, padding 3.
    widths = [max(20, *(len(row[i]) + 3 for row in rows)) for i in range(len(rows[0]))]
    for row in rows:
        line = "".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)) + row[-1]
        out.write(line.rstrip() + "\n")
    return 0


async def _inspect_remote(svc: ImageService, args: argparse.Namespace, out: TextIO) -> int:
    auth = _creds(args.cli_creds)
    ref = svc.registries.resolve(args.cli_ref)
    resolved = await svc.resolve(ref, auth)
    ep, manifest = resolved.endpoint, resolved.manifest
    config_body = await asyncio.to_thread(
        svc.client.get_blob, ep, manifest.config.digest, max_size=MAX_CONFIG_SIZE, auth=auth
    )
    config = loads_json(config_body, "image config")
    tags: list[str] = []
    if not args.cli_no_tags:
        tags = await asyncio.to_thread(svc.client.list_tags, ep, auth)
    parsed = parse_image_config(config_body)
    doc = {
        "Name": ref.name,
        "Digest": resolved.resolved_digest,
        "ManifestDigest": resolved.manifest_digest,
        "RepoTags": tags,
        "Created": config.get("created"),
        "Labels": dict(parsed.labels) or None,
        "Architecture": parsed.architecture,
        "Os": parsed.os,
        "Layers": [d.digest for d in manifest.layers],
        "LayersData": [
            {"MIMEType": d.media_type, "Digest": d.digest, "Size": d.size} for d in manifest.layers
        ],
        "Size": manifest.config.size + sum(d.size for d in manifest.layers),
        "Env": list(parsed.env),
        "User": parsed.user,
        "Manifest": loads_json(resolved.blobs[resolved.manifest_digest], "manifest"),
        "Config": config,
    }
    json.dump(doc, out, indent=2)
    out.write("\n")
    return 0


def _inspect_local(svc: ImageService, args: argparse.Namespace, out: TextIO) -> int:
    rec = svc.require(args.cli_ref)
    mount = svc.store.mounts().get(rec.id)
    doc = {
        **_record_json(rec),
        "manifestDigest": rec.manifest_digest,
        "layers": list(rec.layers),
        "mount": mount.path if mount is not None else None,
        "usedBy": svc.store.users(rec.id),
        "config": loads_json(svc.store.read_blob(rec.id), "image config"),
    }
    json.dump(doc, out, indent=2)
    out.write("\n")
    return 0


async def _copy(svc: ImageService, args: argparse.Namespace, out: TextIO) -> int:
    src_loc = transports.parse_location(args.cli_src)
    dst_loc = transports.parse_location(args.cli_dst)
    src_auth, dst_auth = _creds(args.cli_src_creds), _creds(args.cli_dest_creds)
    platform = ("linux", "amd64")
    source: transports.Source
    if src_loc.kind == "docker":
        ref = svc.registries.resolve(src_loc.ref)
        r = await svc.resolve(ref, src_auth)
        source = transports.RegistrySource(
            svc.client,
            r.endpoint,
            r.blobs[r.manifest_digest],
            r.media_type,
            r.manifest_digest,
            src_auth,
        )
    elif src_loc.kind == "oci":
        layout = transports.OciLayout(Path(src_loc.path))
        source = transports.OciSource(layout, src_loc.tag, platform)
    elif src_loc.kind == "oci-archive":
        source = await asyncio.to_thread(
            transports.OciArchiveSource, Path(src_loc.path), src_loc.tag, platform
        )
    else:
        rec = svc.require(src_loc.ref)
        source = transports.StoreSource(svc.store, rec.id, svc.store.read_blob(rec.id))
    bar = _Bar(out if not args.cli_quiet else open_devnull(), "Copying")
    try:
        if dst_loc.kind == "containers-storage":
            image = await asyncio.to_thread(source.image)
            record = await svc.import_image(
                dst_loc.ref or None,
                source.open_blob,
                image.manifest,
                image.digest,
                image.config,
            )
            digest = image.digest
            del record
        else:
            dest: transports.Destination
            if dst_loc.kind == "docker":
                dref = svc.registries.resolve(dst_loc.ref)
                # Pushes go to the primary location, never to a mirror.
                ep = svc.registries.endpoints(dref)[-1]
                dest = transports.RegistryDestination(svc.client, ep, dst_auth)
            elif dst_loc.kind == "oci":
                dest = transports.OciDestination(
                    transports.OciLayout(Path(dst_loc.path)), dst_loc.tag
                )
            else:
                dest = transports.OciArchiveDestination(Path(dst_loc.path), dst_loc.tag)
            try:
                digest = await asyncio.to_thread(transports.copy_image, source, dest, bar.blob)
            finally:
                dest.close()
    finally:
        bar.close()
        source.close()
    if not args.cli_quiet:
        out.write(f"{digest}\n")
    return 0


def open_devnull() -> TextIO:
    return open("/dev/null", "w")


async def _run(cfg: Config, args: argparse.Namespace, out: TextIO) -> int:
    svc = await asyncio.to_thread(
        ImageService.from_config,
        Path(cfg.root),
        cfg.image,
        pinned=pinned_patterns((), cfg.runtime.pause_image),
    )
    try:
        action = args.cli_action
        if action == "pull":
            bar = _Bar(out if not args.cli_quiet else open_devnull(), f"Pulling {args.cli_ref}")
            try:
                rec = await svc.pull(args.cli_ref, _creds(args.cli_creds), progress=bar.add)
            finally:
                bar.close()
            out.write(rec.id + "\n")
            return 0
        if action == "ls":
            return _ls(svc, args, out)
        if action == "rm":
            for ref in args.cli_refs:
                gone = svc.status(ref)
                await svc.remove(ref)
                out.write(f"Deleted: {gone.id if gone is not None else ref}\n")
            return 0
        if action == "inspect":
            if args.cli_remote:
                return await _inspect_remote(svc, args, out)
            return _inspect_local(svc, args, out)
        if action == "copy":
            return await _copy(svc, args, out)
        if action == "mount":
            out.write(f"{await svc.mount(args.cli_ref)}\n")
            return 0
        if action == "umount":
            left = await svc.unmount(args.cli_ref, force=args.cli_force)
            if left:
                out.write(f"{args.cli_ref}: still mounted ({left} more)\n")
            return 0
        raise InvalidArgument(f"unknown action {action!r}")  # pragma: no cover
    finally:
        svc.close()


def main(cfg: Config, args: argparse.Namespace) -> int:
    """Run one ``crirt image`` action; errors go to stderr as ``crirt image: …`` (exit 1)."""
    crirt_log.setup("warning" if cfg.log_level == "info" else cfg.log_level, cfg.log_format)
    try:
        return asyncio.run(_run(cfg, args, sys.stdout))
    except CrirtError as exc:
        print(f"crirt image {args.cli_action}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `crirt image ls | head`
        sys.stderr.close()
        return 141
