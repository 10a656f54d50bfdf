"""Pure parsers of cgroup v1/v2 accounting files and /proc/net/dev (no I/O).

The reader (``crirt.stats.reader``) hands these the text of each file; tests feed literal file
contents. Memory's working set is computed as cAdvisor and the kubelet do: usage minus
``inactive_file`` (v2: ``inactive_file``; v1: ``total_inactive_file``), floored at 0.
"""

from __future__ import annotations

from dataclasses import dataclass

# cgroup v1 reports "no limit" as PAGE_COUNTER_MAX rounded to pages; anything this large is none.
_V1_UNLIMITED = 1 << 62


@dataclass(frozen=True)
class MemorySample:
    usage: int
    working_set: int
    rss: int
    page_faults: int
    major_page_faults: int
    limit: int | None  # None: unlimited

    @property
    def available(self) -> int | None:
        return None if self.limit is None else max(self.limit - self.working_set, 0)


@dataclass(frozen=True)
class PsiLine:
    """One line of a ``*.pressure`` file: the share of wall time tasks stalled, averaged
    over 10, 60 and 300 s (percent), and the stalled time in total (the kernel counts us)."""

    avg10: float
    avg60: float
    avg300: float
    total_us: int


@dataclass(frozen=True)
class PsiSample:
    """``some``: at least one task stalled; ``full``: all non-idle tasks at once (cgroups
    report ``full`` for cpu too since Linux 5.13; None where the file has no such line)."""

    some: PsiLine
    full: PsiLine | None


@dataclass(frozen=True)
class SwapSample:
    usage: int
    limit: int | None  # None: unlimited

    @property
    def available(self) -> int | None:
        return None if self.limit is None else max(self.limit - self.usage, 0)


@dataclass(frozen=True)
class InterfaceSample:
    name: str
    rx_bytes: int
    rx_errors: int
    tx_bytes: int
    tx_errors: int


def parse_flat_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (memory.stat, cpu.stat); malformed lines are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value:
            try:
                out[key] = int(value)
            except ValueError:
                continue
    return out


def parse_int(text: str) -> int | None:
    """A single-value file; ``max`` (v2's unlimited) and garbage are None."""
    s = text.strip()
    if not s or s == "max":
        return None
    try:
        return int(s)
    except ValueError:
        return None


def cpu_usage_ns_v1(cpuacct_usage: str) -> int:
    """``cpuacct.usage``: nanoseconds."""
    return parse_int(cpuacct_usage) or 0


def cpu_usage_ns_v2(cpu_stat: str) -> int:
    """``cpu.stat`` ``usage_usec``: microseconds, returned as nanoseconds."""
    return parse_flat_keyed(cpu_stat).get("usage_usec", 0) * 1000


def memory_v1(usage_in_bytes: str, stat: str, limit_in_bytes: str) -> MemorySample:
    st = parse_flat_keyed(stat)
    usage = parse_int(usage_in_bytes) or 0
    inactive = st.get("total_inactive_file", st.get("inactive_file", 0))
    limit = parse_int(limit_in_bytes)
    if limit is not None and limit >= _V1_UNLIMITED:
        limit = None
    return MemorySample(
        usage=usage,
        working_set=max(usage - inactive, 0),
        rss=st.get("total_rss", st.get("rss", 0)),
        page_faults=st.get("total_pgfault", st.get("pgfault", 0)),
        major_page_faults=st.get("total_pgmajfault", st.get("pgmajfault", 0)),
        limit=limit,
    )


def memory_v2(current: str, stat: str, maximum: str) -> MemorySample:
    st = parse_flat_keyed(stat)
    usage = parse_int(current) or 0
    return MemorySample(
        usage=usage,
        working_set=max(usage - st.get("inactive_file", 0), 0),
        rss=st.get("anon", 0),
        page_faults=st.get("pgfault", 0),
        major_page_faults=st.get("pgmajfault", 0),
        limit=parse_int(maximum),
    )


def _psi_line(fields: list[str]) -> PsiLine | None:
    kv = dict(f.partition("=")[::2] for f in fields)
    try:
        return PsiLine(
            avg10=float(kv["avg10"]),
            avg60=float(kv["avg60"]),
            avg300=float(kv["avg300"]),
            total_us=int(kv["total"]),
        )
    except (KeyError, ValueError):
        return None


def psi(text: str) -> PsiSample | None:
    """A cgroup v2 ``cpu.pressure``/``memory.pressure``/``io.pressure`` file
    (``some avg10=0.00 avg60=0.00 avg300=0.00 total=0`` and a ``full`` line); None when it has
    no well-formed ``some`` line."""
    lines: dict[str, PsiLine] = {}
    for line in text.splitlines():
        kind, _, rest = line.strip().partition(" ")
        if kind in ("some", "full") and (parsed := _psi_line(rest.split())) is not None:
            lines[kind] = parsed
    some = lines.get("some")
    return None if some is None else PsiSample(some=some, full=lines.get("full"))


def swap_v2(current: str, maximum: str) -> SwapSample | None:
    """``memory.swap.current`` and ``memory.swap.max`` (v2: swap alone, not memory+swap)."""
    usage = parse_int(current)
    return None if usage is None else SwapSample(usage=usage, limit=parse_int(maximum))


def net_dev(text: str, skip_loopback: bool = True) -> list[InterfaceSample]:
    """``/proc/net/dev``: two header lines, then ``name: rx(8 fields) tx(8 fields)``."""
    out = []
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        name = name.strip()
        f = rest.split()
        if len(f) < 16 or (skip_loopback and name == "lo"):
            continue
        try:
            rx_b, rx_e, tx_b, tx_e = int(f[0]), int(f[2]), int(f[8]), int(f[10])
        except ValueError:
            continue
        out.append(InterfaceSample(name, rx_b, rx_e, tx_b, tx_e))
    return out


def nano_cores(prev: tuple[int, int] | None, usage_ns: int, ts_ns: int) -> int | None:
    """CPU rate in nano-cores from the previous (usage_ns, timestamp_ns) sample."""
    if prev is None:
        return None
    d_usage, d_t = usage_ns - prev[0], ts_ns - prev[1]
    if d_t <= 0 or d_usage < 0:
        return None
    return d_usage * 1_000_000_000 // d_t
