"""Every crictl v1.36.0 command against one real ``crirt serve``, checking what a CRI-O user sees.

One server, one ready pod (plus a stopped one) and a few containers are shared by the whole
module; tests that change state (update, stop, rm, stopp, rmp, rmi) come after those that only
look, and the last one removes everything with ``rmp -a``/``rmi -a`` and asserts nothing is
left behind. Results are checked through ``-o json``, exit codes, cgroup files and log content.
Streaming helpers (pty, port-forward, crictl argv) come from ``test_streaming``.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cgroups import cgroup_file, controller_available, driver, unified
from tests.helpers.crirt import Crirt, find_leftovers
from tests.integration.test_streaming import (
    WEB,
    Pod,
    crictl_argv,
    http_get,
    in_container,
    port_forward,
    run_crictl,
    run_in_pty,
    wait_for,
)

pytestmark = [pytest.mark.root, pytest.mark.testbed]

BUSYBOX = "docker.io/library/busybox:latest"
UNUSED = "docker.io/k8s-staging-cri-tools/test-image-1:latest"  # no container: prune drops it
PINNED = "docker.io/k8s-staging-cri-tools/test-image-2:latest"  # [image] pinned_images
FRESH_IMAGE = "docker.io/k8s-staging-cri-tools/test-image-3:latest"  # the created container's
MAIN_SCRIPT = (
    "echo line1; echo line2 >&2; sleep 0.1; echo line3; trap 'exit 0' TERM; sleep 3600 & wait"
)
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z ")


# ----- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(testbed: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crirt]:
    base = Path(tmp_path_factory.mktemp("mx", numbered=True))  # short: socket path limit
    server = Crirt(base, extra_args=("--image-pinned-images", PINNED))
    server.start()
    try:
        for image in (BUSYBOX, UNUSED, PINNED, FRESH_IMAGE):
            server.crictl("pull", image)
        yield server
        # Also when only some tests ran: what they left goes, and leaves nothing behind.
        server.crictl("rmp", "-a", "-f")
        assert find_leftovers(server, every_id(server)) == {}
    finally:
        server.cleanup()


def every_id(srv: Crirt) -> list[str]:
    """Every pod and container id the server ever logged (image ids too: harmless here)."""
    return sorted(set(re.findall(r"\b[0-9a-f]{64}\b", srv.log_file.read_text())))


def crictl_json(srv: Crirt, *args: str) -> Any:
    return json.loads(srv.crictl(*args))


def ids(out: str) -> set[str]:
    return set(out.split())


def pod_config(srv: Crirt, name: str, namespace: str, labels: dict[str, str]) -> Path:
    logs = srv.base / "logs" / name
    logs.mkdir(parents=True, exist_ok=True)
    cfg = srv.base / f"{name}-pod.json"
    meta = {"name": name, "namespace": namespace, "uid": f"{name}-uid"}
    cfg.write_text(
        json.dumps({"metadata": meta, "log_directory": str(logs), "labels": labels, "linux": {}})
    )
    return cfg


def ctr_config(srv: Crirt, name: str, cmd: list[str], **extra: object) -> Path:
    cfg = srv.base / f"{name}-ctr.json"
    doc = {"metadata": {"name": name}, "image": {"image": BUSYBOX}, "command": cmd}
    cfg.write_text(json.dumps({**doc, "log_path": f"{name}.log", "linux": {}, **extra}))
    return cfg


def unix_ns(rfc3339: str) -> int:
    """Nanoseconds since the epoch of crictl's RFC 3339 times (``…:05.123456789Z``)."""
    whole, _, frac = rfc3339.rstrip("Z").partition(".")
    secs = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.UTC)
    return int(secs.timestamp()) * 10**9 + int(frac.ljust(9, "0"))


def state_of(srv: Crirt, cid: str) -> str:
    return str(crictl_json(srv, "inspect", cid)["status"]["state"])


@pytest.fixture(scope="module")
def pod(srv: Crirt) -> Pod:
    cfg = pod_config(srv, "matrix", "mx-ns", {"app": "matrix", "tier": "backend"})
    return Pod(srv, srv.crictl("runp", str(cfg)).strip(), cfg)


@pytest.fixture(scope="module")
def stopped_pod(srv: Crirt, pod: Pod) -> str:
    """A second pod, created after ``pod`` and stopped: NotReady, other namespace and label."""
    cfg = pod_config(srv, "stopped", "other-ns", {"app": "other"})
    sid = srv.crictl("runp", str(cfg)).strip()
    srv.crictl("stopp", sid)
    return sid


@pytest.fixture(scope="module")
def main(srv: Crirt, pod: Pod) -> str:
    """Running, labelled role=main; wrote line1 (stdout), line2 (stderr), then line3."""
    cid = pod.container("main", ["sh", "-c", MAIN_SCRIPT], labels={"role": "main"})
    wait_for(lambda: "line3" in srv.crictl("logs", cid))
    return cid


@pytest.fixture(scope="module")
def done(srv: Crirt, pod: Pod, main: str) -> str:
    cid = pod.container("done", ["true"])
    wait_for(lambda: state_of(srv, cid) == "CONTAINER_EXITED")
    return cid


