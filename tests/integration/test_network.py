"""Pod networking end to end: netns pins, the CNI client with scripted plugins, and (as root) the
real Debian plugins on a private test bridge.

Network safety: the root tests use their own bridge (``crirttest0``, 10.99.0.0/24) with the
guard rails of scripts/net-guard.sh installed; pods get no default route and no masquerading,
and all traffic stays on loopback, that bridge, or inside the test namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crirt._gen import api_pb2
from crirt.errors import DeadlineExceeded, Internal, InvalidArgument, Unavailable
from crirt.network import CniManager, PortMapping, netns
from tests.helpers.marks import IS_ROOT, needs_root

REPO = Path(__file__).resolve().parents[2]
DEPLOY_CONFLIST = REPO / "deploy" / "cni" / "10-crirt-bridge.conflist"
NET_GUARD = REPO / "scripts" / "net-guard.sh"
CNI_BIN = Path("/usr/lib/cni")

TEST_BRIDGE = "crirttest0"
TEST_NETWORK = "crirttest"
TEST_SUBNET = "10.99.0.0/24"
TEST_GATEWAY = "10.99.0.1"
HOST_PORT = 18080  # not critest's 12000-12003
POD_PORT = 8080

needs_plugins = pytest.mark.skipif(
    not all((CNI_BIN / p).exists() for p in ("bridge", "host-local", "portmap", "loopback"))
    or shutil.which("iptables") is None
    or shutil.which("nsenter") is None,
    reason="needs containernetworking-plugins in /usr/lib/cni, iptables and nsenter",
)


def run(*argv: str, check: bool = True) -> str:
    return subprocess.run(argv, check=check, capture_output=True, text=True).stdout


def mounted(path: Path) -> bool:
    text = Path("/proc/self/mountinfo").read_text()
    return any(line.split(" ")[4] == str(path) for line in text.splitlines())


# ================================================================================================
# Scripted plugins (no root needed): the real exec path with a fake plugin binary.
# ================================================================================================

FAKE_PLUGIN = r"""#!{python}
import json, os, sys, time
conf = json.load(sys.stdin)
cmd = os.environ["CNI_COMMAND"]
with open({log!r}, "a") as f:
    f.write(json.dumps({{"cmd": cmd, "type": conf["type"], "env": dict(os.environ),
                        "conf": conf}}) + "\n")
behaviour = conf.get("fake", {{}}).get(cmd, "ok")
if behaviour == "fail":
    print(json.dumps({{"cniVersion": conf["cniVersion"], "code": 7,
                      "msg": "fake failure in " + conf["type"], "details": "as asked"}}))
    sys.exit(1)
if behaviour == "crash":
    sys.stderr.write("panic: crashed\n")
    sys.exit(2)
if behaviour == "hang":
    time.sleep(60)
if cmd == "ADD":
    empty = {{"cniVersion": conf["cniVersion"], "interfaces": [], "ips": []}}
    prev = conf.get("prevResult") or empty
    res = dict(prev)
    if conf.get("addr"):
        res["interfaces"] = list(res["interfaces"]) + [
            {{"name": os.environ["CNI_IFNAME"], "sandbox": os.environ["CNI_NETNS"]}}]
        res["ips"] = list(res["ips"]) + [
            {{"interface": len(res["interfaces"]) - 1, "address": conf["addr"]}}]
    print(json.dumps(res))
