"""crirt.sansio.tarplan: tar headers to extraction ops, whiteouts, and escape refusal."""

from __future__ import annotations

import pytest

from crirt.errors import InvalidArgument
from crirt.sansio import tarplan as tp
from crirt.sansio.tarplan import EntryType, Header


def _plan(name: str, type: EntryType = EntryType.FILE, **kw: object) -> list[tp.Op]:
    return tp.plan(Header(name=name, type=type, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("a/b", ("a", "b")),
        ("./a/b", ("a", "b")),
        ("/a/b", ("a", "b")),
        ("//a//./b/", ("a", "b")),
        ("a/../b", ("b",)),
        ("a/b/../../c", ("c",)),
        ("./", ()),
        ("", ()),
    ],
)
def test_normalize_path(name: str, want: tuple[str, ...]) -> None:
    assert tp.normalize_path(name) == want


@pytest.mark.parametrize(
    "name", ["..", "../x", "a/../../x", "/../etc/passwd", "./a/../..", "a\x00b"]
)
def test_escapes_refused(name: str) -> None:
    with pytest.raises(tp.UnsafeTarEntry):
        tp.normalize_path(name)
    with pytest.raises(InvalidArgument):  # UnsafeTarEntry is an InvalidArgument
        _plan(name)


def test_file_dir_symlink_device() -> None:
    meta = tp.Meta(0o4755, 1, 2, 3.0)
    assert _plan("./bin/x", mode=0o104755, uid=1, gid=2, mtime=3.0, size=7) == [
        tp.WriteFile(("bin", "x"), 7, meta)
    ]
    assert _plan("bin/", EntryType.DIR, mode=0o755) == [
        tp.MakeDir(("bin",), tp.Meta(0o755, 0, 0, 0.0))
    ]
    assert _plan("./", EntryType.DIR, mode=0o755) == [tp.MakeDir((), tp.Meta(0o755, 0, 0, 0.0))]
    # Symlink targets are kept verbatim: they resolve inside the container, never here.
    assert _plan("l", EntryType.SYMLINK, linkname="../../../etc") == [
        tp.MakeSymlink(("l",), "../../../etc", tp.Meta(0o644, 0, 0, 0.0))
    ]
    assert _plan("dev/null", EntryType.CHAR, devmajor=1, devminor=3, mode=0o666) == [
        tp.MakeDevice(("dev", "null"), EntryType.CHAR, 1, 3, tp.Meta(0o666, 0, 0, 0.0))
    ]
    assert _plan("p", EntryType.FIFO)[0] == tp.MakeDevice(
        ("p",), EntryType.FIFO, 0, 0, tp.Meta(0o644, 0, 0, 0.0)
    )


def test_root_can_only_be_a_dir() -> None:
    with pytest.raises(tp.UnsafeTarEntry, match="layer root"):
        _plan("./", EntryType.FILE)


def test_whiteouts() -> None:
    assert _plan("etc/.wh.passwd", uid=5, gid=6) == [tp.Whiteout(("etc", "passwd"), 5, 6)]
    assert _plan(".wh.top") == [tp.Whiteout(("top",), 0, 0)]
    assert _plan("etc/.wh..wh..opq") == [tp.MakeOpaque(("etc",))]
    assert _plan(".wh..wh..opq") == [tp.MakeOpaque(())]
    assert _plan("a/.wh..wh.plnk", EntryType.DIR) == []  # AUFS bookkeeping
    # ".wh." names nothing, ".wh.." whites out ".", ".wh..." whites out "..".
    for bad in ("a/.wh.", "a/.wh..", "a/.wh..."):
        with pytest.raises(tp.UnsafeTarEntry):
            _plan(bad)
    with pytest.raises(tp.UnsafeTarEntry):
        _plan("../.wh.x")


def test_hardlinks() -> None:
    assert _plan("bin/b", EntryType.HARDLINK, linkname="./bin/a") == [
        tp.MakeHardlink(("bin", "b"), ("bin", "a"))
    ]
    assert _plan("b", EntryType.HARDLINK, linkname="/bin/a") == [
        tp.MakeHardlink(("b",), ("bin", "a"))
    ]
    for target in ("../outside", "a/../../x", "", "./"):
        with pytest.raises(tp.UnsafeTarEntry):
            _plan("b", EntryType.HARDLINK, linkname=target)
    with pytest.raises(tp.UnsafeTarEntry, match="itself"):
        _plan("b", EntryType.HARDLINK, linkname="./b")


def test_xattrs_filtered() -> None:
    ops = _plan(
        "f",
        xattrs={
            "user.foo": b"1",
            "security.capability": b"\x01",
            "trusted.overlay.redirect": b"/etc",
            "trusted.overlay.opaque": b"y",
            "user.overlay.origin": b"x",
            "security.selinux": b"ctx",
        },
    )
    assert ops == [
        tp.WriteFile(
            ("f",),
            0,
            tp.Meta(0o644, 0, 0, 0.0, (("security.capability", b"\x01"), ("user.foo", b"1"))),
        )
    ]


def test_negative_values_refused() -> None:
    with pytest.raises(tp.UnsafeTarEntry):
        _plan("f", uid=-1)
    with pytest.raises(tp.UnsafeTarEntry):
        _plan("f", size=-1)


def test_device_nodes_policy() -> None:
    # Pseudo-devices images ship are fine; disks and /dev/mem are refused, clearly.
    assert _plan("dev/zero", EntryType.CHAR, devmajor=1, devminor=5)[0] == tp.MakeDevice(
        ("dev", "zero"), EntryType.CHAR, 1, 5, tp.Meta(0o644, 0, 0, 0.0)
    )
    with pytest.raises(tp.UnsafeTarEntry, match="block device 8:0 refused"):
        _plan("dev/sda", EntryType.BLOCK, devmajor=8, devminor=0)
    with pytest.raises(tp.UnsafeTarEntry, match="character device 1:1 refused"):
        _plan("dev/mem", EntryType.CHAR, devmajor=1, devminor=1)


def test_path_depth_is_capped() -> None:
    # Issue 15: 1,200 levels of 255-character names in one pax path were accepted.
    deep = "/".join(["n" * 255] * 1200)
    for header in (
        Header(deep, EntryType.DIR),
        Header(deep + "/f", EntryType.FILE),
        Header(deep + "/.wh.x", EntryType.FILE),
        Header("a", EntryType.HARDLINK, linkname=deep),
    ):
        with pytest.raises(InvalidArgument, match=r"deeper than .*max_path_depth"):
            tp.plan(header)
    # The limit is the caller's (image.max_path_depth); its default is far above real images.
    assert tp.plan(Header("a/b/c", EntryType.DIR), max_depth=3)
    with pytest.raises(InvalidArgument, match="4 levels"):
        tp.plan(Header("a/b/c/d", EntryType.DIR), max_depth=3)
    assert tp.plan(Header("/".join(["d"] * tp.DEFAULT_MAX_PATH_DEPTH), EntryType.DIR))
