import os
from pathlib import Path

from crirt.storage.usage import walk_usage


def test_counts_blocks_once_per_inode_and_skips_symlink_targets(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"x" * 10000)
    os.link(tmp_path / "d" / "a", tmp_path / "d" / "hard")
    os.symlink("/usr", tmp_path / "d" / "link")  # never followed
    used, inodes = walk_usage(tmp_path)
    assert inodes == 4  # d, a, hard, link
    a_blocks = os.stat(tmp_path / "d" / "a").st_blocks * 512
    assert a_blocks <= used < a_blocks + 64 * 1024  # the hard link is not counted twice


def test_bounded_walk_stops_descending(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / f"d{i}").mkdir()
        for j in range(5):
            (tmp_path / f"d{i}" / f"f{j}").write_text("x")
    assert walk_usage(tmp_path)[1] == 120
    # The bound is checked between directories: the 20 top entries, then at most one more dir.
    assert walk_usage(tmp_path, max_entries=10)[1] <= 25
    assert walk_usage(tmp_path / "missing") == (0, 0)
