"""Directory trees too deep for recursion or for a path, for tests of what deletes them."""

from __future__ import annotations

import os
from pathlib import Path

# Deeper than Python's recursion limit, and a path (~300 KB) far past PATH_MAX (4 KiB).
DEPTH = 1200
NAME = "d" * 255


def make_deep_tree(top: Path, depth: int = DEPTH, name: str = NAME) -> None:
    """``top/name/name/...`` ``depth`` levels deep (a file and a symlink to / at the bottom),
    made with descriptor-relative mkdir: no path is ever longer than one name. ``top``'s
    parents are created."""
    top.mkdir(parents=True)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.close(os.open("file", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
        os.symlink("/", "root-link", dir_fd=fd)
    finally:
        os.close(fd)
