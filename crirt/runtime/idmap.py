"""Idmapped mounts for pods with their own user namespace (Linux >= 5.19 for overlayfs layers).

The image layers are shared by every pod and owned by the host's IDs, so a pod's container
root (say host uid 1000) would see them owned by nobody. Instead of chowning a copy, each layer
is cloned as a detached *idmapped* mount (open_tree + mount_setattr(MOUNT_ATTR_IDMAP) with a
user namespace that has the pod's mappings) and the overlay is built on those clones, as
containerd 2 and containers/storage do: file owner 0 in a layer reads as the pod's root. The
upper dir is owned by the pod's root, so copy-ups keep the mapped owners. Once the overlay is
mounted it holds its own references to the clones, which are then detached.

A user namespace with given mappings comes from a helper (``unshare --user cat``) whose maps
crirt writes itself, as root, before opening ``/proc/<pid>/ns/user``: no newuidmap needed, and
no fork of this threaded process. Blocking: call from worker threads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from crirt.errors import Internal
from crirt.linux import mount as linux_mount
from crirt.linux.libc import MS_BIND
from crirt.network import netns
from crirt.oci.spec_userns import PodUserns
from crirt.runtime import mounts
from crirt.storage import overlay

_HELPER_TIMEOUT = 5.0


@contextlib.contextmanager
def _helper(userns: PodUserns, net: bool = False) -> Iterator[int]:
    """The pid of a process in a fresh user namespace with the pod's mappings (and, with
    ``net``, a network namespace that user namespace owns); it exits when the block ends.

    Raises:
        Internal: the helper could not be started or its maps written.
    """
    helper = shutil.which("unshare") or "/usr/bin/unshare"
    proc = subprocess.Popen(
        [helper, "--user", *(["--net"] if net else []), "--", "cat"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
    )
    try:
        own = os.stat("/proc/self/ns/user").st_ino
        deadline = time.monotonic() + _HELPER_TIMEOUT
        # unshare(1) creates the namespace, then execs cat: wait for the exec so the
        # namespace is certainly the child's own.
        while True:
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{proc.pid}/ns/user").st_ino != own and os.readlink(
                    f"/proc/{proc.pid}/exe"
                ).endswith("/cat"):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise Internal("user namespace helper did not start")
            time.sleep(0.0005)
        try:
            for kind in ("uid", "gid"):
                with open(f"/proc/{proc.pid}/{kind}_map", "w") as f:
                    f.write(userns.proc_map(kind))
        except OSError as exc:
            raise Internal(f"cannot set up a user namespace: {exc}") from exc
        yield proc.pid
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=_HELPER_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def userns_fd(userns: PodUserns) -> Iterator[int]:
    """An fd of a fresh user namespace with the pod's mappings (closed on exit).

    Raises:
        Internal: the helper could not be started or its maps written.
    """
    with _helper(userns) as pid:
        try:
            fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise Internal(f"cannot open a user namespace: {exc}") from exc
    try:
        yield fd
    finally:
        os.close(fd)


def _pin(source: str, target: Path) -> None:
    netns.ensure_private_dir(target.parent)
    fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)
    mounts.mount(source, target, "", MS_BIND)


def create_pod_namespaces(userns: PodUserns, user_pin: Path, net_pin: Path) -> None:
    """A pod's user namespace and a network namespace owned by it (``lo`` up), both pinned.

    The network namespace must belong to the pod's user namespace: the pod's root may then
    administer it (sysfs, net.* sysctls), while crirt, as the host's root, still wires it
    up with CNI.

    Raises:
        Internal: a namespace could not be created or pinned (nothing is left behind).
    """
    try:
        with _helper(userns, net=True) as pid:
            _pin(f"/proc/{pid}/ns/user", user_pin)
            _pin(f"/proc/{pid}/ns/net", net_pin)
        netns.lo_up(net_pin)
    except (OSError, Internal) as exc:
        for p in (net_pin, user_pin):
            netns.remove(p)
        raise Internal(f"cannot create the pod's namespaces: {exc}") from exc


def private_dir(path: Path, userns: PodUserns | None) -> None:
    """Make an object's directory private (0700) or, for a pod with its own user namespace,
    traversable by that pod's root group only (0710): the runtime resolves the rootfs path from
    inside the user namespace. Its parents must be traversable (0711), never listable.
    """
    if userns is None:
        os.chmod(path, 0o700)
        return
    os.chown(path, -1, userns.root[1])
    os.chmod(path, 0o710)


def idmapped_clone(src: Path, dst: Path, ns_fd: int) -> None:
    """Attach an idmapped copy of the mount tree at ``src`` on ``dst`` (an existing dir).

    Raises:
        Internal: the kernel or the filesystem cannot idmap ``src``.
    """
    try:
        linux_mount.idmapped_clone(src, dst, ns_fd)
    except OSError as exc:
        raise Internal(str(exc)) from exc


def _detach(path: Path) -> None:
    try:
        linux_mount.detach(path)
    except OSError as exc:
        raise Internal(str(exc)) from exc


def mount_idmapped_overlay(
    target: Path,
    lower: Sequence[Path],
    *,
    upper: Path,
    work: Path,
    scratch: Path,
    userns: PodUserns,
    what: str,
) -> None:
    """Mount an overlay at ``target`` whose layers read as owned by the pod's IDs.

    ``scratch`` (short path, created and emptied here) holds the idmapped layer clones while
    the overlay is mounted. ``upper`` and ``work`` are chowned to the pod's root.

    Raises:
        Internal: the kernel cannot idmap a layer.
        StorageError: the overlay mount failed.
    """
    root_uid, root_gid = userns.root
    for d in (upper, work):
        os.chown(d, root_uid, root_gid)
    scratch.mkdir(mode=0o700, exist_ok=True)
    clones: list[Path] = []
    try:
        with userns_fd(userns) as fd:
            for i, layer in enumerate(lower):
                dst = scratch / str(i)
                dst.mkdir(exist_ok=True)
                clones.append(dst)
                idmapped_clone(layer, dst, fd)
        overlay.mount_overlay(
            target,
            clones,
            upper=upper,
            work=work,
            links_dir=scratch / "l",
            empty=scratch / "empty",
            what=what,
        )
    finally:
        # The overlay keeps its own references to the layers; the clones are not needed.
        for dst in clones:
            with contextlib.suppress(Internal):
                _detach(dst)
        shutil.rmtree(scratch, ignore_errors=True)


def kernel_supports_idmapped_overlay(workdir: Path) -> str:
    """Try an overlay on an idmapped layer under ``workdir``; "" if it works, else why not."""
    probe = PodUserns.single(0, 1_000_000, 65536)
    base = workdir / "idmap-probe"
    shutil.rmtree(base, ignore_errors=True)
    try:
        for d in ("lower", "upper", "work", "merged"):
            (base / d).mkdir(parents=True)
        (base / "lower" / "f").touch()
        try:
            mount_idmapped_overlay(
                base / "merged",
                [base / "lower"],
                upper=base / "upper",
                work=base / "work",
                scratch=base / "s",
                userns=probe,
                what="idmap probe",
            )
        except Exception as exc:  # noqa: BLE001 - any failure means "not supported"
            return str(exc)
        try:
            st = os.stat(base / "merged" / "f")
            if st.st_uid != 1_000_000:
                return f"idmapped layer shows owner {st.st_uid}, not 1000000"
        finally:
            overlay.unmount(base / "merged")
        return ""
    finally:
        shutil.rmtree(base, ignore_errors=True)
