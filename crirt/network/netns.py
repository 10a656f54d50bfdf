"""Pod network namespaces, pinned by a bind mount of their nsfs file (like ``ip netns add``).

Python 3.11 has no ``os.unshare``/``os.setns``: they come from ``crirt.linux.ns``. Network
namespaces are per thread: ``create`` runs a short-lived dedicated thread that unshares, pins the
namespace onto the target file, brings ``lo`` up and exits, so no thread of a pool ever changes
namespace. ``enter`` switches the *calling* thread and back; only use it in a thread you own
(sockets opened inside keep the namespace after the thread leaves it).

The pin directory is made a private bind mount of itself once, so pins never propagate into
other mount namespaces (which would keep a namespace alive after ``remove``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from crirt.errors import Internal
from crirt.linux import mount as linux_mount
from crirt.linux import ns
from crirt.linux.libc import MS_BIND, MS_PRIVATE, MS_REC
from crirt.linux.ns import CLONE_NEWNET

_T = TypeVar("_T")

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = "16sH22x"  # struct ifreq: name[IFNAMSIZ], short ifr_flags, padded to 40 bytes

# Directories already made private mount points by this process (a cache, not state).
_private_dirs: set[str] = set()
_private_lock = threading.Lock()


def _is_mount_point(path: str) -> bool:
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split(b" ", 5)
            # Field 5 is the mount point, with spaces etc. octal-escaped.
            if len(fields) > 4 and _unescape(fields[4]) == path:
                return True
    return False


def _unescape(field: bytes) -> str:
    return (
        field.decode("unicode_escape", errors="replace")
        .encode("latin-1")
        .decode(errors="surrogateescape")
    )


def ensure_private_dir(directory: Path) -> None:
    """Create ``directory`` and make it a private bind mount of itself, idempotently.

    Raises:
        OSError: the mount calls failed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key = str(directory.resolve())
    with _private_lock:
        if key in _private_dirs:
            return
        if not _is_mount_point(key):
            linux_mount.mount(key, key, None, MS_BIND | MS_REC)
        linux_mount.mount(None, key, None, MS_PRIVATE | MS_REC)
        _private_dirs.add(key)


def _lo_up() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        got = fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, struct.pack(_IFREQ, b"lo", 0))
        flags = struct.unpack(_IFREQ, got)[1]
        if not flags & _IFF_UP:
            fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP))
    finally:
        s.close()


def _in_thread(fn: Callable[[], _T]) -> _T:
    """Run ``fn`` on a fresh OS thread that ends afterwards, and return or raise its outcome."""
    box: list[_T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    t = threading.Thread(target=run, name="crirt-netns", daemon=True)
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return box[0]


def create(path: Path) -> None:
    """Create a network namespace with ``lo`` up, pinned at ``path`` (must not exist yet).

    The parent directory becomes a private mount point (see ``ensure_private_dir``).

    Raises:
        FileExistsError: ``path`` already exists.
        crirt.errors.Internal: a namespace or mount call failed; nothing is left behind.
    """
    try:
        ensure_private_dir(path.parent)
    except OSError as exc:
        raise Internal(f"cannot prepare {path.parent} for namespace pins: {exc}") from exc
    target = str(path.parent.resolve() / path.name)
    fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    os.close(fd)

    def pin() -> None:
        # This thread owns the new namespace only until it exits; the bind mount keeps it alive.
        ns.unshare(CLONE_NEWNET)
        linux_mount.mount(
            f"/proc/self/task/{threading.get_native_id()}/ns/net", target, None, MS_BIND
        )
        _lo_up()

    try:
        _in_thread(pin)
    except OSError as exc:
        remove(path)
        raise Internal(f"failed to create network namespace {path}: {exc}") from exc


def remove(path: Path) -> None:
    """Unmount (lazily) and delete a pinned namespace; a missing path is fine.

    Raises:
        crirt.errors.Internal: unmount failed for another reason than "not mounted".
    """
    # A path can carry stacked mounts (e.g. a pin made twice by a crashed caller): all go.
    try:
        linux_mount.unmount(path)
    except OSError as exc:
        raise Internal(f"failed to unmount network namespace {path}: {exc.strerror}") from exc
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def exists(path: Path) -> bool:
    """True if ``path`` is a pinned (or any) network namespace file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return ns.nstype(fd) == CLONE_NEWNET
    except OSError:
        return False  # a plain file: the pin's mount is gone
    finally:
        os.close(fd)


@contextlib.contextmanager
def enter(path: Path) -> Iterator[None]:
    """Switch the calling thread into the namespace at ``path`` and back on exit.

    Only for threads crirt owns (not an executor's shared threads if the body can fail to
    return): a thread that cannot switch back raises ``RuntimeError`` and must not be reused.

    Raises:
        crirt.errors.Internal: ``path`` is not a network namespace or setns failed.
    """
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise Internal(f"cannot open network namespace {path}: {exc}") from exc
        try:
            try:
                ns.setns(target, CLONE_NEWNET)
            except OSError as exc:
                raise Internal(f"cannot enter network namespace {path}: {exc}") from exc
        finally:
            os.close(target)
        try:
            yield
        finally:
            try:
                ns.setns(own, CLONE_NEWNET)
            except OSError as exc:
                raise RuntimeError(f"thread stuck in network namespace {path}: {exc}") from exc
    finally:
        os.close(own)


def lo_up(path: Path) -> None:
    """Bring ``lo`` up in the namespace at ``path`` (for namespaces not made by ``create``).

    Raises:
        crirt.errors.Internal: the namespace cannot be entered.
        OSError: the ioctl failed.
    """
    call_in(path, _lo_up)


def call_in(path: Path, fn: Callable[[], _T]) -> _T:
    """Run ``fn`` on a fresh thread inside the namespace at ``path`` and return its result.

    Raises:
        crirt.errors.Internal: the namespace cannot be entered; anything ``fn`` raises.
    """

    def run() -> _T:
        with enter(path):
            return fn()

    return _in_thread(run)
