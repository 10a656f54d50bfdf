"""Start a real ``crirt serve`` on a private root, state dir, socket and CNI bridge for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from crirt._gen import api_pb2_grpc
from tests.helpers.cgroups import cgroup_dirs_of, driver, scope_units_of

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 180.0  # seconds: see Crirt.start


def mounts_under(path: Path) -> list[str]:
    prefix = os.path.realpath(path) + "/"
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            if mp.startswith(prefix):
                out.append(mp)
    return out


def private_network() -> tuple[str, str]:
    """A bridge and subnet private to this test process, so that test runs sharing the machine
    (developers, CI leftovers) never see each other's veths or addresses."""
    idx = os.getpid() % 200 + 20
    return f"crirtit{idx}", f"10.89.{idx}.0/24"


def cri_stubs(channel: grpc.Channel) -> tuple[Any, Any]:
    """The RuntimeService and ImageService stubs on ``channel`` (grpcio-tools generates them
    untyped: callers get Any, as from any dynamic client)."""
    rt = api_pb2_grpc.RuntimeServiceStub(channel)  # type: ignore[no-untyped-call]
    img = api_pb2_grpc.ImageServiceStub(channel)  # type: ignore[no-untyped-call]
    return rt, img


class Crirt:
    """One crirt server process plus gRPC stubs; ``restart`` keeps root and state."""

    def __init__(
        self,
        base: Path,
        bridge: str | None = None,
        subnet: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        default_bridge, default_subnet = private_network()
        bridge = bridge or default_bridge
        subnet = subnet or default_subnet
        self.bridge = bridge
        self.subnet = subnet
        self.base = base
        self.extra_args = extra_args  # more `crirt serve` flags
        self.root = base / "root"
        self.state = base / "state"
        self.sock = base / "crirt.sock"
        self.logs = base / "logs"
        self.cni_dir = base / "cni"
        self.log_file = base / "crirt.log"
        # crictl's own configuration, empty: what a machine's /etc/crictl.yaml says (or that
        # there is none: a warning on stderr) must not reach the tests.
        self.crictl_config = base / "crictl-none.yaml"
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None
        self.logs.mkdir(parents=True, exist_ok=True)
        self.cni_dir.mkdir(parents=True, exist_ok=True)
        self.crictl_config.touch()
        conf = (REPO / "deploy" / "cni" / "10-crirt-bridge.conflist").read_text()
        conf = conf.replace("/var/lib/crirt/cni/ipam", str(base / "ipam"))
        conf = conf.replace('"crirt0"', f'"{bridge}"').replace("10.88.0.0/16", subnet)
        conf = conf.replace("10.88.0.1", subnet.rsplit(".", 1)[0] + ".1")
        (self.cni_dir / "10-test.conflist").write_text(conf)

    def start(self, env: dict[str, str] | None = None) -> None:
        """Start ``crirt serve``; ``env``: more environment variables (a crash point)."""
        self.sock.unlink(missing_ok=True)
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "crirt",
                "serve",
                "--config",
                "/nonexistent",
                "--listen",
                str(self.sock),
                "--root",
                str(self.root),
                "--state-dir",
                str(self.state),
                "--image-registries-conf",
                str(REPO / "testbed" / "registries.conf"),
                "--network-cni-conf-dir",
                str(self.cni_dir),
                "--log-level",
                "debug",
                "--metrics-port",  # if a test enables metrics: a free port (servers run at once)
                "0",
                "--runtime-cgroup-driver",  # the layout the suite tests (helpers.cgroups.driver)
                driver(),
                *self.extra_args,
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        log.close()
        # A bound for a hang, not a speed check: the first start in a QEMU TCG guest (CPU ~8x,
        # fork/exec ~20x slower than here, cold imports, a runtime probe per handler) took
        # more than 20 s in CI.
        t0 = time.monotonic()
        while not self.sock.exists():
            waited = time.monotonic() - t0
            if self.proc.poll() is not None or waited > START_TIMEOUT:
                why = f"exited {self.proc.returncode}" if self.proc.returncode is not None else ""
                raise RuntimeError(
                    f"crirt did not start ({why or f'no socket after {waited:.0f} s'}):\n"
                    + self.log_file.read_text()[-3000:]
                )
            time.sleep(0.05)
        # The kubelet's cri-client accepts replies up to 16 MiB; do the same.
        self.channel = grpc.insecure_channel(
            f"unix://{self.sock}", options=[("grpc.max_receive_message_length", 16 << 20)]
        )
        self.rt, self.img = cri_stubs(self.channel)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)
        self.proc = None

    def restart(self, sig: int = signal.SIGTERM, env: dict[str, str] | None = None) -> None:
        self.stop(sig)
        self.start(env)

    def cleanup(self) -> None:
        self.stop()
        subprocess.run(
            [str(REPO / "scripts" / "cleanup-state.sh"), str(self.state), str(self.root)],
            check=False,
        )

    def crictl(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        env = dict(os.environ)
        env.pop("CONTAINER_RUNTIME_ENDPOINT", None)
        ep = f"unix://{self.sock}"
        res = subprocess.run(
            [
                "crictl",
                "--config",
                str(self.crictl_config),
                # Each call's deadline: crictl's own default (2 s) is a latency assertion that a
                # loaded machine (or the slower guest) fails; the kubelet gives 2 minutes.
                "--timeout",
                "60s",
                "--runtime-endpoint",
                ep,
                "--image-endpoint",
                ep,
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=self.base,
        )
        if check and res.returncode != 0:
            raise AssertionError(f"crictl {' '.join(args)} failed: {res.stderr}")
        return res.stdout if check else res.stdout + res.stderr


def _cmdline_pids(needle: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if needle.encode() in (d / "cmdline").read_bytes():
                out.append(int(d.name))
        except OSError:
            continue
    return out


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def monitor_pids(srv: Crirt) -> list[int]:
    """The live monitors (and runc calls) of this server: every process naming its state dir
    but the server itself and the fork server. Python monitors are forked from the fork server
    and share its command line, native ones carry their spec (paths in the state dir); the
    fork server is the one of them whose parent is none of them (it is the monitors')."""
    state = str(srv.state)
    pids = set(_cmdline_pids(state))
    if srv.proc is not None:
        pids.discard(srv.proc.pid)
    fs_needle = str(srv.state / "monitor" / "forkserver.sock").encode()
    servers = set()
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if fs_needle in cmdline and _ppid(pid) not in pids:
            servers.add(pid)
    return sorted(pids - servers)


def find_leftovers(srv: Crirt, ids: list[str]) -> dict[str, list[str]]:
    """Everything a removed pod or container could leave behind, by kind (empty = clean)."""
    found: dict[str, list[str]] = {}
    netns_dir = str(srv.state / "netns")
    found["mounts"] = [m for m in mounts_under(srv.state) if m != netns_dir]
    found["mounts"] += mounts_under(srv.root)
    found["netns"] = sorted(p.name for p in (srv.state / "netns").glob("*"))
    runc = subprocess.run(
        ["runc", "--root", str(srv.state / "runc"), "list", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    found["runc"] = runc.stdout.split()
    found["cgroups"] = cgroup_dirs_of(ids)
    found["scopes"] = scope_units_of(ids)
    brif = Path("/sys/class/net") / srv.bridge / "brif"
    found["veths"] = sorted(p.name for p in brif.iterdir()) if brif.exists() else []
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False).stdout
    found["iptables"] = [line for line in rules.splitlines() if any(i in line for i in ids)]
    ipam = srv.base / "ipam"
    found["ips"] = (
        sorted(p.name for p in ipam.rglob("*") if p.is_file() and p.name[:1].isdigit())
        if ipam.exists()
        else []
    )
    cache = srv.root / "cni" / "cache"
    found["cni_cache"] = sorted(p.name for p in cache.glob("*.json")) if cache.exists() else []
    found["processes"] = [str(p) for p in monitor_pids(srv)]
    found["records"] = sorted(
        p.name for d in ("containers", "sandboxes") for p in (srv.state / d).glob("*")
    )
    return {k: v for k, v in found.items() if v}
