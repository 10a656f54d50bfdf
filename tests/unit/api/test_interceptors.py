import grpc
import pytest

from crirt import errors
from crirt.api.interceptors import code_for


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
