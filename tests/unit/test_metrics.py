"""The Metrics object: its own registry (two coexist), RPC and pull observations."""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from crirt.metrics import Metrics, parent_pid, pss_bytes


def _samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(m.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_two_instances_have_separate_registries_and_none_is_global() -> None:
    a, b = Metrics(), Metrics()
    a.observe_rpc("Version", "OK", 0.001)
    assert _samples(a)[("crirt_operations_total", (("code", "OK"), ("operation", "Version")))] == 1
    assert ("crirt_operations_total", (("code", "OK"), ("operation", "Version"))) not in _samples(b)
    assert REGISTRY.get_sample_value("crirt_operations_total") is None


def test_errors_are_counted_by_code() -> None:
    m = Metrics()
    m.observe_rpc("StopContainer", "NOT_FOUND", 0.002)
    m.observe_rpc("StopContainer", "OK", 0.002)
    s = _samples(m)
    key = (("code", "NOT_FOUND"), ("operation", "StopContainer"))
    assert s[("crirt_operations_errors_total", key)] == 1
    assert ("crirt_operations_errors_total", (("code", "OK"), key[1])) not in s
    count = ("crirt_operations_latency_seconds_count", (("operation", "StopContainer"),))
    assert s[count] == 2


def test_pulls() -> None:
    m = Metrics()
    m.pull_done(1.5, 1000, layers_downloaded=2, layers_reused=3)
    m.pull_failed("ImageNotFound")
    s = _samples(m)
    assert s[("crirt_image_pulls_bytes_total", ())] == 1000
    assert s[("crirt_image_layer_reuse_total", ())] == 3
    assert s[("crirt_image_layers_downloaded_total", ())] == 2
    assert s[("crirt_image_pulls_duration_seconds_count", ())] == 1
    assert s[("crirt_image_pulls_failure_total", (("error", "ImageNotFound"),))] == 1


def test_proc_readers_on_ourselves() -> None:
    assert parent_pid(os.getpid()) == os.getppid()
    pss = pss_bytes(os.getpid())
    assert pss is not None
    assert pss > 0
    assert parent_pid(2**22 + 1) is None
