"""Pod networking: network namespaces (``netns``) and the CNI client (``cni``)."""

from crirt.network.cni import CniManager as CniManager
from crirt.network.cni import PluginExec as PluginExec
from crirt.sansio.cni import NetworkResult as NetworkResult
from crirt.sansio.cni import PortMapping as PortMapping

__all__ = ["CniManager", "NetworkResult", "PluginExec", "PortMapping"]
