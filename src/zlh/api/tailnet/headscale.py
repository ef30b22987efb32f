"""Client of the part of Headscale's REST API the platform calls.

Shapes follow Headscale 0.26/0.27 (grpc-gateway over ``headscale.v1``): uint64 ids travel as
JSON strings, timestamps as RFC 3339, field names in lowerCamelCase, and since 0.26
``POST /api/v1/preauthkey`` takes the user's numeric id, not its name. Errors come back as
``{"code", "message", "details"}`` (a gRPC status) except a rejected API key, which is a bare
``401 Unauthorized``. Headscale reports many deterministic failures ("user not found", "user
already exists") as HTTP 500 with gRPC code 2; those are classified by their message so they
are neither retried nor reported as an outage.

::

    ZlhError (zlh.errors)
     └── HeadscaleError                502  Headscale refused or failed a request
          ├── HeadscaleUnavailable     503  connection error, timeout, or 5xx after retries
          ├── HeadscaleAuthError       502  the API key was rejected (401): an operator must act
          ├── HeadscaleNotFound        502  a user or key Headscale does not know (404)
          ├── HeadscaleConflict        502  it already exists (409)
          └── HeadscaleRejected        502  any other 4xx (invalid argument)

Retries: connection errors, timeouts and 5xx are retried with exponential backoff and full
jitter; 4xx never. A retried ``POST /api/v1/preauthkey`` whose first attempt did reach
Headscale can leave one unused, expiring, single-use key behind; that is the price of not
failing a provisioning on one dropped response.
"""

from __future__ import annotations

import asyncio
import random
import re
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic.alias_generators import to_camel

from zlh.errors import ZlhError

__all__ = [
    "HeadscaleAuthError",
    "HeadscaleClient",
    "HeadscaleConflict",
    "HeadscaleError",
    "HeadscaleNotFound",
    "HeadscaleRejected",
    "HeadscaleSettings",
    "HeadscaleUnavailable",
    "HeadscaleUser",
    "PreAuthKey",
    "read_api_key",
    "rfc3339",
    "validate_tag",
]


class HeadscaleError(ZlhError):
    status_code = 502


class HeadscaleUnavailable(HeadscaleError):
    status_code = 503


class HeadscaleAuthError(HeadscaleError):
    pass


class HeadscaleNotFound(HeadscaleError):
    pass


class HeadscaleConflict(HeadscaleError):
    pass


class HeadscaleRejected(HeadscaleError):
    pass


class HeadscaleSettings(BaseModel):
    """Where Headscale is and how keys are made. ``url`` unset turns the tailnet off."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        None,
        description="base URL of Headscale (its REST API lives under /api/v1). Unset: the "
        "tailscale addon is refused. Not where containers and customers log in (login_server_url).",
    )
    login_server_url: str | None = Field(
        None,
        description="--login-server as containers and customers reach Headscale (default: url).",
    )
    api_key_file: Path | None = Field(
        None,
        description="file holding a Headscale API key (`headscale apikeys create`), not readable "
        "by others. Rotating it needs no restart: it is read when a client is made.",
    )
    container_key_lifetime_s: int = Field(
        3600,
        gt=0,
        description="lifetime of a container's pre-auth key; the agent uses it once while "
        "provisioning. Not the lifetime of the node it registers (nodes do not expire).",
    )
    customer_key_lifetime_s: int = Field(
        7 * 86400,
        gt=0,
        description="lifetime of the key shown to the customer for their own machine; "
        "regenerating it starts a new one. Not how long a joined machine stays joined.",
    )
    request_timeout_s: float = Field(
        10.0, gt=0, description="one HTTP request to Headscale (connect + answer); not retries."
    )
    max_attempts: int = Field(
        4, ge=1, le=10, description="tries per request on connection errors and 5xx; 4xx: one."
    )
    retry_backoff_s: float = Field(
        0.25, ge=0, description="first retry's wait ceiling; doubles per try, full jitter."
    )
    retry_backoff_max_s: float = Field(4.0, ge=0, description="ceiling of any one retry's wait.")

    @field_validator("url", "login_server_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/") if value else value

    @property
    def enabled(self) -> bool:
        return self.url is not None

    @property
    def login_server(self) -> str:
        server = self.login_server_url or self.url
        if server is None:
            raise HeadscaleError("the tailnet is not configured (headscale url is unset)")
        return server


class _HeadscaleModel(BaseModel):
    # Headscale adds fields between versions; unknown ones are ignored, not refused.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class HeadscaleUser(_HeadscaleModel):
    id: int
    name: str
    created_at: datetime | None = None


class PreAuthKey(_HeadscaleModel):
    """A pre-auth key. ``key`` is the secret a node logs in with: never log or repr it."""

    id: int
    key: SecretStr
    user: HeadscaleUser | None = None
    reusable: bool = False
    ephemeral: bool = False
    used: bool = False
    expiration: datetime | None = None
    created_at: datetime | None = None
    acl_tags: list[str] = Field(default_factory=list)

    def expired(self, now: datetime | None = None) -> bool:
        return self.expiration is not None and self.expiration <= (now or datetime.now(UTC))


def rfc3339(moment: datetime) -> str:
    """``2025-01-02T03:04:05Z``: the form protobuf's Timestamp JSON mapping expects."""
    if moment.tzinfo is None:
        raise ValueError("timestamps sent to Headscale must be timezone-aware")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def validate_tag(tag: str) -> str:
    """Headscale's own rule: ``tag:`` prefix, lowercase, no whitespace."""
    if not tag.startswith("tag:") or tag.lower() != tag or len(tag.split()) != 1 or tag == "tag:":
        raise ValueError(f"{tag!r} is not a Headscale tag (tag:<lowercase name without spaces>)")
    return tag


