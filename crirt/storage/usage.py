"""Disk usage of a directory tree, as du counts it: allocated blocks, hard links once, no
symlinks followed, optionally bounded in entries (callers on polled paths bound it)."""

from __future__ import annotations

import os
from pathlib import Path


def walk_usage(path: str | Path, max_entries: int | None = None) -> tuple[int, int]:
    """Return ``(bytes, inodes)`` under ``path``; unreadable entries are skipped."""
    total = inodes = 0
    seen: set[tuple[int, int]] = set()
    stack = [str(path)]
    while stack and (max_entries is None or inodes < max_entries):
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                inodes += 1
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                total += st.st_blocks * 512
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
    return total, inodes
