"""Auth0 access tokens for Pasqal Cloud: a client-credentials or password-realm grant, cached and renewed shortly
before the token's ``exp``; or a pre-issued token, used until it expires or is refused."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

import httpx
import jwt

from qrmid.backends.base import CredentialsRefused
from qrmid.backends.pasqal_cloud.settings import PUBLIC_CLIENT_ID, Settings
from qrmid.backends.redact import Redactor
from qrmid.backends.retry import Transient, attempts

RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})
PASSWORD_REALM = "http://auth0.com/oauth/grant-type/password-realm"
MAX_MARGIN = 60.0  # renew at most this long before expiry (and at 90 % of a short-lived token's life)


class AuthError(CredentialsRefused):
    """No usable token: the grant was refused, or a pre-issued token expired with nothing to renew it."""


@dataclass(frozen=True)
class Grant:
    """An Auth0 token request. ``form`` holds secrets and stays out of repr, logs and errors."""

    url: str
    kind: str
    form: dict[str, str] = field(repr=False)


def grant_of(settings: Settings) -> Grant | None:
    """The grant the settings configure: the service account first, then the user; None for a bare token."""
    endpoint = settings.auth_endpoint
    url = endpoint if "://" in endpoint else f"https://{endpoint}"
    if settings.client_id and settings.client_secret:
        return Grant(url, "client credentials", {
            "grant_type": "client_credentials", "client_id": settings.client_id,
            "client_secret": settings.client_secret.get_secret_value(), "audience": settings.audience})
    if settings.username and settings.password:
        return Grant(url, "password", {
            "grant_type": PASSWORD_REALM, "realm": "pcs-users", "client_id": PUBLIC_CLIENT_ID,
            "audience": settings.audience, "username": settings.username,
            "password": settings.password.get_secret_value()})
    return None


class Tokens:
    """The bearer token for API calls. Calls share the cached token; only renewals are serialised."""

    def __init__(self, http: httpx.AsyncClient, grant: Grant | None, initial: str, deadline: float,
                 redact: Redactor | None = None) -> None:
        self.http = http
        self.grant = grant
        self.deadline = deadline
        self.redact = redact or Redactor()  # learns each token
        self._token = ""
        self._renew_at = 0.0  # wall-clock time, as the JWT's exp
        self._lock = asyncio.Lock()
        if initial:
            self._adopt(initial, None)

    async def token(self) -> str:
        if self._token and time.time() < self._renew_at:
            return self._token
        async with self._lock:
            if not self._token or time.time() >= self._renew_at:
                if self.grant is None:
                    raise AuthError("the configured QRMI_PASQAL_CLOUD_AUTH_TOKEN has expired or was refused, and "
                                    "no client credentials or username/password are configured to renew it")
                await self._fetch(self.grant)
        return self._token

    def expire(self, token: str) -> None:
        """Drop ``token`` after the API refused it, so the next call gets a new one."""
        if token == self._token:
            self._renew_at = 0.0

    async def _fetch(self, grant: Grant) -> None:
        async for attempt in attempts(f"Pasqal token request ({grant.kind} grant)", self.deadline):
            with attempt:
                response = await self.http.post(grant.url, data=grant.form, headers={"Accept": "application/json"})
                if response.status_code in RETRYABLE:
                    raise Transient(f"HTTP {response.status_code}")
        if response.status_code != 200:
            raise AuthError(f"Pasqal Cloud refused the {grant.kind} grant at {grant.url}: {_oauth_error(response)}")
        body = response.json()
        lifetime = body.get("expires_in")
        self._adopt(str(body["access_token"]), float(lifetime) if lifetime is not None else None)

    def _adopt(self, token: str, lifetime: float | None) -> None:
        """Use ``token`` until shortly before its ``exp`` (or ``lifetime``); without either, until refused."""
        now = time.time()
        try:
            expiry = float(jwt.decode(token, options={"verify_signature": False}).get("exp", math.inf))
        except jwt.PyJWTError:
            expiry = math.inf
        if expiry == math.inf and lifetime is not None:
            expiry = now + lifetime
        self._token = token
        self.redact.learn(token)
        self._renew_at = expiry - min(MAX_MARGIN, max(expiry - now, 0.0) / 10)


def _oauth_error(response: httpx.Response) -> str:
    """Auth0's ``error: error_description``, or the status line."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code} {response.reason_phrase}"
    if isinstance(body, dict) and "error" in body:
        return f"HTTP {response.status_code} {body['error']}: {body.get('error_description', '')}".rstrip(": ")
    return f"HTTP {response.status_code}"
