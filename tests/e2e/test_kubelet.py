"""A real kubelet (standalone, static pods, no API server) driving a real ``crirt serve``.

The kubelet is built by scripts/install-deps.sh (``/usr/local/lib/crirt/kubelet``). Everything is
observed through the kubelet's own API on 127.0.0.1 (``/pods``, ``/containerLogs``, ``/run``,
``/stats/summary``) and checked on the host (cgroups, ports, leftovers). The tests run in file
order and share one kubelet and one crirt: each step builds on the pods of the one before, as a
node operator's day would. ``tests/e2e/kubelet.sh`` runs this module alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from tests.helpers.cgroups import driver, unified
from tests.helpers.crirt import Crirt, find_leftovers, mounts_under, private_network
from tests.helpers.wait import wait_for

KUBELET = Path(os.environ.get("CRIRT_KUBELET", "/usr/local/lib/crirt/kubelet"))
NODE = "crirt-e2e"
LOGS = Path("/var/tmp/crirt-e2e-logs")
# The kubelet's cgroup root, private to this run. A kubelet treats every pod cgroup under its
# kubepods that it does not know as an orphan and kills its processes: two runs sharing
# /kubepods (two test sessions on one machine) would kill each other's pods.
CGROUP_ROOT = f"crirt-e2e-{os.getpid()}"
CGROUPS = Path("/sys/fs/cgroup")
# The node's layout: the kubelet gets crirt's driver (RuntimeConfig says the same), and on a
# cgroup v2 node its default failCgroupV1 (true). Under systemd the pods go to kubepods.slice:
# the kubelet's default root, which a guest of the VM test bed has to itself.
DRIVER = driver()
SYSTEMD = DRIVER == "systemd"
V2 = unified()
IMAGE = "docker.io/library/busybox:1.36"
# The host sysctls the kubelet sets to its liking at start (protectKernelDefaults=false): put back
# afterwards so a test run leaves the machine as it found it.
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.testbed,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    # The kubelet serves a self-signed certificate on 127.0.0.1 (no API server to sign one).
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def container(name: str, command: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", command],
        **extra,
    }


def static_pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        # busybox sh as PID 1 ignores SIGTERM: keep the kill-after-grace short.
        "spec": {"terminationGracePeriodSeconds": 2, "containers": containers, **spec},
    }


def manifests(host_port: int) -> dict[str, dict[str, Any]]:
    return {
        "sleeper": static_pod("sleeper", [container("sleeper", "sleep 3600")]),
        # On the host's network: both kinds of pod network are exercised.
        "talker": static_pod(
            "talker",
            [
                container(
                    "talker",
                    # ~100-byte lines, 5 a second: the kubelet rotates the log every few seconds
                    "i=0; while true; do echo hello from talker $i $PAD; i=$((i+1)); sleep 0.2; "
                    "done",
                    env=[{"name": "PAD", "value": "." * 70}],
                )
            ],
            hostNetwork=True,
        ),
        "prober": static_pod(
            "prober",
            [
                container(
                    "prober",
                    "sleep 2; touch /tmp/ready; sleep 3600",
                    readinessProbe={
                        "exec": {"command": ["cat", "/tmp/ready"]},
                        "periodSeconds": 1,
                        # The default 1 s is one runc exec on a busy machine or in the VM test
                        # bed's guest (~1.5 s there): a timed-out probe is a failed one.
                        "timeoutSeconds": 10,
                    },
                )
            ],
        ),
        "crasher": static_pod("crasher", [container("crasher", "echo crashing; exit 3")]),
        "guaranteed": static_pod(
            "guaranteed",
            [
                container(
                    "guaranteed",
                    "sleep 3600",
                    env=[{"name": "GREETING", "value": "hello"}],
                    resources={
                        "requests": {"cpu": "100m", "memory": "32Mi"},
                        "limits": {"cpu": "100m", "memory": "32Mi"},
                    },
                    volumeMounts=[{"name": "cache", "mountPath": "/cache"}],
                )
            ],
            volumes=[{"name": "cache", "emptyDir": {}}],
        ),
        "web": static_pod(
            "web",
            [
                container(
                    "web",
                    "mkdir -p /www && echo hostport-ok > /www/index.html && "
                    "exec httpd -f -p 8080 -h /www",
                    ports=[
                        {
                            "containerPort": 8080,
                            "hostPort": host_port,
                            "hostIP": "127.0.0.1",
                            "protocol": "TCP",
                        }
                    ],
                )
            ],
        ),
    }


HEALTHY = ("sleeper", "talker", "prober", "guaranteed", "web")


@dataclass
class Node:
    """One kubelet in standalone mode against one crirt, on private paths and ports."""

    base: Path
    crirt: Crirt
    port: int = field(default_factory=free_port)
    healthz_port: int = field(default_factory=free_port)
    host_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def manifest_dir(self) -> Path:
        return self.base / "manifests"

    @property
    def root_dir(self) -> Path:
        return self.base / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.base / "pod-logs"

    def write_config(self) -> Path:
        sock = f"unix://{self.crirt.sock}"
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "staticPodPath": str(self.manifest_dir),
            "fileCheckFrequency": "2s",
            "syncFrequency": "5s",
            # Small logs and a short check interval: the kubelet's log rotation (rename, then
            # ReopenContainerLog) runs within the test.
            "containerLogMaxSize": "4Ki",
            "containerLogMaxFiles": 3,
            "containerLogMonitorInterval": "3s",
            "containerRuntimeEndpoint": sock,
            "imageServiceEndpoint": sock,
            "cgroupDriver": DRIVER,
            **({} if SYSTEMD else {"cgroupRoot": f"/{CGROUP_ROOT}"}),
            "failSwapOn": False,
            # kubelet >= 1.35 refuses cgroup v1 hosts unless told otherwise (this machine).
            **({} if V2 else {"failCgroupV1": False}),
            "address": "127.0.0.1",
            "port": self.port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.healthz_port,
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "podLogsDir": str(self.pod_logs),
            "resolvConf": "/etc/resolv.conf",
            "volumePluginDir": str(self.base / "volume-plugins"),
            # A test machine's disk may be fuller than a node's: never evict or GC images here.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
        }
        path = self.base / "kubelet-config.json"
        path.write_text(json.dumps(config, indent=2))  # YAML is a superset of JSON
        return path

    def start(self) -> None:
        self.manifest_dir.mkdir(parents=True, exist_ok=True)
        self.pod_logs.mkdir(parents=True, exist_ok=True)
        config = self.write_config()
        log = open(self.base / "kubelet.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                str(KUBELET),
                f"--config={config}",
                f"--root-dir={self.root_dir}",
                f"--cert-dir={self.root_dir / 'pki'}",
                f"--hostname-override={NODE}",
                "--v=2",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        wait_for("kubelet /healthz", self.healthy, timeout=60)

    def healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError("kubelet exited:\n" + self.log_tail())
        try:
            r = requests.get(f"http://127.0.0.1:{self.healthz_port}/healthz", timeout=2)
        except requests.RequestException:
            return False
        return r.status_code == 200

    def log_tail(self, n: int = 40) -> str:
        lines = (self.base / "kubelet.log").read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    # --- the kubelet's API ---------------------------------------------------------------
    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        # The kubelet serves its self-signed certificate; anonymous + AlwaysAllow on loopback.
        return requests.request(
            method, f"https://127.0.0.1:{self.port}{path}", verify=False, timeout=30, **kw
        )

    def pods(self) -> dict[str, dict[str, Any]]:
        """Pods by manifest name (the kubelet names static pods ``<name>-<node>``)."""
        items = self.api("GET", "/pods").json().get("items") or []
        return {p["metadata"]["name"].removesuffix(f"-{NODE}"): p for p in items}

    def add(self, name: str, pod: dict[str, Any]) -> None:
        # Written beside, then renamed: the kubelet never reads half a manifest.
        tmp = self.manifest_dir / f".{name}.json.tmp"
        tmp.write_text(json.dumps(pod))
        tmp.rename(self.manifest_dir / f"{name}.json")


def status(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return statuses[0] if statuses else {}


def is_ready(pod: dict[str, Any]) -> bool:
    conds = pod.get("status", {}).get("conditions") or []
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
    return pod.get("status", {}).get("phase") == "Running" and ready


def healthy_ready(node: Node) -> dict[str, dict[str, Any]] | None:
    """The pods by name once every HEALTHY one is Running and Ready (a wait_for probe)."""
    pods = node.pods()
    return pods if all(n in pods and is_ready(pods[n]) for n in HEALTHY) else None


def assert_same_containers(node: Node, before: dict[str, dict[str, Any]], why: str) -> None:
    """Wait for the healthy pods, then: each still runs the very container it ran before."""
    pods = wait_for(f"all healthy pods Ready {why}", lambda: healthy_ready(node), timeout=60)
    for name in HEALTHY:
        st = status(pods[name])
        assert st["containerID"] == before[name]["containerID"], name
        assert st["restartCount"] == 0, (name, st)
        assert st["state"]["running"]["startedAt"] == before[name]["state"]["running"]["startedAt"]


def kubepods(controller: str) -> Path:
    """The kubelet's top pod cgroup (in ``controller``'s hierarchy on v1)."""
    top = CGROUPS if V2 else CGROUPS / controller
    return top / "kubepods.slice" if SYSTEMD else top / CGROUP_ROOT / "kubepods"


def cgroup_dir(controller: str, container_id: str) -> Path:
    """The container's cgroup: ``crirt-<id>`` (cgroupfs) or ``crirt-<id>.scope`` (systemd)."""
    top = kubepods(controller)
    names = {f"crirt-{container_id}", f"crirt-{container_id}.scope"}
    for dirpath, dirnames, _ in os.walk(top):
        for d in names & set(dirnames):
            return Path(dirpath) / d
    raise AssertionError(f"no cgroup {names} under {top}")


