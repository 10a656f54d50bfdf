"""crirt.registry.config: registries.conf v2 parsing, drop-ins, prefix rewriting, mirrors."""

from __future__ import annotations

from pathlib import Path

import pytest

from crirt.errors import InvalidArgument, RegistryError
from crirt.registry.config import Endpoint, RegistriesConfig, load_registries
from crirt.sansio.reference import parse_normalized

REPO_ROOT = Path(__file__).resolve().parents[3]
D = "sha256:" + "cd" * 32

MAIN = """
unqualified-search-registries = ["docker.io", "quay.io"]

[[registry]]
prefix = "example.com/foo"
location = "internal.example.net/bar"

[[registry.mirror]]
location = "mirror-0.local/mirror-for-foo"

[[registry.mirror]]
location = "mirror-1.local/mirrors/foo"
insecure = true

[[registry]]
location = "registry.com"

[[registry.mirror]]
location = "mirror.registry.com"
pull-from-mirror = "digest-only"

[[registry]]
prefix = "docker.io"
location = "127.0.0.1:5000"
insecure = true

[[registry]]
prefix = "docker.io/library/special"
location = "other.local:6000/x"

[[registry]]
prefix = "blocked.io"
blocked = true

[[registry]]
prefix = "*.wild.io"
insecure = true
"""


def _cfg(*docs: str) -> RegistriesConfig:
    return RegistriesConfig.parse(*((f"doc{i}", d) for i, d in enumerate(docs)))


def _eps(cfg: RegistriesConfig, ref: str) -> list[tuple[str, str, bool, bool]]:
    return [
        (e.base_url, str(e.reference), e.insecure, e.mirror)
        for e in cfg.endpoints(parse_normalized(ref))
    ]


def test_manpage_example_mirrors_then_location() -> None:
    # containers-registries.conf(5): mirrors in order, then the rewritten location.
    assert _eps(_cfg(MAIN), "example.com/foo/image:latest") == [
        ("https://mirror-0.local", "mirror-0.local/mirror-for-foo/image:latest", False, True),
        ("http://mirror-1.local", "mirror-1.local/mirrors/foo/image:latest", True, True),
        ("https://internal.example.net", "internal.example.net/bar/image:latest", False, False),
    ]


def test_location_rewrite_never_contacts_the_original_host() -> None:
    cfg = _cfg(MAIN)
    eps = _eps(cfg, "busybox")
    assert eps == [("http://127.0.0.1:5000", "127.0.0.1:5000/library/busybox:latest", True, False)]
    # Longest prefix wins.
    assert _eps(cfg, "special:1") == [
        ("https://other.local:6000", "other.local:6000/x:1", False, False)
    ]


def test_digest_only_mirror() -> None:
    cfg = _cfg(MAIN)
    assert [e[0] for e in _eps(cfg, "registry.com/a:1")] == ["https://registry.com"]
    assert [e[0] for e in _eps(cfg, f"registry.com/a@{D}")] == [
        "https://mirror.registry.com",
        "https://registry.com",
    ]


def test_no_match_uses_the_reference_and_docker_hub_api_host() -> None:
    cfg = RegistriesConfig()
    [ep] = cfg.endpoints(parse_normalized("busybox"))
    assert ep == Endpoint(parse_normalized("busybox"))
    assert ep.base_url == "https://registry-1.docker.io"
    assert ep.repository == "library/busybox"
    assert _eps(cfg, "quay.io/a/b:1") == [("https://quay.io", "quay.io/a/b:1", False, False)]


def test_prefix_boundaries() -> None:
    cfg = _cfg('[[registry]]\nprefix = "example.com"\nlocation = "r.local"\n')
    assert _eps(cfg, "example.com/a:1")[0][1] == "r.local/a:1"
    # Neither a longer host nor another port matches a bare host prefix.
    assert _eps(cfg, "example.community/a:1")[0][1] == "example.community/a:1"
    assert _eps(cfg, "example.com:5000/a:1")[0][1] == "example.com:5000/a:1"


def test_prefix_with_repository_and_tag() -> None:
    cfg = _cfg('[[registry]]\nprefix = "x.io/a/b"\nlocation = "y.io/c"\n')
    assert _eps(cfg, "x.io/a/b:1")[0][1] == "y.io/c:1"
    assert _eps(cfg, f"x.io/a/b@{D}")[0][1] == f"y.io/c@{D}"
    assert _eps(cfg, "x.io/a/bc:1")[0][1] == "x.io/a/bc:1"


