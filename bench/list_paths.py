#!/usr/bin/env python3
"""The kubelet's polling paths at scale: ListPodSandbox, ListContainers, ListContainerStats.

``bench/list_paths.py [--pods 110] [--runs 200] [--crirt-only] [--json FILE]``

Starts crirt and Debian's containerd 1.6 side by side (bench/peers.py, the same CNI and
registry), fills each with PODS pods x 3 running containers, stops the last container of every
third pod (so some are exited, as on a real node), then calls the three lists RUNS times per
runtime, alternating runtimes, from one gRPC client. Prints p50/p99 per call and runtime, then
the same numbers as JSON (also written to FILE). Targets (issue 6): lists p99 <= 10 ms, stats
p99 <= 100 ms at 110 pods.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

import peers  # noqa: E402
import suite  # noqa: E402

from crirt._gen import api_pb2  # noqa: E402

OPS = ("ListPodSandbox", "ListContainers", "ListContainerStats")
TARGET_P99_MS = {"ListPodSandbox": 10.0, "ListContainers": 10.0, "ListContainerStats": 100.0}


def stop_some(c: suite.Cri, every: int = 3) -> int:
    """Stop the last container of every ``every``-th pod; returns how many were stopped."""
    pods = sorted(
        c.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest(), timeout=30).items,
        key=lambda p: p.metadata.name,
    )
    stopped = 0
    for pod in pods[::every]:
        flt = api_pb2.ContainerFilter(pod_sandbox_id=pod.id)
        ctrs = c.rt.ListContainers(api_pb2.ListContainersRequest(filter=flt), timeout=30)
        last = max(ctrs.containers, key=lambda x: x.metadata.name, default=None)
        if last is not None:
            c.rt.StopContainer(
                api_pb2.StopContainerRequest(container_id=last.id, timeout=10), timeout=60
            )
            stopped += 1
    return stopped


def summarize(samples: suite.Samples) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for op in OPS:
        for name, xs in samples.get(op, {}).items():
            out.setdefault(op, {})[name] = {
                "n": len(xs),
                "p50_ms": round(statistics.median(xs) * 1000, 3),
                "p99_ms": round(suite.pct(xs, 0.99) * 1000, 3),
            }
    return out


def print_table(rows: dict[str, dict[str, Any]], names: tuple[str, ...]) -> None:
    head = f"{'call':<22}" + "".join(f"{n + ' p50':>16}{n + ' p99':>16}" for n in names)
    print(head + f"{'target p99':>12}")
    for op in OPS:
        cells = ""
        for n in names:
            r = rows.get(op, {}).get(n)
            cells += f"{r['p50_ms']:>13.2f} ms{r['p99_ms']:>13.2f} ms" if r else f"{'n/a':>32}"
        print(f"{op:<22}{cells}{TARGET_P99_MS[op]:>9.0f} ms")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pods", type=int, default=110)
    ap.add_argument("--runs", type=int, default=200, help="calls of each list per runtime")
    ap.add_argument("--crirt-only", action="store_true", help="leave containerd out")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/list_paths.py needs root", file=sys.stderr)
        return 2
    names = ("crirt",) if args.crirt_only else suite.NAMES
    subprocess.run([str(REPO / "testbed" / "setup.sh")], check=True, capture_output=True)
    base = Path(tempfile.mkdtemp(prefix="crirt-bench-lists-", dir="/var/tmp"))
    os.chmod(base, 0o711)
    suite.LOG_ROOT = base / "logs"
    samples: suite.Samples = {}
    exited: dict[str, int] = {}
    try:
        with ExitStack() as stack:
            cris: dict[str, suite.Cri] = {}
            for n in names:
                start = peers.crirt if n == "crirt" else peers.containerd
                tmp = base / n
                tmp.mkdir(parents=True)
                cris[n] = suite.Cri(stack.enter_context(start(tmp, suite.CNI[n])))
            for n, c in cris.items():
                spec = api_pb2.ImageSpec(image=suite.IMAGE)
                c.img.PullImage(api_pb2.PullImageRequest(image=spec), timeout=300)
                suite.log(f"{n}: populating {args.pods} pods x 3 containers")
                t0 = time.monotonic()
                suite.populate(c, n, args.pods, 3)
                exited[n] = stop_some(c)
                suite.log(f"  {time.monotonic() - t0:.1f} s, {exited[n]} containers exited")
            stats: dict[str, bool] = {}
            for _ in range(3):  # warm-up (first stats call walks every writable layer)
                for n in names:
                    suite.list_once(cris[n], n, {}, stats)
            for i in range(args.runs):
                for n in names[:: 1 if i % 2 == 0 else -1]:
                    suite.list_once(cris[n], n, samples, stats)
            for c in cris.values():
                c.close()
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)
    rows = summarize(samples)
    print(f"\n{args.pods} pods x 3 containers ({exited} exited), {args.runs} calls each\n")
    print_table(rows, names)
    doc = {"pods": args.pods, "containers": 3 * args.pods, "exited": exited, "results": rows}
    text = json.dumps(doc, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