"""


class FakeBed:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.conf_dir = base / "net.d"
        self.bin_dir = base / "bin"
        self.cache_dir = base / "cache"
        self.log = base / "calls.jsonl"
        self.conf_dir.mkdir()
        self.bin_dir.mkdir()
        for name in ("loopback", "fake-a", "fake-b"):
            self.install(name)

    def install(self, name: str) -> None:
        path = self.bin_dir / name
        path.write_text(FAKE_PLUGIN.format(python=sys.executable, log=str(self.log)))
        path.chmod(0o755)

    def write_conf(self, plugins: list[dict[str, Any]], name: str = "10-fake.conflist") -> None:
        doc = {"cniVersion": "1.0.0", "name": "fakenet", "plugins": plugins}
        (self.conf_dir / name).write_text(json.dumps(doc))

    def manager(self, **kw: object) -> CniManager:
        return CniManager(self.conf_dir, [self.bin_dir], self.cache_dir, reload_interval=0, **kw)  # type: ignore[arg-type]

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def steps(self) -> list[tuple[object, object]]:
        return [(c["cmd"], c["type"]) for c in self.calls()]


@pytest.fixture
def fake(tmp_path: Path) -> FakeBed:
    return FakeBed(tmp_path)


def test_status_reports_missing_config_and_plugins(fake: FakeBed) -> None:
    # Given an empty config directory
    mgr = fake.manager()
    # Then the network is not ready, naming the directory
    ready, reason = mgr.status()
    assert not ready
    assert reason == f"no network config found in {fake.conf_dir}"
    # When a config names a plugin that is not installed
    fake.write_conf([{"type": "fake-a"}, {"type": "fake-missing"}])
    ready, reason = mgr.status()
    assert not ready
    assert "fake-missing" in reason
    assert str(fake.bin_dir) in reason
    assert "fake-a" not in reason.split("plugin(s)")[1]
    # And setup refuses without running anything
    with pytest.raises(Unavailable, match="fake-missing"):
        asyncio.run(mgr.setup("pod1", "/nonexistent", "ns", "n", "u"))
    assert fake.calls() == []
    # When the plugin appears, the network becomes ready
    fake.install("fake-missing")
    assert mgr.status() == (True, "")


def test_status_skips_invalid_files_and_reports_them(fake: FakeBed) -> None:
    (fake.conf_dir / "05-bad.conflist").write_text("{")
    ready, reason = fake.manager().status()
    assert not ready
    assert "05-bad.conflist" in reason
    fake.write_conf([{"type": "fake-a"}])
    assert fake.manager().status() == (True, "")


def test_setup_chains_results_and_passes_a_clean_environment(
    fake: FakeBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a two-plugin list where the second one has the portMappings capability
    monkeypatch.setenv("CRIRT_SECRET_LEAK", "1")
    fake.write_conf(
        [
            {"type": "fake-a", "addr": "10.99.9.5/24"},
            {"type": "fake-b", "capabilities": {"portMappings": True}},
        ]
    )
    mgr = fake.manager()
    # When a pod is set up with one real mapping and one without host port
    res = asyncio.run(
        mgr.setup(
            "pod1",
            "/run/x/pod1",
            "default",
            "web",
            "uid-1",
            [
                PortMapping(18080, 8080),
                PortMapping(0, 9090),
                api_pb2.PortMapping(host_port=53, container_port=53, protocol=api_pb2.UDP),
            ],
        )
    )
    # Then loopback runs first on lo, then the list in order on eth0
    calls = fake.calls()
    assert fake.steps() == [("ADD", "loopback"), ("ADD", "fake-a"), ("ADD", "fake-b")]
    assert calls[0]["env"]["CNI_IFNAME"] == "lo"
    assert {c["env"]["CNI_IFNAME"] for c in calls[1:]} == {"eth0"}
    # and the environment is exactly the CNI variables plus PATH (the fake plugin's own Python
    # adds LC_CTYPE at start-up: PEP 538 locale coercion)
    env = calls[1]["env"]
    assert set(env) - {"LC_CTYPE"} == {
        "CNI_COMMAND",
        "CNI_CONTAINERID",
        "CNI_NETNS",
        "CNI_IFNAME",
        "CNI_ARGS",
        "CNI_PATH",
        "PATH",
    }
    assert env["CNI_ARGS"] == (
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;"
        "K8S_POD_INFRA_CONTAINER_ID=pod1;K8S_POD_UID=uid-1"
    )
    assert env["CNI_PATH"] == str(fake.bin_dir)
    assert env["CNI_NETNS"] == "/run/x/pod1"
    # and the second plugin got the first one's result and only it got the mappings
    assert "prevResult" not in calls[1]["conf"]
    assert "runtimeConfig" not in calls[1]["conf"]
    assert calls[2]["conf"]["prevResult"]["ips"] == [{"interface": 0, "address": "10.99.9.5/24"}]
    assert calls[2]["conf"]["runtimeConfig"] == {
        "portMappings": [
            {"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"},
            {"hostPort": 53, "containerPort": 53, "protocol": "udp"},
        ]
    }
    assert res.ips == ["10.99.9.5"]
    assert res.interface == "eth0"
    # and the attachment is cached for teardown
    assert mgr.cached_result("pod1") == res


def test_failed_plugin_rolls_back_and_reports_its_message(fake: FakeBed) -> None:
    # Given a list whose second plugin fails ADD
    fake.write_conf(
        [{"type": "fake-a", "addr": "10.99.9.5/24"}, {"type": "fake-b", "fake": {"ADD": "fail"}}]
    )
    mgr = fake.manager()
    # When setting up, the plugin's own message surfaces
    with pytest.raises(Internal, match="fake failure in fake-b: as asked"):
        asyncio.run(mgr.setup("pod1", "/run/x/pod1", "ns", "n", "u"))
    # Then everything started was deleted again in reverse order, the failed plugin included
    assert fake.steps() == [
        ("ADD", "loopback"),
        ("ADD", "fake-a"),
        ("ADD", "fake-b"),
        ("DEL", "fake-b"),
        ("DEL", "fake-a"),
        ("DEL", "loopback"),
    ]
    # and nothing is cached (the netns is gone, so DEL saw an empty CNI_NETNS)
    assert not (fake.cache_dir / "pod1.json").exists()
    assert fake.calls()[-2]["env"]["CNI_NETNS"] == ""
    # and a later teardown is a no-op
    asyncio.run(mgr.teardown("pod1", None))
    assert len(fake.calls()) == 6


def test_crashing_plugin_error_includes_stderr(fake: FakeBed) -> None:
    fake.write_conf([{"type": "fake-a", "fake": {"ADD": "crash"}}])
    with pytest.raises(Internal, match="exit status 2: panic: crashed"):
        asyncio.run(fake.manager().setup("pod1", "/x", "ns", "n", "u"))


def test_plugin_timeout_kills_it_and_rolls_back(fake: FakeBed) -> None:
    fake.write_conf([{"type": "fake-a", "fake": {"ADD": "hang"}}])
    mgr = fake.manager(timeout=0.5)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="timed out"):
        asyncio.run(mgr.setup("pod1", "/x", "ns", "n", "u"))
    assert time.monotonic() - started < 5
    assert fake.steps()[-2:] == [("DEL", "fake-a"), ("DEL", "loopback")]
    assert not (fake.cache_dir / "pod1.json").exists()


def test_teardown_uses_the_cache_even_after_the_config_changed(fake: FakeBed) -> None:
    # Given a pod set up with mappings
    fake.write_conf(
        [
            {"type": "fake-a", "addr": "10.99.9.5/24"},
            {"type": "fake-b", "capabilities": {"portMappings": True}},
        ]
    )
    mgr = fake.manager()
    asyncio.run(mgr.setup("pod1", "/x/pod1", "ns", "n", "u", [PortMapping(18080, 80)]))
    # When the config directory is emptied and crirt "restarts"
    for f in fake.conf_dir.iterdir():
        f.unlink()
    mgr = fake.manager()
    assert not mgr.status()[0]
    fake.log.unlink()
    # Then teardown still DELs the cached list in reverse with the cached result and mappings
    asyncio.run(mgr.teardown("pod1", "/x/pod1"))
    assert fake.steps() == [("DEL", "fake-b"), ("DEL", "fake-a"), ("DEL", "loopback")]
    dels = fake.calls()
    assert dels[0]["conf"]["runtimeConfig"]["portMappings"][0]["hostPort"] == 18080
    assert dels[0]["conf"]["prevResult"]["ips"][0]["address"] == "10.99.9.5/24"
    assert {c["env"]["CNI_NETNS"] for c in dels} == {""}  # /x/pod1 is not a namespace
    assert not (fake.cache_dir / "pod1.json").exists()
    # and a second teardown is a no-op
    asyncio.run(mgr.teardown("pod1", "/x/pod1"))
    assert len(fake.calls()) == 3


def test_failed_del_keeps_the_cache_for_a_retry(fake: FakeBed) -> None:
    fake.write_conf([{"type": "fake-a", "fake": {"DEL": "fail"}}, {"type": "fake-b"}])
    mgr = fake.manager()
    asyncio.run(mgr.setup("pod1", "/x", "ns", "n", "u"))
    with pytest.raises(Internal, match="fake failure in fake-a"):
        asyncio.run(mgr.teardown("pod1", None))
    # every plugin was still asked to DEL
    assert fake.steps()[-3:] == [("DEL", "fake-b"), ("DEL", "fake-a"), ("DEL", "loopback")]
    assert (fake.cache_dir / "pod1.json").exists()


def test_check_uses_the_cached_result(fake: FakeBed) -> None:
    fake.write_conf([{"type": "fake-a", "addr": "10.99.9.5/24"}])
    mgr = fake.manager()
    asyncio.run(mgr.setup("pod1", "/x", "ns", "n", "u"))
    asyncio.run(mgr.check("pod1", "/x"))
    last = fake.calls()[-1]
    assert (last["cmd"], last["conf"]["prevResult"]["ips"][0]["address"]) == (
        "CHECK",
        "10.99.9.5/24",
    )


def test_pod_id_must_be_a_plain_name(fake: FakeBed) -> None:
    fake.write_conf([{"type": "fake-a"}])
    with pytest.raises(InvalidArgument):
        asyncio.run(fake.manager().setup("../etc", "/x", "ns", "n", "u"))
    with pytest.raises(InvalidArgument):
        asyncio.run(fake.manager().setup("pod1", "/x", "ns;x", "n", "u"))
    assert fake.calls() == []


# ================================================================================================
# Network namespaces (root).
# ================================================================================================


@pytest.fixture
def nsdir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "netns"
    yield d
    if d.exists():
        for pin in d.iterdir():
            netns.remove(pin)
        if mounted(d.resolve()):
            subprocess.run(["umount", "-l", str(d)], check=False)


@pytest.mark.root
@needs_root
def test_netns_create_enter_remove(nsdir: Path) -> None:
    pin = nsdir / "pod1"
    # When a namespace is created
    t0 = time.perf_counter()
    netns.create(pin)
    elapsed = time.perf_counter() - t0
    # Then it is pinned, the pin directory is a private mount, and lo is up
    assert netns.exists(pin)
    assert mounted(pin.resolve())
    assert mounted(nsdir.resolve())
    assert "shared:" not in next(
        line
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split(" ")[4] == str(nsdir.resolve())
    )
    assert elapsed < 1.0
    own = os.stat("/proc/thread-self/ns/net").st_ino
    names = netns.call_in(pin, lambda: [n for _, n in socket.if_nameindex()])
    assert names == ["lo"]
    assert netns.call_in(pin, _connect_loopback)  # lo is up: 127.0.0.1 works
    # and the calling thread never changed namespace
    assert os.stat("/proc/thread-self/ns/net").st_ino == own
    # When created twice, it refuses
    with pytest.raises(FileExistsError):
        netns.create(pin)
    assert netns.exists(pin)
    # When removed (twice), nothing is left
    netns.remove(pin)
    netns.remove(pin)
    assert not pin.exists()
    assert not mounted(pin.resolve())
    assert not netns.exists(pin)


def _connect_loopback() -> bool:
    srv = socket.socket()
    try:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with socket.create_connection(srv.getsockname(), timeout=2):
            return True
    finally:
        srv.close()


@pytest.mark.root
@needs_root
def test_netns_enter_returns_to_the_original_namespace(nsdir: Path) -> None:
    pin = nsdir / "pod1"
    netns.create(pin)
    own = os.stat("/proc/thread-self/ns/net").st_ino

    def inside() -> tuple[int, int]:
        with netns.enter(pin):
            there = os.stat("/proc/thread-self/ns/net").st_ino
        return there, os.stat("/proc/thread-self/ns/net").st_ino

    # When a thread of ours enters the pod namespace and leaves it
    box: list[tuple[int, int]] = []
    t = threading.Thread(target=lambda: box.append(inside()))
    t.start()
    t.join()
    # Then it was inside, and is back in the host namespace afterwards
    there, back = box[0]
    assert there == os.stat(pin).st_ino != own
    assert back == own
    with pytest.raises(Internal):
        netns.call_in(nsdir / "missing", lambda: None)
    assert not netns.exists(Path("/etc/hostname"))


# ================================================================================================
# The real plugins on a private test bridge (root).
# ================================================================================================


class RealBed:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.conf_dir = base / "net.d"
        self.ipam_dir = base / "ipam"
        self.cache_dir = base / "cache"
        self.ns_dir = base / "netns"
        self.extra_bin = base / "bin"
        self.conf_dir.mkdir()
        self.extra_bin.mkdir()
        self.pods: list[str] = []

    def conflist(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(DEPLOY_CONFLIST.read_text())
        doc["name"] = TEST_NETWORK
        bridge = doc["plugins"][0]
        bridge["bridge"] = TEST_BRIDGE
        bridge["ipam"]["dataDir"] = str(self.ipam_dir)
        bridge["ipam"]["ranges"] = [[{"subnet": TEST_SUBNET, "gateway": TEST_GATEWAY}]]
        return doc

    def write(self, doc: dict[str, Any]) -> None:
        (self.conf_dir / "10-test.conflist").write_text(json.dumps(doc))

    def manager(self) -> CniManager:
        return CniManager(
            self.conf_dir, [self.extra_bin, CNI_BIN], self.cache_dir, reload_interval=0
        )

    def pin(self, name: str) -> Path:
        return self.ns_dir / name

    def ip_files(self) -> list[str]:
        d = self.ipam_dir / TEST_NETWORK
        if not d.exists():
            return []
        return sorted(p.name for p in d.iterdir() if p.name.startswith("10."))


def _bridge_ports() -> str:
    return run("ip", "-o", "link", "show", "master", TEST_BRIDGE, check=False)


def _nat_rules_for(pod_id: str) -> list[str]:
    return [
        line
        for line in run("iptables-save", "-t", "nat").splitlines()
        if f'id: \\"{pod_id}\\"' in line or f'id: "{pod_id}"' in line
    ]


@pytest.fixture
def real(tmp_path: Path) -> Iterator[RealBed]:
    if not IS_ROOT:
        pytest.skip("needs root")
    if run("ip", "-o", "link", "show", TEST_BRIDGE, check=False):
        pytest.skip(f"{TEST_BRIDGE} exists already (another test run?)")
    subprocess.run([str(NET_GUARD), "--bridge", TEST_BRIDGE, "--subnet", TEST_SUBNET], check=True)
    bed = RealBed(tmp_path)
    bed.write(bed.conflist())
    try:
        yield bed
    finally:
        mgr = bed.manager()
        for pod in bed.pods:
            with contextlib.suppress(Exception):
                asyncio.run(mgr.teardown(pod, None))
        if bed.ns_dir.exists():
            for pin in bed.ns_dir.iterdir():
                netns.remove(pin)
            subprocess.run(["umount", "-l", str(bed.ns_dir)], check=False)
        subprocess.run(["ip", "link", "del", TEST_BRIDGE], check=False, capture_output=True)
        subprocess.run(
            [str(NET_GUARD), "--bridge", TEST_BRIDGE, "--subnet", TEST_SUBNET, "--remove"],
            check=True,
        )


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _ping(dst: str, timeout: float = 3.0) -> bool:
    """One ICMP echo with a raw socket (the machine has no ping binary)."""
    ident, seq = os.getpid() & 0xFFFF, 1
    payload = b"crirt-ping"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.settimeout(timeout)
        s.sendto(packet, (dst, 0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, addr = s.recvfrom(2048)
            except TimeoutError:
                return False
            ihl = (data[0] & 0x0F) * 4
            icmp_type, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if addr[0] == dst and icmp_type == 0 and (rid, rseq) == (ident, seq):
                return True
    return False


def _http_get(url: str, timeout: float = 2.0) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return int(resp.status)


def _wait_http(url: str, deadline_s: float = 10.0) -> int:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return _http_get(url)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.root
@needs_plugins
def test_two_pods_on_the_test_bridge(real: RealBed) -> None:
    mgr = real.manager()
    assert mgr.status() == (True, "")
    a, b = real.pin("poda"), real.pin("podb")
    netns.create(a)
    netns.create(b)
    real.pods += ["poda", "podb"]

    # When both pods are set up, A with a hostPort mapping
    res_a = asyncio.run(
        mgr.setup("poda", a, "default", "a", "uid-a", [PortMapping(HOST_PORT, POD_PORT)])
    )
    res_b = asyncio.run(mgr.setup("podb", b, "default", "b", "uid-b"))

    # Then each got its own address in the test subnet
    for res in (res_a, res_b):
        assert len(res.ips) == 1
        assert res.ips[0].startswith("10.99.0.")
        assert res.interface == "eth0"
        assert res.gateways == [TEST_GATEWAY]
    ip_a, ip_b = res_a.ips[0], res_b.ips[0]
    assert ip_a != ip_b
    assert real.ip_files() == sorted([ip_a, ip_b])
    # and eth0 carries it, lo is up, and there is no default route out of the pod
    addrs = run("nsenter", f"--net={a}", "ip", "-o", "-4", "addr", "show")
    assert f"eth0    inet {ip_a}/24" in addrs
    assert "lo    inet 127.0.0.1/8" in addrs
    assert "UP" in run("nsenter", f"--net={a}", "ip", "-o", "link", "show", "lo")
    routes = run("nsenter", f"--net={a}", "ip", "-4", "route", "show")
    assert "default" not in routes
    assert routes.strip() == f"10.99.0.0/24 dev eth0 proto kernel scope link src {ip_a}"
    assert len(_bridge_ports().splitlines()) == 2

    # and pod A can ping pod B across the bridge
    assert netns.call_in(a, lambda: _ping(ip_b))

    # When a web server listens in pod A on its pod IP
    server = subprocess.Popen(
        [
            "nsenter",
            f"--net={a}",
            sys.executable,
            "-m",
            "http.server",
            str(POD_PORT),
            "--bind",
            ip_a,
            "--directory",
            str(real.base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Then the host reaches it on the pod IP, and on 127.0.0.1:<hostPort> through portmap
        assert _wait_http(f"http://{ip_a}:{POD_PORT}/") == 200
        assert _wait_http(f"http://127.0.0.1:{HOST_PORT}/") == 200
        # and pod B reaches it too
        assert netns.call_in(b, lambda: _http_get(f"http://{ip_a}:{POD_PORT}/")) == 200
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert _nat_rules_for("poda")

    # When both pods are torn down (twice) and their namespaces removed
    for pod, pin in (("poda", a), ("podb", b)):
        asyncio.run(mgr.teardown(pod, pin))
        asyncio.run(mgr.teardown(pod, pin))
        netns.remove(pin)
        assert not mounted(pin.resolve())
        assert not pin.exists()
    # Then the veths, the addresses, the portmap rules and the cache are gone
    assert _bridge_ports() == ""
    assert real.ip_files() == []
    assert _nat_rules_for("poda") == []
    assert "CNI-DN-" not in run("iptables-save", "-t", "nat")
    assert list(real.cache_dir.iterdir()) == []
    # and the host port is closed again
    with pytest.raises(urllib.error.URLError):
        _http_get(f"http://127.0.0.1:{HOST_PORT}/", timeout=0.5)


@pytest.mark.root
@needs_plugins
def test_teardown_after_the_namespace_is_gone_releases_everything(real: RealBed) -> None:
    mgr = real.manager()
    pin = real.pin("podc")
    netns.create(pin)
    real.pods.append("podc")
    res = asyncio.run(mgr.setup("podc", pin, "ns", "c", "uid-c", [PortMapping(HOST_PORT, 80)]))
    assert real.ip_files() == res.ips
    # When the namespace disappears first (the veth goes with it)
    netns.remove(pin)
    # Then teardown with an empty CNI_NETNS still frees the IP and the portmap rules
    asyncio.run(mgr.teardown("podc", pin))
    assert real.ip_files() == []
    assert _nat_rules_for("podc") == []
    assert _bridge_ports() == ""


@pytest.mark.root
@needs_plugins
def test_missing_plugin_binary_means_not_ready(real: RealBed) -> None:
    doc = real.conflist()
    doc["plugins"].append({"type": "crirt-no-such-plugin"})
    real.write(doc)
    mgr = real.manager()
    ready, reason = mgr.status()
    assert not ready
    assert "crirt-no-such-plugin" in reason
    pin = real.pin("podd")
    netns.create(pin)
    with pytest.raises(Unavailable, match="crirt-no-such-plugin"):
        asyncio.run(mgr.setup("podd", pin, "ns", "d", "uid-d"))
    assert _bridge_ports() == ""
    assert real.ip_files() == []


@pytest.mark.root
@needs_plugins
def test_plugin_failing_after_bridge_leaves_nothing_behind(real: RealBed) -> None:
    # Given a list where a plugin after bridge and portmap fails
    failing = real.extra_bin / "crirt-fail"
    failing.write_text(
        "#!/bin/sh\ncat >/dev/null\n"
        'echo \'{"cniVersion":"1.0.0","code":7,"msg":"refusing on purpose"}\'\n'
        'if [ "$CNI_COMMAND" = ADD ]; then exit 1; fi\n'
    )
    failing.chmod(0o755)
    doc = real.conflist()
    doc["plugins"].append({"type": "crirt-fail"})
    real.write(doc)
    mgr = real.manager()
    pin = real.pin("pode")
    netns.create(pin)
    real.pods.append("pode")
    # When the pod is set up
    with pytest.raises(Internal, match="refusing on purpose"):
        asyncio.run(mgr.setup("pode", pin, "ns", "e", "uid-e", [PortMapping(HOST_PORT, 80)]))
    # Then the rollback removed the veth, released the IP and the portmap rules
    assert _bridge_ports() == ""
    assert real.ip_files() == []
    assert _nat_rules_for("pode") == []
    assert "eth0" not in run("nsenter", f"--net={pin}", "ip", "-o", "link", "show")
    assert not (real.cache_dir / "pode.json").exists()


@pytest.mark.root
@needs_root
def test_net_guard_is_idempotent_and_removable() -> None:
    bridge, subnet = "crirtguard0", "10.98.0.0/24"
    args = [str(NET_GUARD), "--bridge", bridge, "--subnet", subnet]
    try:
        for _ in range(3):
            subprocess.run(args, check=True)
        rules = [r for r in run("iptables", "-S", "FORWARD").splitlines() if bridge in r]
        assert len(rules) == 2
        assert any(f"-i {bridge} ! -o {bridge}" in r and "-j DROP" in r for r in rules)
        assert any(
            f"! -i {bridge} -o {bridge}" in r and "! --ctstate RELATED,ESTABLISHED" in r
            for r in rules
        )
        routes = run("ip", "-4", "route", "show", "type", "prohibit").splitlines()
        assert [r.strip() for r in routes].count(f"prohibit {subnet} metric 4000") == 1
    finally:
        for _ in range(2):
            subprocess.run([*args, "--remove"], check=True)
    assert bridge not in run("iptables", "-S", "FORWARD")
    assert subnet not in run("ip", "-4", "route", "show", "type", "prohibit")
