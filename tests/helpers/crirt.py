"""Start a real ``crirt serve`` on a private root, state dir, socket and CNI bridge for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

from crirt._gen import api_pb2_grpc

REPO = Path(__file__).resolve().parents[2]


def mounts_under(path: Path) -> list[str]:
    prefix = os.path.realpath(path) + "/"
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            if mp.startswith(prefix):
                out.append(mp)
    return out


class Crirt:
    """One crirt server process plus gRPC stubs; ``restart`` keeps root and state."""

    def __init__(self, base: Path, bridge: str, subnet: str) -> None:
        self.base = base
        self.root = base / "root"
        self.state = base / "state"
        self.sock = base / "crirt.sock"
        self.logs = base / "logs"
        self.cni_dir = base / "cni"
        self.log_file = base / "crirt.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None
        self.logs.mkdir(parents=True, exist_ok=True)
        self.cni_dir.mkdir(parents=True, exist_ok=True)
        conf = (REPO / "deploy" / "cni" / "10-crirt-bridge.conflist").read_text()
        conf = conf.replace("/var/lib/crirt/cni/ipam", str(base / "ipam"))
        conf = conf.replace('"crirt0"', f'"{bridge}"').replace("10.88.0.0/16", subnet)
        conf = conf.replace("10.88.0.1", subnet.rsplit(".", 1)[0] + ".1")
        (self.cni_dir / "10-test.conflist").write_text(conf)

    def start(self) -> None:
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
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 20
        while not self.sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("crirt did not start:\n" + self.log_file.read_text()[-3000:])
            time.sleep(0.05)
        # The kubelet's cri-client accepts replies up to 16 MiB; do the same.
        self.channel = grpc.insecure_channel(
            f"unix://{self.sock}", options=[("grpc.max_receive_message_length", 16 << 20)]
        )
        self.rt = api_pb2_grpc.RuntimeServiceStub(self.channel)
        self.img = api_pb2_grpc.ImageServiceStub(self.channel)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)
        self.proc = None

    def restart(self, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        self.start()

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
            ["crictl", "--runtime-endpoint", ep, "--image-endpoint", ep, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=self.base,
        )
        if check and res.returncode != 0:
            raise AssertionError(f"crictl {' '.join(args)} failed: {res.stderr}")
        return res.stdout if check else res.stdout + res.stderr