@pytest.fixture(scope="module")
def fresh(srv: Crirt, pod: Pod, done: str) -> str:
    """Created from another image and never started; the newest container of the pod."""
    cfg = ctr_config(srv, "fresh", ["sleep", "1"], image={"image": FRESH_IMAGE})
    return srv.crictl("create", pod.id, str(cfg), str(pod.config)).strip()


# ----- runtime, config -------------------------------------------------------------------------


def test_version(srv: Crirt) -> None:
    fields = dict(line.split(":", 1) for line in srv.crictl("version").splitlines())
    assert {k: v.strip() for k, v in fields.items()} == {
        "Version": "0.1.0",
        "RuntimeName": "crirt",
        "RuntimeVersion": "0.1.0",
        "RuntimeApiVersion": "v1",
    }


def test_info_reports_runtime_and_network_ready(srv: Crirt) -> None:
    conditions = crictl_json(srv, "info", "-o", "json")["status"]["conditions"]
    assert {c["type"]: c["status"] for c in conditions} == {
        "RuntimeReady": True,
        "NetworkReady": True,
    }


def test_info_shows_the_effective_config(srv: Crirt) -> None:
    assert crictl_json(srv, "info", "-o", "json")["config"]["root"] == str(srv.root)


def test_runtime_config_reports_the_cgroup_driver(srv: Crirt) -> None:
    # The driver the server runs with (tests.helpers.cgroups.driver), as the kubelet reads it.
    want = driver().upper()
    assert srv.crictl("runtime-config").split() == ["cgroup", "driver:", want]
    # crictl info says what it became on this host, the default parent included
    cgroups = crictl_json(srv, "info", "-o", "json")["cgroups"]
    assert cgroups["driver"] == driver()
    assert cgroups["version"] == (2 if unified() else 1)
    assert cgroups["defaultParent"] == ("system.slice" if driver() == "systemd" else "/crirt")


def test_update_runtime_config_takes_the_pod_cidr(srv: Crirt) -> None:
    srv.crictl("update-runtime-config", "--pod-cidr", "10.123.0.0/16")
    wait_for(lambda: "10.123.0.0/16" in srv.log_file.read_text())


