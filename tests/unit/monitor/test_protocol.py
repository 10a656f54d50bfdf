"""crirt ⇄ monitor messages: round trips and rejection of malformed input."""

from __future__ import annotations

import json
import signal

import pytest

from crirt.monitor import protocol
from crirt.monitor.protocol import ExitInfo, MonitorSpec, SyncReport

SPEC = MonitorSpec(
    container_id="c1",
    bundle="/b",
    runtime_path="/usr/sbin/runc",
    runtime_root="/run/runc",
    log_path="/var/log/pods/x/c/0.log",
    exit_file="/run/crirt/exits/c1",
    pid_file="/b/pidfile",
    ctl_socket="/b/ctl",
    stdin=True,
    stdin_once=True,
    tty=False,
    log_max_line=1024,
)


def test_spec_round_trip() -> None:
    data = protocol.encode_spec(SPEC)
    assert data.endswith(b"\n")
    assert b"\n" not in data[:-1]
    assert protocol.decode_spec(data) == SPEC


def test_spec_defaults_apply_to_missing_optional_fields() -> None:
    obj = protocol.spec_to_dict(SPEC)
    for name in ("stdin", "stdin_once", "tty", "log_max_line"):
        del obj[name]
    spec = protocol.spec_from_dict(obj)
    assert (spec.stdin, spec.stdin_once, spec.tty, spec.log_max_line) == (
        False,
        False,
        False,
        protocol.DEFAULT_LOG_MAX_LINE,
    )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"bundle": None}, "bundle"),
        ({"tty": 1}, "tty"),
        ({"log_max_line": True}, "log_max_line"),
        ({"extra": 1}, "unknown field"),
        ({"container_id": ""}, "empty container_id"),
    ],
)
def test_spec_rejects_bad_fields(change: dict[str, object], match: str) -> None:
    obj = {**protocol.spec_to_dict(SPEC), **change}
    with pytest.raises(protocol.MessageError, match=match):
        protocol.spec_from_dict(obj)


def test_spec_missing_required_field() -> None:
    obj = protocol.spec_to_dict(SPEC)
    del obj["exit_file"]
    with pytest.raises(protocol.MessageError):
        protocol.spec_from_dict(obj)


@pytest.mark.parametrize("data", [b"", b"[1]", b"{", b"\xff", b"x" * (protocol.MAX_MESSAGE + 1)])
def test_decode_rejects_non_objects(data: bytes) -> None:
    with pytest.raises(protocol.MessageError):
        protocol.decode_spec(data)


def test_sync_round_trip() -> None:
    ok = SyncReport(pid=42, monitor_pid=41)
    assert json.loads(protocol.encode_sync(ok)) == {"pid": 42, "monitor_pid": 41}
    assert protocol.decode_sync(protocol.encode_sync(ok)) == ok
    assert ok.ok
    bad = SyncReport(pid=-1, monitor_pid=41, error="runc create failed: exec: boom")
    assert json.loads(protocol.encode_sync(bad))["error"] == bad.error
    assert protocol.decode_sync(protocol.encode_sync(bad)) == bad
    assert not bad.ok


def test_sync_conmon_style_failure_without_message_still_errors() -> None:
    report = protocol.decode_sync(b'{"pid": -1}')
    assert not report.ok
    assert report.error


def test_exit_round_trip() -> None:
    for info in (
        ExitInfo(exit_code=3, finished_at=1_795_851_525_273_974_175),
        ExitInfo(exit_code=137, finished_at=1, oom_killed=True, signal=9),
    ):
        assert protocol.decode_exit(protocol.encode_exit(info)) == info
    assert json.loads(protocol.encode_exit(ExitInfo(0, 5))) == {
        "exit_code": 0,
        "finished_at": 5,
        "oom_killed": False,
        "signal": None,
    }


@pytest.mark.parametrize(
    "data",
    [
        b'{"exit_code": "3", "finished_at": 1, "oom_killed": false}',
        b'{"exit_code": 3, "finished_at": 1, "oom_killed": 0}',
        b'{"exit_code": 3, "finished_at": 1, "oom_killed": false, "signal": "KILL"}',
        b'{"finished_at": 1, "oom_killed": false}',
    ],
)
def test_exit_rejects_bad_records(data: bytes) -> None:
    with pytest.raises(protocol.MessageError):
        protocol.decode_exit(data)


def _exited(code: int) -> int:
    return (code & 0xFF) << 8


def test_exit_from_wait_status() -> None:
    assert protocol.exit_from_wait_status(_exited(0)) == (0, None)
    assert protocol.exit_from_wait_status(_exited(3)) == (3, None)
    assert protocol.exit_from_wait_status(signal.SIGKILL) == (137, 9)
    assert protocol.exit_from_wait_status(signal.SIGTERM | 0x80) == (143, 15)  # core dumped
    with pytest.raises(protocol.MessageError):
        protocol.exit_from_wait_status(0x137F)  # stopped, not terminated


def test_requests_and_replies() -> None:
    op, req = protocol.decode_request(protocol.encode_request("spawn", spec={"a": 1}))
    assert (op, req["spec"]) == ("spawn", {"a": 1})
    assert protocol.decode_reply(protocol.encode_reply(True, pid=7)) == {"ok": True, "pid": 7}
    with pytest.raises(protocol.RequestFailed, match="no such file"):
        protocol.decode_reply(protocol.encode_reply(False, "no such file"))
    with pytest.raises(protocol.MessageError):
        protocol.decode_request(b'{"op": 1}')
    with pytest.raises(protocol.MessageError):
        protocol.decode_reply(b'{"pid": 1}')


def test_attach_resize_packet() -> None:
    packet = protocol.encode_resize(132, 43)
    assert packet == b"\x02\x00\x84\x00\x2b"
    assert protocol.decode_resize(packet) == (132, 43)
    with pytest.raises(protocol.MessageError):
        protocol.decode_resize(b"\x02\x00")


def test_spec_attach_socket_is_optional() -> None:
    obj = protocol.spec_to_dict(SPEC)
    assert obj["attach_socket"] == ""
    obj["attach_socket"] = "/run/x/attach"
    assert protocol.spec_from_dict(obj).attach_socket == "/run/x/attach"


def test_newer_fields_are_sent_only_when_set() -> None:
    # A monitor binary older than crirt refuses unknown fields: a spec that does not use the
    # systemd driver must read exactly as before it existed.
    assert "systemd_cgroup" not in protocol.spec_to_dict(SPEC)
    systemd = MonitorSpec(**{**protocol.spec_to_dict(SPEC), "systemd_cgroup": True})
    assert protocol.spec_to_dict(systemd)["systemd_cgroup"] is True
    assert protocol.decode_spec(protocol.encode_spec(systemd)) == systemd
