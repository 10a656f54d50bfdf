"""Registry access: which hosts serve an image (``config``), the distribution API (``client``)."""

from crirt.registry.auth import AuthFiles as AuthFiles
from crirt.registry.client import Auth as Auth
from crirt.registry.client import AuthFields as AuthFields
from crirt.registry.client import BlobStream as BlobStream
from crirt.registry.client import FetchedManifest as FetchedManifest
from crirt.registry.client import RegistryClient as RegistryClient
from crirt.registry.config import Endpoint as Endpoint
from crirt.registry.config import Mirror as Mirror
from crirt.registry.config import RegistriesConfig as RegistriesConfig
from crirt.registry.config import Registry as Registry
from crirt.registry.config import load_registries as load_registries

__all__ = [
    "Auth",
    "AuthFields",
    "AuthFiles",
    "BlobStream",
    "Endpoint",
    "FetchedManifest",
    "Mirror",
    "RegistriesConfig",
    "Registry",
    "RegistryClient",
    "load_registries",
]
