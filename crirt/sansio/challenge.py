"""WWW-Authenticate challenges and the registry token protocol, without I/O.

RFC 7235 §4.1 syntax (``challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ]``, several
challenges comma-separated in one header) and the Docker registry token flow
(distribution ``docs/spec/auth/token.md``): a ``Bearer`` challenge names a ``realm`` (the token
endpoint), a ``service`` and maybe a ``scope``; the client GETs ``realm?service=…&scope=…`` and
receives ``{"token"|"access_token", "expires_in", "issued_at"}``.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass, field

from crirt.errors import RegistryError

# Tokens without expires_in are valid for 60 s (token.md).
DEFAULT_TOKEN_LIFETIME = 60
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*(?=\s*(?:,|$))")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_WS = re.compile(r"[\s,]*")


@dataclass(frozen=True)
class Challenge:
    """One challenge: lower-cased scheme and lower-cased parameter names."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    token68: str = ""

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


@dataclass(frozen=True)
class TokenResponse:
    token: str
    expires_in: int


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value into its challenges, in order.

    Malformed trailing garbage ends parsing; the challenges read so far are kept, as browsers do.
    """
    out: list[Challenge] = []
    i, n = 0, len(header)
    current: Challenge | None = None
    while i < n:
        m = _WS.match(header, i)
        i = m.end() if m else i
        if i >= n:
            break
        m = _TOKEN.match(header, i)
        if m is None:
            break
        token = m.group(0)
        j = m.end()
        while j < n and header[j] in " \t":
            j += 1
        if current is not None and j < n and header[j] == "=":
            # auth-param of the current challenge.
            j += 1
            while j < n and header[j] in " \t":
                j += 1
            q = _QUOTED.match(header, j)
            if q is not None:
                value = re.sub(r"\\(.)", r"\1", q.group(1))
                i = q.end()
            else:
                v = _TOKEN.match(header, j)
                value = v.group(0) if v else ""
                i = v.end() if v else j
            current.params[token.lower()] = value
            continue
        # A new challenge: the token is its scheme.
        current = Challenge(token.lower())
        out.append(current)
        i = j
        # "Scheme token68" (e.g. "Basic dXNlcg=="): the lookahead in _TOKEN68 requires a comma or
        # the end after it, so "realm=..." is never mistaken for one.
        t = _TOKEN68.match(header, i)
        if t is not None:
            current = Challenge(current.scheme, {}, t.group(0))
            out[-1] = current
            i = t.end()
    return out


def bearer_challenge(header: str) -> Challenge | None:
    """The first ``Bearer`` challenge with a realm, if any."""
    for ch in parse_challenges(header):
        if ch.scheme == "bearer" and ch.realm:
            return ch
    return None


def pull_scope(repository: str) -> str:
    """The token scope for pulling from ``repository``."""
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    """The token scope for pushing to (and pulling from) ``repository``."""
    return f"repository:{repository}:pull,push"


def refresh_token_form(
    challenge: Challenge, scopes: list[str], refresh_token: str, client_id: str
) -> list[tuple[str, str]]:
    """The form of an OAuth2 refresh-token grant POSTed to the realm (distribution oauth.md).

    This is how a Docker ``identitytoken`` (CRI ``identity_token``) becomes an access token.
    """
    form = [("grant_type", "refresh_token"), ("refresh_token", refresh_token)]
    if challenge.params.get("service"):
        form.append(("service", challenge.params["service"]))
    form.append(("client_id", client_id))
    form += [("scope", " ".join(scopes))] if scopes else []
    return form


def token_url(challenge: Challenge, scopes: list[str]) -> str:
    """The URL of the token request for a Bearer challenge.

    Raises:
        RegistryError: the realm is not an absolute http(s) URL.
    """
    realm = challenge.realm
    try:
        parts = urllib.parse.urlsplit(realm)
    except ValueError:  # "https://h]/", or a host that changes under NFKC normalisation
        raise RegistryError(f"registry sent an invalid token realm {realm!r}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RegistryError(f"registry sent an invalid token realm {realm!r}")
    query: list[tuple[str, str]] = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if challenge.params.get("service"):
        query.append(("service", challenge.params["service"]))
    for scope in scopes:
        query.append(("scope", scope))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def parse_token_response(body: bytes) -> TokenResponse:
    """Parse the token endpoint's JSON answer.

    Raises:
        RegistryError: not JSON (nested too deep, or a number of more than 4,300 digits,
            included), or no token in it.
    """
    try:
        doc = json.loads(body)
    except RecursionError:
        raise RegistryError(
            "registry token endpoint returned invalid JSON: nested too deep"
        ) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int's digit limit
        raise RegistryError(f"registry token endpoint returned invalid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise RegistryError("registry token endpoint returned a non-object")
    token = doc.get("token") or doc.get("access_token")
    if not isinstance(token, str) or not token:
        raise RegistryError("registry token endpoint returned no token")
    expires = doc.get("expires_in")
    if not isinstance(expires, int) or isinstance(expires, bool) or expires <= 0:
        expires = DEFAULT_TOKEN_LIFETIME
    return TokenResponse(token, expires)
