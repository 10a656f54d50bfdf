"""procfs readers."""

from __future__ import annotations


def process_start_time(pid: int, proc: str = "/proc") -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), None if there is no
    such pid. With the pid it names one process for good: pids are reused, start times are not.
    """
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            # The command name (field 2) may hold spaces and parentheses: split after its end.
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[19])


def live_process_start_time(pid: int, proc: str = "/proc") -> int | None:
    """As :func:`process_start_time`, but None for a process that has exited and awaits its
    reaping (state Z or X): it runs no more, and runc calls it stopped."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])