def read_api_key(path: Path) -> SecretStr:
    """The API key in ``path``; refuses a missing, empty or world-readable file."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise HeadscaleError(f"cannot read the Headscale API key file {path}: {exc}") from exc
    if mode & stat.S_IROTH:
        raise HeadscaleError(f"the Headscale API key file {path} is readable by others: chmod 600")
    if not text or any(ch.isspace() for ch in text):
        raise HeadscaleError(
            f"the Headscale API key file {path} must hold one key and nothing else"
        )
    return SecretStr(text)


_NOT_FOUND = re.compile(r"not found", re.IGNORECASE)
_CONFLICT = re.compile(r"already exists|unique constraint", re.IGNORECASE)
_REJECTED = re.compile(r"does not belong|failed to parse auth-key|invalid auth key", re.IGNORECASE)


def _error_message(response: httpx.Response) -> str:
    """The gRPC status message of an error answer, else its text (a proxy's HTML, say)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(body, dict) and isinstance(message := body.get("message"), str):
        return message
    return str(body)[:200]


class HeadscaleClient:
    """Async client; use as ``async with HeadscaleClient(...) as hs:`` or call ``aclose()``.

    ``transport`` is for tests that need to fail at the connection level; normally unset.
    """

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        *,
        timeout_s: float = 10.0,
        max_attempts: int = 4,
        retry_backoff_s: float = 0.25,
        retry_backoff_max_s: float = 4.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._max_attempts = max_attempts
        self._backoff_s = retry_backoff_s
        self._backoff_max_s = retry_backoff_max_s
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key.get_secret_value()}"},
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: HeadscaleSettings) -> HeadscaleClient:
        if settings.url is None or settings.api_key_file is None:
            raise HeadscaleError(
                "the tailnet is not configured: set headscale url and api_key_file"
            )
        return cls(
            settings.url,
            read_api_key(settings.api_key_file),
            timeout_s=settings.request_timeout_s,
            max_attempts=settings.max_attempts,
            retry_backoff_s=settings.retry_backoff_s,
            retry_backoff_max_s=settings.retry_backoff_max_s,
        )

    async def __aenter__(self) -> HeadscaleClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- users ---------------------------------------------------------------------------

    async def find_user(self, name: str) -> HeadscaleUser | None:
        """The user called exactly ``name``, or None. Filters locally too: old servers ignore
        the ``name`` query and list everybody."""
        body = await self._request("GET", "/api/v1/user", params={"name": name})
        users = [HeadscaleUser.model_validate(u) for u in body.get("users") or []]
        return next((u for u in users if u.name == name), None)

    async def create_user(self, name: str) -> HeadscaleUser:
        body = await self._request("POST", "/api/v1/user", json={"name": name})
        return HeadscaleUser.model_validate(self._field(body, "user"))

    async def ensure_user(self, name: str) -> HeadscaleUser:
        """Find ``name`` or create it; a concurrent creation (conflict) finds it again."""
        user = await self.find_user(name)
        if user is not None:
            return user
        try:
            return await self.create_user(name)
        except HeadscaleConflict:
            user = await self.find_user(name)
            if user is None:
                raise
            return user

    # -- pre-auth keys -------------------------------------------------------------------

    async def create_preauth_key(
        self,
        user_id: int,
        *,
        expiration: datetime,
        acl_tags: list[str] | None = None,
        reusable: bool = False,
        ephemeral: bool = False,
    ) -> PreAuthKey:
        tags = [validate_tag(t) for t in acl_tags or []]
        if expiration <= datetime.now(UTC):
            raise ValueError(f"a pre-auth key must expire in the future, not at {expiration}")
        body = await self._request(
            "POST",
            "/api/v1/preauthkey",
            json={
                "user": str(user_id),
                "reusable": reusable,
                "ephemeral": ephemeral,
                "expiration": rfc3339(expiration),
                "aclTags": tags,
            },
        )
        return PreAuthKey.model_validate(self._field(body, "preAuthKey"))

    async def expire_preauth_key(self, user_id: int, key: SecretStr) -> None:
        await self._request(
            "POST",
            "/api/v1/preauthkey/expire",
            json={"user": str(user_id), "key": key.get_secret_value()},
        )

    async def list_preauth_keys(self, user_id: int) -> list[PreAuthKey]:
        body = await self._request("GET", "/api/v1/preauthkey", params={"user": str(user_id)})
        return [PreAuthKey.model_validate(k) for k in body.get("preAuthKeys") or []]

    # -- transport -----------------------------------------------------------------------

    @staticmethod
    def _field(body: dict[str, Any], name: str) -> Any:
        value = body.get(name)
        if not isinstance(value, dict):
            raise HeadscaleError(f"Headscale answered without {name!r}: {str(body)[:200]}")
        return value

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._backoff_max_s, self._backoff_s * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)  # jitter, not a secret

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        what = f"{method} {path}"
        for attempt in range(1, self._max_attempts + 1):
            last_try = attempt == self._max_attempts
            try:
                response = await self._http.request(method, path, json=json, params=params)
            except httpx.TransportError as exc:
                if last_try:
                    raise HeadscaleUnavailable(
                        f"Headscale is unreachable ({what}, {attempt} tries): "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                await asyncio.sleep(self._backoff(attempt))
                continue
            if response.status_code < 400:
                return self._json(response, what)
            message = _error_message(response)
            if response.status_code >= 500:
                self._raise_deterministic(message, what)
                if last_try:
                    raise HeadscaleUnavailable(
                        f"Headscale failed {what} with {response.status_code} "
                        f"({attempt} tries): {message}"
                    )
                await asyncio.sleep(self._backoff(attempt))
                continue
            self._raise_client_error(response.status_code, message, what)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    @staticmethod
    def _json(response: httpx.Response, what: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as exc:
            raise HeadscaleError(f"Headscale answered {what} with non-JSON") from exc
        if not isinstance(body, dict):
            raise HeadscaleError(f"Headscale answered {what} with {type(body).__name__}")
        return body

    @staticmethod
    def _raise_deterministic(message: str, what: str) -> None:
        """Headscale's 500s that state a fact about the request: retrying cannot help."""
        if _NOT_FOUND.search(message):
            raise HeadscaleNotFound(f"Headscale: {message} ({what})")
        if _CONFLICT.search(message):
            raise HeadscaleConflict(f"Headscale: {message} ({what})")
        if _REJECTED.search(message):
            raise HeadscaleRejected(f"Headscale refused {what}: {message}")

    @staticmethod
    def _raise_client_error(status_code: int, message: str, what: str) -> None:
        if status_code == 401:
            raise HeadscaleAuthError(
                f"Headscale rejected the API key ({what}): check the headscale api_key_file "
                "(`headscale apikeys list`; expired keys answer 401 too)"
            )
        if status_code == 404:
            raise HeadscaleNotFound(f"Headscale: {message} ({what})")
        if status_code == 409:
            raise HeadscaleConflict(f"Headscale: {message} ({what})")
        raise HeadscaleRejected(f"Headscale refused {what} with {status_code}: {message}")
