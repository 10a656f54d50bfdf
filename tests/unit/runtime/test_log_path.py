"""Issue 15, item 6: ContainerConfig.log_path joins PodSandboxConfig.log_directory the way the
kubelet's runtimes do (Go's filepath.Join: the directory is kept, the result cleaned), and a
path that leaves the directory is refused."""

from __future__ import annotations

import pytest

from crirt.errors import InvalidArgument
from crirt.runtime.naming import log_path

POD = "/var/log/pods/ns_pod_uid"


@pytest.mark.parametrize(
    ("path", "want"),
    [
        ("app/0.log", f"{POD}/app/0.log"),  # what the kubelet sends
        # os.path.join dropped the directory for an absolute path: filepath.Join keeps it
        ("/etc/shadow", f"{POD}/etc/shadow"),
        ("//app//./0.log", f"{POD}/app/0.log"),
        ("app/../other/0.log", f"{POD}/other/0.log"),
    ],
)
def test_joined_as_filepath_join(path: str, want: str) -> None:
    assert log_path(POD, path) == want
    assert log_path(POD + "/", path) == want


@pytest.mark.parametrize(
    "path", ["../x.log", "app/../../x.log", "/../../etc/shadow", "..", ".", "app/.."]
)
def test_paths_leaving_the_directory_are_refused(path: str) -> None:
    with pytest.raises(InvalidArgument, match="log_path"):
        log_path(POD, path)


def test_root_directory() -> None:
    assert log_path("/", "/a/../b.log") == "/b.log"
