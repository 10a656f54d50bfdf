"""The fork server: a small long-lived process that forks monitors.

This Python one runs when crirt uses the Python monitor: a monitor started as a fresh
interpreter costs ~4.5 MB PSS; forked from a parent that already imported the monitor's modules
and called ``gc.freeze()`` it shares those pages copy-on-write (see design notes, "The
monitor"). With the native monitor (``MonitorClient.monitor_path``) crirt starts that binary's
own fork server mode instead (``crirt-monitor --fork-server SOCKET --code CODE``, in
``native/forkserver.c``): same invariants and protocol, ~0.3 MB PSS instead of ~8 MB, and a
spawn request there carries ``exec``, the binary to run as the monitor. Invariants:

* One per state directory: an exclusive ``flock`` on ``<socket>.lock`` held for its lifetime; a
  second instance prints ``busy`` and exits, and the client connects to the first.
* Detached: the launcher forks the server and exits (so it is not a child of crirt), the server
  calls ``setsid`` and holds no fd of crirt (spawned with close_fds; stdin/stdout /dev/null).
* Monitors are forked twice (fork, fork, exit) and close every fd but the sync pipe and stderr
  (``<socket>.log``) before running. The server is their child subreaper, so it reaps them when
  they end; if the server dies they simply move to PID 1 and keep running.
* Requests (SOCK_SEQPACKET, one message each, see ``protocol``): ``{"op": "ping"}`` (answers
  its pid and the fingerprint of its code), ``{"op": "exit"}`` and
  ``{"op": "spawn", "spec": {...}}`` with the sync pipe's write end attached (SCM_RIGHTS).

Run: ``python3 -I -S -m crirt.monitor.forkserver <socket>``; it prints ``ready <pid>`` or
``busy`` on stdout once the socket accepts connections.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import socket
import sys
from typing import NoReturn

from crirt.monitor import __main__ as monitor
from crirt.monitor import protocol

_CONN_TIMEOUT = 5.0


def source_fingerprint() -> str:
    """``protocol.fingerprint`` of the files this process loaded its code from."""
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(monitor.__file__)))
    stats = []
    for rel in protocol.SOURCE_FILES:
        st = os.stat(os.path.join(pkg, rel))
        stats.append((st.st_mtime_ns, st.st_size))
    return protocol.fingerprint(stats)


# How often the accept loop wakes to reap exited monitors.
_REAP_INTERVAL = 2.0

# Taken at import, i.e. when this server loaded the code.
_CODE = source_fingerprint()


def _spawn_monitor(req: dict[str, object], sync_fd: int) -> int:
    """Fork twice; the grandchild becomes the monitor. Returns once the middle child is gone."""
    spec = req.get("spec")
    if not isinstance(spec, dict):
        raise protocol.MessageError("spawn: missing spec")
    gc.freeze()
    pid = os.fork()
    if pid == 0:
        try:
            if os.fork() == 0:
                gc.enable()
                monitor.close_fds_except({sync_fd})
                monitor.run(spec, sync_fd)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return status


def _serve_one(conn: socket.socket) -> None:
    conn.settimeout(_CONN_TIMEOUT)
    msg, fds, _flags, _addr = socket.recv_fds(conn, protocol.MAX_MESSAGE, 1)
    try:
        for fd in fds:
            os.set_inheritable(fd, False)
        try:
            op, req = protocol.decode_request(msg)
            if op == protocol.OP_PING:
                reply = protocol.encode_reply(True, pid=os.getpid(), code=_CODE)
            elif op == protocol.OP_EXIT:
                conn.sendall(protocol.encode_reply(True))
                # Monitors are not our children: they keep running.
                os._exit(0)
            elif op == protocol.OP_SPAWN:
                if len(fds) != 1:
                    raise protocol.MessageError("spawn: expected one sync pipe fd")
                status = _spawn_monitor(req, fds[0])
                reply = (
                    protocol.encode_reply(True)
                    if status == 0
                    else protocol.encode_reply(False, f"fork failed (status {status:#x})")
                )
            else:
                reply = protocol.encode_reply(False, f"unknown op {op!r}")
        except (protocol.MessageError, OSError) as exc:
            reply = protocol.encode_reply(False, str(exc))
        conn.sendall(reply)
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def _reap() -> None:
    """Collect monitors that ended (we are their subreaper): a zombie per exited container
    otherwise piles up wherever PID 1 does not reap (as on some sandboxed hosts)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve(listener: socket.socket) -> NoReturn:
    """Accept requests forever (single-threaded, so fork is safe and reaping is race-free)."""
    listener.settimeout(_REAP_INTERVAL)
    while True:
        _reap()
        try:
            conn, _ = listener.accept()
        except OSError:
            continue
        with conn:
            try:
                _serve_one(conn)
            except Exception as exc:  # noqa: BLE001 - one bad request must not kill the server
                print(f"forkserver: request failed: {exc!r}", file=sys.stderr, flush=True)


def _bind(path: str) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # stale: we hold the lock, so no live server owns it
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    addr, dfd = monitor.sock_address(path)
    old = os.umask(0o177)
    try:
        sock.bind(addr)
    finally:
        os.umask(old)
        if dfd >= 0:
            os.close(dfd)
    sock.listen(64)
    return sock


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python3 -m crirt.monitor.forkserver SOCKET")
    path = os.path.abspath(args[0])
    lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("busy", flush=True)
        return
    listener = _bind(path)
    pid = os.fork()
    if pid != 0:
        print(f"ready {pid}", flush=True)
        os._exit(0)
    # The server proper: own session, no cwd pinned, stdout closed so the launcher's reader
    # sees EOF; stderr stays (the client's log file).
    os.setsid()
    # Orphaned monitors (their middle parent exits at once) are re-parented to us rather than
    # to PID 1, so we can reap them; they still outlive both us and crirt serve.
    monitor._prctl(monitor._PR_SET_CHILD_SUBREAPER, 1)
    os.chdir("/")
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    monitor.close_fds_except({lock_fd, listener.fileno()})
    # Monitors are forked from here: stop the collector from touching (and so un-sharing) the
    # pages of long-lived objects; each fork freezes what exists by then.
    gc.disable()
    gc.freeze()
    serve(listener)


if __name__ == "__main__":
    main()
