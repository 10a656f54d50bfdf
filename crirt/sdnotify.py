"""systemd's service notification protocol (sd_notify(3)), without libsystemd.

Under a ``Type=notify`` unit systemd passes ``NOTIFY_SOCKET`` (a datagram socket path, or an
abstract one written ``@name``) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and
``WATCHDOG_PID``, the process it is meant for). crirt sends ``READY=1`` once its CRI socket
serves, ``RELOADING=1``/``READY=1`` around a SIGHUP reload, ``STOPPING=1`` when it begins to
stop, and ``WATCHDOG=1`` from its event loop at half the watchdog interval: a loop that stalls
stops the pings, and systemd restarts crirt (containers run on under their monitors). Without
the variables every call is a no-op, so nothing changes outside systemd. The variables are taken
out of crirt's environment first thing (see ``Notifier``).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping, MutableMapping

from crirt.log import get_logger

log = get_logger(__name__)

_NOTIFY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def notify_address(env: Mapping[str, str]) -> str | None:
    """The socket address from ``NOTIFY_SOCKET`` (``@x`` is the abstract ``\\0x``), or None."""
    path = env.get("NOTIFY_SOCKET", "")
    if not path or not (path.startswith(("/", "@"))):
        return None
    return "\0" + path[1:] if path.startswith("@") else path


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between two ``WATCHDOG=1`` (half of ``WATCHDOG_USEC``), or None when systemd
    wants none from this process (no watchdog, a malformed value, or another ``WATCHDOG_PID``)."""
    usec = env.get("WATCHDOG_USEC", "")
    owner = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (owner and owner != str(pid)):
        return None
    return int(usec) / 2e6


class Notifier:
    """Sends state changes to systemd; silent (and free) outside a notify unit."""

    def __init__(self, env: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = notify_address(env)
        self.watchdog = watchdog_interval(env, os.getpid()) if self.address else None
        self._task: asyncio.Task[None] | None = None
        # sd_notify(unset_environment=1): nothing crirt starts may inherit them. runc and crun
        # would proxy the socket into every container (runc's notify.sock), and a container,
        # a monitor or a CNI plugin could then tell systemd that crirt is ready or stopping.
        for name in _NOTIFY_ENV:
            env.pop(name, None)

    def send(self, *fields: str) -> bool:
        """One datagram of ``KEY=VALUE`` lines; False when it could not be delivered (logged:
        systemd then times the start out or kills crirt, which is what the operator sees)."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self.address)
                s.sendall("\n".join(fields).encode())
        except OSError as exc:
            log.warning("systemd notification failed", error=str(exc), fields=list(fields))
            return False
        return True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")
        if self.watchdog is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._pings(self.watchdog))

    def reloading(self) -> None:
        self.send("RELOADING=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _pings(self, every: float) -> None:
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(every)