def test_wildcard_prefix_keeps_the_name() -> None:
    cfg = _cfg(MAIN)
    assert _eps(cfg, "a.b.wild.io/x:1") == [("http://a.b.wild.io", "a.b.wild.io/x:1", True, False)]
    assert _eps(cfg, "wild.io/x:1") == [("https://wild.io", "wild.io/x:1", False, False)]


def test_blocked() -> None:
    with pytest.raises(RegistryError, match="blocked"):
        _cfg(MAIN).endpoints(parse_normalized("blocked.io/x"))


def test_dropins_override_by_prefix(tmp_path: Path) -> None:
    main = tmp_path / "registries.conf"
    main.write_text(MAIN)
    d = tmp_path / "registries.conf.d"
    d.mkdir()
    (d / "10-a.conf").write_text(
        'unqualified-search-registries = ["example.org"]\n'
        '[[registry]]\nprefix = "docker.io"\nlocation = "10.0.0.1:5000"\ninsecure = true\n'
    )
    (d / "20-b.conf").write_text('[[registry]]\nprefix = "new.io"\nlocation = "n.local"\n')
    (d / "ignored.txt").write_text("not toml at all [[[")
    cfg = load_registries(main, d)
    assert cfg.unqualified_search_registries == ("example.org",)
    assert _eps(cfg, "busybox")[0][1] == "10.0.0.1:5000/library/busybox:latest"
    assert _eps(cfg, "new.io/a")[0][1] == "n.local/a:latest"
    assert _eps(cfg, "example.com/foo/i")[-1][1] == "internal.example.net/bar/i:latest"


def test_missing_files_mean_empty(tmp_path: Path) -> None:
    cfg = RegistriesConfig.load(tmp_path / "nope.conf", tmp_path / "nope.d")
    assert cfg == RegistriesConfig()


def test_v1_format() -> None:
    cfg = _cfg(
        "[registries.search]\nregistries = ['a.io']\n"
        "[registries.insecure]\nregistries = ['i.io']\n"
        "[registries.block]\nregistries = ['b.io']\n"
    )
    assert cfg.unqualified_search_registries == ("a.io",)
    assert _eps(cfg, "i.io/x:1") == [("http://i.io", "i.io/x:1", True, False)]
    with pytest.raises(RegistryError, match="blocked"):
        cfg.endpoints(parse_normalized("b.io/x"))


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ("[[registry", "invalid TOML"),
        ("[[registry]]\ninsecure = true\n", "needs a prefix or a location"),
        ('[[registry]]\nlocation = "https://x.io"\n', "URI schemes"),
        ('[[registry]]\nlocation = "x.io"\ninsecure = "yes"\n', "true or false"),
        ('[[registry]]\nprefix = "*.x.io"\nlocation = "y.io"\n', "cannot set a location"),
        ('[[registry]]\nprefix = "a.*.io"\n', "leading"),
        ('[[registry]]\nlocation = "x.io"\n[[registry.mirror]]\ninsecure = true\n', "no location"),
        (
            '[[registry]]\nlocation = "x.io"\n[[registry.mirror]]\nlocation = "m"\n'
            'pull-from-mirror = "sometimes"\n',
            "pull-from-mirror",
        ),
        ('[[registry]]\nlocation = "x.io"\n[[registry]]\nlocation = "x.io"\n', "defined twice"),
        ('unqualified-search-registries = "docker.io"\n', "must be strings"),
        ('[registries.search]\nregistries = ["a"]\n[[registry]]\nlocation = "x"\n', "mixes"),
        # v1 sections that are not tables raised AttributeError (found by tests/fuzz
        # registries_conf, a retyped variant of the v1 seed)
        ("[registries]\nsearch = 1\n", r"\[registries.search\] must be a table"),
        ('[registries]\nsearch.registries = ["a"]\nblock = ["b"]\n', "must be a table"),
        # int()'s 4,300-digit limit raised a bare ValueError from tomllib (found by tests/fuzz)
        ("n = " + "1" * 5000 + "\n", "invalid TOML"),
    ],
)
def test_invalid(doc: str, needle: str) -> None:
    with pytest.raises(InvalidArgument, match=needle):
        _cfg(doc)


def test_bad_rewrite_is_reported() -> None:
    cfg = _cfg('[[registry]]\nprefix = "x.io/a"\nlocation = "y.io"\n')
    with pytest.raises(InvalidArgument, match="rewriting prefix"):
        cfg.endpoints(parse_normalized("x.io/a:1"))


