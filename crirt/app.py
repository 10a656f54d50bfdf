"""Composition root: builds every object from Config, wires them, runs the server.

Start order: state dirs → image store → runtimes (probed) → monitor client → CNI → the
lifecycle (restores state) → streaming → gRPC server. SIGTERM/SIGINT stop the server only:
containers keep running under their monitors, and the next start finds them again.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

from crirt import log as crirt_log
from crirt.api.image import ImageServicer
from crirt.api.runtime import RuntimeServicer
from crirt.api.server import start_server
from crirt.config import Config
from crirt.image.service import ImageService, pinned_patterns
from crirt.linux.libc import LIBC
from crirt.monitor.client import MonitorClient
from crirt.network.cni import CniManager
from crirt.network.pod import HostMounts, HostPodNetwork
from crirt.oci.cgroups import CgroupDriver, check_slice, parse_driver
from crirt.oci.runc import OciRuntime, systemd_booted
from crirt.oci.spec import load_default_seccomp
from crirt.runtime import crash
from crirt.runtime.handlers import probe_handlers
from crirt.runtime.host import HostFacts
from crirt.runtime.rootfs import ImageRootfs
from crirt.runtime.runner import MonitoredRuntime
from crirt.runtime.service import Lifecycle
from crirt.sdnotify import Notifier
from crirt.streaming import StreamingServer

log = crirt_log.get_logger(__name__)


def native_monitor(path: str) -> str | None:
    """The native monitor to use, or None for the Python one (not configured, or not an
    executable file here: logged, crirt still works)."""
    if not path:
        return None
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        log.warning("native monitor missing; using the Python monitor", path=path)
        return None
    return path


async def build(cfg: Config) -> tuple[Lifecycle, ImageService]:
    """Every long-lived object, wired; the runtime handlers probed (only those that work on
    this host are offered, with what each supports).

    Raises:
        InvalidArgument: the configuration cannot work on this host (e.g. the systemd cgroup
            driver without systemd, or a default parent of the other driver's form).
    """
    booted = systemd_booted()
    driver = parse_driver(cfg.runtime.cgroup_driver, systemd_booted=booted)
    default_parent = driver.pod_parent(cfg.runtime.default_cgroup_parent)
    monitor_slice = None
    if booted:
        check_slice(cfg.runtime.monitor_cgroup)
        monitor_slice = cfg.runtime.monitor_cgroup
    root = Path(cfg.root)
    state = Path(cfg.state_dir)
    for d in (root, state):
        d.mkdir(parents=True, exist_ok=True, mode=0o711)
    images = ImageService.from_config(
        root, cfg.image, pinned=pinned_patterns((), cfg.runtime.pause_image)
    )
    host = HostFacts.probe(driver, default_parent, load_default_seccomp())
    runtimes: dict[str, OciRuntime] = {}
    for name, h in cfg.runtime.handlers.items():
        if shutil.which(h.path) is None:
            log.warning("runtime handler missing; disabled", handler=name, path=h.path)
            continue
        # The one place that decides how runc is called: every call of every handler, and
        # the monitors' calls (MonitorSpec.systemd_cgroup), use the driver's flag.
        runtimes[name] = OciRuntime(
            h.path,
            cfg.handler_root(name),
            timeout=cfg.runtime.runtime_timeout,
            systemd_cgroup=driver is CgroupDriver.SYSTEMD,
        )
    features = await probe_handlers(
        runtimes,
        workdir=state / "probe",
        catatonit=cfg.runtime.catatonit_path,
        cgroups_path=lambda cid: host.cgroups_path(host.default_cgroup_parent, cid),
        min_oom_score_adj=host.min_oom_score_adj,
    )
    usable = {n: f for n, f in features.items() if f.usable}
    monitor = MonitorClient(
        state / "monitor",
        monitor_path=native_monitor(cfg.runtime.monitor_path),
        systemd_slice=monitor_slice,
    )
    runtime = MonitoredRuntime(
        monitor,
        {n: rt for n, rt in runtimes.items() if n in usable},
        usable,
        cfg.runtime.default_handler,
        {n: h.path for n, h in cfg.runtime.handlers.items()},
    )
    # The attachment cache lives beside the persistent IPAM state, so a reboot (which empties
    # the state dir) cannot orphan allocated IPs; netns.create already brings lo up.
    cni = CniManager(
        cfg.network.cni_conf_dir,
        cfg.network.cni_bin_dirs,
        root / "cni" / "cache",
        timeout=cfg.network.cni_timeout,
        loopback=False,
    )
    lifecycle = Lifecycle(
        state_dir=state,
        runtime=runtime,
        network=HostPodNetwork(cni),
        mounts=HostMounts(),
        rootfs=ImageRootfs(images),
        images=images,
        host=host,
        pause_image=cfg.runtime.pause_image,
        catatonit_path=cfg.runtime.catatonit_path,
        exec_sync_output_limit=cfg.runtime.exec_sync_output_limit,
        crash_hook=crash.from_env(),
    )
    log.info("cgroups", driver=driver.value, default_parent=default_parent, v2=host.cgroup_v2)
    return lifecycle, images


# mallopt(3) M_ARENA_MAX: glibc gives each thread that contends for malloc its own arena (up to
# 8 per core), and the memory freed in one stays mapped there. The daemon's threads (gRPC's event
# engine, pull and to_thread workers) allocate little, so two arenas measured ~1 MB less idle PSS
# than the default, with no measurable cost on the RPC paths.
_M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (before threads start); False where there is no mallopt
    (another libc) or MALLOC_ARENA_MAX in the environment already decides."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = LIBC.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))


async def serve(cfg: Config) -> int:
    limit_malloc_arenas()
    # Before anything is started: it takes systemd's notification variables out of the
    # environment every child (runc, monitors, CNI plugins) would inherit.
    notifier = Notifier()
    crirt_log.setup(cfg.log_level, cfg.log_format)
    lifecycle, images = await build(cfg)
    await lifecycle.start()
    streaming = StreamingServer(cfg.streaming, lifecycle.container_ops, lifecycle.sandbox_ops)
    await streaming.start()
    metrics = None
    if cfg.metrics.enabled:
        # Off by default, as in CRI-O (enable_metrics) and containerd (metrics.address): only
        # then is prometheus_client (~3 MB, 60 modules) imported at all.
        from crirt.metrics import Metrics

        metrics = Metrics()
        metrics.watch(lifecycle)
        images.observer = metrics
        metrics.serve(cfg.metrics.address, cfg.metrics.port)
    server = await start_server(
        Path(cfg.listen),
        RuntimeServicer(cfg, lifecycle, streaming, metrics),
        ImageServicer(images),
        observer=metrics,
    )
    log.info("crirt serving", listen=cfg.listen, pid=os.getpid())
    # Type=notify units: ready once the CRI socket serves (systemd starts the kubelet, which
    # is ordered after crirt, only then), watchdog pings from this loop.
    notifier.ready(f"serving CRI on {cfg.listen}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def reload() -> None:
        notifier.reloading()
        images.reload()  # registries.conf, as CRI-O does
        notifier.ready(f"serving CRI on {cfg.listen}")

    loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
    notifier.stopping()
    log.info("crirt stopping; containers keep running")
    await server.stop(grace=5)
    await streaming.stop()
    if metrics is not None:
        metrics.stop()
    lifecycle.close()
    return 0
