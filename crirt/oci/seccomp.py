"""Loading seccomp profiles from disk (the I/O half of :mod:`crirt.oci.spec_seccomp`)."""

from __future__ import annotations

import json
from typing import Any

from crirt.errors import InvalidArgument, NotFound
from crirt.oci.spec import load_default_seccomp as load_default_seccomp

__all__ = ["load_default_seccomp", "load_seccomp_profile"]


def load_seccomp_profile(path: str) -> dict[str, Any]:
    """Read a Localhost seccomp profile (Docker/OCI JSON) named by a container's config.

    The caller passes the result as ``ContainerSpecInput.seccomp_localhost``; it is validated
    when the spec is built.

    Raises:
        NotFound: the file does not exist.
        InvalidArgument: it cannot be read or is not a JSON object.
    """
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise NotFound(f"seccomp profile {path} not found") from None
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"cannot load seccomp profile {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidArgument(f"seccomp profile {path} is not a JSON object")
    return data
