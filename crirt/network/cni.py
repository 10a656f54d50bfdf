"""CNI client: attach pods to the network of the first valid config in the config directory.

Flow per pod (containerd's order): ADD the built-in loopback network on ``lo``, then ADD every
plugin of the config list on ``eth0`` in order, chaining ``prevResult``. Before the first ADD the
config, the CNI args and the port mappings are written to ``<cache_dir>/<pod_id>.json``; the
final result is added after the last one. Teardown reads only that file, so it works after a
restart and after the config directory changed, and DELs in reverse order. A failed setup DELs
what it started before raising, and leaves no cache behind when that rollback succeeds.

Callers serialize setup/teardown of one pod (the runtime service holds a per-pod lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from crirt import log as _log
from crirt.errors import DeadlineExceeded, Internal, InvalidArgument, NotFound, Unavailable
from crirt.network import netns
from crirt.sansio import cni as wire
from crirt.sansio.cni import (
    CriPortMapping,
    NetworkConfigList,
    NetworkResult,
    PortMapping,
    RuntimeConf,
)

log = _log.get_logger(__name__)

_CACHE_VERSION = 1
_POD_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
# Added to an inherited PATH that lacks them: portmap needs iptables from /usr/sbin.
_STD_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


class PluginExec(Protocol):
    """Runs one plugin binary; returns ``(returncode, stdout, stderr)``.

    Raises:
        TimeoutError: the plugin did not finish within ``timeout`` (it has been killed).
    """

    async def __call__(
        self, binary: str, env: Mapping[str, str], stdin: bytes, timeout: float
    ) -> tuple[int, bytes, bytes]: ...


async def exec_plugin(
    binary: str, env: Mapping[str, str], stdin: bytes, timeout: float
) -> tuple[int, bytes, bytes]:
    """The real ``PluginExec``: no inherited fds or environment, own session, killed on timeout.

    Raises:
        TimeoutError: the plugin did not finish in time; it was killed and reaped.
        OSError: the binary could not be started.
    """
    proc = await asyncio.create_subprocess_exec(
        binary,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        close_fds=True,
        cwd="/",
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except BaseException:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
        raise
    assert proc.returncode is not None
    return proc.returncode, out, err


@dataclass(frozen=True)
class _Attachment:
    """One pod's cache entry: everything DEL needs, independent of the config directory."""

    pod_id: str
    net: NetworkConfigList
    rt: RuntimeConf
    loopback: bool
    result: Mapping[str, Any] | None

    def encode(self) -> bytes:
        doc = {
            "version": _CACHE_VERSION,
            "podId": self.pod_id,
            "containerId": self.rt.container_id,
            "ifName": self.rt.ifname,
            "args": [list(a) for a in self.rt.args],
            "capabilityArgs": dict(self.rt.capability_args),
            "loopback": self.loopback,
            "config": dict(self.net.raw),
            "source": self.net.source,
            "result": dict(self.result) if self.result is not None else None,
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes, where: str) -> _Attachment:
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("version") != _CACHE_VERSION:
                raise ValueError("unknown cache format")
            net = wire.config_from_raw(doc["config"], str(doc.get("source", where)))
            rt = RuntimeConf(
                container_id=str(doc["containerId"]),
                netns="",
                ifname=str(doc["ifName"]),
                args=tuple((str(k), str(v)) for k, v in doc["args"]),
                capability_args=dict(doc["capabilityArgs"]),
            )
            result = doc.get("result")
            return cls(
                pod_id=str(doc["podId"]),
                net=net,
                rt=rt,
                loopback=bool(doc.get("loopback", True)),
                result=result if isinstance(result, dict) else None,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise Internal(f"corrupt CNI cache {where}: {exc}") from exc


def _plugin_path() -> str:
    inherited = [p for p in os.environ.get("PATH", "").split(":") if p]
    return ":".join(inherited + [p for p in _STD_PATH if p not in inherited])


class CniManager:
    """Reads the CNI config directory and attaches/detaches pods (no module state).

    Args:
        conf_dir: the ``*.conflist``/``*.conf``/``*.json`` directory; the lexically first valid
            file wins, as in libcni.
        bin_dirs: plugin directories, searched in order (also passed as ``CNI_PATH``).
        cache_dir: where each pod's attachment is recorded for teardown.
        ifname: the pod-side interface name.
        timeout: seconds allowed to each plugin execution.
        reload_interval: how long a directory scan is reused by ``status``/``setup``.
        loopback: attach the built-in loopback network first (containerd does).
        executor: runs plugins; tests pass a fake.
    """

    def __init__(
        self,
        conf_dir: str | Path,
        bin_dirs: Sequence[str | Path],
        cache_dir: str | Path,
        *,
        ifname: str = "eth0",
        timeout: float = 60.0,
        reload_interval: float = 2.0,
        loopback: bool = True,
        executor: PluginExec | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._conf_dir = Path(conf_dir)
        self._bin_dirs = [str(d) for d in bin_dirs]
        self._cache_dir = Path(cache_dir)
        self._ifname = ifname
        self._timeout = timeout
        self._reload_interval = reload_interval
        self._loopback = loopback
        self._exec: PluginExec = executor if executor is not None else exec_plugin
        self._clock = clock
        self._path_env = _plugin_path()
        self._scanned_at: float | None = None
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._net: NetworkConfigList | None = None
        self._ready = False
        self._reason = "CNI config not loaded yet"

    # --- configuration and readiness ------------------------------------------------------------

    @property
    def network(self) -> NetworkConfigList | None:
        """The config list new pods are attached to (None if none is valid)."""
        self._refresh()
        return self._net

    def status(self) -> tuple[bool, str]:
        """``(ready, reason)`` for the NetworkReady condition; reason is "" when ready."""
        self._refresh()
        return self._ready, self._reason

    def reload(self) -> None:
        """Rescan the config directory and plugin binaries now."""
        self._refresh(force=True)

    def _find_plugin(self, ptype: str) -> str | None:
        for d in self._bin_dirs:
            candidate = os.path.join(d, ptype)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
        return None

    def _scan(self) -> tuple[tuple[tuple[str, int, int], ...], list[tuple[str, Path]]]:
        entries: list[tuple[str, int, int]] = []
        paths: list[tuple[str, Path]] = []
        with os.scandir(self._conf_dir) as it:
            for e in it:
                if not e.name.endswith(wire.CONFIG_EXTENSIONS):
                    continue
                try:
                    st = e.stat()
                except OSError:
                    continue
                entries.append((e.name, st.st_mtime_ns, st.st_size))
                paths.append((e.name, Path(e.path)))
        return tuple(sorted(entries)), paths

    def _refresh(self, *, force: bool = False) -> None:
        now = self._clock()
        if (
            not force
            and self._scanned_at is not None
            and now - self._scanned_at < self._reload_interval
        ):
            return
        self._scanned_at = now
        try:
            signature, paths = self._scan()
        except OSError as exc:
            self._net, self._signature = None, None
            self._ready, self._reason = False, f"no network config found in {self._conf_dir}: {exc}"
            return
        if force or signature != self._signature:
            files: list[tuple[str, bytes]] = []
            unreadable: list[str] = []
            for name, path in paths:
                try:
                    files.append((name, path.read_bytes()))
                except OSError as exc:
                    unreadable.append(f"{name}: {exc}")
            net, skipped = wire.select_config(files)
            self._net, self._signature = net, signature
            if net is None:
                why = "; ".join(unreadable + skipped)
                self._ready = False
                self._reason = f"no network config found in {self._conf_dir}" + (
                    f" (invalid: {why})" if why else ""
                )
                return
        if self._net is None:
            return
        types = (["loopback"] if self._loopback else []) + self._net.plugin_types
        missing = [t for t in dict.fromkeys(types) if self._find_plugin(t) is None]
        if missing:
            self._ready = False
            self._reason = (
                f"network {self._net.name!r} ({self._net.source}): CNI plugin(s) "
                f"{', '.join(missing)} not found in {':'.join(self._bin_dirs)}"
            )
        else:
            self._ready, self._reason = True, ""

    # --- the cache ------------------------------------------------------------------------------

    def cached_pods(self) -> list[str]:
        """Pod ids with a recorded attachment (for garbage collection at start-up)."""
        if not self._cache_dir.is_dir():
            return []
        return sorted(
            p.stem
            for p in self._cache_dir.glob("*.json")
            if not p.name.startswith(".") and _POD_ID_RE.match(p.stem)
        )

    def _cache_path(self, pod_id: str) -> Path:
        if not _POD_ID_RE.match(pod_id):
            raise InvalidArgument(f"invalid pod id {pod_id!r}")
        return self._cache_dir / f"{pod_id}.json"

    def _write_cache(self, att: _Attachment) -> None:
        path = self._cache_path(att.pod_id)
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{att.pod_id}.", dir=self._cache_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(att.encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _read_cache(self, pod_id: str) -> _Attachment | None:
        path = self._cache_path(pod_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return _Attachment.decode(data, str(path))

    def _drop_cache(self, pod_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._cache_path(pod_id).unlink()

    def cached_result(self, pod_id: str) -> NetworkResult | None:
        """The recorded result of a pod's completed setup, e.g. after a restart.

        Raises:
            crirt.errors.Internal: the cache file is corrupt.
        """
        att = self._read_cache(pod_id)
        if att is None or att.result is None:
            return None
        return wire.summarize_result(att.result, att.rt.ifname)

    # --- plugin execution -----------------------------------------------------------------------

    async def _invoke(
        self,
        command: str,
        net: NetworkConfigList,
        index: int,
        rt: RuntimeConf,
        prev_result: Mapping[str, Any] | None,
    ) -> dict[str, Any] | None:
        ptype = net.plugin_types[index]
        what = f"CNI plugin {ptype} ({command}, network {net.name}, pod {rt.container_id})"
        binary = self._find_plugin(ptype)
        if binary is None:
            raise Internal(f"{what}: plugin not found in {':'.join(self._bin_dirs)}")
        conf = wire.build_plugin_config(net, index, prev_result, rt.capability_args)
        env = wire.build_env(command, rt, self._bin_dirs, self._path_env)
        started = time.perf_counter()
        try:
            code, out, err = await self._exec(binary, env, wire.encode_config(conf), self._timeout)
        except TimeoutError:
            raise DeadlineExceeded(f"{what}: timed out after {self._timeout:g}s") from None
        except OSError as exc:
            raise Internal(f"{what}: cannot execute {binary}: {exc}") from exc
        log.debug(
            "cni plugin ran",
            plugin=ptype,
            command=command,
            pod_id=rt.container_id,
            rc=code,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        if code != 0:
            raise Internal(f"{what}: {wire.parse_error(out, err, code)}")
        if command != "ADD":
            return None
        try:
            return wire.parse_result(out)
        except wire.CniPluginError as exc:
            raise Internal(f"{what}: {exc}") from exc

    # --- setup / teardown / check ---------------------------------------------------------------

    async def setup(
        self,
        pod_id: str,
        netns_path: str | Path,
        pod_namespace: str,
        pod_name: str,
        pod_uid: str,
        port_mappings: Sequence[PortMapping | CriPortMapping] = (),
    ) -> NetworkResult:
        """Attach a pod's network namespace; returns its addresses.

        ``port_mappings`` may be ``PortMapping``s or CRI ``PortMapping`` messages. Mappings
        without a host port are not passed on (nothing to map, as in containerd).

        Raises:
            crirt.errors.Unavailable: the network is not ready (see ``status``).
            crirt.errors.Internal: a plugin failed (its message is included); what was added
                has been deleted again.
            crirt.errors.DeadlineExceeded: a plugin timed out.
        """
        self._cache_path(pod_id)  # validates the id before anything runs
        self._refresh()
        if not self._ready or self._net is None:
            raise Unavailable(f"network not ready: {self._reason}")
        net = self._net
        try:
            args = wire.k8s_args(pod_namespace, pod_name, pod_id, pod_uid)
            wire.encode_args(args)
            mappings = [
                pm if isinstance(pm, PortMapping) else PortMapping.from_cri(pm)
                for pm in port_mappings
            ]
        except wire.CniConfigError as exc:
            raise InvalidArgument(f"pod {pod_id}: {exc}") from exc
        rt = RuntimeConf(
            container_id=pod_id,
            netns=str(netns_path),
            ifname=self._ifname,
            args=args,
            capability_args={"portMappings": [pm.to_cni() for pm in mappings if pm.host_port > 0]},
        )
        att = _Attachment(pod_id=pod_id, net=net, rt=rt, loopback=self._loopback, result=None)
        await asyncio.to_thread(self._write_cache, att)
        lo_rt = RuntimeConf(container_id=pod_id, netns=str(netns_path), ifname="lo", args=args)
        started = 0
        prev: dict[str, Any] | None = None
        try:
            if self._loopback:
                await self._invoke("ADD", wire.loopback_config(), 0, lo_rt, None)
            for index in range(len(net.plugins)):
                started = index + 1
                prev = await self._invoke("ADD", net, index, rt, prev)
        except BaseException:
            try:
                await self._rollback(att, str(netns_path), started)
            except Exception as exc:  # noqa: BLE001 - never mask the setup error
                log.warning("cni rollback failed", pod_id=pod_id, error=str(exc))
            raise
        if prev is None:  # pragma: no cover - a list has at least one plugin
            raise Internal(f"network {net.name}: no result for pod {pod_id}")
        done = _Attachment(pod_id=pod_id, net=net, rt=rt, loopback=self._loopback, result=prev)
        await asyncio.to_thread(self._write_cache, done)
        return wire.summarize_result(prev, self._ifname)

    async def _rollback(self, att: _Attachment, netns_path: str, started: int) -> None:
        """DEL the first ``started`` plugins (the failed one included) and loopback."""
        path = netns_path if netns.exists(Path(netns_path)) else ""
        errors = await self._delete(att, path, started)
        if errors:
            log.warning(
                "cni rollback incomplete; teardown will retry",
                pod_id=att.pod_id,
                errors=errors,
            )
        else:
            await asyncio.to_thread(self._drop_cache, att.pod_id)

    async def _delete(self, att: _Attachment, netns_path: str, count: int) -> list[str]:
        rt = RuntimeConf(
            container_id=att.rt.container_id,
            netns=netns_path,
            ifname=att.rt.ifname,
            args=att.rt.args,
            capability_args=att.rt.capability_args,
        )
        prev = wire.del_prev_result(att.net, att.result)
        errors: list[str] = []
        for index in reversed(range(count)):
            try:
                await self._invoke("DEL", att.net, index, rt, prev)
            except (Internal, DeadlineExceeded) as exc:
                errors.append(str(exc))
        if att.loopback:
            lo_rt = RuntimeConf(
                container_id=rt.container_id, netns=netns_path, ifname="lo", args=rt.args
            )
            try:
                await self._invoke("DEL", wire.loopback_config(), 0, lo_rt, None)
            except (Internal, DeadlineExceeded) as exc:
                errors.append(str(exc))
        return errors

    async def teardown(self, pod_id: str, netns_path: str | Path | None) -> None:
        """Detach a pod: DEL every plugin in reverse order from the cached config, then forget it.

        Idempotent: a pod with no cache entry is a no-op. A missing namespace (``None`` or no
        longer pinned) still runs DEL with an empty ``CNI_NETNS`` so IPAM releases the address
        and portmap removes its rules.

        Raises:
            crirt.errors.Internal: a plugin's DEL failed; the cache is kept for a retry.
        """
        try:
            att = await asyncio.to_thread(self._read_cache, pod_id)
        except Internal as exc:
            # Retrying cannot repair it, and failing here would block StopPodSandbox forever.
            log.error(
                "cni cache unreadable; network not torn down",
                pod_id=pod_id,
                error=str(exc),
            )
            await asyncio.to_thread(self._drop_cache, pod_id)
            return
        if att is None:
            return
        path = ""
        if netns_path is not None and netns.exists(Path(netns_path)):
            path = str(netns_path)
        errors = await self._delete(att, path, len(att.net.plugins))
        if errors:
            raise Internal(f"network teardown of pod {pod_id} failed: {'; '.join(errors)}")
        await asyncio.to_thread(self._drop_cache, pod_id)

    async def check(self, pod_id: str, netns_path: str | Path) -> None:
        """CHECK a pod's attachment with its cached result (spec >= 0.4.0, unless disabled).

        Raises:
            crirt.errors.NotFound: the pod has no completed setup recorded.
            crirt.errors.Internal: a plugin reported a problem.
        """
        att = await asyncio.to_thread(self._read_cache, pod_id)
        if att is None or att.result is None:
            raise NotFound(f"pod {pod_id} has no network attachment")
        if not wire.supports_check(att.net):
            return
        rt = RuntimeConf(
            container_id=att.rt.container_id,
            netns=str(netns_path),
            ifname=att.rt.ifname,
            args=att.rt.args,
            capability_args=att.rt.capability_args,
        )
        for index in range(len(att.net.plugins)):
            await self._invoke("CHECK", att.net, index, rt, att.result)
