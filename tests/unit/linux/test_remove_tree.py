"""crirt.linux.tree.remove_tree: trees too deep for recursion or for a path, symlinks, errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crirt.linux.tree import remove_tree
from tests.helpers.trees import make_deep_tree


def test_removes_a_tree_deeper_than_the_recursion_limit_and_path_max(tmp_path: Path) -> None:
    # Given a tree 1,200 levels of 255-character names deep
    make_deep_tree(tmp_path / "deep")
    # When
    remove_tree(tmp_path / "deep")
    # Then
    assert list(tmp_path.iterdir()) == []


def test_relative_to_a_directory_descriptor(tmp_path: Path) -> None:
    make_deep_tree(tmp_path / "deep", depth=50)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        remove_tree("deep", dir_fd=fd)
    finally:
        os.close(fd)
    assert list(tmp_path.iterdir()) == []


def test_wide_tree_files_and_symlinks_never_followed(tmp_path: Path) -> None:
    # Given a tree with many subdirectories and symlinks to a directory outside it
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    top = tmp_path / "top"
    for i in range(50):
        d = top / f"d{i}" / "sub"
        d.mkdir(parents=True)
        (d / "f").write_text("y")
        (top / f"d{i}" / "link").symlink_to(outside)
    (top / "toplink").symlink_to(outside, target_is_directory=True)
    # When
    remove_tree(top)
    # Then the tree is gone and what the links pointed to is untouched
    assert not top.exists()
    assert (outside / "keep").read_text() == "x"


def test_missing_is_done_and_a_file_is_unlinked(tmp_path: Path) -> None:
    remove_tree(tmp_path / "missing")
    (tmp_path / "f").write_text("x")
    remove_tree(tmp_path / "f")
    (tmp_path / "l").symlink_to(tmp_path)
    remove_tree(tmp_path / "l")
    assert list(tmp_path.iterdir()) == []


def test_what_cannot_go_is_reported_after_removing_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a tree where one file cannot be unlinked
    top = tmp_path / "top"
    (top / "a").mkdir(parents=True)
    (top / "a" / "stuck").write_text("x")
    (top / "b").mkdir()
    (top / "b" / "f").write_text("x")
    real_unlink = os.unlink

    def unlink(path: str, *, dir_fd: int | None = None) -> None:
        if path == "stuck":
            raise PermissionError(1, "Operation not permitted")
        real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", unlink)
    # When / Then: one OSError, naming the entry, once everything else went
    with pytest.raises(OSError, match="stuck"):
        remove_tree(top)
    assert sorted(p.name for p in top.rglob("*")) == ["a", "stuck"]