def test_config_set_get_list_with_a_private_file(srv: Crirt) -> None:
    cfg = srv.base / "crictl.yaml"
    cfg.write_text("")  # crictl refuses a --config that does not exist
    ep = f"unix://{srv.sock}"
    base = ["crictl", "--config", str(cfg), "config"]
    subprocess.run([*base, "--set", f"runtime-endpoint={ep}", "--set", "timeout=7"], check=True)
    subprocess.run([*base, "--set", f"image-endpoint={ep}"], check=True)
    got = subprocess.run([*base, "--get", "timeout"], capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "7"
    listed = subprocess.run([*base, "--list"], capture_output=True, text=True, check=True)
    assert f"image-endpoint         {ep}" in listed.stdout
    # The file alone now reaches the server (no endpoint flags, no /etc/crictl.yaml).
    env = {k: v for k, v in os.environ.items() if k != "CONTAINER_RUNTIME_ENDPOINT"}
    imgs = subprocess.run(
        ["crictl", "--config", str(cfg), "images", "-q"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert crictl_json(srv, "inspecti", BUSYBOX)["status"]["id"] in imgs.stdout.split()


def test_completion_script(srv: Crirt) -> None:
    assert "complete -F _crictl crictl" in srv.crictl("completion", "bash")


# ----- images ----------------------------------------------------------------------------------


def test_pull_prints_the_image_id(srv: Crirt) -> None:
    out = srv.crictl("pull", "busybox")  # short name, through registries.conf
    assert out.strip() == "Image is up to date for " + srv.crictl("images", "-q", BUSYBOX).strip()


def test_pull_of_a_missing_image_fails(srv: Crirt) -> None:
    out = srv.crictl("pull", "busybox:no-such-tag", check=False)
    assert "pulling image" in out
    assert srv.crictl("images", "-q", "busybox:no-such-tag").strip() == ""


def test_images_filter_by_reference(srv: Crirt) -> None:
    out = srv.crictl("images", "--filter", "reference=test-image-[12]", "-o", "json")
    assert {t for i in json.loads(out)["images"] for t in i["repoTags"]} == {UNUSED, PINNED}


def test_images_lists_tags_digests_and_pinned(srv: Crirt) -> None:
    listed = crictl_json(srv, "images", "-o", "json")["images"]
    by_tag = {tag: img for img in listed for tag in img["repoTags"]}
    assert set(by_tag) == {BUSYBOX, UNUSED, PINNED, FRESH_IMAGE}
    assert by_tag[BUSYBOX]["repoDigests"][0].startswith("docker.io/library/busybox@sha256:")
    assert [tag for tag, img in by_tag.items() if img["pinned"]] == [PINNED]


@pytest.mark.parametrize("how", ["tag", "short name", "id", "bare id", "IMAGE ID column"])
def test_inspecti_by_every_kind_of_name(srv: Crirt, how: str) -> None:
    image_id = srv.crictl("images", "-q", BUSYBOX).strip()
    name = {
        "tag": BUSYBOX,
        "short name": "busybox",
        "id": image_id,
        "bare id": image_id[7:],
        "IMAGE ID column": image_id[7:20],  # what `crictl images` prints
    }[how]
    status = crictl_json(srv, "inspecti", "-o", "json", name)["status"]
    assert (status["id"], status["repoTags"]) == (image_id, [BUSYBOX])


def test_inspecti_shows_the_image_config(srv: Crirt) -> None:
    info = crictl_json(srv, "inspecti", "-o", "json", BUSYBOX)["info"]
    assert (info["imageSpec"]["config"]["Cmd"], info["imageSpec"]["rootfs"]["type"]) == (
        ["sh"],
        "layers",
    )


def test_inspecti_quiet_leaves_the_config_out(srv: Crirt) -> None:
    assert "info" not in crictl_json(srv, "inspecti", "-q", "-o", "json", BUSYBOX)


def test_inspecti_of_a_missing_image_fails(srv: Crirt) -> None:
    assert "no such image" in srv.crictl("inspecti", "busybox:no-such-tag", check=False)


def test_imagefsinfo_reports_the_store(srv: Crirt) -> None:
    fs = crictl_json(srv, "imagefsinfo", "-o", "json")["status"]["imageFilesystems"][0]
    assert fs["fsId"]["mountpoint"] == str(srv.root / "storage")
    assert int(fs["usedBytes"]["value"]) > 1_000_000  # four images of ~1 MB
    assert int(fs["inodesUsed"]["value"]) > 100


# ----- pods ------------------------------------------------------------------------------------

POD_FILTERS = [
    (["--name", "matrix"], {"pod"}),
    (["--name", "^(matrix|stopped)$"], {"pod", "stopped"}),
    (["--label", "app=matrix"], {"pod"}),
    (["--label", "app=nope"], set()),
    (["--label", "app=matrix", "--label", "tier=backend"], {"pod"}),  # all must match
    (["--label", "app=matrix", "--label", "tier=nope"], set()),
    (["--state", "ready"], {"pod"}),
    (["--state", "notready"], {"stopped"}),
    (["--namespace", "mx-ns"], {"pod"}),
    (["--namespace", "other-ns"], {"stopped"}),
    (["--id", "POD_PREFIX"], {"pod"}),
    (["--latest"], {"stopped"}),
    (["--last", "2"], {"pod", "stopped"}),
    ([], {"pod", "stopped"}),
]


@pytest.mark.parametrize(("flags", "want"), POD_FILTERS, ids=lambda x: " ".join(x) or "all")
def test_pods_filters(
    srv: Crirt, pod: Pod, stopped_pod: str, flags: list[str], want: set[str]
) -> None:
    names = {pod.id: "pod", stopped_pod: "stopped"}
    flags = [pod.id[:12] if f == "POD_PREFIX" else f for f in flags]
    assert {names[i] for i in ids(srv.crictl("pods", "-q", *flags))} == want


def test_pods_table_shows_name_namespace_state_and_handler(srv: Crirt, pod: Pod) -> None:
    (row,) = [
        r for r in srv.crictl("pods", "--id", pod.id).splitlines() if r.startswith(pod.id[:13])
    ]
    assert row.split()[-5:] == ["Ready", "matrix", "mx-ns", "0", "runc"]


def test_inspectp_of_a_ready_pod(srv: Crirt, pod: Pod) -> None:
    doc = crictl_json(srv, "inspectp", "-o", "json", pod.id)
    status = doc["status"]
    assert status["state"] == "SANDBOX_READY"
    assert status["metadata"]["namespace"] == "mx-ns"
    assert status["labels"] == {"app": "matrix", "tier": "backend"}
    assert status["network"]["ip"].startswith(srv.subnet.rsplit(".", 1)[0] + ".")
    assert Path(doc["info"]["netns"]).exists()


def test_inspectp_of_a_stopped_pod(srv: Crirt, stopped_pod: str) -> None:
    status = crictl_json(srv, "inspectp", "-o", "json", stopped_pod)["status"]
    assert status["state"] == "SANDBOX_NOTREADY"


# ----- containers: create, start, ps, inspect -------------------------------------------------

PS_FILTERS = [
    ([], {"main"}),  # running only
    (["-a"], {"main", "done", "fresh"}),
    (["--name", "main"], {"main"}),
    (["-a", "--name", "^(done|fresh)$"], {"done", "fresh"}),
    (["--label", "role=main"], {"main"}),
    (["-a", "--label", "role=nope"], set()),
    (["-a", "--pod", "POD"], {"main", "done", "fresh"}),
    (["--state", "running"], {"main"}),
    (["--state", "exited"], {"done"}),
    (["--state", "created"], {"fresh"}),
    (["-a", "--image", FRESH_IMAGE], {"fresh"}),
    (["-a", "--image", "busybox"], {"main", "done"}),
    (["-a", "--image", "BUSYBOX_ID_COLUMN"], {"main", "done"}),
    (["--id", "MAIN_PREFIX"], {"main"}),
    (["--latest"], {"fresh"}),
    (["--last", "2"], {"done", "fresh"}),
]


@pytest.mark.parametrize(("flags", "want"), PS_FILTERS, ids=lambda x: " ".join(x) or "default")
def test_ps_filters(
    srv: Crirt, pod: Pod, main: str, done: str, fresh: str, flags: list[str], want: set[str]
) -> None:
    names = {main: "main", done: "done", fresh: "fresh"}
    subst = {
        "POD": pod.id,
        "MAIN_PREFIX": main[:12],
        "BUSYBOX_ID_COLUMN": srv.crictl("images", "-q", BUSYBOX).strip()[7:20],
    }
    flags = [subst.get(f, f) for f in flags]
    assert {names[i] for i in ids(srv.crictl("ps", "-q", *flags))} == want


def test_ps_json_lists_image_and_pod(srv: Crirt, pod: Pod, main: str) -> None:
    (c,) = crictl_json(srv, "ps", "-o", "json", "--id", main)["containers"]
    assert (c["podSandboxId"], c["state"], c["image"]["image"]) == (
        pod.id,
        "CONTAINER_RUNNING",
        "busybox",  # as the config named it
    )
    assert c["imageRef"].startswith("docker.io/library/busybox@sha256:")


def test_inspect_of_a_running_container(srv: Crirt, main: str) -> None:
    doc = crictl_json(srv, "inspect", "-o", "json", main)
    assert (doc["status"]["state"], doc["status"]["labels"]) == (
        "CONTAINER_RUNNING",
        {"role": "main"},
    )
    assert doc["info"]["runtimeSpec"]["process"]["args"] == ["sh", "-c", MAIN_SCRIPT]
    assert os.path.exists(f"/proc/{doc['info']['pid']}")


def test_inspect_go_template(srv: Crirt, main: str, done: str) -> None:
    out = srv.crictl(
        "inspect",
        "-o",
        "go-template",
        "--template",
        "{{range .}}{{.status.state}} {{end}}",
        main,
        done,
    )
    assert out.split() == ["CONTAINER_RUNNING", "CONTAINER_EXITED"]


def test_inspect_of_an_exited_container(srv: Crirt, done: str) -> None:
    status = crictl_json(srv, "inspect", "-o", "json", done)["status"]
    assert (status["state"], status["exitCode"], status["reason"]) == (
        "CONTAINER_EXITED",
        0,
        "Completed",
    )
    assert unix_ns(status["finishedAt"]) >= unix_ns(status["startedAt"]) > 0


def test_start_runs_a_created_container(srv: Crirt, pod: Pod) -> None:
    cfg = ctr_config(srv, "starter", ["sh", "-c", "echo started-ok; sleep 3600"])
    cid = srv.crictl("create", pod.id, str(cfg), str(pod.config)).strip()
    assert state_of(srv, cid) == "CONTAINER_CREATED"
    srv.crictl("start", cid)
    wait_for(lambda: srv.crictl("logs", cid) == "started-ok\n")
    srv.crictl("rm", "-f", cid)


def test_runp_with_each_runtime_handler(srv: Crirt) -> None:
    handlers = [
        h.get("name", "") for h in crictl_json(srv, "info", "-o", "json")["runtimeHandlers"]
    ]
    for handler in handlers:  # "" is the default: runc
        name = handler or "runc"
        cfg = pod_config(srv, f"h-{name}", "mx-ns", {"app": "handler"})
        sid = srv.crictl("runp", *(["--runtime", handler] if handler else []), str(cfg)).strip()
        cid = Pod(srv, sid, cfg).container(f"in-{name}", ["echo", f"hi from {name}"])
        wait_for(lambda: srv.crictl("logs", cid) == f"hi from {name}\n")  # noqa: B023
        assert srv.crictl("pods", "--id", sid).split()[-1] == name  # the RUNTIME column
        srv.crictl("rmp", "-f", sid)


def test_runp_with_an_unknown_runtime_handler_fails(srv: Crirt) -> None:
    cfg = pod_config(srv, "nohandler", "mx-ns", {"app": "nohandler"})
    assert "unknown runtime handler 'nope'" in srv.crictl(
        "runp", "-r", "nope", str(cfg), check=False
    )
    assert srv.crictl("pods", "-q", "--name", "nohandler") == ""


def test_run_creates_a_pod_and_a_running_container(srv: Crirt) -> None:
    pcfg = pod_config(srv, "runpod", "mx-ns", {"app": "run"})
    cfg = ctr_config(srv, "runner", ["sleep", "3600"])
    cid = srv.crictl("run", str(cfg), str(pcfg)).strip()
    status = crictl_json(srv, "inspect", "-o", "json", cid)
    (sid,) = ids(srv.crictl("pods", "-q", "--name", "runpod"))
    assert (status["status"]["state"], status["info"]["sandboxID"]) == ("CONTAINER_RUNNING", sid)
    # rmp --force stops and removes the pod with its running container
    srv.crictl("rmp", "-f", sid)
    assert (srv.crictl("pods", "-q", "--id", sid), srv.crictl("ps", "-aq", "--id", cid)) == (
        "",
        "",
    )


# ----- logs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "out", "err"),
    [
        ([], b"line1\nline3\n", b"line2\n"),
        (["--tail", "1"], b"line3\n", b""),
        (["--stream", "stderr"], b"", b"line2\n"),
        (["--since", "LINE3_TIME"], b"line3\n", b""),
    ],
    ids=["both streams", "tail", "stream", "since"],
)
def test_logs(srv: Crirt, main: str, flags: list[str], out: bytes, err: bytes) -> None:
    raw = (srv.base / "logs" / "matrix" / "main.log").read_text().splitlines()
    line3_time = next(line.split()[0] for line in raw if line.endswith(" line3"))
    res = run_crictl(srv, "logs", *[line3_time if f == "LINE3_TIME" else f for f in flags], main)
    assert (res.returncode, res.stdout, res.stderr) == (0, out, err)


def test_logs_timestamps(srv: Crirt, main: str) -> None:
    lines = srv.crictl("logs", "-t", main).splitlines()
    assert [TS.sub("", line) for line in lines if TS.match(line)] == ["line1", "line3"]


def test_logs_previous_reads_the_former_attempt(srv: Crirt, pod: Pod) -> None:
    # The kubelet's layout: <pod log dir>/<name>/<attempt>.log, one container per attempt
    (srv.base / "logs" / "matrix" / "again").mkdir()
    attempts = []
    for attempt in (0, 1):
        cid = pod.container(
            f"again-{attempt}",
            ["echo", f"attempt {attempt}"],
            metadata={"name": "again", "attempt": attempt},
            log_path=f"again/{attempt}.log",
        )
        wait_for(lambda: state_of(srv, cid) == "CONTAINER_EXITED")  # noqa: B023
        attempts.append(cid)
    assert (srv.crictl("logs", attempts[1]), srv.crictl("logs", "-p", attempts[1])) == (
        "attempt 1\n",
        "attempt 0\n",
    )


def test_logs_follow_streams_until_the_container_exits(srv: Crirt, pod: Pod) -> None:
    cid = pod.container("follow", ["sh", "-c", "echo first; sleep 1; echo second"])
    t0 = time.monotonic()
    res = run_crictl(srv, "logs", "-f", cid, timeout=20)
    assert (res.returncode, res.stdout) == (0, b"first\nsecond\n")
    assert time.monotonic() - t0 < 10


def test_logs_reopen_after_rotation(srv: Crirt, pod: Pod) -> None:
    # Given a container writing a line every 0.1 s, whose log the test rotates away
    cid = pod.container(
        "rotor", ["sh", "-c", "i=0; while true; do echo n$i; i=$((i+1)); sleep 0.1; done"]
    )
    log = srv.base / "logs" / "matrix" / "rotor.log"
    wait_for(lambda: log.exists() and log.stat().st_size > 0)
    log.rename(log.with_suffix(".log.1"))
    # When crictl asks the runtime to reopen it (ReopenContainerLog, as the kubelet does)
    srv.crictl("logs", "--reopen", cid)
    # Then the new lines land in a new file at the configured path
    wait_for(lambda: log.exists() and log.read_text().count("\n") >= 3)
    assert all(re.fullmatch(r"\S+ stdout F n\d+", line) for line in log.read_text().splitlines())
    srv.crictl("rm", "-f", cid)


# ----- exec, attach, port-forward --------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["-s"], "exited with 7: oops"),
        ([], "command terminated with exit code 7"),
        (["--transport", "websocket"], "command terminated with exit code 7"),
    ],
    ids=["sync", "spdy", "websocket"],
)
def test_exec_reports_the_exit_code(srv: Crirt, main: str, flags: list[str], expected: str) -> None:
    res = run_crictl(srv, "exec", *flags, main, "sh", "-c", "echo oops >&2; exit 7")
    assert (res.returncode, expected in res.stderr.decode()) == (1, True)


