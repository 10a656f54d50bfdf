"""Credentials from auth files (containers-auth.json(5), Docker config.json) and helpers.

CRI-O's behaviour: credentials in the CRI request win; otherwise the ``global_auth_file`` if one
is configured, else containers/image's default lookup for root: ``$REGISTRY_AUTH_FILE``,
``/run/containers/0/auth.json``, ``$XDG_CONFIG_HOME/containers/auth.json`` and
``~/.docker/config.json``. Files are re-read when their mtime or size changes, so
``crirt image login``-style edits apply without a restart. Credential helpers
(``docker-credential-<name> get``) run with a timeout.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

import structlog

from crirt.errors import InvalidArgument
from crirt.registry.credentials import Auth
from crirt.sansio import authfile

log = structlog.get_logger(__name__)

HELPER_TIMEOUT = 10.0


def default_auth_files() -> list[Path]:
    """containers/image's lookup order for the current user (root: ``/run/containers/0``)."""
    env = os.environ.get("REGISTRY_AUTH_FILE")
    if env:
        return [Path(env)]
    home = Path(os.environ.get("HOME") or "/root")
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/containers/{os.getuid()}"
    run_file = (
        Path(runtime) / "containers" / "auth.json"
        if "XDG_RUNTIME_DIR" in os.environ
        else Path(runtime) / "auth.json"
    )
    return [run_file, xdg / "containers" / "auth.json", home / ".docker" / "config.json"]


class AuthFiles:
    """Looks credentials up in a list of auth files (missing files are skipped)."""

    def __init__(self, paths: Sequence[Path], helper_timeout: float = HELPER_TIMEOUT) -> None:
        self.paths = list(paths)
        self._timeout = helper_timeout
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[tuple[int, int], authfile.AuthFile]] = {}

    @classmethod
    def from_setting(cls, auth_file: str) -> AuthFiles:
        """``image.auth_file``: one file if set, else the default lookup."""
        return cls([Path(auth_file)] if auth_file else default_auth_files())

    def _load(self, path: Path) -> authfile.AuthFile | None:
        try:
            st = path.stat()
        except OSError:
            return None
        key = (st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._cache.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        try:
            parsed = authfile.parse(path.read_bytes(), str(path))
        except OSError as exc:
            raise InvalidArgument(f"cannot read auth file {path}: {exc}") from exc
        with self._lock:
            self._cache[path] = (key, parsed)
        return parsed

    def lookup(self, registry: str, repository: str) -> Auth | None:
        """Credentials for ``registry/repository``, or None (anonymous).

        Raises:
            InvalidArgument: an auth file is malformed, or its credential helper failed.
        """
        files = [f for f in (self._load(p) for p in self.paths) if f is not None]
        if not files:
            return None
        found = authfile.lookup(files, registry, repository)
        cred = found.credential
        if cred is None and found.helper:
            cred = self._helper(found.helper, found.key)
        if cred is None:
            return None
        return Auth(
            username=cred.username, password=cred.password, identity_token=cred.identity_token
        )

    def _helper(self, helper: str, registry: str) -> authfile.Credential | None:
        exe = f"docker-credential-{helper}"
        try:
            res = subprocess.run(
                [exe, "get"],
                input=registry.encode(),
                capture_output=True,
                timeout=self._timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InvalidArgument(f"credential helper {exe} for {registry}: {exc}") from exc
        if res.returncode != 0:
            out = (res.stdout + res.stderr).decode(errors="replace").strip()
            if "credentials not found" in out.lower():
                return None
            raise InvalidArgument(f"credential helper {exe} for {registry} failed: {out[:200]}")
        return authfile.parse_helper_output(res.stdout, helper)