def pod_cgroup_name(uid: str) -> str:
    """What the kubelet calls a pod's cgroup: ``pod<uid>`` (cgroupfs) or, as a systemd slice,
    ``…-pod<uid with _ for ->.slice`` (its systemd names escape the dash, their separator)."""
    return f"pod{uid.replace('-', '_')}.slice" if SYSTEMD else f"pod{uid}"


def make_cgroup_root() -> None:
    """The kubelet's cgroupRoot must exist in every hierarchy before it starts (cgroupfs only:
    under systemd the kubelet makes kubepods.slice itself)."""
    if SYSTEMD:
        return
    for top in [CGROUPS] if V2 else CGROUPS.iterdir():
        if top.is_symlink() or not top.is_dir():
            continue
        mine = top / CGROUP_ROOT
        mine.mkdir(exist_ok=True)
        if (top / "cpuset.cpus").exists():
            # A new v1 cpuset starts empty, and nothing could join its children.
            for name in ("cpuset.cpus", "cpuset.mems"):
                (mine / name).write_text((top / name).read_text())


def iptables_chains() -> dict[str, set[tuple[str, str]]]:
    """(table, chain) pairs per iptables command, from ``*-save``."""
    out: dict[str, set[tuple[str, str]]] = {}
    for cmd in ("iptables", "ip6tables"):
        res = subprocess.run([f"{cmd}-save"], capture_output=True, text=True, check=False)
        table = ""
        chains = out.setdefault(cmd, set())
        for line in res.stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":"):
                chains.add((table, line[1:].split()[0]))
    return out