@pytest.mark.parametrize(
    ("flags", "tail"),
    # -s prints stdout and then stderr, each with a newline
    [(["-s"], b"\n\n"), ([], b""), (["--transport", "websocket"], b"")],
    ids=["sync", "spdy", "websocket"],
)
def test_exec_output(srv: Crirt, main: str, flags: list[str], tail: bytes) -> None:
    res = run_crictl(srv, "exec", *flags, main, "sh", "-c", "echo $((6*7)); id -u; pwd")
    assert (res.returncode, res.stdout) == (0, b"42\n0\n/\n" + tail)


def test_exec_selects_containers_by_filter(srv: Crirt, pod: Pod, main: str) -> None:
    # No id: crictl lists the pod's running containers named main (one), runs it there and
    # prints the container's id before its output
    res = run_crictl(srv, "exec", "-s", "--pod", pod.id, "--name", "^main$", "cat", "/etc/hostname")
    assert (res.returncode, res.stdout) == (0, main.encode() + b":\nmatrix\n\n\n")


def test_exec_sync_timeout(srv: Crirt, main: str) -> None:
    t0 = time.monotonic()
    res = run_crictl(srv, "exec", "-s", "--timeout", "1", main, "sleep", "30")
    assert (res.returncode, b"timed out" in res.stderr) == (1, True)
    assert time.monotonic() - t0 < 10


