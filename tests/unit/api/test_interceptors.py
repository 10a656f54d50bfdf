import errno

import grpc
import pytest

from crirt import errors
from crirt.api.interceptors import code_for, exhausted


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.ImageNotFound("x"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.DeadlineExceeded("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.RegistryError("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.RegistryUnauthorized("x"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.RegistryDenied("x"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.RateLimited("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.DigestMismatch("x"), grpc.StatusCode.INTERNAL),
        (errors.RuntimeFailure("x"), grpc.StatusCode.INTERNAL),
        (errors.CrirtError("x"), grpc.StatusCode.UNKNOWN),
    ],
)
def test_one_table_maps_every_error(exc: errors.CrirtError, code: grpc.StatusCode) -> None:
    assert code_for(exc) is code


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OSError(errno.EMFILE, "Too many open files"), True),
        (OSError(errno.ENFILE, "Too many open files in system"), True),
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable"), True),
        (OSError(errno.ENOENT, "No such file or directory"), False),
        (OSError("no errno"), False),
        (ValueError("x"), False),
    ],
)
def test_an_exhausted_resource_is_told_apart(exc: Exception, expected: bool) -> None:
    # issue 15 (fault injection): crirt at its fd limit answered UNKNOWN "OSError: [Errno 24]"
    assert exhausted(exc) is expected