def remove_kubelet_chains(before: dict[str, set[tuple[str, str]]]) -> None:
    """Drop the KUBE-* chains (KUBE-FIREWALL, canaries) the kubelet added, and jumps to them."""
    after = iptables_chains()
    for cmd, chains in after.items():
        new = {tc for tc in chains - before.get(cmd, set()) if tc[1].startswith("KUBE-")}
        if not new:
            continue
        dump = subprocess.run([f"{cmd}-save"], capture_output=True, text=True, check=False)
        table = ""
        for line in dump.stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith("-A ") and any(t == table and f"-j {c}" in line for t, c in new):
                rule = shlex.split(line)
                subprocess.run([cmd, "-w", "5", "-t", table, "-D", *rule[1:]], check=False)
        for table, chain in new:
            subprocess.run([cmd, "-w", "5", "-t", table, "-F", chain], check=False)
            subprocess.run([cmd, "-w", "5", "-t", table, "-X", chain], check=False)


def cleanup_host(base: Path, saved_sysctls: dict[str, str]) -> None:
    """Undo what a kubelet does to the host (../shared/reference/kubelet.md §6.5)."""
    root = base / "kubelet"
    for mp in sorted(mounts_under(root), key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], check=False, capture_output=True)
    subprocess.run(["umount", "-l", str(root)], check=False, capture_output=True)
    logs = Path("/var/log/containers")
    if logs.is_dir():
        for link in logs.iterdir():
            if link.is_symlink() and os.readlink(link).startswith(str(base)):
                link.unlink()
    if SYSTEMD:
        # Every pod is gone by now: its slices are empty.
        subprocess.run(["systemctl", "stop", "kubepods.slice"], check=False)
    for top in [CGROUPS, *CGROUPS.iterdir()]:
        mine = top / CGROUP_ROOT
        if mine.is_dir():
            for dirpath, _, _ in sorted(os.walk(mine), key=lambda w: -len(w[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)
    for key, value in saved_sysctls.items():
        with contextlib.suppress(OSError):
            Path("/proc/sys", key).write_text(value)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    if not KUBELET.exists():
        pytest.fail(f"{KUBELET} missing: run scripts/install-deps.sh")
    subprocess.run(
        [str(Path(__file__).resolve().parents[2] / "testbed" / "setup.sh")],
        check=True,
        capture_output=True,
        timeout=900,
    )
    saved = {}
    for key in KUBELET_SYSCTLS:
        with contextlib.suppress(OSError):
            saved[key] = Path("/proc/sys", key).read_text().strip()
    chains = iptables_chains()
    # Short base path: unix socket paths are limited to 108 bytes.
    base = Path(tmp_path_factory.mktemp("kubelet", numbered=True))
    srv = Crirt(base / "crirt")
    srv.start()
    n = Node(base, srv)
    try:
        make_cgroup_root()
        n.start()
        yield n
    finally:
        n.stop()
        srv.cleanup()
        # Kept past pytest's temp-dir rotation, for whoever reads a failed CI run.
        LOGS.mkdir(parents=True, exist_ok=True)
        for log in (base / "kubelet.log", srv.log_file):
            if log.exists():
                shutil.copy(log, LOGS / log.name)
        cleanup_host(base, saved)
        remove_kubelet_chains(chains)
        subprocess.run(["ip", "link", "del", private_network()[0]], capture_output=True)


# --- the scenario, in order ------------------------------------------------------------------


def test_static_pods_run_and_become_ready(node: Node) -> None:
    for name, pod in manifests(node.host_port).items():
        node.add(name, pod)

    pods = wait_for(
        "the healthy static pods to be Running and Ready", lambda: healthy_ready(node), timeout=120
    )
    for name in HEALTHY:
        st = status(pods[name])
        assert st["containerID"].startswith("crirt://"), st
        assert st["restartCount"] == 0, (name, st)
        assert st["ready"] is True
    # Pod IPs come from PodSandboxStatus: CNI for pod-network pods, none needed for host network.
    web_ip = pods["web"]["status"]["podIP"]
    subnet_prefix = node.crirt.subnet.rsplit(".", 1)[0] + "."
    assert web_ip.startswith(subnet_prefix), web_ip


def test_container_logs_are_served(node: Node) -> None:
    def logged() -> str | None:
        r = node.api("GET", f"/containerLogs/default/talker-{NODE}/talker?tailLines=50")
        return r.text if r.status_code == 200 and "hello from talker 2" in r.text else None

    text = wait_for("talker's log through /containerLogs", logged, timeout=30)
    lines = [line for line in text.splitlines() if line]
    assert all(line.startswith("hello from talker ") for line in lines), lines
    # The kubelet reads the CRI log file crirt's monitor writes under the pod's log directory.
    files = list(node.pod_logs.glob(f"default_talker-{NODE}_*/talker/0.log"))
    assert files, sorted(str(p) for p in node.pod_logs.rglob("*"))
    first = files[0].read_text().splitlines()[0]
    ts, stream, tag, msg = first.split(" ", 3)
    assert (stream, tag) == ("stdout", "F"), first
    assert msg.startswith("hello from talker"), first
    assert ts.endswith("Z")
    assert "T" in ts


def test_exec_through_run(node: Node) -> None:
    def run(pod: str, cmd: str) -> str:
        # The kubelet splits cmd on spaces (no shell quoting) and calls ExecSync.
        r = node.api("POST", f"/run/default/{pod}-{NODE}/{pod}?cmd={urllib.parse.quote(cmd)}")
        assert r.status_code == 200, (cmd, r.text)
        return r.text

    assert "GREETING=hello" in run("guaranteed", "env").splitlines()
    # Pod-network pods get the pod's name as hostname (UTS namespace of the infra).
    assert run("guaranteed", "hostname").strip() == f"guaranteed-{NODE}"
    # The emptyDir volume is mounted and writable.
    run("guaranteed", "touch /cache/written")
    assert "written" in run("guaranteed", "ls /cache").split()
    # A failing command is reported as such, with its output.
    r = node.api("POST", f"/run/default/guaranteed-{NODE}/guaranteed?cmd=ls%20/nonexistent")
    assert r.status_code != 200, r.text
    assert "nonexistent" in r.text


def test_readiness_probe_runs_through_exec_sync(node: Node) -> None:
    pod = node.pods()["prober"]
    assert is_ready(pod)
    # The probe is an ExecSync every second; removing the file must make the pod unready.
    cmd = urllib.parse.quote("rm /tmp/ready")
    r = node.api("POST", f"/run/default/prober-{NODE}/prober?cmd={cmd}")
    assert r.status_code == 200, r.text
    wait_for("prober to turn unready", lambda: not is_ready(node.pods()["prober"]), timeout=20)
    r = node.api("POST", f"/run/default/prober-{NODE}/prober?cmd=touch%20/tmp/ready")
    wait_for("prober to be ready again", lambda: is_ready(node.pods()["prober"]), timeout=20)
    assert status(node.pods()["prober"])["restartCount"] == 0


def test_guaranteed_limits_are_applied(node: Node) -> None:
    pod = node.pods()["guaranteed"]
    assert pod["status"]["qosClass"] == "Guaranteed"
    cid = status(pod)["containerID"].removeprefix("crirt://")
    mem_dir, cpu_dir = cgroup_dir("memory", cid), cgroup_dir("cpu", cid)
    if V2:
        mem = (mem_dir / "memory.max").read_text().strip()
        quota, period = (cpu_dir / "cpu.max").read_text().split()
    else:
        mem = (mem_dir / "memory.limit_in_bytes").read_text().strip()
        quota = (cpu_dir / "cpu.cfs_quota_us").read_text().strip()
        period = (cpu_dir / "cpu.cfs_period_us").read_text().strip()
    assert int(mem) == 32 * 1024 * 1024
    assert (int(quota), int(period)) == (10000, 100000)
    # The container's cgroup sits in the kubelet's pod cgroup (Guaranteed: kubepods/pod<uid>,
    # or the slice kubepods-pod<uid>.slice, with the container in crirt-<id>.scope).
    uid = pod["metadata"]["uid"]
    parent = mem_dir.parent.name
    assert parent == (f"kubepods-{pod_cgroup_name(uid)}" if SYSTEMD else f"pod{uid}"), mem_dir
    assert mem_dir.name == (f"crirt-{cid}.scope" if SYSTEMD else f"crirt-{cid}")
    if SYSTEMD:
        unit = subprocess.run(
            ["systemctl", "show", "-P", "Slice", f"crirt-{cid}.scope"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert unit == parent


def test_host_port_reaches_the_pod(node: Node) -> None:
    def fetch() -> str | None:
        try:
            with socket.create_connection(("127.0.0.1", node.host_port), timeout=3) as s:
                s.sendall(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
        except OSError:
            return None
        return data.decode(errors="replace")

    reply = wait_for("the hostPort to answer", fetch, timeout=20)
    assert reply.startswith("HTTP/1."), reply
    assert "hostport-ok" in reply


def test_stats_summary(node: Node) -> None:
    def summary() -> dict[str, Any] | None:
        data: dict[str, Any] = node.api("GET", "/stats/summary").json()
        pods = {p["podRef"]["name"]: p for p in data.get("pods") or []}
        sleeper = pods.get(f"sleeper-{NODE}")
        if not sleeper or not sleeper.get("containers"):
            return None
        mem = sleeper["containers"][0].get("memory", {})
        return data if mem.get("workingSetBytes") else None

    data = wait_for("/stats/summary with the sleeper's container stats", summary, timeout=60)
    pods = {p["podRef"]["name"]: p for p in data["pods"]}
    assert {f"{n}-{NODE}" for n in HEALTHY} <= set(pods)
    ctr = pods[f"sleeper-{NODE}"]["containers"][0]
    assert ctr["name"] == "sleeper"
    assert ctr["cpu"]["usageCoreNanoSeconds"] > 0
    assert 0 < ctr["memory"]["workingSetBytes"] < 64 * 1024 * 1024
    # The writable layer's usage comes from crirt's ListContainerStats.
    assert "rootfs" in ctr
    assert ctr["rootfs"]["usedBytes"] >= 0
    assert data["node"]["runtime"]["imageFs"]["capacityBytes"] > 0


def test_crash_loop_backs_off(node: Node) -> None:
    seen: dict[str, Any] = {}

    def backing_off() -> bool:
        st = status(node.pods().get("crasher", {}))
        waiting = st.get("state", {}).get("waiting", {})
        if waiting.get("reason") == "CrashLoopBackOff":
            seen["backoff"] = st
        return "backoff" in seen and st.get("restartCount", 0) >= 2

    wait_for("crasher to restart twice, backing off", backing_off, timeout=90)
    st = seen["backoff"]
    assert st["lastState"]["terminated"]["exitCode"] == 3
    assert st["lastState"]["terminated"]["reason"] == "Error"

    # Every attempt is a new CRI container with a growing metadata.attempt; the kubelet's GC
    # keeps only the newest exited one (maxPerPodContainer=1), whose exit code crirt reports.
    # The GC runs at any time: a container listed here may be gone when inspected (NotFound,
    # as api.proto wants), so each listing is inspected at once and one that vanished is
    # skipped; the newest exited one always stays.
    def exited_inspected() -> list[dict[str, Any]]:
        listed = json.loads(node.crirt.crictl("ps", "-a", "--name", "crasher", "-o", "json"))
        out = []
        for c in listed["containers"]:
            if c["state"] != "CONTAINER_EXITED":
                continue
            res = node.crirt.crictl("inspect", c["id"], check=False)
            if "code = NotFound" not in res:  # anything else but the JSON fails here
                out.append({**c, "info": json.loads(res)})
        return out

    exited = exited_inspected()
    assert exited
    assert max(c["metadata"]["attempt"] for c in exited) >= 1, exited
    for c in exited:
        assert c["info"]["status"]["exitCode"] == 3
        assert c["info"]["status"]["reason"] == "Error"


def test_kubelet_rotates_logs_through_reopen(node: Node) -> None:
    """The kubelet renames a full 0.log and calls ReopenContainerLog; crirt's monitor must go
    on writing into a fresh 0.log, nothing lost across the switch."""
    logdir = next(node.pod_logs.glob(f"default_talker-{NODE}_*/talker"))

    def rotated() -> list[Path] | None:
        files = sorted(logdir.glob("0.log.*"))
        return files if len(files) >= 2 else None

    wait_for("two rotations of talker's log", rotated, timeout=60)

    def counters(path: Path) -> list[int]:
        return [
            int(line.split(" ", 3)[3].split()[3])
            for line in path.read_text().splitlines()
            if " hello from talker " in line
        ]

    def seamless() -> tuple[list[int], list[int]] | None:
        # The newest rotated file (older ones are gzipped) ends where the live 0.log begins.
        # Read again if a rotation happens between the two reads.
        newest = sorted(f for f in logdir.glob("0.log.*") if not f.name.endswith(".gz"))[-1]
        before, current = counters(newest), counters(logdir / "0.log")
        ok = bool(before) and bool(current) and current[0] == before[-1] + 1
        return (before, current) if ok else None

    before, current = wait_for("the reopened 0.log to continue the rotated one", seamless, 20)
    assert before == list(range(before[0], before[0] + len(before)))
    assert current == list(range(current[0], current[0] + len(current)))
    # The kubelet keeps containerLogMaxFiles files at most.
    assert len(list(logdir.glob("0.log*"))) <= 3


def rpcs_since(node: Node, offset: int, rpc: str) -> int:
    """How many ``rpc`` calls crirt has answered since its log had ``offset`` bytes."""
    with open(node.crirt.log_file, "rb") as f:
        f.seek(offset)
        want = f"rpc={rpc}".encode()
        return sum(1 for line in f if b"rpc done" in line and want in line)


def wait_until_relisted_and_synced(node: Node, offset: int) -> None:
    """Fifteen kubelet relists (PLEG lists sandboxes and containers every 1 s; three 5 s sync
    periods) answered by crirt since ``offset``: time for the kubelet to act on anything it
    finds wrong, counted in its calls rather than in seconds (a busy machine relists slower)."""
    wait_for(
        "fifteen kubelet relists",
        lambda: (
            rpcs_since(node, offset, "ListPodSandbox") >= 15
            and rpcs_since(node, offset, "ListContainers") >= 15
        ),
        timeout=180,
    )


def test_crirt_restart_keeps_healthy_containers(node: Node) -> None:
    before = {n: status(p) for n, p in node.pods().items() if n in HEALTHY}
    assert all(st["ready"] for st in before.values()), before
    # SIGKILL: the harshest restart; the containers and their monitors must carry on.
    offset = node.crirt.log_file.stat().st_size
    node.crirt.restart(signal.SIGKILL)
    wait_until_relisted_and_synced(node, offset)
    assert_same_containers(node, before, "after the crirt restart")
    r = node.api("POST", f"/run/default/sleeper-{NODE}/sleeper?cmd=echo%20still-here")
    assert r.text.strip() == "still-here"
    # The log keeps flowing into the same file through the restart.
    wait_for(
        "talker's log to grow after the restart",
        lambda: (
            "hello from talker"
            in node.api("GET", f"/containerLogs/default/talker-{NODE}/talker?sinceSeconds=3").text
        ),
        timeout=20,
    )


def test_kubelet_restart_adopts_running_pods(node: Node) -> None:
    before = {n: status(p) for n, p in node.pods().items() if n in HEALTHY}
    node.stop()
    offset = node.crirt.log_file.stat().st_size
    node.start()
    wait_until_relisted_and_synced(node, offset)
    assert_same_containers(node, before, "under the new kubelet")


def test_removing_manifests_removes_everything(node: Node) -> None:
    pods = node.pods()
    uids = [p["metadata"]["uid"] for p in pods.values()]
    ids = [
        c["id"] for c in json.loads(node.crirt.crictl("ps", "-a", "-o", "json"))["containers"]
    ] + [p["id"] for p in json.loads(node.crirt.crictl("pods", "-o", "json"))["items"]]
    assert ids
    for f in node.manifest_dir.iterdir():
        f.unlink()
    wait_for("the kubelet to drop every pod", lambda: not node.pods(), timeout=60)

    def gone() -> bool:
        pods = json.loads(node.crirt.crictl("pods", "-o", "json"))["items"]
        ctrs = json.loads(node.crirt.crictl("ps", "-a", "-o", "json"))["containers"]
        return not pods and not ctrs

    # The kubelet's container GC (every minute) removes the containers and sandboxes of deleted
    # pods; it stops them at once.
    wait_for("the kubelet's GC to remove every sandbox and container", gone, timeout=150, every=2)
    assert find_leftovers(node.crirt, ids) == {}

    def no_pod_cgroups() -> bool:
        names = [pod_cgroup_name(uid) for uid in uids]
        for controller in ("memory", "cpu", "pids"):
            for _, dirnames, _ in os.walk(kubepods(controller)):
                if any(d.endswith(n) for d in dirnames for n in names):
                    return False
        return True

    wait_for("the kubelet to remove the pod cgroups", no_pod_cgroups, timeout=30)
    assert node.healthy()


# Codes a correct runtime never gives a correct kubelet. NotFound (races with the kubelet's own
# GC: api.proto's answer for removed objects), Canceled (the caller's own cancellation),
# Unavailable (crirt killed on purpose) and Unimplemented (optional RPCs) are expected.
_RUNTIME_BUG_CODES = (
    "Unknown",
    "Internal",
    "InvalidArgument",
    "AlreadyExists",
    "DeadlineExceeded",
    "ResourceExhausted",
    "PermissionDenied",
    "DataLoss",
    "OutOfRange",
    "FailedPrecondition",
)


def test_kubelet_log_has_no_runtime_errors(node: Node) -> None:
    """What the kubelet said about crirt over the whole scenario: no CRI error that points at
    the runtime."""
    text = (node.base / "kubelet.log").read_text(errors="replace")
    bad = [
        line
        for line in text.splitlines()
        if any(f"code = {code} " in line for code in _RUNTIME_BUG_CODES)
        # A probe or /run racing its container's exit (the crash loop, pod deletion): crirt
        # answers FailedPrecondition "is not running", as CRI-O does.
        and not ("code = FailedPrecondition" in line and "is not running" in line)
    ]
    assert not bad, "\n".join(bad[:20])
