"""Issue 15, items 1 and 2: what a layer may cost is bounded (uncompressed size per layer and
per image, the file system's free-space reserve, path depth), and a refused layer leaves
nothing behind."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from crirt.errors import InvalidArgument, ResourceExhausted
from crirt.linux.tree import remove_tree
from crirt.sansio.manifest import OCI_LAYER_GZIP, Descriptor
from crirt.storage.layers import ExtractLimits, ImageBudget, LayerStore

MiB = 1 << 20


def _tar(entries: list[tuple[str, int]]) -> bytes:
    """A tar of regular files of zeros (name, size), owned by the current user."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, size in entries:
            ti = tarfile.TarInfo(name)
            ti.size, ti.uid, ti.gid, ti.mode = size, os.getuid(), os.getgid(), 0o644
            tf.addfile(ti, io.BytesIO(bytes(size)))
    return buf.getvalue()


def _layer(tar: bytes) -> tuple[bytes, Descriptor, str]:
    """(gzip blob, its descriptor, its DiffID)."""
    blob = gzip.compress(tar, compresslevel=9)
    desc = Descriptor(OCI_LAYER_GZIP, "sha256:" + hashlib.sha256(blob).hexdigest(), len(blob))
    return blob, desc, "sha256:" + hashlib.sha256(tar).hexdigest()


def _apply(store: LayerStore, tar: bytes, budget: ImageBudget | None = None) -> None:
    blob, desc, diff_id = _layer(tar)
    store.apply(io.BytesIO(blob), desc, diff_id, diff_id, None, budget=budget)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for p in tmp_path.iterdir():
        remove_tree(p)


def test_gzip_bomb_stops_at_the_layer_limit_and_leaves_nothing(root: Path) -> None:
    # Given a ~16 KB gzip blob that inflates to 16 MiB, and a 1 MiB layer limit
    bomb = _tar([("zeros", 16 * MiB)])
    blob, _, _ = _layer(bomb)
    assert len(blob) < 64 * 1024
    store = LayerStore(root / "layers", limits=ExtractLimits(max_layer_size=MiB))
    # When / Then
    with pytest.raises(ResourceExhausted, match=r"image\.max_layer_size"):
        _apply(store, bomb)
    # Nothing half-written stays
    assert list(store.path.iterdir()) == []


def test_many_small_files_count_too(root: Path) -> None:
    store = LayerStore(root / "layers", limits=ExtractLimits(max_layer_size=MiB))
    with pytest.raises(ResourceExhausted, match=r"image\.max_layer_size"):
        _apply(store, _tar([(f"f{i}", 64 * 1024) for i in range(40)]))
    assert list(store.path.iterdir()) == []


def test_layers_within_the_limits_are_committed(root: Path) -> None:
    store = LayerStore(root / "layers", limits=ExtractLimits(max_layer_size=4 * MiB))
    _apply(store, _tar([("a", MiB)]))
    assert len(store.on_disk()) == 1


def test_image_budget_spans_the_layers_of_one_pull(root: Path) -> None:
    # Given a 1 MiB budget for the whole image, and two layers of 600 KiB each
    store = LayerStore(root / "layers")
    budget = ImageBudget(MiB, "image example.com/bomb:1")
    _apply(store, _tar([("a", 600 * 1024)]), budget)
    # When / Then the second goes over the image's limit
    with pytest.raises(ResourceExhausted, match=r"image\.max_image_size"):
        _apply(store, _tar([("b", 600 * 1024)]), budget)
    assert len(store.on_disk()) == 1
    assert [p for p in store.path.iterdir() if p.name.startswith("tmp-")] == []


def test_free_space_reserve_stops_the_extraction(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a file system with 4% of its blocks free and a 5% reserve
    store = LayerStore(root / "layers", limits=ExtractLimits(min_free_percent=5.0))
    full = SimpleNamespace(
        f_frsize=4096, f_blocks=100_000, f_bavail=4_000, f_files=1000, f_favail=900
    )
    monkeypatch.setattr(os, "fstatvfs", lambda fd: full)
    # When / Then the pull stops cleanly, saying why
    with pytest.raises(ResourceExhausted, match=r"image\.min_free_percent"):
        _apply(store, _tar([("a", 1024)]))
    assert list(store.path.iterdir()) == []


def test_free_inode_reserve_counts_too(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LayerStore(root / "layers", limits=ExtractLimits(min_free_percent=5.0))
    no_inodes = SimpleNamespace(
        f_frsize=4096, f_blocks=100_000, f_bavail=90_000, f_files=1000, f_favail=10
    )
    monkeypatch.setattr(os, "fstatvfs", lambda fd: no_inodes)
    with pytest.raises(ResourceExhausted, match="inodes"):
        _apply(store, _tar([("a", 1024)]))


def test_a_file_that_would_eat_the_reserve_is_refused_before_it_is_written(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 10% free of a 400 MB file system and a 5% reserve: 20 MB may be written
    store = LayerStore(root / "layers", limits=ExtractLimits(min_free_percent=5.0))
    fs = SimpleNamespace(f_frsize=4096, f_blocks=100_000, f_bavail=10_000, f_files=0, f_favail=0)
    monkeypatch.setattr(os, "fstatvfs", lambda fd: fs)
    # When a layer holds a 32 MiB file: refused from its header, before a byte is written
    with pytest.raises(ResourceExhausted, match=r"image\.min_free_percent"):
        _apply(store, _tar([("small", 1024), ("big", 32 * MiB)]))
    assert list(store.path.iterdir()) == []


def test_deep_paths_are_refused_at_extraction(root: Path) -> None:
    store = LayerStore(root / "layers", limits=ExtractLimits(max_path_depth=8))
    with pytest.raises(InvalidArgument, match=r"image\.max_path_depth"):
        _apply(store, _tar([("/".join(["d"] * 9) + "/f", 1)]))
    assert list(store.path.iterdir()) == []
