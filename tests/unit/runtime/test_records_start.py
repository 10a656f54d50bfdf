"""Start-up of the runtime's state dir never fails on what an earlier crirt left behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crirt.linux.tree import remove_tree
from crirt.runtime.records import Paths, Records
from tests.helpers.trees import make_deep_tree


@pytest.fixture(autouse=True)
def _no_deep_tree_left(tmp_path: Path) -> Iterator[None]:
    # Even when a test fails: pytest's own clean-up of old temp dirs recurses and would fail
    # on these trees in every later run.
    yield
    remove_tree(tmp_path / "state")


def test_a_deep_leftover_in_the_trash_is_deleted_at_start(tmp_path: Path) -> None:
    # Given a container's state dir left in the trash holding a tree 1,200 levels deep
    paths = Paths(tmp_path / "state")
    paths.trash.mkdir(parents=True)
    make_deep_tree(paths.trash / "c1")
    # When the state dir is opened (shutil.rmtree raised RecursionError here)
    paths.create()
    # Then it is gone and the state dir is ready
    assert list(paths.trash.iterdir()) == []
    assert paths.containers.is_dir()


def test_a_deep_incomplete_record_is_dropped(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "state")
    paths.create()
    bad = paths.containers / "c2"
    make_deep_tree(bad)
    assert Records._load(paths.containers, "container.json") == []
    assert not bad.exists()
