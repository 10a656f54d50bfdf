"""The two runtimes the benchmarks compare, started side by side on temp paths.

``crirt(tmp)`` starts ``python3 -m crirt serve`` as critest.sh does (own root, state and socket,
the test registry's registries.conf); ``containerd(tmp)`` starts Debian's containerd 1.6 with its
CRI plugin as in shared/reference/testbed.md §4 (own root/state/socket, ``certs.d`` mapping of every
upstream registry the tests use to the test registry, ``restrict_oom_score_adj``, overlayfs, the
same runc). With ``cni=(bridge, subnet)`` each gets the same bridge + portmap conflist (its own
bridge and subnet) and the network guard rails (scripts/net-guard.sh), removed afterwards.
Both yield the socket path; everything started is stopped and unmounted on exit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from crirt._gen import api_pb2, api_pb2_grpc  # noqa: E402

REGISTRY = os.environ.get("CRIRT_REGISTRY_ADDR", "127.0.0.1:5000")
# Every upstream host an image in the tests or critest comes from (testbed.md §4): containerd 1.6
# has no default host, so a registry missing here would be contacted for real.
MIRRORED = (
    "docker.io", "registry-1.docker.io", "registry.k8s.io", "k8s.gcr.io", "gcr.io", "quay.io",
    "public.ecr.aws", "ghcr.io", "mcr.microsoft.com", "registry.access.redhat.com",
    REGISTRY, "localhost:5000",
)  # fmt: skip

Cni = tuple[str, str]  # (bridge, subnet)


def conflist(name: str, bridge: str, subnet: str, ipam_dir: Path) -> str:
    """deploy/cni/10-crirt-bridge.conflist with another bridge, subnet and IPAM directory."""
    doc = json.loads((REPO / "deploy" / "cni" / "10-crirt-bridge.conflist").read_text())
    doc["name"] = name
    br = doc["plugins"][0]
    br["bridge"] = bridge
    br["ipam"]["dataDir"] = str(ipam_dir)
    gw = subnet.rsplit(".", 1)[0] + ".1"
    br["ipam"]["ranges"] = [[{"subnet": subnet, "gateway": gw}]]
    return json.dumps(doc, indent=2) + "\n"


@contextmanager
def _network(tmp: Path, cni: Cni | None) -> Iterator[Path]:
    conf_dir = tmp / "cni" / "net.d"
    conf_dir.mkdir(parents=True, exist_ok=True)
    if cni is None:
        yield conf_dir
        return
    bridge, subnet = cni
    (conf_dir / "10-bench.conflist").write_text(
        conflist(f"bench-{bridge}", bridge, subnet, tmp / "cni" / "ipam")
    )
    guard = [str(REPO / "scripts" / "net-guard.sh"), "--bridge", bridge, "--subnet", subnet]
    subprocess.run(guard, check=True, capture_output=True)
    try:
        yield conf_dir
    finally:
        subprocess.run([*guard, "--remove"], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], check=False, capture_output=True)


def wait_socket(sock: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{log.name}: did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def crirt(tmp: Path, cni: Cni | None = None) -> Iterator[Path]:
    """A fresh ``crirt serve``; ``.pid`` of the yielded path's sibling file ``crirt.pid``."""
    sock = tmp / "crirt.sock"
    log = tmp / "crirt.log"
    with _network(tmp, cni) as conf_dir:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "crirt", "serve", "--config", "/nonexistent",
                    "--listen", str(sock), "--root", str(tmp / "root"), "--state-dir",
                    str(tmp / "state"), "--image-registries-conf",
                    str(REPO / "testbed" / "registries.conf"), "--network-cni-conf-dir",
                    str(conf_dir), "--log-level", "warning",
                ],
                stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=REPO,
                start_new_session=True,
            )  # fmt: skip
        (tmp / "daemon.pid").write_text(f"{proc.pid}\n")
        try:
            wait_socket(sock, proc, log, 30)
            yield sock
        finally:
            stop(proc)
            # Its monitors and fork server are detached by design: the cleanup script ends them.
            subprocess.run(
                [str(REPO / "scripts" / "cleanup-state.sh"), str(tmp / "state"), str(tmp / "root")],
                check=False,
                capture_output=True,
            )
            cleanup_mounts(tmp)