def test_exec_interactive_without_tty(srv: Crirt, main: str) -> None:
    res = run_crictl(srv, "exec", "-i", main, "sh", input=b"echo in-$((6*7)); [ -t 0 ]; exit $?\n")
    # stdin reached the shell, which had no terminal ([ -t 0 ] failed: exit 1)
    assert (res.stdout, b"command terminated with exit code 1" in res.stderr) == (b"in-42\n", True)


def test_exec_interactive_with_tty(srv: Crirt, main: str) -> None:
    argv = crictl_argv(srv, "exec", "-it", main, "sh")
    rc, out = run_in_pty(argv, [b"tty; exit 3\r"], cols=80, rows=24, ready=b"# ")
    assert (rc, b"/dev/pts/" in out, b"exit code 3" in out) == (1, True, True)


def test_attach_streams_the_output(srv: Crirt, pod: Pod) -> None:
    cid = pod.container(
        "ticker", ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"]
    )
    proc = subprocess.Popen(crictl_argv(srv, "attach", cid), stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        got = b""
        deadline = time.monotonic() + 10
        while got.count(b"\n") < 3 and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 0.2)[0]:
                got += os.read(proc.stdout.fileno(), 4096)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    # Only what the container printed after attaching: live ticks, in order
    ticks = [int(m) for m in re.findall(rb"tick (\d+)\n", got)]
    assert len(ticks) >= 3
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))
    srv.crictl("rm", "-f", cid)


