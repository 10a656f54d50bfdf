import os
from pathlib import Path

from crirt.runtime.mounts import read_in_root


def test_reads_inside_root_and_never_the_host(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "real").write_text("image-passwd")
    os.symlink("/etc/real", root / "etc" / "passwd")  # absolute: must resolve in root
    os.symlink("../../../../../etc/hostname", root / "etc" / "group")  # climbs: clamped at /
    (root / "etc" / "hostname").write_text("image-hostname")
    os.symlink("/etc/shadow", root / "etc" / "shadow-link")
    assert read_in_root(root, "/etc/passwd") == "image-passwd"
    assert read_in_root(root, "/etc/group") == "image-hostname"
    assert read_in_root(root, "/etc/shadow-link") is None  # not in the image: not the host's
    assert read_in_root(root, "/missing") is None


def test_symlink_loops_end(tmp_path: Path) -> None:
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    assert read_in_root(tmp_path, "/a") is None