CONTAINERD_CONFIG = """\
version = 2
root = "{tmp}/root"
state = "{tmp}/state"
oom_score = 0
[grpc]
  address = "{tmp}/containerd.sock"
[ttrpc]
  address = "{tmp}/containerd.sock.ttrpc"
[debug]
  address = ""
  level = "warn"
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{tmp}/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    restrict_oom_score_adj = true
    max_concurrent_downloads = 3
    disable_apparmor = true
    enable_selinux = false
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    sandbox_image = "127.0.0.1:5000/crirt/pause:3.9"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = "/usr/sbin/runc"
          Root = "{tmp}/state/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "{conf_dir}"
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "{tmp}/certs.d"
"""


@contextmanager
def containerd(tmp: Path, cni: Cni | None = None) -> Iterator[Path]:
    exe = shutil.which("containerd")
    if exe is None:
        raise RuntimeError("containerd is not installed (apt-get install containerd)")
    for host in MIRRORED:
        d = tmp / "certs.d" / host
        d.mkdir(parents=True, exist_ok=True)
        (d / "hosts.toml").write_text(
            f'server = "http://{REGISTRY}"\n[host."http://{REGISTRY}"]\n'
            '  capabilities = ["pull", "resolve", "push"]\n'
        )
    sock = tmp / "containerd.sock"
    log = tmp / "containerd.log"
    with _network(tmp, cni) as conf_dir:
        conf = tmp / "config.toml"
        conf.write_text(CONTAINERD_CONFIG.format(tmp=tmp, conf_dir=conf_dir))
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [exe, "--config", str(conf)],
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        (tmp / "daemon.pid").write_text(f"{proc.pid}\n")
        try:
            wait_socket(sock, proc, log, 30)
            # The CRI plugin registers a moment after the socket appears.
            wait_cri(sock)
            yield sock
        finally:
            _remove_all_pods(sock)
            stop(proc)
            _kill_shims(sock)
            cleanup_mounts(tmp)


def wait_cri(sock: Path) -> None:
    deadline = time.monotonic() + 30
    with grpc.insecure_channel(f"unix://{sock}") as ch:
        stub = api_pb2_grpc.ImageServiceStub(ch)  # type: ignore[no-untyped-call]
        while True:
            try:
                stub.ListImages(api_pb2.ListImagesRequest(), timeout=2)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def _remove_all_pods(sock: Path) -> None:
    """Stop and remove every pod (containerd's shims outlive it otherwise)."""
    try:
        with grpc.insecure_channel(f"unix://{sock}") as ch:
            rt = api_pb2_grpc.RuntimeServiceStub(ch)  # type: ignore[no-untyped-call]
            for pod in rt.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=10).items:
                rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
                rt.RemovePodSandbox(
                    api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=60
                )
    except grpc.RpcError as exc:
        print(f"[bench] pod teardown: {exc}", file=sys.stderr)


def shim_pids(sock: Path) -> list[int]:
    """containerd-shim-runc-v2 processes serving this containerd (by its socket address)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(sock).encode() in argv:
            out.append(int(d.name))
    return out


def _kill_shims(sock: Path) -> None:
    for pid in shim_pids(sock):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def cleanup_mounts(tmp: Path) -> None:
    prefix = os.path.realpath(tmp) + "/"
    with open("/proc/self/mountinfo") as f:
        mps = [line.split()[4] for line in f if line.split()[4].startswith(prefix)]
    for mp in sorted(mps, key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], check=False, capture_output=True)