def test_attach_interactive_feeds_stdin(srv: Crirt, pod: Pod) -> None:
    cid = pod.container("reader", ["sh"], stdin=True, stdin_once=True)
    res = run_crictl(srv, "attach", "-i", cid, input=b"echo via-attach-$((6*7))\n")
    assert (res.returncode, res.stdout) == (0, b"via-attach-42\n")
    wait_for(lambda: state_of(srv, cid) == "CONTAINER_EXITED")  # stdin_once: EOF ended sh


def test_port_forward_reaches_a_listener_in_the_pod(srv: Crirt, pod: Pod) -> None:
    web = pod.container(
        "web", ["sh", "-c", WEB.format(body="matrix-pf") + " && exec httpd -f -p 8080 -h /www"]
    )
    wait_for(lambda: "httpd" in in_container(srv, web, "ps"))
    with port_forward(srv, "spdy", pod.id, 8080) as local:
        assert http_get(local) == b"matrix-pf\n"
    srv.crictl("rm", "-f", web)


# ----- stats, metrics, update ------------------------------------------------------------------


def test_stats_of_a_container(srv: Crirt, main: str) -> None:
    (s,) = crictl_json(srv, "stats", "-o", "json", "--id", main)["stats"]
    assert s["attributes"]["id"] == main
    assert int(s["cpu"]["usageCoreNanoSeconds"]["value"]) > 0
    assert int(s["memory"]["workingSetBytes"]["value"]) > 0


def test_stats_count_the_writable_layer(srv: Crirt, pod: Pod) -> None:
    script = "head -c 2000000 /dev/zero > /big; mkdir /d; touch /d/a /d/b; sleep 3600"
    cid = pod.container("writer", ["sh", "-c", script])
    wait_for(lambda: in_container(srv, cid, "test -e /d/b && echo ok") == "ok\n")
    (s,) = crictl_json(srv, "stats", "-o", "json", "--id", cid)["stats"]
    layer = s["writableLayer"]
    assert (int(layer["usedBytes"]["value"]) >= 2_000_000, int(layer["inodesUsed"]["value"])) == (
        True,
        4,  # /big, /d, /d/a, /d/b
    )
    srv.crictl("rm", "-f", cid)


@pytest.mark.parametrize(
    ("flags", "want"),
    [(["--label", "role=main"], {"main"}), (["-a", "--id", "DONE"], {"done"})],
    ids=["label", "all+id"],
)
def test_stats_filters(srv: Crirt, main: str, done: str, flags: list[str], want: set[str]) -> None:
    names = {main: "main", done: "done"}
    flags = [done if f == "DONE" else f for f in flags]
    got = crictl_json(srv, "stats", "-o", "json", *flags)["stats"]
    assert {names.get(s["attributes"]["id"], "?") for s in got} == want


def test_statsp_of_the_pod(srv: Crirt, pod: Pod, main: str) -> None:
    (s,) = crictl_json(srv, "statsp", "-o", "json", "--id", pod.id)["stats"]
    linux = s["linux"]
    assert s["attributes"]["metadata"]["name"] == "matrix"
    assert "main" in {c["attributes"]["metadata"]["name"] for c in linux["containers"]}
    assert linux["network"]["defaultInterface"]["name"] == "eth0"
    (ctr,) = [c for c in linux["containers"] if c["attributes"]["id"] == main]
    # The pod's figures include its (idle) containers'
    assert int(linux["cpu"]["usageCoreNanoSeconds"]["value"]) >= int(
        ctr["cpu"]["usageCoreNanoSeconds"]["value"]
    )


def test_statsp_label_filter(srv: Crirt, pod: Pod, stopped_pod: str) -> None:
    got = crictl_json(srv, "statsp", "-o", "json", "--label", "app=matrix")["stats"]
    assert [s["attributes"]["id"] for s in got] == [pod.id]


def test_metricsp_lists_the_pod_and_its_containers(srv: Crirt, pod: Pod, main: str) -> None:
    pods = {p["podSandboxId"]: p for p in crictl_json(srv, "metricsp")["podMetrics"]}
    ctrs = {c["containerId"]: c for c in pods[pod.id]["containerMetrics"]}
    assert "container_cpu_usage_seconds_total" in {m["name"] for m in ctrs[main]["metrics"]}


