"""OCI runtime layer: pure CRI→OCI spec translation (``spec*``) and the runc CLI (``runc``)."""

from crirt.oci.runc import ExecResult as ExecResult
from crirt.oci.runc import OciRuntime as OciRuntime
from crirt.oci.runc import read_host_capabilities as read_host_capabilities
from crirt.oci.runc import read_min_oom_score_adj as read_min_oom_score_adj
from crirt.oci.seccomp import load_seccomp_profile as load_seccomp_profile
from crirt.oci.spec import ContainerSpecInput as ContainerSpecInput
from crirt.oci.spec import ExecSpecInput as ExecSpecInput
from crirt.oci.spec import ImageSpecConfig as ImageSpecConfig
from crirt.oci.spec import LinuxDevice as LinuxDevice
from crirt.oci.spec import SandboxSpecInput as SandboxSpecInput
from crirt.oci.spec import build_container_spec as build_container_spec
from crirt.oci.spec import build_exec_process as build_exec_process
from crirt.oci.spec import build_exec_spec as build_exec_spec
from crirt.oci.spec import build_linux_resources as build_linux_resources
from crirt.oci.spec import build_sandbox_spec as build_sandbox_spec
from crirt.oci.spec import load_default_seccomp as load_default_seccomp
from crirt.oci.spec import seccomp_localhost_path as seccomp_localhost_path
from crirt.oci.spec_caps import DEFAULT_CAPABILITIES as DEFAULT_CAPABILITIES

__all__ = [
    "DEFAULT_CAPABILITIES",
    "ContainerSpecInput",
    "ExecResult",
    "ExecSpecInput",
    "ImageSpecConfig",
    "LinuxDevice",
    "OciRuntime",
    "SandboxSpecInput",
    "build_container_spec",
    "build_exec_process",
    "build_exec_spec",
    "build_linux_resources",
    "build_sandbox_spec",
    "load_default_seccomp",
    "load_seccomp_profile",
    "read_host_capabilities",
    "read_min_oom_score_adj",
    "seccomp_localhost_path",
]
