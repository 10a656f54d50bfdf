"""cgroup v1/v2 accounting files and /proc/net/dev, parsed from literal file contents."""

from __future__ import annotations

from crirt.sansio import cgroupstats as cg

V1_MEMORY_STAT = """cache 4096000
rss 2048000
pgfault 100
pgmajfault 1
inactive_file 8192
hierarchical_memory_limit 9223372036854771712
total_cache 4096000
total_rss 20480000
total_pgfault 1234
total_pgmajfault 5
total_inactive_file 1000000
"""

V2_MEMORY_STAT = """anon 20480000
file 4096000
kernel 65536
inactive_anon 0
active_file 3096000
inactive_file 1000000
pgfault 4321
pgmajfault 7
"""

V2_CPU_STAT = """usage_usec 1500000
user_usec 1000000
system_usec 500000
nr_periods 0
"""

NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     140       2    0    0    0     0          0         0      140       2    0    0    0     0       0          0
  eth0:    5308      48    3    0    0     0          0         0     1068      12    1    0    0     0       0          0
"""  # noqa: E501


def test_v1_memory_uses_hierarchical_totals_and_treats_huge_limit_as_none() -> None:
    m = cg.memory_v1("26000000\n", V1_MEMORY_STAT, "9223372036854771712\n")
    assert m.usage == 26_000_000
    assert m.working_set == 25_000_000
    assert m.rss == 20_480_000
    assert (m.page_faults, m.major_page_faults) == (1234, 5)
    assert m.limit is None
    assert m.available is None


def test_v1_memory_limit_gives_available_and_working_set_floors_at_zero() -> None:
    m = cg.memory_v1("500\n", "total_inactive_file 900\n", "104857600\n")
    assert m.working_set == 0
    assert m.limit == 104_857_600
    assert m.available == 104_857_600


def test_v2_memory() -> None:
    m = cg.memory_v2("25600000\n", V2_MEMORY_STAT, "max\n")
    assert m.usage == 25_600_000
    assert m.working_set == 24_600_000
    assert m.rss == 20_480_000
    assert (m.page_faults, m.major_page_faults) == (4321, 7)
    assert m.limit is None
    limited = cg.memory_v2("25600000\n", V2_MEMORY_STAT, "33554432\n")
    assert limited.available == 33_554_432 - 24_600_000


def test_cpu_v1_and_v2_in_nanoseconds() -> None:
    assert cg.cpu_usage_ns_v1("123456789\n") == 123_456_789
    assert cg.cpu_usage_ns_v2(V2_CPU_STAT) == 1_500_000_000
    assert cg.cpu_usage_ns_v2("") == 0


def test_parse_int_and_flat_keyed_skip_garbage() -> None:
    assert cg.parse_int("max") is None
    assert cg.parse_int("") is None
    assert cg.parse_int("12\n") == 12
    assert cg.parse_flat_keyed("a 1\nbroken\nb x\nc 3 4\nd 4\n") == {"a": 1, "d": 4}


def test_net_dev_skips_loopback() -> None:
    (eth0,) = cg.net_dev(NET_DEV)
    assert eth0 == cg.InterfaceSample("eth0", 5308, 3, 1068, 1)
    assert [i.name for i in cg.net_dev(NET_DEV, skip_loopback=False)] == ["lo", "eth0"]


def test_nano_cores_from_previous_sample() -> None:
    assert cg.nano_cores(None, 10, 10) is None
    # half a core: 0.5 s of CPU over 1 s
    assert cg.nano_cores((1_000_000_000, 0), 1_500_000_000, 1_000_000_000) == 500_000_000
    assert cg.nano_cores((5, 10), 4, 20) is None  # counter went back (cgroup re-created)
    assert cg.nano_cores((5, 10), 6, 10) is None


def test_psi_some_and_full_lines() -> None:
    text = (
        "some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=7\n"
    )
    p = cg.psi(text)
    assert p is not None
    assert p.some == cg.PsiLine(avg10=1.5, avg60=0.25, avg300=0.0, total_us=123456)
    assert p.full is not None
    assert p.full.total_us == 7
    # Before Linux 5.13 a cgroup's cpu.pressure has no "full" line.
    only_some = cg.psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n")
    assert only_some is not None
    assert only_some.full is None


def test_psi_garbage_is_none_not_an_error() -> None:
    assert cg.psi("") is None
    assert cg.psi("\n\n") is None
    assert cg.psi("some avg10=x avg60=0 avg300=0 total=1\n") is None
    assert cg.psi("full avg10=0 avg60=0 avg300=0 total=1\n") is None  # no "some"
    assert cg.psi("some total=1\n") is None


def test_swap_v2() -> None:
    sw = cg.swap_v2("4096\n", "max\n")
    assert sw == cg.SwapSample(usage=4096, limit=None)
    assert sw.available is None
    limited = cg.swap_v2("4096\n", "10000\n")
    assert limited is not None
    assert limited.available == 10000 - 4096
    assert cg.swap_v2("", "max") is None
