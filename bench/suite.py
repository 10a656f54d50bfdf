#!/usr/bin/env python3
"""crirt vs Debian's containerd 1.6, side by side in one run: ``bench/run [--quick]``.

Starts both daemons (bench/peers.py: same registry, same bridge+portmap CNI on their own bridges
and subnets, same runc) and drives both through the CRI with the same workload from one Python
gRPC client, alternating runtimes run by run (the machine is noisy: read the medians):

- pod/container lifecycle: RunPodSandbox (pod network, CNI), CreateContainer, StartContainer,
  ExecSync, StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox;
- an exec session (``crictl exec``, SPDY: bench/exec_latency.py);
- PullImage of a small image (and, without --quick, the >= 200 MB image of bench/pull.py);
- ListPodSandbox / ListContainers / ListContainerStats at SCALE pods x 3 containers (110 pods,
  330 containers; --quick: 10 pods);
- memory: daemon RSS and PSS idle and at SCALE pods; per container, crirt's monitors plus their
  fork server vs containerd's shims (summed PSS / containers);
- critest ``-benchmark`` specs (params YAML per shared/reference/critest.md §5), both runtimes.

Prints a table, writes bench/results/<timestamp>.json and PNG plots (matplotlib, if installed),
and ends with ``bench: N ops, worst ratio R on OP`` (R = the largest crirt/containerd median
ratio over the operations both runtimes ran).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
import peers  # noqa: E402

from crirt._gen import api_pb2, api_pb2_grpc  # noqa: E402

NAMES = ("crirt", "containerd")
IMAGE = f"{peers.REGISTRY}/library/busybox:latest"
# Pulled and removed over and over: used by nothing else in the run.
SMALL_IMAGE = f"{peers.REGISTRY}/k8s-staging-cri-tools/test-image-1:latest"
CRITEST_IMAGE = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
# A bridge and subnet per bench process (as the tests do): runs sharing the machine never meet.
_NET = os.getpid() % 200 + 20
CNI = {
    "crirt": (f"crbench{_NET}", f"10.91.{_NET}.0/24"),
    "containerd": (f"ctbench{_NET}", f"10.92.{_NET}.0/24"),
}
# Stops on SIGTERM (a bare sleep as PID 1 would wait for the kill after the grace period).
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]

LOG_ROOT = Path("/var/tmp/crirt-bench-logs")  # set per run in main()

Samples = dict[str, dict[str, list[float]]]  # op -> runtime -> seconds


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class Cri:
    def __init__(self, sock: Path) -> None:
        self.sock = sock
        self.channel = grpc.insecure_channel(f"unix://{sock}")
        self.rt = api_pb2_grpc.RuntimeServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.img = api_pb2_grpc.ImageServiceStub(self.channel)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self.channel.close()


def timed(samples: Samples, op: str, name: str, fn: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    out = fn()
    samples.setdefault(op, {}).setdefault(name, []).append(time.perf_counter() - t0)
    return out


def pod_config(name: str, uid: str, host_net: bool = False) -> Any:
    ns = api_pb2.NamespaceOption(network=api_pb2.NODE if host_net else api_pb2.POD)
    log_dir = LOG_ROOT / uid
    log_dir.mkdir(parents=True, exist_ok=True)  # the kubelet creates it, not the runtime
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, namespace="bench", uid=uid, attempt=0),
        log_directory=str(log_dir),
        linux=api_pb2.LinuxPodSandboxConfig(
            security_context=api_pb2.LinuxSandboxSecurityContext(namespace_options=ns)
        ),
    )


def ctr_config(name: str) -> Any:
    return api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name, attempt=0),
        image=api_pb2.ImageSpec(image=IMAGE),
        command=SLEEPER,
        log_path=f"{name}.log",
        linux=api_pb2.LinuxContainerConfig(),
    )


def lifecycle_once(c: Cri, name: str, i: int, samples: Samples) -> None:
    pcfg = pod_config(f"lc-{i}", f"{name}-lc-{i}-{time.time_ns()}")
    pod = timed(
        samples, "RunPodSandbox", name,
        lambda: c.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pcfg), timeout=60),
    ).pod_sandbox_id  # fmt: skip
    ccfg = ctr_config("sleeper")
    cid = timed(
        samples, "CreateContainer", name,
        lambda: c.rt.CreateContainer(
            api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=ccfg, sandbox_config=pcfg),
            timeout=60,
        ),
    ).container_id  # fmt: skip
    timed(
        samples, "StartContainer", name,
        lambda: c.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=60),
    )  # fmt: skip
    resp = timed(
        samples, "ExecSync", name,
        lambda: c.rt.ExecSync(
            api_pb2.ExecSyncRequest(container_id=cid, cmd=["echo", "hi"], timeout=10), timeout=30
        ),
    )  # fmt: skip
    assert resp.stdout == b"hi\n", resp
    assert resp.exit_code == 0, resp
    timed(
        samples, "StopContainer", name,
        lambda: c.rt.StopContainer(
            api_pb2.StopContainerRequest(container_id=cid, timeout=10), timeout=60
        ),
    )  # fmt: skip
    timed(
        samples, "RemoveContainer", name,
        lambda: c.rt.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid), timeout=60),
    )  # fmt: skip
    timed(
        samples, "StopPodSandbox", name,
        lambda: c.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60),
    )  # fmt: skip
    timed(
        samples, "RemovePodSandbox", name,
        lambda: c.rt.RemovePodSandbox(
            api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60
        ),
    )  # fmt: skip


def pull_small_once(c: Cri, name: str, samples: Samples) -> None:
    spec = api_pb2.ImageSpec(image=SMALL_IMAGE)
    c.img.RemoveImage(api_pb2.RemoveImageRequest(image=spec), timeout=60)
    timed(
        samples, "PullImage (small)", name,
        lambda: c.img.PullImage(api_pb2.PullImageRequest(image=spec), timeout=300),
    )  # fmt: skip


def list_once(c: Cri, name: str, samples: Samples, stats: dict[str, bool]) -> None:
    timed(
        samples, "ListPodSandbox", name,
        lambda: c.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=30),
    )  # fmt: skip
    timed(
        samples, "ListContainers", name,
        lambda: c.rt.ListContainers(api_pb2.ListContainersRequest(), timeout=30),
    )  # fmt: skip
    if not stats.get(name, True):
        return
    try:
        timed(
            samples, "ListContainerStats", name,
            lambda: c.rt.ListContainerStats(api_pb2.ListContainerStatsRequest(), timeout=30),
        )  # fmt: skip
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
            raise
        stats[name] = False
        log(f"{name}: ListContainerStats is Unimplemented (n/a)")


def populate(c: Cri, name: str, pods: int, per_pod: int) -> None:
    for p in range(pods):
        pcfg = pod_config(f"scale-{p}", f"{name}-scale-{p}")
        pod = c.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pcfg), timeout=120)
        for k in range(per_pod):
            cid = c.rt.CreateContainer(
                api_pb2.CreateContainerRequest(
                    pod_sandbox_id=pod.pod_sandbox_id, config=ctr_config(f"c{k}"),
                    sandbox_config=pcfg,
                ),
                timeout=120,
            ).container_id  # fmt: skip
            c.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=120)


# -- memory ------------------------------------------------------------------------------------


def mem_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in kB from smaps_rollup; (0, 0) if the process is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def helper_pids(name: str, tmp: Path, sock: Path) -> list[int]:
    """crirt: its fork server and monitors (Python monitors share the fork server's command
    line; native ones carry their spec, with paths under this run's state dir); containerd: its
    shims."""
    if name == "containerd":
        return peers.shim_pids(sock)
    needle = str(tmp / "state" / "monitor" / "forkserver.sock").encode()
    state = str(tmp / "state").encode()
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmdline = (d / "cmdline").read_bytes()
            except OSError:
                continue
            argv0 = cmdline.split(b"\0", 1)[0]
            if needle in cmdline or (argv0.endswith(b"/crirt-monitor") and state in cmdline):
                out.append(int(d.name))
    return out


def memory(name: str, tmp: Path, sock: Path, containers: int) -> dict[str, Any]:
    daemon = int((tmp / "daemon.pid").read_text())
    rss, pss = mem_kb(daemon)
    helpers = [mem_kb(p) for p in helper_pids(name, tmp, sock)]
    hp = sum(p for _, p in helpers)
    out: dict[str, Any] = {
        "daemon_rss_mb": rss / 1024, "daemon_pss_mb": pss / 1024,
        "helpers": len(helpers), "helpers_pss_mb": hp / 1024,
        "helpers_rss_mb": sum(r for r, _ in helpers) / 1024,
        # All of the runtime's processes: idle, crirt's fork server has no containerd peer.
        "total_pss_mb": (pss + hp) / 1024,
    }  # fmt: skip
    if containers:
        out["per_container_pss_mb"] = hp / 1024 / containers
    return out


# -- critest -benchmark ------------------------------------------------------------------------

CRITEST_OPS = {
    "pod_benchmark_data.json": ["RunPodSandbox", "PodSandboxStatus", "StopPodSandbox",
                                "RemovePodSandbox"],
    "container_benchmark_data.json": ["CreateContainer", "StartContainer", "ContainerStatus",
                                      "StopContainer", "RemoveContainer"],
    "image_lifecycle_benchmark_data.json": ["PullImage", "ImageStatus", "RemoveImage"],
    "image_listing_benchmark_data.json": ["ListImages"],
}  # fmt: skip


def critest_benchmark(name: str, sock: Path, out: Path, n: int) -> dict[str, list[float]]:
    """Run critest -benchmark; op -> seconds (file order; names from critest.md §5)."""
    out.mkdir(parents=True, exist_ok=True)
    params = out / "params.yaml"
    params.write_text(
        f"containersNumber: {n}\ncontainersNumberParallel: 1\n"
        f"containerBenchmarkTimeoutSeconds: 60\npodsNumber: {n}\npodsNumberParallel: 1\n"
        f"imagesNumber: {n}\nimagesNumberParallel: 1\nimageBenchmarkTimeoutSeconds: 60\n"
        f"imagePullingBenchmarkImage: {CRITEST_IMAGE}\n"
        "podContainerStartBenchmarkTimeoutSeconds: 5\n"
    )
    run_dir = out / "run"
    run_dir.mkdir(exist_ok=True)
    ep = f"unix://{sock}"
    res = subprocess.run(
        ["critest", "--runtime-endpoint", ep, "--image-endpoint", ep, "-benchmark",
         "-benchmarking-params-file", str(params), "-benchmarking-output-dir", str(out),
         "--ginkgo.no-color"],
        cwd=run_dir, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    (out / "critest.log").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        log(f"{name}: critest -benchmark exit {res.returncode} (log {out / 'critest.log'})")
    ops: dict[str, list[float]] = {}
    for fname, names in CRITEST_OPS.items():
        f = out / fname
        if not f.exists():
            continue
        doc = json.loads(f.read_text())
        for dp in doc.get("datapoints") or []:
            for op, ns in zip(names, dp.get("operationsDurationsNs") or [], strict=False):
                ops.setdefault(f"critest {op}", []).append(ns / 1e9)
    return ops


# -- statistics and output ---------------------------------------------------------------------


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(len(s) * q) - 1))]


def summarize(samples: Samples) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for op, by in samples.items():
        row: dict[str, Any] = {}
        for name in NAMES:
            xs = by.get(name)
            if xs:
                row[name] = {
                    "n": len(xs),
                    "median_ms": statistics.median(xs) * 1000,
                    "p99_ms": pct(xs, 0.99) * 1000,
                }
        if all(n in row for n in NAMES) and row["containerd"]["median_ms"] > 0:
            row["ratio"] = row["crirt"]["median_ms"] / row["containerd"]["median_ms"]
        rows[op] = row
    return rows


def print_table(rows: dict[str, dict[str, Any]], mem: dict[str, Any]) -> None:
    print(f"\n{'operation':<34}{'n':>4} {'crirt med':>10}{'p99':>9} {'ctrd med':>10}{'p99':>9}"
          f" {'ratio':>6}")  # fmt: skip
    for op, row in rows.items():
        cells = []
        for name in NAMES:
            r = row.get(name)
            cells.append(
                f"{r['median_ms']:>10.2f}{r['p99_ms']:>9.2f}" if r else f"{'n/a':>10}{'':>9}"
            )
        n = max((row[k]["n"] for k in NAMES if k in row), default=0)
        ratio = f"{row['ratio']:>6.2f}" if "ratio" in row else f"{'n/a':>6}"
        print(f"{op:<34}{n:>4} {cells[0]} {cells[1]} {ratio}")
    print("(ms; ratio = crirt median / containerd median)")
    if mem:
        print(f"\n{'memory (MB)':<52}{'crirt':>12}{'containerd':>12}")
        for key in ("idle", "loaded"):
            if key not in mem:
                continue
            label = "idle" if key == "idle" else f"at {mem['pods']} pods/{mem['containers']} ctrs"
            for field, what in (("daemon_rss_mb", "daemon RSS"), ("daemon_pss_mb", "daemon PSS"),
                                ("helpers_pss_mb", "monitors+forksrv / shims PSS"),
                                ("per_container_pss_mb", "  per container PSS"),
                                ("total_pss_mb", "daemon + monitors / shims PSS")):  # fmt: skip
                vals = [mem[key].get(n, {}).get(field) for n in NAMES]
                if all(v is None for v in vals):
                    continue
                line = "".join(f"{v:>12.2f}" if v is not None else f"{'n/a':>12}" for v in vals)
                print(f"{what + ', ' + label:<52}{line}")


def plot(rows: dict[str, dict[str, Any]], out: Path) -> list[Path]:
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        log("matplotlib is not installed (pip install -e .[bench]): no plots")
        return []
    ops = [op for op, r in rows.items() if "ratio" in r]
    paths = []
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(ops) + 1.5))
    ratios = [rows[o]["ratio"] for o in ops]
    ax.barh(ops, ratios, color=["tab:red" if r > 1 else "tab:green" for r in ratios])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("crirt / containerd (median)")
    ax.invert_yaxis()
    fig.tight_layout()
    p = out.with_name(out.stem + "-ratio.png")
    fig.savefig(p, dpi=100)
    paths.append(p)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(ops) + 1.5))
    y = range(len(ops))
    for k, (name, color) in enumerate((("crirt", "tab:blue"), ("containerd", "tab:orange"))):
        med = [rows[o][name]["median_ms"] for o in ops]
        p99 = [rows[o][name]["p99_ms"] - rows[o][name]["median_ms"] for o in ops]
        ax.barh([i + 0.4 * k for i in y], med, height=0.4, color=color, label=name,
                xerr=[[0] * len(ops), p99], capsize=2)  # fmt: skip
    ax.set_yticks([i + 0.2 for i in y], ops)
    ax.set_xscale("log")
    ax.set_xlabel("ms (bar: median, whisker: p99)")
    ax.invert_yaxis()
    ax.legend()
    fig.tight_layout()
    p = out.with_name(out.stem + "-latency.png")
    fig.savefig(p, dpi=100)
    paths.append(p)
    plt.close(fig)
    return paths


# -- the run -----------------------------------------------------------------------------------


@contextmanager
def runtimes(base: Path) -> Iterator[dict[str, tuple[Path, Path]]]:
    with ExitStack() as stack:
        out = {}
        for name, start in (("crirt", peers.crirt), ("containerd", peers.containerd)):
            tmp = base / name
            tmp.mkdir(parents=True)
            out[name] = (stack.enter_context(start(tmp, CNI[name])), tmp)
        yield out


def alternate(i: int) -> tuple[str, ...]:
    return NAMES if i % 2 == 0 else NAMES[::-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the < 5 minute subset")
    ap.add_argument("-n", "--runs", type=int, help="lifecycle rounds per runtime")
    ap.add_argument("--out", type=Path, default=BENCH / "results", help="results directory")
    ap.add_argument("--no-critest", action="store_true", help="skip critest -benchmark")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/run needs root", file=sys.stderr)
        return 2
    t_start = time.monotonic()
    quick = args.quick
    rounds = args.runs or (15 if quick else 40)
    scale = 10 if quick else 110
    execs = 20 if quick else 60
    pulls = 5 if quick else 15
    critest_n = 10 if quick else 50
    subprocess.run([str(REPO / "testbed" / "setup.sh")], check=True, capture_output=True)
    samples: Samples = {}
    mem: dict[str, Any] = {"pods": scale, "containers": 3 * scale, "idle": {}, "loaded": {}}
    stats: dict[str, bool] = {}
    base = Path(tempfile.mkdtemp(prefix="crirt-bench-run-", dir="/var/tmp"))
    os.chmod(base, 0o711)
    global LOG_ROOT
    LOG_ROOT = base / "logs"
    try:
        with runtimes(base) as rts:
            cris = {n: Cri(sock) for n, (sock, _) in rts.items()}
            for c in cris.values():
                c.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=IMAGE)),
                                timeout=300)  # fmt: skip
            log("warm-up and idle memory")
            for i in range(2):
                for n in NAMES:
                    lifecycle_once(cris[n], n, -1 - i, {})
            time.sleep(1)
            for n in NAMES:
                mem["idle"][n] = memory(n, rts[n][1], rts[n][0], 0)
            log(f"lifecycle x{rounds}")
            for i in range(rounds):
                for n in alternate(i):
                    lifecycle_once(cris[n], n, i, samples)
            log(f"PullImage (small) x{pulls}")
            for i in range(pulls):
                for n in alternate(i):
                    pull_small_once(cris[n], n, samples)
            log(f"exec session (crictl exec) x{execs}")
            import exec_latency

            cids = {n: exec_latency.prepare(rts[n][0], base, n) for n in NAMES}
            for i in range(execs + 3):
                for n in alternate(i):
                    dt = exec_latency.exec_once(rts[n][0], cids[n], "spdy")
                    if i >= 3:
                        samples.setdefault("exec session (crictl exec)", {}).setdefault(
                            n, []
                        ).append(dt)
            log(f"populating {scale} pods x 3 containers")
            for n in NAMES:
                t0 = time.monotonic()
                populate(cris[n], n, scale, 3)
                log(f"  {n}: {time.monotonic() - t0:.1f} s")
            time.sleep(1)
            for n in NAMES:
                mem["loaded"][n] = memory(n, rts[n][1], rts[n][0], 3 * scale)
            log("list paths")
            for i in range(50 if quick else 200):
                for n in alternate(i):
                    list_once(cris[n], n, samples, stats)
            for c in cris.values():
                c.close()
            for n in NAMES:
                peers._remove_all_pods(rts[n][0])
            if not args.no_critest:
                for n in NAMES:
                    log(f"critest -benchmark ({critest_n}) on {n}")
                    t0 = time.monotonic()
                    ops = critest_benchmark(n, rts[n][0], base / f"critest-{n}", critest_n)
                    log(f"  {time.monotonic() - t0:.1f} s")
                    for op, xs in ops.items():
                        samples.setdefault(op, {})[n] = xs
        if not quick:
            log("PullImage (>= 200 MB): bench/pull.py")
            res = subprocess.run(
                [sys.executable, str(BENCH / "pull.py"), "-n", "3", "--json",
                 str(base / "pull.json")],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if res.returncode == 0:
                doc = json.loads((base / "pull.json").read_text())
                for n in NAMES:
                    samples["PullImage (203 MB, cold)"] = samples.get(
                        "PullImage (203 MB, cold)", {}
                    )
                    samples["PullImage (203 MB, cold)"][n] = doc["seconds"][n]
            else:
                log(f"pull.py failed: {res.stderr[-2000:]}")
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)
    rows = summarize(samples)
    print_table(rows, mem)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = args.out / f"{stamp}{'-quick' if quick else ''}.json"
    result = {
        "quick": quick, "cpus": os.cpu_count(), "rounds": rounds, "scale_pods": scale,
        "ops": rows, "memory": mem, "samples_s": samples,
        "list_container_stats": {n: ("ok" if stats.get(n, True) else "unimplemented")
                                 for n in NAMES},
        "wall_s": time.monotonic() - t_start,
    }  # fmt: skip
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nJSON: {out}")
    for p in plot(rows, out):
        print(f"plot: {p}")
    ratios = {op: r["ratio"] for op, r in rows.items() if "ratio" in r}
    if not ratios:
        print("bench: 0 ops, worst ratio n/a on n/a")
        return 1
    worst = max(ratios, key=lambda k: ratios[k])
    print(f"bench: {len(ratios)} ops, worst ratio {ratios[worst]:.2f} on {worst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
