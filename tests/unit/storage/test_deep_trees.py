"""Issue 15, item 1: a layer tree too deep for ``shutil.rmtree`` (RecursionError in Python
3.11) must not stop the store from opening, nor escape a background deletion."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from crirt.linux.tree import remove_tree
from crirt.storage.images import ImageStore, delete_dirs
from crirt.storage.layers import LayerStore
from tests.helpers.trees import make_deep_tree


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    # Whatever a failing test leaves: pytest's own clean-up of old tmp dirs uses rmtree.
    for p in tmp_path.iterdir():
        remove_tree(p)


def test_layer_cleanup_removes_a_deep_leftover_without_raising(root: Path) -> None:
    # Given a removed layer too deep for rmtree, left in the store by a failed background delete
    layers = LayerStore(root / "layers")
    leftover = layers.path / "tmp-del-0123456789abcdef"
    make_deep_tree(leftover / "diff")
    # When the store cleans up at start
    layers.cleanup()
    # Then the leftover is gone and nothing was raised
    assert list(layers.path.iterdir()) == []


def test_image_store_opens_with_deep_leftovers(root: Path) -> None:
    # Given deep leftovers in both places a crirt that died leaves them
    make_deep_tree(root / "storage" / "layers" / "tmp-del-00" / "diff")
    make_deep_tree(root / "storage" / "trash" / "container-1" / "upper")
    # When crirt starts (opens its store)
    store = ImageStore(root / "storage")
    # Then it opened and cleaned both up
    store.close()
    assert list((root / "storage" / "layers").iterdir()) == []
    assert list((root / "storage" / "trash").iterdir()) == []


def test_image_store_start_up_clean_up_logs_and_goes_on(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a leftover that cannot be deleted at all
    make_deep_tree(root / "storage" / "layers" / "tmp-del-00", depth=3)

    def broken(*args: object, **kwargs: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr("crirt.storage.layers.remove_tree", broken)
    monkeypatch.setattr("crirt.storage.images.remove_tree", broken)
    # When crirt starts
    with structlog.testing.capture_logs() as logs:
        ImageStore(root / "storage").close()
    # Then the store opened, and the failure was logged, not raised
    assert any(e["log_level"] == "warning" for e in logs)


def test_delete_dirs_logs_instead_of_raising(root: Path) -> None:
    # Given a deep detached layer (what RemoveImage hands its background delete)
    deep = root / "tmp-del-1"
    make_deep_tree(deep)
    # When / Then
    assert delete_dirs([deep, None]) == []
    assert not deep.exists()