def test_metricdescs_lists_cadvisor_names(srv: Crirt) -> None:
    names = {d["name"] for d in crictl_json(srv, "metricdescs")["descriptors"]}
    assert {"container_cpu_usage_seconds_total", "container_memory_working_set_bytes"} <= names


def cgroup_value(srv: Crirt, cid: str, v1: str, v2: str) -> str:
    """A container's cgroup file (``v1`` is ``controller/file``) by its OCI cgroupsPath."""
    path = crictl_json(srv, "inspect", cid)["info"]["runtimeSpec"]["linux"]["cgroupsPath"]
    return cgroup_file(path, v1, v2).read_text().strip()


@pytest.mark.parametrize(
    ("flags", "v1", "v2", "want_v1", "want_v2"),
    [
        (
            ["--memory", "67108864"],
            "memory/memory.limit_in_bytes",
            "memory.max",
            "67108864",
            "67108864",
        ),
        (
            ["--cpu-quota", "20000", "--cpu-period", "100000"],
            "cpu/cpu.cfs_quota_us",
            "cpu.max",
            "20000",
            "20000 100000",
        ),
        (
            ["--cpu-period", "50000", "--cpu-quota", "10000"],
            "cpu/cpu.cfs_period_us",
            "cpu.max",
            "50000",
            "10000 50000",
        ),
        # v2: the kubelet's map of 512 shares (crirt.oci.spec.cpu_weight), whatever runc's is
        (["--cpu-share", "512"], "cpu/cpu.shares", "cpu.weight", "512", "20"),
        (["--cpuset-cpus", "0"], "cpuset/cpuset.cpus", "cpuset.cpus", "0", "0"),
    ],
    ids=["memory", "cpu-quota", "cpu-period", "cpu-share", "cpuset-cpus"],
)
def test_update_changes_the_cgroup(
    srv: Crirt, main: str, flags: list[str], v1: str, v2: str, want_v1: str, want_v2: str
) -> None:
    if "cpuset" in v2 and not controller_available("cpuset"):
        pytest.skip("no cpuset controller on this kernel (user-mode Linux has none)")
    assert srv.crictl("update", *flags, main).strip() == main
    assert cgroup_value(srv, main, v1, v2) == (want_v2 if unified() else want_v1)


def test_update_is_reported_by_inspect(srv: Crirt, main: str) -> None:
    srv.crictl("update", "--memory", "100000000", main)
    linux = crictl_json(srv, "inspect", main)["status"]["resources"]["linux"]
    assert linux["memoryLimitInBytes"] == "100000000"


# ----- events, checkpoint ----------------------------------------------------------------------


def read_events(proc: subprocess.Popen[bytes], buf: bytearray, timeout: float) -> list[Any]:
    """The complete JSON objects ``crictl events`` printed within ``timeout`` (rest kept)."""
    assert proc.stdout is not None
    if select.select([proc.stdout], [], [], timeout)[0]:
        buf += os.read(proc.stdout.fileno(), 65536)
    out, dec = [], json.JSONDecoder()
    text = buf.decode()
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        try:
            obj, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
        out.append(obj)
    del buf[: len(text[:pos].encode())]
    return out


def test_events_streams_a_containers_lifecycle(srv: Crirt, pod: Pod) -> None:
    proc = subprocess.Popen(crictl_argv(srv, "events"), stdout=subprocess.PIPE)
    buf = bytearray()
    seen: list[tuple[str, str]] = []
    try:
        # Until crictl is subscribed, nothing is streamed: create until the creation shows.
        cid = ""
        deadline = time.monotonic() + 15
        while not any(i == cid for i, _ in seen):
            assert time.monotonic() < deadline, f"no events: {seen}"
            if cid:
                srv.crictl("rm", cid)
            cfg = ctr_config(srv, "evented", ["sh", "-c", "exit 0"])
            cid = srv.crictl("create", pod.id, str(cfg), str(pod.config)).strip()
            seen += [(e["containerId"], e["containerEventType"]) for e in read_events(proc, buf, 1)]
        srv.crictl("start", cid)
        wait_for(lambda: state_of(srv, cid) == "CONTAINER_EXITED")
        srv.crictl("rm", cid)
        deadline = time.monotonic() + 10
        while (cid, "CONTAINER_DELETED_EVENT") not in seen and time.monotonic() < deadline:
            seen += [(e["containerId"], e["containerEventType"]) for e in read_events(proc, buf, 1)]
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    assert [t for i, t in seen if i == cid] == [
        "CONTAINER_CREATED_EVENT",
        "CONTAINER_STARTED_EVENT",
        "CONTAINER_STOPPED_EVENT",
        "CONTAINER_DELETED_EVENT",
    ]


def test_checkpoint_is_refused_and_the_container_keeps_running(srv: Crirt, main: str) -> None:
    # CRIU cannot dump on this kernel (vDSO), so CRI-O would fail too; crirt says Unimplemented.
    out = srv.crictl("checkpoint", "--export", str(srv.base / "ckpt.tar"), main, check=False)
    assert "Unimplemented" in out
    assert state_of(srv, main) == "CONTAINER_RUNNING"


