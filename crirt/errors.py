"""The one error tree of crirt.

Services and adapters raise these; ``crirt.api.interceptors`` maps each class to a gRPC status
code in one table. Anything else reaching the RPC edge becomes UNKNOWN and is logged with its
traceback.
"""

from __future__ import annotations


class CrirtError(Exception):
    """Base of every error crirt raises on purpose."""


class InvalidArgument(CrirtError):
    """The request is malformed (missing metadata, bad reference, bad option)."""


class NotFound(CrirtError):
    """The named object (sandbox, container, image) does not exist."""


class AlreadyExists(CrirtError):
    """A name or id is already taken."""


class FailedPrecondition(CrirtError):
    """The object is in the wrong state for the request (e.g. start a running container)."""


class DeadlineExceeded(CrirtError):
    """A server-side timeout expired (ExecSync timeout, pull progress timeout)."""


class Unavailable(CrirtError):
    """A dependency is not reachable right now (registry down, runtime missing)."""


class ResourceExhausted(CrirtError):
    """A limit was hit (output cap, disk full, a registry's rate limit)."""


class Unauthenticated(CrirtError):
    """Credentials are missing or were not accepted (a registry's 401)."""


class PermissionDenied(CrirtError):
    """The credentials were accepted but do not allow the request (a registry's 403)."""


class Internal(CrirtError):
    """Something that should not happen did: a runtime or kernel call failed."""


class RuntimeFailure(Internal):
    """The OCI runtime (runc/crun) or the monitor failed."""


class StorageError(Internal):
    """The layer or image store failed."""


class RegistryError(Unavailable):
    """The registry answered with an error or could not be reached."""


class RegistryUnauthorized(RegistryError, Unauthenticated):
    """The registry wants (other) credentials."""


class RegistryDenied(RegistryError, PermissionDenied):
    """The registry refused access with the given credentials."""


class RateLimited(RegistryError, ResourceExhausted):
    """The registry answered 429 Too Many Requests."""


class ImageNotFound(NotFound):
    """The image is not known locally or in the registry."""


class DigestMismatch(StorageError):
    """Content did not hash to the digest it was fetched by."""
