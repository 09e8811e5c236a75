"""The Auth0 token endpoint (password-realm and client_credentials grants) and bearer checks.

Access tokens are HS256 JWTs with ``exp``, ``sub``, ``aud`` and a ``jti``. Like a real resource server, the API
checks them statelessly (signature, expiry, audience, a known subject), so tokens survive an emulator restart;
``POST /_emulator/tokens/expire`` revokes every token issued so far by ``jti``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .config import EmulatorConfig, ServiceAccount, User
from .envelope import ApiError

PASSWORD_REALM = "http://auth0.com/oauth/grant-type/password-realm"
CLIENT_CREDENTIALS = "client_credentials"


@dataclass(frozen=True)
class Principal:
    """Who a token was issued to."""

    user_id: str
    projects: tuple[str, ...]


@dataclass
class Grant:
    """One issued token, as shown in the record."""

    jti: str
    grant_type: str
    subject: str
    issued_at: float
    expires_at: float


class OAuthError(Exception):
    """An Auth0-style failure: ``{"error": ..., "error_description": ...}``."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


@dataclass
class TokenIssuer:
    """Issues and checks access tokens for the configured users and service accounts."""

    config: EmulatorConfig
    grants: list[Grant] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)

    def issue(self, form: dict[str, str]) -> dict[str, Any]:
        """The Auth0 token response for a grant request, or OAuthError."""
        grant_type = form.get("grant_type", "")
        if grant_type == PASSWORD_REALM:
            principal, scope = self._password_realm(form), "openid profile email"
        elif grant_type == CLIENT_CREDENTIALS:
            principal, scope = self._client_credentials(form), None
        elif not grant_type:
            raise OAuthError(400, "invalid_request", "Missing required parameter: grant_type")
        else:
            raise OAuthError(403, "unsupported_grant_type", f"Unsupported grant type: {grant_type}")
        audience = form.get("audience") or self.config.audiences[0]
        if audience not in self.config.audiences:
            raise OAuthError(403, "access_denied", f"Service not found: {audience}")
        now = time.time()
        lifetime = self.config.token_lifetime_s
        jti = uuid.uuid4().hex
        claims = {
            "iss": f"https://{self.config.auth_domain}/",
            "sub": principal.user_id,
            "aud": audience,
            "iat": int(now),
            "exp": int(now + lifetime),
            "jti": jti,
            "gty": "password" if grant_type == PASSWORD_REALM else CLIENT_CREDENTIALS,
        }
        token = jwt.encode(claims, self.config.jwt_secret, algorithm="HS256")
        self.grants.append(Grant(jti, grant_type, principal.user_id, now, now + lifetime))
        body: dict[str, Any] = {"access_token": token, "expires_in": int(lifetime), "token_type": "Bearer"}
        if scope:
            body["scope"] = scope
        return body

    def _password_realm(self, form: dict[str, str]) -> Principal:
        _require(form, "username", "password", "client_id")
        if form["client_id"] != self.config.public_client_id:
            raise OAuthError(401, "access_denied", "Unauthorized")
        if form.get("realm", self.config.realm) != self.config.realm:
            raise OAuthError(400, "invalid_request", f"Unknown realm: {form['realm']}")
        for user in self.config.users:
            if user.username == form["username"] and user.password == form["password"]:
                return Principal(user.user_id, tuple(user.projects))
        raise OAuthError(403, "invalid_grant", "Wrong email or password.")

    def _client_credentials(self, form: dict[str, str]) -> Principal:
        _require(form, "client_id", "client_secret")
        for account in self.config.service_accounts:
            if account.client_id == form["client_id"] and account.client_secret == form["client_secret"]:
                return Principal(account.user_id, tuple(account.projects))
        raise OAuthError(401, "access_denied", "Unauthorized")

    def check(self, request: Request) -> Principal:
        """The principal behind the request's bearer token; ApiError 401 when missing or invalid."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "Missing bearer token")
        try:
            claims = jwt.decode(
                token.strip(), self.config.jwt_secret, algorithms=["HS256"], audience=self.config.audiences
            )
        except jwt.ExpiredSignatureError as exc:
            raise ApiError(401, "Token has expired") from exc
        except jwt.InvalidTokenError as exc:
            raise ApiError(401, f"Invalid token: {exc}") from exc
        if claims.get("jti") in self.revoked:
            raise ApiError(401, "Token has expired")
        principal = self._subject(str(claims.get("sub", "")))
        if principal is None:
            raise ApiError(401, "Unknown token subject")
        return principal

    def _subject(self, user_id: str) -> Principal | None:
        accounts: list[User | ServiceAccount] = [*self.config.users, *self.config.service_accounts]
        for account in accounts:
            if account.user_id == user_id:
                return Principal(account.user_id, tuple(account.projects))
        return None

    def expire_all(self) -> int:
        """Revoke every token issued so far; returns how many were still unexpired."""
        now = time.time()
        live = {grant.jti for grant in self.grants if grant.expires_at > now} - self.revoked
        self.revoked |= {grant.jti for grant in self.grants}
        return len(live)


def _require(form: dict[str, str], *names: str) -> None:
    for name in names:
        if not form.get(name):
            raise OAuthError(400, "invalid_request", f"Missing required parameter: {name}")


async def token_endpoint(request: Request) -> Response:
    """``POST /oauth/token`` with a form or JSON body."""
    issuer: TokenIssuer = request.app.state.issuer
    if "json" in request.headers.get("content-type", ""):
        try:
            payload = await request.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return _oauth_error(OAuthError(400, "invalid_request", "Body must be a JSON object"))
        form = {str(key): str(value) for key, value in payload.items()}
    else:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    try:
        return JSONResponse(issuer.issue(form))
    except OAuthError as exc:
        return _oauth_error(exc)


def _oauth_error(exc: OAuthError) -> Response:
    return JSONResponse({"error": exc.error, "error_description": exc.description}, status_code=exc.status)
