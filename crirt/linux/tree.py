"""Delete a directory tree whatever its shape: iteratively, relative to directory descriptors.

``shutil.rmtree`` recurses (Python 3.11), so a layer 1,200 directories deep raises
``RecursionError``, which ``ignore_errors`` does not catch; it also builds full paths, which stop
working past ``PATH_MAX``. :func:`remove_tree` instead holds one descriptor for the directory it
is emptying (two briefly), walks down with ``openat(name, O_NOFOLLOW)`` and back up with
``openat("..")``, checking that ``..`` is the directory it came from (device and inode), so
depth costs neither stack, descriptors nor path length, and a rename during the walk cannot
take it outside the tree. Symlinks are removed, never followed, and it does not cross into
another file system (a mount left under the tree): that is reported, not deleted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_AGAIN = "again"
# Entries swapped between their stat and their open, per removal, before giving up.
_MAX_RACES = 1000


def _id(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def remove_tree(path: str | os.PathLike[str], *, dir_fd: int | None = None) -> None:
    """Delete ``path`` (relative to ``dir_fd`` if given) and everything under it.

    A missing ``path`` is done already (idempotent); a file or symlink is unlinked. Entries
    that cannot be removed are skipped and the walk goes on, so as much as possible goes.

    Raises:
        OSError: something could not be removed (the first such error, naming how many), or
            the tree changed under the walk in a way that makes going on unsafe.
    """
    try:
        top = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(top.st_mode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path, dir_fd=dir_fd)
        return
    fd = os.open(path, _DIR_FLAGS, dir_fd=dir_fd)
    if _id(os.fstat(fd)) != _id(top):
        os.close(fd)
        raise OSError(errno.EAGAIN, "directory replaced while opening it", os.fspath(path))
    errors: list[OSError] = []
    _empty(fd, top.st_dev, errors)
    try:
        os.rmdir(path, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        errors.append(exc)
    if errors:
        first = errors[0]
        raise OSError(
            first.errno,
            f"{first.strerror} ({len(errors)} entries not removed)",
            f"{os.fspath(path)}: {first.filename}" if first.filename else os.fspath(path),
        )


def _empty(top_fd: int, dev: int, errors: list[OSError]) -> None:
    """Delete everything under the directory ``top_fd``, which this closes.

    ``stack`` holds, per level below the top, the name of the directory being emptied and the
    (device, inode) of its parent, to come back up through ``..`` safely. ``failed`` holds the
    entries that could not go, so that no pass tries them again.
    """
    stack: list[tuple[str, tuple[int, int]]] = []
    failed: set[tuple[int, int]] = set()
    races = 0
    fd = top_fd  # the directory being emptied: the one descriptor held between steps
    try:
        while True:
            child = _next_child(fd, dev, failed, errors)
            if child == _AGAIN:
                races += 1
                if races > _MAX_RACES:
                    raise OSError(errno.EAGAIN, "tree keeps changing while being removed")
                continue
            if isinstance(child, tuple):
                name, cfd = child
                stack.append((name, _id(os.fstat(fd))))
                os.close(fd)
                fd = cfd
                continue
            # This directory is as empty as it gets: go up and remove it.
            if not stack:
                return
            name, parent_id = stack.pop()
            here = os.fstat(fd)
            pfd = os.open("..", _DIR_FLAGS, dir_fd=fd)
            if _id(os.fstat(pfd)) != parent_id:
                os.close(pfd)
                raise OSError(
                    errno.EAGAIN, "directory moved while its tree was being removed", name
                )
            os.close(fd)
            fd = pfd
            try:
                os.rmdir(name, dir_fd=fd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                exc.filename = name
                errors.append(exc)
                failed.add(_id(here))
    finally:
        os.close(fd)


def _next_child(
    fd: int, dev: int, failed: set[tuple[int, int]], errors: list[OSError]
) -> tuple[str, int] | str | None:
    """Unlink the non-directories of ``fd``; return the first subdirectory to empty (opened),
    None when only entries that failed are left, or ``_AGAIN`` to scan ``fd`` once more."""
    with os.scandir(fd) as it:
        for entry in it:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as exc:
                exc.filename = entry.name
                errors.append(exc)
                continue
            if _id(st) in failed:
                continue
            if not stat.S_ISDIR(st.st_mode):
                try:
                    os.unlink(entry.name, dir_fd=fd)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    exc.filename = entry.name
                    errors.append(exc)
                    failed.add(_id(st))
                continue
            if st.st_dev != dev:
                errors.append(
                    OSError(errno.EXDEV, "a mount is under the tree: not removed", entry.name)
                )
                failed.add(_id(st))
                continue
            try:
                cfd = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                continue
            except OSError as exc:
                exc.filename = entry.name
                errors.append(exc)
                failed.add(_id(st))
                continue
            if _id(os.fstat(cfd)) != _id(st):
                os.close(cfd)  # replaced between the stat and the open: the next pass sees it
                return _AGAIN
            return entry.name, cfd
    return None