def test_testbed_registries_conf() -> None:
    path = REPO_ROOT / "testbed" / "registries.conf"
    if not path.exists():
        pytest.skip("testbed/registries.conf not present")
    cfg = load_registries(path)
    for ref, want in [
        ("registry.k8s.io/pause:3.9", "127.0.0.1:5000/pause:3.9"),
        ("k8s.gcr.io/pause:3.9", "127.0.0.1:5000/pause:3.9"),
        (
            "registry.k8s.io/e2e-test-images/busybox:1.29-2",
            "127.0.0.1:5000/e2e-test-images/busybox:1.29-2",
        ),
        (
            "gcr.io/k8s-staging-cri-tools/test-image-user-uid",
            "127.0.0.1:5000/k8s-staging-cri-tools/test-image-user-uid:latest",
        ),
        ("busybox", "127.0.0.1:5000/library/busybox:latest"),
        ("public.ecr.aws/docker/library/busybox:1", "127.0.0.1:5000/docker/library/busybox:1"),
    ]:
        # No fallback to the upstream host: exactly one endpoint, the local registry.
        assert _eps(cfg, ref) == [("http://127.0.0.1:5000", want, True, False)]


SHORT = """
unqualified-search-registries = ["quay.io", "docker.io"]

[aliases]
"busybox" = "docker.io/library/busybox"
"team/app" = "quay.io/team/app"
"""


def test_short_names_use_aliases_first() -> None:
    conf = RegistriesConfig.parse(("main", SHORT))
    assert str(conf.resolve("busybox")) == "docker.io/library/busybox:latest"
    assert str(conf.resolve("busybox:1.36")) == "docker.io/library/busybox:1.36"
    assert str(conf.resolve(f"team/app@{D}")) == f"quay.io/team/app@{D}"
    # Qualified names are never rewritten by aliases
    assert str(conf.resolve("quay.io/busybox")) == "quay.io/busybox:latest"


def test_ambiguous_short_name_is_an_error_never_a_guess() -> None:
    conf = RegistriesConfig.parse(("main", SHORT))
    with pytest.raises(InvalidArgument, match=r"'nginx' is ambiguous.*quay\.io/nginx"):
        conf.resolve("nginx")
    # Lookups still consider every candidate, in order
    assert [str(r) for r in conf.candidates("nginx:1")] == [
        "quay.io/nginx:1",
        "docker.io/library/nginx:1",
    ]
    assert [str(r) for r in conf.candidates("busybox")] == ["docker.io/library/busybox:latest"]


def test_one_or_no_search_registry() -> None:
    one = RegistriesConfig.parse(("m", 'unqualified-search-registries = ["quay.io"]\n'))
    assert str(one.resolve("nginx")) == "quay.io/nginx:latest"
    assert str(RegistriesConfig().resolve("nginx")) == "docker.io/library/nginx:latest"


def test_aliases_merge_by_name_across_dropins() -> None:
    conf = RegistriesConfig.parse(
        ("main", SHORT), ("drop", '[aliases]\n"busybox" = "quay.io/mirror/busybox"\n')
    )
    assert str(conf.resolve("busybox")) == "quay.io/mirror/busybox:latest"
    assert str(conf.resolve("team/app")) == "quay.io/team/app:latest"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[aliases]\n"busybox:1" = "docker.io/library/busybox"\n', "without tag"),
        ('[aliases]\n"quay.io/x" = "docker.io/library/x"\n', "short name"),
        ('[aliases]\n"x" = "library/x"\n', "must name a registry"),
        ('[aliases]\n"x" = 1\n', "must map to a string"),
    ],
)
def test_invalid_aliases(text: str, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        RegistriesConfig.parse(("f", text))


def test_toml_nested_too_deep_is_invalid() -> None:
    # Issue 15: tomllib recursed into a RecursionError (no InvalidArgument, no clear message).
    with pytest.raises(InvalidArgument, match="nested too deep"):
        RegistriesConfig.parse(("f", "a = " + "[" * 100_000 + "]" * 100_000))


def test_a_file_that_is_not_utf8_is_invalid(tmp_path: Path) -> None:
    # Issue 15: a stray Latin-1 byte raised UnicodeDecodeError past the error types.
    main = tmp_path / "registries.conf"
    main.write_bytes(b'unqualified-search-registries = ["caf\xe9.example"]\n')
    with pytest.raises(InvalidArgument, match=r"registries.conf: not UTF-8 \(byte 37\)"):
        load_registries(main)
