"""crirt: a Kubernetes CRI v1 container runtime in Python."""

__version__ = "0.1.0"
RUNTIME_NAME = "crirt"
CRI_API_VERSION = "v1"
