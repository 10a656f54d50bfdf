"""The monitor end to end with real runc: logs, exit codes, reopen, fork server loss, memory.

Every test gets its own runc --root, state dir and fork server, and tears down whatever it
started (runc delete -f, the fork server, monitors still answering). Run as root with
``python -m pytest -s`` to see the memory and latency figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

import crirt.monitor.client
from crirt.errors import RuntimeFailure
from crirt.monitor import __main__ as monitor_main
from crirt.monitor import protocol
from crirt.monitor.client import MonitorClient
from crirt.monitor.protocol import MonitorSpec
from crirt.sansio.crilog import Stream, join_messages, parse_log
from tests.helpers.bundle import RUNC, make_bundle, remove_test_cgroups
from tests.helpers.marks import needs_runc
from tests.integration.conftest import SANITIZED_MONITOR

T = TypeVar("T")


LOOP = ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.05; done"]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def wait_for(pred: Any, timeout: float = 10.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {pred}")
        time.sleep(interval)


def pid_running(pid: int) -> bool:
    """Alive and not a zombie (PID 1 here does not reap orphans)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def holders(path: Path) -> list[int]:
    """Live processes holding an fd on a file below ``path``."""
    out = []
    prefix = str(path)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or not pid_running(int(entry)):
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/fd/{fd}").startswith(prefix):
                        out.append(int(entry))
                        break
    return out


def children_of(ppid: int) -> dict[int, str]:
    """The children of ``ppid`` and their states (``Z``: an unreaped zombie)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == ppid:
                out[int(entry)] = fields[0]
    return out


def assert_fork_server_kind(env: Env, pid: int) -> None:
    """The fork server matches the monitor: the native binary's own mode, or the Python one."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    if env.monitor_path:
        assert os.readlink(f"/proc/{pid}/exe") == env.monitor_path
        assert argv[1:3] == [b"--fork-server", str(env.client.fork_server_socket).encode()]
    else:
        assert b"crirt.monitor.forkserver" in b" ".join(argv)


