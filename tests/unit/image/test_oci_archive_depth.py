"""An oci-archive whose entries nest deeper than an OCI layout does (``blobs/<alg>/<hex>``) is
refused before anything is extracted: the temp dir's clean-up (``shutil.rmtree``) would
otherwise recurse into a RecursionError."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from crirt.errors import InvalidArgument
from crirt.image.transports import _safe_extract_layout
from crirt.linux.tree import remove_tree


def test_deep_entries_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tf:
        ti = tarfile.TarInfo("/".join(["a"] * 1500) + "/f")
        tf.addfile(ti, io.BytesIO(b""))
    dest = tmp_path / "dest"
    dest.mkdir()
    try:
        with pytest.raises(InvalidArgument, match="refusing entry"):
            _safe_extract_layout(archive, dest)
        assert list(dest.iterdir()) == []
    finally:
        remove_tree(dest)  # pytest's own clean-up of old tmp dirs uses rmtree


def test_a_layout_is_extracted(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tf:
        for name in ("oci-layout", "index.json", "./blobs/sha256/" + "a" * 64):
            tf.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
    _safe_extract_layout(archive, tmp_path / "dest")
    assert (tmp_path / "dest" / "blobs" / "sha256" / ("a" * 64)).is_file()
