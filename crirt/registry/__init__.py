"""Registry access: which hosts serve an image (``config``), credentials (``credentials``,
``auth``), the distribution API (``client``).

``client`` is not imported here: with ``transport`` and http.client it is needed only from the
server's first pull on (import ``crirt.registry.client`` for ``RegistryClient``).
"""

from crirt.registry.auth import AuthFiles as AuthFiles
from crirt.registry.config import Endpoint as Endpoint
from crirt.registry.config import Mirror as Mirror
from crirt.registry.config import RegistriesConfig as RegistriesConfig
from crirt.registry.config import Registry as Registry
from crirt.registry.config import load_registries as load_registries
from crirt.registry.credentials import Auth as Auth
from crirt.registry.credentials import AuthFields as AuthFields

__all__ = [
    "Auth",
    "AuthFields",
    "AuthFiles",
    "Endpoint",
    "Mirror",
    "RegistriesConfig",
    "Registry",
    "load_registries",
]