def smaps_rollup(pid: int) -> dict[str, int]:
    """kB figures of /proc/<pid>/smaps_rollup."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


@dataclass
class Env:
    tmp: Path
    client: MonitorClient
    runc_root: Path
    started: list[str]
    # The native monitor under test, or None for the Python one.
    monitor_path: str | None = None

    def new_client(self, state: str = "state", **kw: Any) -> MonitorClient:
        return MonitorClient(self.tmp / state, monitor_path=self.monitor_path, **kw)

    def spec(self, cid: str, args: list[str], *, log: bool = True, **kw: Any) -> MonitorSpec:
        d = self.tmp / cid
        make_bundle(
            d / "bundle",
            args,
            cid,
            **{k: v for k, v in kw.items() if k in ("terminal", "memory_limit")},
        )
        (d / "logs").mkdir(exist_ok=True)
        return MonitorSpec(
            container_id=cid,
            bundle=str(d / "bundle"),
            runtime_path=RUNC,
            runtime_root=str(self.runc_root),
            log_path=str(d / "logs" / "0.log") if log else "",
            exit_file=str(d / "exit"),
            pid_file=str(d / "bundle" / "pidfile"),
            ctl_socket=str(d / "ctl"),
            attach_socket=str(d / "attach"),
            **{
                k: v
                for k, v in kw.items()
                if k in ("stdin", "stdin_once", "tty", "log_max_line", "start")
            },
        )

    def runc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [RUNC, "--root", str(self.runc_root), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        # runc's words on failure, not just its status.
        assert not check or r.returncode == 0, f"runc {' '.join(args)}: {r.returncode} {r.stderr}"
        return r

    async def create_and_start(self, spec: MonitorSpec) -> int:
        """Start the container the way crirt starts a container: the monitor's ``runc run
        --detach`` (``spec.start``). A separate ``runc start`` (the pod's infra) races a
        short-lived process: the monitor reaps it and deletes runc's state while ``runc start``
        still wants to remove its exec fifo (test_runc_start_of_a_created_container)."""
        self.started.append(spec.container_id)
        report = await self.client.start(replace(spec, start=True))
        return report.monitor_pid

    def wait_exit(self, spec: MonitorSpec, timeout: float = 10.0) -> Any:
        wait_for(lambda: MonitorClient.read_exit(spec.exit_file) is not None, timeout)
        return MonitorClient.read_exit(spec.exit_file)


# Every behaviour test runs against both monitors: the native one (the default) and the Python
# one (the fallback when the native one is not installed).
@pytest.fixture(params=["python", "native"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    if os.geteuid() != 0 or not os.path.exists(RUNC):
        pytest.skip("needs root and runc")
    native = request.getfixturevalue("native_monitor") if request.param == "native" else None
    client = MonitorClient(tmp_path / "state", monitor_path=native)
    e = Env(tmp_path, client, tmp_path / "runc", [], native)
    try:
        yield e
    finally:
        _teardown(e)


def _teardown(e: Env) -> None:
    if e.runc_root.is_dir():
        for cid in os.listdir(e.runc_root):
            e.runc("delete", "--force", cid, check=False)
    # Monitors still answering (their container is gone now, they exit within the drain time).
    for ctl in e.tmp.glob("*/ctl"):
        with contextlib.suppress(RuntimeFailure):
            pid = run(e.client.ping(ctl, timeout=1))["pid"]
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    fs_pid = run(e.client.fork_server_pid())
    if fs_pid:
        os.kill(fs_pid, signal.SIGKILL)
    for pid in holders(e.tmp):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    remove_test_cgroups()


def log_messages(spec: MonitorSpec) -> list[tuple[Stream, bytes]]:
    return join_messages(parse_log(Path(spec.log_path).read_bytes()))


# ---------------------------------------------------------------------------------------------


@pytest.mark.root
@needs_runc
def test_stdout_stderr_and_exit_code(env: Env) -> None:
    # Given a container printing on both streams and exiting 3
    spec = env.spec("echo", ["sh", "-c", "echo hello; echo err >&2; exit 3"])
    # When it runs under a monitor
    mpid = run(env.create_and_start(spec))
    info = env.wait_exit(spec)
    # Then the log has one F line per stream and the exit file the code
    recs = parse_log(Path(spec.log_path).read_bytes())
    assert sorted((r.stream, r.partial, r.content) for r in recs) == [
        ("stderr", False, b"err"),
        ("stdout", False, b"hello"),
    ]
    assert (info.exit_code, info.signal, info.oom_killed) == (3, None, False)
    assert abs(info.finished_at - time.time_ns()) < 30 * 10**9
    # And the monitor is gone, its ctl socket removed, the log mode 0640
    wait_for(lambda: not pid_running(mpid), 5)
    assert not os.path.exists(spec.ctl_socket)
    assert os.stat(spec.log_path).st_mode & 0o777 == 0o640


@pytest.mark.root
@needs_runc
def test_long_lines_are_split_and_partial_tail_flushed(env: Env) -> None:
    # busybox printf pads; tr turns the padding into a long run of one letter.
    script = "printf '%20000s\\n' x; printf 'no newline at the end'"
    spec = env.spec("long", ["sh", "-c", script])
    run(env.create_and_start(spec))
    env.wait_exit(spec)
    recs = parse_log(Path(spec.log_path).read_bytes())
    assert [(r.partial, len(r.content)) for r in recs] == [
        (True, 16384),
        (False, 20000 - 16384),
        (True, len("no newline at the end")),
    ]
    assert log_messages(spec)[-1] == ("stdout", b"no newline at the end")


@pytest.mark.root
@needs_runc
def test_shared_pid_namespace_leftovers_die_with_init(env: Env) -> None:
    # Given a container without a PID namespace of its own (as in a pod's shared one) whose
    # init leaves a background process holding its stdout
    spec = env.spec("shared", ["sh", "-c", "sleep 1000 & echo $!"])
    cfg_path = Path(spec.bundle) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "pid"]
    cfg_path.write_text(json.dumps(cfg))
    # When its init exits
    t0 = time.monotonic()
    run(env.create_and_start(spec))
    info = env.wait_exit(spec)
    # Then the exit is recorded at once (not after the drain deadline), as containerd's shim
    # does, and the leftover process was killed
    assert time.monotonic() - t0 < monitor_main.DRAIN_SECONDS
    assert info.exit_code == 0
    leftover = int(log_messages(spec)[0][1])
    wait_for(lambda: not pid_running(leftover), 5)


@pytest.mark.root
@needs_runc
def test_sigkill_is_exit_code_137(env: Env) -> None:
    spec = env.spec("kill", ["sleep", "1000"])
    run(env.create_and_start(spec))
    assert MonitorClient.is_alive(spec.ctl_socket)
    assert MonitorClient.read_exit(spec.exit_file) is None
    env.runc("kill", "kill", "KILL")
    info = env.wait_exit(spec)
    assert (info.exit_code, info.signal) == (137, 9)


@pytest.mark.root
@needs_runc
def test_runc_start_of_a_created_container(env: Env) -> None:
    # Given a container the monitor only created (the pod's infra: crirt runs `runc start`)
    spec = env.spec("infra", ["sh", "-c", "echo up; exec sleep 600"])
    env.started.append("infra")
    pid = run(env.client.start_monitor(spec))
    # Then it waits in runc's created state, its process not yet the command
    assert json.loads(env.runc("state", "infra").stdout)["status"] == "created"
    assert log_messages(spec) == []
    # When runc starts it, it runs the command, its output reaching the log
    env.runc("start", "infra")
    assert json.loads(env.runc("state", "infra").stdout)["status"] == "running"
    wait_for(lambda: log_messages(spec) == [("stdout", b"up\n")], 10)
    # And its death is the monitor's exit record
    os.kill(pid, signal.SIGKILL)
    assert env.wait_exit(spec).exit_code == 137


@pytest.mark.root
@needs_runc
def test_created_then_deleted_container_gets_an_exit_file(env: Env) -> None:
    # Given a container created but never started
    spec = env.spec("never", ["true"])
    env.started.append("never")
    pid = run(env.client.start_monitor(spec))
    assert pid_running(pid)
    # When it is force-deleted (RemoveContainer of a created container)
    env.runc("delete", "--force", "never")
    # Then the monitor reports its death
    info = env.wait_exit(spec)
    assert info.exit_code == 137


@pytest.mark.root
@needs_runc
def test_bad_bundle_reports_runc_error_and_leaves_no_monitor(env: Env) -> None:
    # Given a bundle whose process binary does not exist
    spec = env.spec("bad", ["/nonexistent-binary"])
    # When the monitor runs runc create
    with pytest.raises(RuntimeFailure) as err:
        run(env.client.start_monitor(spec))
    # Then runc's message comes back, and nothing is left behind
    assert "nonexistent-binary" in str(err.value)
    assert "bad" in str(err.value)
    wait_for(lambda: not holders(env.tmp / "bad"), 5)
    assert not os.path.exists(spec.exit_file)
    assert not os.path.exists(spec.ctl_socket)
    assert env.runc("state", "bad", check=False).returncode != 0


@pytest.mark.root
@needs_runc
def test_client_timeout_makes_the_monitor_delete_the_container(env: Env) -> None:
    # Given a runtime that needs longer than the client is willing to wait
    slow = env.tmp / "slow-runc"
    slow.write_text(f'#!/bin/sh\nsleep 1.5\nexec {RUNC} "$@"\n')
    slow.chmod(0o755)
    spec = replace(env.spec("slow", ["sleep", "1000"]), runtime_path=str(slow))
    # When the client gives up first
    with pytest.raises(RuntimeFailure, match="did not report"):
        run(env.client.start_monitor(spec, timeout=0.5))
    # Then the monitor, finding nobody to report to, deletes the container and exits
    wait_for(lambda: not holders(env.tmp / "slow"), 10)
    assert env.runc("state", "slow", check=False).returncode != 0
    assert not os.path.exists(spec.exit_file)


@pytest.mark.root
@needs_runc
def test_missing_log_directory_is_an_error(env: Env) -> None:
    spec = env.spec("nolog", ["true"])
    os.rmdir(Path(spec.log_path).parent)
    with pytest.raises(RuntimeFailure, match="open log file"):
        run(env.client.start_monitor(spec))
    assert env.runc("state", "nolog", check=False).returncode != 0


@pytest.mark.root
@needs_runc
def test_reopen_after_rotation(env: Env) -> None:
    # Given a container logging continuously
    spec = env.spec("rot", LOOP)
    run(env.create_and_start(spec))
    log = Path(spec.log_path)
    wait_for(lambda: log.stat().st_size > 0)
    # When the kubelet renames the file and asks for a reopen
    rotated = log.with_name("0.log.20261128-000000")
    log.rename(rotated)
    run(env.client.reopen_log(Path(spec.ctl_socket)))
    # Then the path exists again and receives new lines, and the old file stops growing
    assert log.exists()
    size_old = rotated.stat().st_size
    wait_for(lambda: log.stat().st_size > 100)
    # (two more ticks into the new file: whatever the monitor writes now goes there)
    size_new = log.stat().st_size
    wait_for(lambda: log.stat().st_size > size_new + 20)
    assert rotated.stat().st_size == size_old
    # And no line is lost or torn across the two files
    ticks = [m for _, m in join_messages(parse_log(rotated.read_bytes() + log.read_bytes()))]
    numbers = [int(m.split()[1]) for m in ticks]
    assert numbers == list(range(1, len(numbers) + 1))
    env.runc("kill", "rot", "KILL")
    env.wait_exit(spec)
    # After the exit there is no monitor to reopen: an error, so the kubelet renames back
    with pytest.raises(RuntimeFailure):
        run(env.client.reopen_log(Path(spec.ctl_socket), timeout=1))
    assert not MonitorClient.is_alive(spec.ctl_socket)


@pytest.mark.root
@needs_runc
def test_reopen_failure_keeps_the_old_file(env: Env) -> None:
    spec = env.spec("rotfail", LOOP)
    run(env.create_and_start(spec))
    log = Path(spec.log_path)
    rotated = log.with_name("0.log.1")
    log.rename(rotated)
    log.mkdir()  # the path is now a directory: open fails
    with pytest.raises(RuntimeFailure, match="reopen"):
        run(env.client.reopen_log(spec.ctl_socket))
    size = rotated.stat().st_size
    wait_for(lambda: rotated.stat().st_size > size)


@pytest.mark.root
@needs_runc
def test_monitor_survives_fork_server_kill_and_client_restart(env: Env) -> None:
    # Given a running container whose monitor came from the fork server
    spec = env.spec("survive", LOOP)
    mpid = run(env.create_and_start(spec))
    fs_pid = run(env.client.fork_server_pid())
    assert fs_pid is not None
    assert_fork_server_kind(env, fs_pid)
    assert os.getppid() != mpid
    with open(f"/proc/{mpid}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    # Its parent is the fork server (its subreaper, which reaps it), never the client.
    assert ppid == fs_pid
    assert ppid != os.getpid()
    assert os.getsid(mpid) == mpid
    # When the fork server is SIGKILLed (crirt serve restarting with it)
    os.kill(fs_pid, signal.SIGKILL)
    wait_for(lambda: not pid_running(fs_pid), 5)
    # Then the monitor and the container keep running and the log keeps growing
    size = Path(spec.log_path).stat().st_size
    wait_for(lambda: Path(spec.log_path).stat().st_size > size + 100)
    assert pid_running(mpid)
    status = run(env.client.ping(spec.ctl_socket))
    assert status["pid"] == mpid
    assert not status["exited"]
    # And a new client (crirt restarted) starts a fresh fork server and can still talk to it
    client2 = env.new_client()
    spec2 = env.spec("survive2", ["sh", "-c", "echo second"])
    env.client = client2
    run(env.create_and_start(spec2))
    assert env.wait_exit(spec2).exit_code == 0
    new_fs = run(client2.fork_server_pid())
    assert new_fs not in (None, fs_pid)
    assert new_fs is not None
    assert_fork_server_kind(env, new_fs)
    run(client2.reopen_log(spec.ctl_socket))


@pytest.mark.root
@needs_runc
def test_outdated_fork_server_is_replaced(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a fork server and a monitor it started
    spec = env.spec("old", LOOP)
    mpid = run(env.create_and_start(spec))
    old_fs = run(env.client.fork_server_pid())
    assert old_fs is not None
    # When a crirt with different monitor code starts its first container
    monkeypatch.setattr(crirt.monitor.client, "_source_fingerprint", lambda: "upgraded")
    env.client = env.new_client()
    spec2 = env.spec("new", ["sh", "-c", "echo new"])
    run(env.create_and_start(spec2))
    # Then the old server is gone, a new one serves, and the old monitor keeps running
    assert not pid_running(old_fs)
    new_fs = run(env.client.fork_server_pid())
    assert new_fs not in (None, old_fs)
    assert new_fs is not None
    assert_fork_server_kind(env, new_fs)
    assert env.wait_exit(spec2).exit_code == 0
    assert pid_running(mpid)
    assert run(env.client.ping(spec.ctl_socket))["pid"] == mpid


@pytest.mark.root
@needs_runc
def test_exited_monitors_are_reaped_by_the_fork_server(env: Env) -> None:
    # Given monitors from the fork server whose containers exit at once
    specs = [env.spec(f"reap{i}", ["true"]) for i in range(3)]
    mpids = [run(env.create_and_start(s)) for s in specs]
    fs_pid = run(env.client.fork_server_pid())
    assert fs_pid is not None
    for s in specs:
        assert env.wait_exit(s).exit_code == 0
    # Then the fork server (their subreaper) reaps them: no zombie is left (the Python server
    # reaps every 2 s, the native one at once)
    wait_for(lambda: not set(mpids) & set(children_of(fs_pid)), 5)
    assert "Z" not in children_of(fs_pid).values()


@pytest.mark.root
@needs_runc
def test_fallback_without_fork_server(env: Env) -> None:
    env.client = env.new_client(use_fork_server=False)
    spec = env.spec("fallback", ["sh", "-c", "echo via fallback"])
    mpid = run(env.create_and_start(spec))
    assert env.wait_exit(spec).exit_code == 0
    assert log_messages(spec) == [("stdout", b"via fallback\n")]
    assert run(env.client.fork_server_pid()) is None
    wait_for(lambda: not pid_running(mpid), 5)


@pytest.mark.root
@needs_runc
def test_a_native_monitor_that_cannot_be_executed_is_a_clear_error(env: Env) -> None:
    # Given a client told to use a native monitor that is not there
    env.client = MonitorClient(env.tmp / "state", monitor_path=str(env.tmp / "no-monitor"))
    spec = env.spec("noexec", ["sh", "-c", "echo never"])
    # When a container is started, the fork server's child cannot exec it
    with pytest.raises(RuntimeFailure, match="no-monitor"):
        run(env.client.start(spec))
    # Then nothing was created
    assert env.runc("state", "noexec", check=False).returncode != 0
    assert not os.path.exists(spec.ctl_socket)


@pytest.mark.root
@needs_runc
def test_discarded_log_still_drains_output(env: Env) -> None:
    # 1 MiB of output with no log file must not block the container on a full pipe.
    spec = env.spec("discard", ["sh", "-c", "yes | head -c 1048576; exit 5"], log=False)
    run(env.create_and_start(spec))
    assert env.wait_exit(spec).exit_code == 5
    assert os.listdir(Path(spec.bundle).parent / "logs") == []


@pytest.mark.root
@needs_runc
def test_concurrent_starts_share_one_fork_server(env: Env) -> None:
    specs = [env.spec(f"par{i}", ["sh", "-c", f"echo {i}"]) for i in range(6)]

    async def go() -> list[int]:
        return await asyncio.gather(*(env.create_and_start(s) for s in specs))

    run(go())
    for i, s in enumerate(specs):
        assert env.wait_exit(s).exit_code == 0
        assert log_messages(s) == [("stdout", f"{i}\n".encode())]
    assert (env.tmp / "state" / "forkserver.sock").exists()


@pytest.mark.root
@needs_runc
def test_tty_output_goes_to_stdout(env: Env) -> None:
    spec = env.spec(
        "tty", ["sh", "-c", "echo on a tty; [ -t 1 ] && echo yes"], tty=True, terminal=True
    )
    run(env.create_and_start(spec))
    assert env.wait_exit(spec).exit_code == 0
    msgs = log_messages(spec)
    # The pty turns \n into \r\n; \r stays content.
    assert msgs == [("stdout", b"on a tty\r\n"), ("stdout", b"yes\r\n")]


@pytest.mark.root
@needs_runc
def test_long_socket_paths(env: Env) -> None:
    # Given state paths longer than sun_path (108 bytes), with a console socket too
    deep = env.tmp / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    base = env.spec("deep", ["sh", "-c", "echo deep; sleep 1000"], tty=True, terminal=True)
    spec = replace(base, ctl_socket=str(deep / "ctl"), exit_file=str(deep / "exit"))
    assert len(spec.ctl_socket) > 108
    # When the monitor binds and runc connects through them
    run(env.create_and_start(spec))
    # Then everything works as with short paths
    assert run(env.client.ping(spec.ctl_socket))["container_pid"] > 0
    run(env.client.reopen_log(spec.ctl_socket))
    assert MonitorClient.is_alive(spec.ctl_socket)
    env.runc("kill", "deep", "KILL")
    assert env.wait_exit(spec).exit_code == 137
    assert log_messages(spec) == [("stdout", b"deep\r\n")]


@pytest.mark.root
@needs_runc
def test_second_monitor_for_a_live_ctl_socket_is_refused(env: Env) -> None:
    spec = env.spec("dup", ["sleep", "1000"])
    run(env.create_and_start(spec))
    other = replace(
        spec, container_id="dup2", pid_file=spec.pid_file + "2", exit_file=spec.exit_file + "2"
    )
    with pytest.raises(RuntimeFailure, match="already running"):
        run(env.client.start_monitor(other))
    assert MonitorClient.is_alive(spec.ctl_socket)
    assert env.runc("state", "dup2", check=False).returncode != 0


@pytest.mark.root
@needs_runc
def test_oom_kill_is_detected(env: Env) -> None:
    # tail buffers /dev/zero (no newline) until the 16 MiB limit kills it.
    spec = env.spec("oom", ["sh", "-c", "tail /dev/zero"], memory_limit=16 * 1024 * 1024)
    run(env.create_and_start(spec))
    info = env.wait_exit(spec, 30)
    assert info.oom_killed
    assert info.exit_code == 137


@pytest.mark.root
@needs_runc
@pytest.mark.skipif(SANITIZED_MONITOR, reason="the sanitizers' shadow memory is not the monitor's")
def test_memory_and_latency_of_ten_monitors(env: Env) -> None:
    # Given ten idle containers, each with its own monitor from the fork server
    specs = [env.spec(f"mem{i}", ["sleep", "1000"]) for i in range(10)]
    run(env.client.ensure_fork_server())
    ready = []
    mpids = []
    for s in specs:
        t0 = time.perf_counter()
        mpids.append(run(env.create_and_start(s)))
        ready.append(time.perf_counter() - t0)
    # each in its loop, answering
    for s in specs:
        run(env.client.ping(s.ctl_socket))
    # When their memory is read from smaps_rollup
    rollups = [smaps_rollup(p) for p in mpids]
    pss = sum(r["Pss"] for r in rollups) / len(rollups)
    rss = sum(r["Rss"] for r in rollups) / len(rollups)
    dirty = sum(r["Private_Dirty"] for r in rollups) / len(rollups)
    fs_pid = run(env.client.fork_server_pid()) or 0
    assert_fork_server_kind(env, fs_pid)
    fs = smaps_rollup(fs_pid)
    # And, for comparison, two monitors started as fresh interpreters
    if env.monitor_path:
        print(
            f"\nnative monitor: PSS {pss / 1024:.2f} MB, RSS {rss / 1024:.2f} MB, private dirty "
            f"{dirty / 1024:.2f} MB per monitor (10 running); time to ready (create) median "
            f"{sorted(ready)[5] * 1000:.0f} ms, max {max(ready) * 1000:.0f} ms; native fork "
            f"server PSS {fs['Pss']} kB, RSS {fs['Rss']} kB"
        )
        # The issue 8 target: at most 1 MiB PSS per container (conmon: about 0.5 MB). The
        # shared part here is libc's pages, shared with most processes on the machine.
        assert pss < 1024
        assert dirty < 512
        # The native fork server replaces a ~8 MB Python one.
        assert fs["Pss"] < 512
        return
    fb = env.new_client("state-fb", use_fork_server=False)
    fb_specs = [env.spec(f"fb{i}", ["sleep", "1000"]) for i in range(2)]
    fb_ready = []
    fb_pids = []
    for s in fb_specs:
        env.started.append(s.container_id)
        t0 = time.perf_counter()
        fb_pids.append(run(fb.start(s)).monitor_pid)
        fb_ready.append(time.perf_counter() - t0)
    fb_pss = sum(smaps_rollup(p)["Pss"] for p in fb_pids) / len(fb_pids)
    print(
        f"\nmonitor via fork server: PSS {pss / 1024:.2f} MB, RSS {rss / 1024:.2f} MB, "
        f"private dirty {dirty / 1024:.2f} MB per monitor (10 running); fork server PSS "
        f"{fs['Pss'] / 1024:.2f} MB; time to ready (create) median "
        f"{sorted(ready)[5] * 1000:.0f} ms, max {max(ready) * 1000:.0f} ms"
        f"\nmonitor as fresh interpreter: PSS {fb_pss / 1024:.2f} MB; time to ready "
        f"{min(fb_ready) * 1000:.0f}-{max(fb_ready) * 1000:.0f} ms"
    )
    # Then a forked monitor stays far below a fresh interpreter
    assert pss < fb_pss
    # and its own pages (what each further container costs) stay under 2 MiB. PSS also holds a
    # share of every page it maps with other processes, which moves with whatever else runs on
    # the machine (2.48-2.70 MB for the same code within a minute): not a bound a test can hold.
    assert dirty < 2.0 * 1024


def test_cgroup_paths_and_oom_counters() -> None:
    assert monitor_main.cgroup_relpath("/crirt/pod1/c1") == "/crirt/pod1/c1"
    assert monitor_main.cgroup_relpath("crirt/c1") == "/crirt/c1"
    assert monitor_main.cgroup_relpath("kubepods-besteffort-pod12.slice:crio:abc") == (
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/crio-abc.scope"
    )
    assert monitor_main.cgroup_relpath("-.slice:crio:abc") == "/crio-abc.scope"
    assert monitor_main.parse_oom_counters("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    assert not monitor_main.parse_oom_counters("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    assert monitor_main.parse_oom_counters("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert not monitor_main.parse_oom_counters("low 0\nhigh 0\nmax 3\noom 0\noom_kill 0\n")


# -- attach ---------------------------------------------------------------------------------------


def attach(spec: MonitorSpec, stdin: bool = False) -> socket.socket:
    """A blocking attach client; with ``stdin`` it declares that it carries stdin."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.settimeout(10)
    addr, dfd = monitor_main.sock_address(spec.attach_socket)
    try:
        sock.connect(addr)
    finally:
        if dfd >= 0:
            os.close(dfd)
    if stdin:
        sock.send(bytes([protocol.ATTACH_STDIN]))
    return sock


def read_until(sock: socket.socket, *wants: bytes) -> dict[int, bytes]:
    """Output packets by stream until each of ``wants`` appeared in one of them (or EOF)."""
    got: dict[int, bytes] = {}
    while not all(any(w in v for v in got.values()) for w in wants):
        packet = sock.recv(protocol.ATTACH_PACKET)
        if not packet:
            break
        got[packet[0]] = got.get(packet[0], b"") + packet[1:]
    return got


def read_to_eof(sock: socket.socket) -> dict[int, bytes]:
    got: dict[int, bytes] = {}
    while packet := sock.recv(protocol.ATTACH_PACKET):
        got[packet[0]] = got.get(packet[0], b"") + packet[1:]
    return got


@pytest.mark.root
@needs_runc
def test_attach_streams_output_and_stdin_once_closes_stdin(env: Env) -> None:
    # Given a shell reading stdin, with stdin_once
    spec = env.spec("att1", ["sh"], stdin=True, stdin_once=True)
    run(env.create_and_start(spec))
    # When a client attaches with stdin and sends a command
    sock = attach(spec, stdin=True)
    sock.send(bytes([protocol.ATTACH_STDIN]) + b"echo hi; echo oops >&2\n")
    got = read_until(sock, b"oops", b"hi")
    # Then it receives both streams live, tagged
    assert b"hi\n" in got[protocol.ATTACH_STDOUT]
    assert got[protocol.ATTACH_STDERR] == b"oops\n"
    # When its stdin ends, the container's stdin is closed: sh exits and the socket closes
    sock.send(bytes([protocol.ATTACH_STDIN_EOF]))
    assert read_to_eof(sock) == {}
    assert env.wait_exit(spec).exit_code == 0
    sock.close()
    # And the log has the same output, the attach socket is gone
    assert sorted(log_messages(spec)) == [("stderr", b"oops\n"), ("stdout", b"hi\n")]
    wait_for(lambda: not os.path.exists(spec.attach_socket), 5)


@pytest.mark.root
@needs_runc
def test_attach_without_stdin_once_keeps_stdin_for_the_next_client(env: Env) -> None:
    spec = env.spec("att2", ["sh"], stdin=True, stdin_once=False)
    mpid = run(env.create_and_start(spec))
    first = attach(spec, stdin=True)
    first.send(bytes([protocol.ATTACH_STDIN]) + b"echo one\n")
    assert b"one" in read_until(first, b"one")[protocol.ATTACH_STDOUT]
    # A hang-up without stdin_once leaves the container's stdin open
    nfds = len(os.listdir(f"/proc/{mpid}/fd"))
    first.close()
    # (the monitor has let the client go: one fd fewer)
    wait_for(lambda: len(os.listdir(f"/proc/{mpid}/fd")) == nfds - 1)
    assert MonitorClient.read_exit(spec.exit_file) is None
    # A watcher without stdin sees what the next stdin client makes the shell print
    watcher = attach(spec)
    second = attach(spec, stdin=True)
    second.send(bytes([protocol.ATTACH_STDIN]) + b"echo two; exit 4\n")
    assert read_to_eof(watcher) == {protocol.ATTACH_STDOUT: b"two\n"}
    assert env.wait_exit(spec).exit_code == 4
    watcher.close()
    second.close()


@pytest.mark.root
@needs_runc
def test_attach_hangup_counts_as_stdin_end_with_stdin_once(env: Env) -> None:
    spec = env.spec("att3", ["cat"], stdin=True, stdin_once=True)
    run(env.create_and_start(spec))
    watcher = attach(spec)
    sock = attach(spec, stdin=True)
    sock.send(bytes([protocol.ATTACH_STDIN]) + b"meow\n")
    assert read_until(watcher, b"meow") == {protocol.ATTACH_STDOUT: b"meow\n"}
    sock.close()  # no EOF packet: the hang-up ends the first session
    assert read_to_eof(watcher) == {}
    assert env.wait_exit(spec).exit_code == 0
    watcher.close()


@pytest.mark.root
@needs_runc
def test_attach_tty_resize(env: Env) -> None:
    spec = env.spec("att4", ["sh"], stdin=True, tty=True, terminal=True)
    run(env.create_and_start(spec))
    sock = attach(spec, stdin=True)
    sock.send(protocol.encode_resize(91, 27))
    sock.send(bytes([protocol.ATTACH_STDIN]) + b"stty size; exit 3\n")
    got = read_to_eof(sock)
    assert b"27 91" in got[protocol.ATTACH_STDOUT]
    assert env.wait_exit(spec).exit_code == 3
    sock.close()


@pytest.mark.root
@needs_runc
def test_stuck_attach_client_is_dropped_not_waited_for(env: Env) -> None:
    # Given a client that attaches and never reads
    spec = env.spec(
        "att5", ["sh", "-c", "read x; yes 0123456789 | head -c 8000000; echo done"], stdin=True
    )
    run(env.create_and_start(spec))
    stuck = attach(spec, stdin=True)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.send(bytes([protocol.ATTACH_STDIN]) + b"go\n")
    # When the container writes far more than the socket buffers
    info = env.wait_exit(spec, timeout=30)
    # Then the container finished and its log is complete; the client was cut off
    assert info.exit_code == 0
    out = b"".join(m for _, m in log_messages(spec))
    assert out.endswith(b"01234567done\n")
    assert len(out) == 8000000 + 5
    got = read_to_eof(stuck)
    assert len(got.get(protocol.ATTACH_STDOUT, b"")) < 8000000
    stuck.close()


def _accept_calls(pid: int, seconds: float) -> int:
    """How many accept4 calls process ``pid`` makes within ``seconds`` (strace's count): a
    monitor that waits makes a handful, one that spins on a readable listening socket
    thousands, however busy the machine."""
    r = subprocess.run(
        ["timeout", "-s", "INT", str(seconds), "strace", "-qq", "-p", str(pid), "-e", "accept4"],
        capture_output=True,
        text=True,
        check=False,
    )
    return sum(1 for line in r.stderr.splitlines() if line.startswith("accept4("))


def _answers(env: Env, spec: MonitorSpec, mpid: int) -> bool:
    try:
        return bool(run(env.client.ping(spec.ctl_socket))["pid"] == mpid)
    except RuntimeFailure:
        return False


def _connect_many(path: str, n: int) -> list[socket.socket]:
    """n clients, each connected as soon as the monitor's listen backlog has room. A unix
    socket's connect does not wait for room when non-blocking (EAGAIN), so each is retried for
    up to 2 s while the monitor accepts; once one gets no room in that time (the monitor takes
    no more), the rest try once and stay unconnected, which is fine."""
    conns = []
    patience = 2.0
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        deadline = time.monotonic() + patience
        while True:
            try:
                s.connect(path)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    patience = 0.0
                    break
                time.sleep(0.01)
        conns.append(s)
    return conns


@pytest.mark.root
@needs_runc
def test_monitor_out_of_descriptors_waits_instead_of_spinning(env: Env) -> None:
    if env.monitor_path is None:
        pytest.skip("the native monitor's accept loop (the Python one is the reference)")
    # Given a monitor that has only three descriptors to spare
    spec = env.spec("fds", ["sleep", "1000"])
    mpid = run(env.create_and_start(spec))
    nfds = len(os.listdir(f"/proc/{mpid}/fd"))
    # (the soft limit only: raising it back needs no CAP_SYS_RESOURCE)
    subprocess.run(["prlimit", f"--pid={mpid}", f"--nofile={nfds + 3}:"], check=True)
    # When twenty clients connect to its ctl socket and stay
    conns = _connect_many(spec.ctl_socket, 20)
    try:
        wait_for(lambda: len(os.listdir(f"/proc/{mpid}/fd")) >= nfds + 3)
        # Then it does not spin on the connections it cannot accept (EMFILE) ...
        calls = _accept_calls(mpid, 1.5)
        assert calls < 60, f"{calls} accept4 calls in 1.5 s: the monitor spins"
    finally:
        for c in conns:
            c.close()
    # ... and once they are gone (and descriptors are back), it answers again.
    subprocess.run(["prlimit", f"--pid={mpid}", "--nofile=1024:"], check=True)
    wait_for(lambda: _answers(env, spec, mpid), 10)


@pytest.mark.root
@needs_runc
def test_monitor_serves_at_most_max_clients_at_once(env: Env) -> None:
    if env.monitor_path is None:
        pytest.skip("the native monitor's client cap (the Python one is the reference)")
    # Given a monitor
    spec = env.spec("cap", ["sleep", "1000"])
    mpid = run(env.create_and_start(spec))
    nfds = len(os.listdir(f"/proc/{mpid}/fd"))
    # When ninety clients connect and stay
    conns = _connect_many(spec.ctl_socket, 90)
    try:
        wait_for(lambda: len(os.listdir(f"/proc/{mpid}/fd")) >= nfds + 64)
        # Then it holds 64 of them (MAX_CLIENTS), no more, and does not spin on the rest
        assert _accept_calls(mpid, 1.5) < 60
        assert len(os.listdir(f"/proc/{mpid}/fd")) == nfds + 64
    finally:
        for c in conns:
            c.close()
    # And when they leave, it answers again (once it has taken the closed ones off its
    # backlog: a full backlog refuses a connect at once)
    wait_for(lambda: _answers(env, spec, mpid), 10)