# ----- stop, rm, stopp, rmp, rmi -----------------------------------------------------------------


def test_stop_is_graceful(srv: Crirt, main: str) -> None:
    srv.crictl("stop", "-t", "10", main)
    status = crictl_json(srv, "inspect", main)["status"]
    assert (status["state"], status["exitCode"]) == ("CONTAINER_EXITED", 0)  # the TERM trap ran


def test_stop_of_a_stopped_container_is_a_no_op(srv: Crirt, main: str) -> None:
    finished = crictl_json(srv, "inspect", main)["status"]["finishedAt"]
    assert srv.crictl("stop", main).strip() == main
    assert crictl_json(srv, "inspect", main)["status"]["finishedAt"] == finished


def test_stop_kills_after_the_timeout(srv: Crirt, pod: Pod) -> None:
    cid = pod.container("stubborn", ["sh", "-c", "trap '' TERM; sleep 3600 & wait"])
    srv.crictl("stop", "-t", "1", cid)
    assert crictl_json(srv, "inspect", cid)["status"]["exitCode"] == 137  # SIGKILL
    srv.crictl("rm", cid)


def test_rm_removes_an_exited_container(srv: Crirt, done: str) -> None:
    srv.crictl("rm", done)
    assert srv.crictl("ps", "-aq", "--id", done) == ""


def test_rm_refuses_a_running_container_without_force(srv: Crirt, pod: Pod) -> None:
    cid = pod.container("busy", ["sleep", "3600"])
    assert "please stop it first" in srv.crictl("rm", cid, check=False)
    assert state_of(srv, cid) == "CONTAINER_RUNNING"
    srv.crictl("rm", "-f", cid)


def test_rm_force_removes_a_running_container(srv: Crirt, pod: Pod) -> None:
    cid = pod.container("doomed", ["sleep", "3600"])
    pid = crictl_json(srv, "inspect", cid)["info"]["pid"]
    srv.crictl("rm", "-f", cid)
    assert (srv.crictl("ps", "-aq", "--id", cid), os.path.exists(f"/proc/{pid}")) == ("", False)


def test_stopp_stops_the_pods_containers(srv: Crirt, pod: Pod) -> None:
    cfg = pod_config(srv, "stopme", "mx-ns", {"app": "stopme"})
    sid = srv.crictl("runp", str(cfg)).strip()
    cid = Pod(srv, sid, cfg).container("inside", ["sleep", "3600"])
    srv.crictl("stopp", sid)
    assert (crictl_json(srv, "inspectp", sid)["status"]["state"], state_of(srv, cid)) == (
        "SANDBOX_NOTREADY",
        "CONTAINER_EXITED",
    )
    srv.crictl("rmp", sid)
    assert srv.crictl("ps", "-aq", "--pod", sid) == ""


def test_rmp_refuses_a_ready_pod_without_force(srv: Crirt, pod: Pod) -> None:
    assert "is running, please stop it first" in srv.crictl("rmp", pod.id, check=False)
    assert crictl_json(srv, "inspectp", pod.id)["status"]["state"] == "SANDBOX_READY"


@pytest.fixture(scope="module")
def unused_digest(srv: Crirt) -> str:
    """The repo digest of UNUSED, taken while it is still there."""
    return str(crictl_json(srv, "inspecti", "-o", "json", UNUSED)["status"]["repoDigests"][0])


def test_rmi_by_the_image_id_column(srv: Crirt, unused_digest: str) -> None:
    image_id = srv.crictl("images", "-q", UNUSED).strip()
    assert srv.crictl("rmi", image_id[7:20]).strip() == f"Deleted: {UNUSED}"
    assert srv.crictl("images", "-q", UNUSED) == ""


def test_pull_by_digest_has_no_tag(srv: Crirt, unused_digest: str) -> None:
    digest = unused_digest
    srv.crictl("pull", digest)
    (img,) = [
        i for i in crictl_json(srv, "images", "-o", "json")["images"] if digest in i["repoDigests"]
    ]
    assert (img["repoTags"], img["repoDigests"]) == ([], [digest])


def test_rmi_refuses_an_image_in_use(srv: Crirt, fresh: str) -> None:
    assert "in use" in srv.crictl("rmi", FRESH_IMAGE, check=False)
    assert srv.crictl("images", "-q", FRESH_IMAGE) != ""


def test_rmi_prune_keeps_images_in_use_and_pinned(
    srv: Crirt, fresh: str, unused_digest: str
) -> None:
    out = srv.crictl("rmi", "--prune")
    assert out.strip() == f"Deleted: {unused_digest}"  # the untagged image by its digest
    tags = {t for i in crictl_json(srv, "images", "-o", "json")["images"] for t in i["repoTags"]}
    assert tags == {BUSYBOX, PINNED, FRESH_IMAGE}


def test_rmp_all_and_rmi_all_leave_nothing_behind(srv: Crirt) -> None:
    srv.crictl("rmp", "-a", "-f")
    assert (srv.crictl("pods", "-q"), srv.crictl("ps", "-aq")) == ("", "")
    srv.crictl("rmi", "-a")
    assert srv.crictl("images", "-q") == ""
    assert find_leftovers(srv, every_id(srv)) == {}
