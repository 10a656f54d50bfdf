"""Skip marks shared by the test modules."""

from __future__ import annotations

import os

import pytest

from tests.helpers.bundle import RUNC

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")
# Containers under a monitor, from bundles of busybox-static (tests/helpers/bundle.py).
needs_runc = pytest.mark.skipif(
    not IS_ROOT or not os.path.exists(RUNC) or not os.path.exists("/bin/busybox"),
    reason="needs root, runc and busybox-static",
)
