import argparse
from pathlib import Path

import pytest

from crirt import config
from crirt.errors import InvalidArgument


def _flags(*argv: str) -> dict[str, object]:
    p = argparse.ArgumentParser()
    config.add_flags(p)
    return vars(p.parse_args(list(argv)))


def test_defaults_without_any_file() -> None:
    cfg = config.load("/nonexistent/crirt.conf")
    assert cfg.listen == "/run/crirt/crirt.sock"
    # systemd where systemd is PID 1, else cgroupfs (crirt.oci.cgroups.parse_driver)
    assert cfg.runtime.cgroup_driver == "auto"
    assert cfg.handler("") == ("runc", cfg.runtime.handlers["runc"])


def test_file_dropins_and_flags_in_order(tmp_path: Path) -> None:
    main = tmp_path / "crirt.conf"
    main.write_text('root = "/a"\nlog_level = "debug"\n[network]\ncni_conf_dir = "/n1"\n')
    (tmp_path / "crirt.conf.d").mkdir()
    (tmp_path / "crirt.conf.d" / "10-x.conf").write_text('root = "/b"\n')
    cfg = config.load(main, _flags("--network-cni-bin-dirs", "/x,/y"))
    assert cfg.root == "/b"
    assert cfg.log_level == "debug"
    assert cfg.network.cni_conf_dir == "/n1"
    assert cfg.network.cni_bin_dirs == ["/x", "/y"]
    cfg = config.load(main, _flags("--root", "/c", "--streaming-port", "1234"))
    assert cfg.root == "/c"
    assert cfg.streaming.port == 1234


def test_handlers_table(tmp_path: Path) -> None:
    main = tmp_path / "crirt.conf"
    main.write_text('[runtime.handlers.fast]\npath = "/usr/bin/crun"\n')
    cfg = config.load(main)
    assert list(cfg.runtime.handlers) == ["fast"]
    assert cfg.handler("fast")[1].path == "/usr/bin/crun"
    assert cfg.handler_root("fast") == "/run/crirt/fast"
    with pytest.raises(InvalidArgument, match="unknown runtime handler"):
        cfg.handler("nope")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("bogus = 1\n", "unknown option"),
        ("[runtime]\nexec_sync_output_limit = 'many'\n", "expected int"),
        ("root = [\n", "crirt.conf"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path: Path, text: str, match: str) -> None:
    main = tmp_path / "crirt.conf"
    main.write_text(text)
    with pytest.raises(InvalidArgument, match=match):
        config.load(main)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        # Issue 15: each escaped as UnicodeDecodeError, RecursionError or a bare ValueError.
        (b"root = '\xff'\n", "not UTF-8 \\(byte 8\\)"),
        (b"a = " + b"[" * 100_000 + b"]" * 100_000, "nested too deep"),
        (b"a = " + b"9" * 5000, "crirt.conf"),
    ],
)
def test_undecodable_files_are_clear_errors(tmp_path: Path, data: bytes, match: str) -> None:
    main = tmp_path / "crirt.conf"
    main.write_bytes(data)
    with pytest.raises(InvalidArgument, match=match):
        config.load(main)


def test_streaming_timeouts_are_checked() -> None:
    cfg = config.load("/nonexistent/crirt.conf", _flags("--streaming-idle-timeout", "2.5"))
    assert cfg.streaming.idle_timeout == 2.5
    assert config.load("/nonexistent/crirt.conf").streaming.idle_timeout == 4 * 3600
    with pytest.raises(InvalidArgument, match=r"streaming\.idle_timeout: must be >= 0"):
        config.load("/nonexistent/crirt.conf", _flags("--streaming-idle-timeout", "-1"))
    with pytest.raises(InvalidArgument, match=r"streaming\.token_ttl: must be > 0"):
        config.load("/nonexistent/crirt.conf", _flags("--streaming-token-ttl", "0"))


def test_runtime_and_cni_timeouts_are_options() -> None:
    # A hung runc or CNI plugin is killed after these (issue 15: fault injection)
    defaults = config.load("/nonexistent/crirt.conf")
    assert (defaults.runtime.runtime_timeout, defaults.network.cni_timeout) == (60.0, 60.0)
    cfg = config.load(
        "/nonexistent/crirt.conf",
        _flags("--runtime-runtime-timeout", "2.5", "--network-cni-timeout", "3"),
    )
    assert (cfg.runtime.runtime_timeout, cfg.network.cni_timeout) == (2.5, 3.0)
    with pytest.raises(InvalidArgument, match=r"runtime\.runtime_timeout: must be > 0"):
        config.load("/nonexistent/crirt.conf", _flags("--runtime-runtime-timeout", "0"))
    with pytest.raises(InvalidArgument, match=r"network\.cni_timeout: must be > 0"):
        config.load("/nonexistent/crirt.conf", _flags("--network-cni-timeout", "-1"))
