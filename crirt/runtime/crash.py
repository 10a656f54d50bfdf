"""Named crash points: the steps after which a crash leaves something for the next start to
converge (an intent record, a half-made pod, a container between its start and its record).

Each lifecycle step calls its point by name. In production the hook does nothing. Tests make a
crirt process die at exactly one point (``CRIRT_TEST_CRASH_AT=<name>``: ``os._exit``, no
clean-up runs, as under SIGKILL) and check that the restarted crirt converges; the unit tests
do the same in-process with fakes (crirt.testing).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

ENV = "CRIRT_TEST_CRASH_AT"
EXIT_CODE = 137  # what a SIGKILLed crirt's supervisor sees

# RunPodSandbox
POD_INTENT = "pod.intent-saved"
POD_NETWORK = "pod.network-ready"
POD_INFRA = "pod.infra-running"
POD_COMPLETE = "pod.complete-saved"
# StopPodSandbox / RemovePodSandbox
POD_INFRA_KILLED = "stop-pod.infra-killed"
POD_NETWORK_DOWN = "stop-pod.network-down"
POD_DESTROYING = "remove-pod.destroying"
# CreateContainer
CTR_INTENT = "create.intent-saved"
CTR_ROOTFS = "create.rootfs-mounted"
CTR_COMPLETE = "create.complete-saved"
# StartContainer
START_INTENT = "start.intent-saved"
START_RUNNING = "start.process-running"
# StopContainer / RemoveContainer
STOP_SIGNALLED = "stop.signalled"
REMOVE_DESTROYING = "remove.destroying"
REMOVE_DISCARDED = "remove.rootfs-discarded"

ALL = (
    POD_INTENT,
    POD_NETWORK,
    POD_INFRA,
    POD_COMPLETE,
    POD_INFRA_KILLED,
    POD_NETWORK_DOWN,
    POD_DESTROYING,
    CTR_INTENT,
    CTR_ROOTFS,
    CTR_COMPLETE,
    START_INTENT,
    START_RUNNING,
    STOP_SIGNALLED,
    REMOVE_DESTROYING,
    REMOVE_DISCARDED,
)

CrashHook = Callable[[str], None]


def no_crash(point: str) -> None:
    """Production: the points are only names."""


def from_env(environ: dict[str, str] | None = None) -> CrashHook:
    """The hook ``CRIRT_TEST_CRASH_AT`` asks for (tests only), or :func:`no_crash`.

    Raises:
        ValueError: the variable names no crash point (a typo would test nothing).
    """
    target = (os.environ if environ is None else environ).get(ENV, "")
    if not target:
        return no_crash
    if target not in ALL:
        raise ValueError(f"{ENV}={target!r} is not a crash point; known: {', '.join(ALL)}")

    def crash(point: str) -> None:
        if point == target:
            sys.stderr.write(f"crirt: {ENV}: exiting at {point}\n")
            sys.stderr.flush()
            os._exit(EXIT_CODE)

    return crash
