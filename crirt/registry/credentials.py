"""Registry credentials, as the CRI ``AuthConfig`` carries them.

Apart from ``client`` so that the modules the server imports at start (the image service, the
auth files) do not load ``requests`` and its dependencies (~5 MB of the idle daemon's memory):
the registry client, and with it ``requests``, is imported at the first pull.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Protocol

from crirt.errors import InvalidArgument


class AuthFields(Protocol):
    """Anything shaped like the CRI ``AuthConfig`` message (the protobuf itself, for one)."""

    @property
    def username(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def auth(self) -> str: ...
    @property
    def identity_token(self) -> str: ...
    @property
    def registry_token(self) -> str: ...


@dataclass(frozen=True)
class Auth:
    """Registry credentials, as in the CRI ``AuthConfig`` message."""

    username: str = ""
    password: str = ""
    # base64("username:password"), the docker config.json form.
    auth: str = ""
    identity_token: str = ""
    registry_token: str = ""

    @classmethod
    def of(cls, fields: Auth | AuthFields | None) -> Auth | None:
        """Normalise credentials: an ``AuthConfig``-like object becomes an Auth; empty → None."""
        if fields is None:
            return None
        auth = (
            fields
            if isinstance(fields, Auth)
            else cls(
                username=fields.username,
                password=fields.password,
                auth=fields.auth,
                identity_token=fields.identity_token,
                registry_token=fields.registry_token,
            )
        )
        return auth if auth != cls() else None

    def basic(self) -> tuple[str, str] | None:
        """(username, password) if the credentials carry them.

        Raises:
            InvalidArgument: ``auth`` is not base64 of ``user:password``.
        """
        if self.username or self.password:
            return self.username, self.password
        if self.auth:
            try:
                user, sep, pw = base64.b64decode(self.auth, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise InvalidArgument("invalid auth: not base64 of user:password") from exc
            if not sep:
                raise InvalidArgument("invalid auth: not base64 of user:password")
            return user, pw
        return None

    def cache_key(self) -> str:
        """A stable, non-reversible key for caching tokens obtained with these credentials."""
        raw = "\x00".join(
            (self.username, self.password, self.auth, self.identity_token, self.registry_token)
        )
        return hashlib.sha256(raw.encode()).hexdigest()
