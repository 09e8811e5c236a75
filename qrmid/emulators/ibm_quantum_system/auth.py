"""IAM token exchange and the bearer-token and Service-CRN checks of ``/v1``."""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .config import EmulatorConfig
from .errors import INVALID_CREDENTIALS, NOT_AUTHORIZED, ApiError, iam_error

APIKEY_GRANT = "urn:ibm:params:oauth:grant-type:apikey"

log = logging.getLogger(__name__)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class TokenStore:
    """Issued access tokens and their expiry (epoch seconds)."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self._expiry: dict[str, float] = {}

    def issue(self) -> dict:
        """A new token response in IAM's shape; the token looks like a JWT but is opaque."""
        now = int(time.time())
        expiration = now + self.config.token_expires_in
        token = ".".join(
            (
                _b64({"kid": "emulator", "alg": "RS256"}),
                _b64({"iam_id": "emulator", "iat": now, "exp": expiration, "scope": "ibm_openid"}),
                secrets.token_urlsafe(32),
            )
        )
        self._expiry[token] = expiration
        return {
            "access_token": token,
            "refresh_token": "not_supported",
            "token_type": "Bearer",
            "expires_in": self.config.token_expires_in,
            "expiration": expiration,
            "scope": "ibm_openid",
        }

    def valid(self, token: str) -> bool:
        expiry = self._expiry.get(token)
        return expiry is not None and time.time() < expiry

    def expire_all(self) -> int:
        """Invalidate every issued token; returns how many there were."""
        count = len(self._expiry)
        self._expiry.clear()
        return count


async def identity_token(request: Request) -> Response:
    """``POST /identity/token``: exchange an API key for a bearer token."""
    tokens: TokenStore = request.app.state.tokens
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    grant_type, apikey = form.get("grant_type", [""])[0], form.get("apikey", [""])[0]
    if grant_type != APIKEY_GRANT or not apikey:
        return iam_error("BXNIM0109E", "Property missing or empty.")
    if apikey not in tokens.config.api_keys:
        return iam_error("BXNIM0415E", "Provided API key could not be found.")
    return JSONResponse(tokens.issue())


def check_request(request: Request) -> None:
    """Raise 401/1201 without a live bearer token; a wrong Service-CRN is logged, or 401/1200 in strict mode."""
    tokens: TokenStore = request.app.state.tokens
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not tokens.valid(token.strip()):
        raise ApiError(401, "Invalid credentials.", INVALID_CREDENTIALS, target=("Authorization", "header"))
    crn = request.headers.get("service-crn")
    if crn != tokens.config.service_crn:
        if tokens.config.strict_service_crn:
            raise ApiError(
                401,
                "You are not authorized to perform this action.",
                NOT_AUTHORIZED,
                value=crn or "",
                target=("Service-CRN", "header"),
            )
        log.warning("Service-CRN %r does not match the configured %r", crn, tokens.config.service_crn)
