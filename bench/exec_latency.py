#!/usr/bin/env python3
"""Streaming exec latency: ``crictl exec <ctr> echo hi`` (SPDY/3.1) against crirt and against
Debian's containerd 1.6 (CRI plugin), on this machine, in one run.

Both daemons are started fresh on their own temp root, state and socket (containerd as in
bench/pull.py: certs.d mapping to the test registry, restrict_oom_score_adj = true, overlayfs),
each gets one host-network pod with a busybox ``sleep`` container, and then the same crictl
binary runs ``exec`` (without ``-s``: the Exec RPC and a SPDY session, not ExecSync) against
each in alternation. Every figure is the wall time of a whole crictl process, the same client
for both, nothing subtracted. Prints medians, p90 and the ratio crirt / containerd, plus JSON
(``--json FILE`` also writes it). Needs root and the test registry (testbed/setup.sh).

    python3 bench/exec_latency.py [-n 60] [--warmup 5] [--transport spdy] [--json out.json]
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

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from peers import containerd, crirt  # noqa: E402

IMAGE = "127.0.0.1:5000/library/busybox:latest"


def crictl(sock: Path, *args: str, timeout: float = 60) -> str:
    ep = f"unix://{sock}"
    env = {k: v for k, v in os.environ.items() if k != "CONTAINER_RUNTIME_ENDPOINT"}
    res = subprocess.run(
        ["crictl", "--runtime-endpoint", ep, "--image-endpoint", ep, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd="/",
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"crictl {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


def prepare(sock: Path, tmp: Path, name: str) -> str:
    """Pull busybox, run a host-network pod with a sleeping container; returns its id."""
    crictl(sock, "pull", IMAGE, timeout=300)
    pod_cfg = tmp / f"{name}-pod.json"
    pod_cfg.write_text(
        json.dumps(
            {
                "metadata": {"name": f"exec-bench-{name}", "namespace": "bench", "uid": name},
                "linux": {"security_context": {"namespace_options": {"network": 2}}},
            }
        )
    )
    ctr_cfg = tmp / f"{name}-ctr.json"
    ctr_cfg.write_text(
        json.dumps(
            {
                "metadata": {"name": "sleeper"},
                "image": {"image": IMAGE},
                "command": ["sleep", "3600"],
                "linux": {},
            }
        )
    )
    pod = crictl(sock, "runp", str(pod_cfg)).strip()
    cid = crictl(sock, "create", pod, str(ctr_cfg), str(pod_cfg)).strip()
    crictl(sock, "start", cid)
    return cid


def exec_once(sock: Path, cid: str, transport: str) -> float:
    t0 = time.perf_counter()
    out = crictl(sock, "exec", "--transport", transport, cid, "echo", "hi")
    dt = time.perf_counter() - t0
    assert out == "hi\n", out
    return dt


def teardown(sock: Path) -> None:
    for pod in crictl(sock, "pods", "-q").split():
        subprocess.run(
            ["crictl", "--runtime-endpoint", f"unix://{sock}", "stopp", pod],
            capture_output=True,
            check=False,
        )
        subprocess.run(
            ["crictl", "--runtime-endpoint", f"unix://{sock}", "rmp", "-f", pod],
            capture_output=True,
            check=False,
        )


def p90(xs: list[float]) -> float:
    return sorted(xs)[max(0, round(0.9 * len(xs)) - 1)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", "--runs", type=int, default=60, help="measured execs per runtime")
    ap.add_argument("--warmup", type=int, default=5, help="unmeasured execs per runtime first")
    # containerd 1.6 answers 403 to crictl's WebSocket (v5) exec: only SPDY compares both.
    ap.add_argument("--transport", default="spdy", choices=["spdy", "websocket"])
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    times: dict[str, list[float]] = {"crirt": [], "containerd": []}
    with ExitStack() as stack:
        base = Path(tempfile.mkdtemp(prefix="crirt-exec-bench-", dir="/var/tmp"))
        stack.callback(lambda: subprocess.run(["rm", "-rf", str(base)], check=False))
        socks = {
            "crirt": stack.enter_context(crirt(base / "crirt")),
            "containerd": stack.enter_context(containerd(base / "containerd")),
        }
        for sock in socks.values():
            stack.callback(teardown, sock)
        cids = {name: prepare(sock, base, name) for name, sock in socks.items()}
        order = list(socks)
        for _ in range(args.warmup):
            for name in order:
                exec_once(socks[name], cids[name], args.transport)
        for i in range(args.runs):
            # Alternate who goes first so neither always runs on a warmer cache.
            for name in order if i % 2 == 0 else order[::-1]:
                times[name].append(exec_once(socks[name], cids[name], args.transport))

    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    result = {
        "transport": args.transport,
        "runs": args.runs,
        "median_ms": {k: round(v, 1) for k, v in med.items()},
        "p90_ms": {k: round(p90(v) * 1000, 1) for k, v in times.items()},
        "min_ms": {k: round(min(v) * 1000, 1) for k, v in times.items()},
        "ratio_crirt_over_containerd": round(med["crirt"] / med["containerd"], 3),
    }
    print(f"crictl exec <ctr> echo hi ({args.transport}), n={args.runs} each, wall ms:")
    print(f"{'runtime':<12}{'min':>8}{'median':>9}{'p90':>8}")
    for k in times:
        r = result
        print(f"{k:<12}{r['min_ms'][k]:>8}{r['median_ms'][k]:>9}{r['p90_ms'][k]:>8}")
    print(f"ratio crirt/containerd (median): {result['ratio_crirt_over_containerd']}")
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
