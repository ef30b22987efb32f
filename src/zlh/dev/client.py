"""A client of the platform's public HTTP API: sign in, read and change containers, follow a
container's events, make, list and revoke API tokens. ``zlh dev``, ``zlh token`` and the demo
speak to the platform only through it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

from zlh.api.bodies import ContainerEvent, ContainerOut, TokenCreate, TokenCreated, TokenOut
from zlh.errors import ZlhError

__all__ = ["PlatformClient", "api_error"]

# The events stream sends a keepalive every 15 s; a read waiting longer than this is a hang.
EVENTS_READ_TIMEOUT_S = 45.0


def api_error(response: httpx.Response, what: str) -> ZlhError:
    """``what`` failed, in the API's own words."""
    try:
        message = response.json().get("message", response.text)
    except ValueError:
        message = response.text
    return ZlhError(f"{what}: HTTP {response.status_code}: {message}")


class PlatformClient:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=30.0)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        """One request; a platform that does not answer is a one-line ZlhError."""
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ZlhError(
                f"{what}: the platform does not answer at {self.base_url} ({exc}); is `zlh up` "
                "running there? (--url)"
            ) from exc

    def sign_in(self, username: str, password: str) -> None:
        credentials = {"username": username, "password": password}
        what = f"signing in as {username}"
        response = self.request("POST", "/api/auth/login", what, json=credentials)
        if response.status_code != 200:
            raise api_error(response, what)
        self.http.headers["Authorization"] = f"Bearer {response.json()['token']}"

    def containers(self) -> list[ContainerOut]:
        response = self.request("GET", "/api/dev", "listing containers")
        if response.status_code != 200:
            raise api_error(response, "listing containers")
        return [ContainerOut.model_validate(c) for c in response.json()]

    def container(self, vmid: int) -> ContainerOut:
        response = self.request("GET", f"/api/dev/{vmid}", f"reading container {vmid}")
        if response.status_code != 200:
            raise api_error(response, f"reading container {vmid}")
        return ContainerOut.model_validate(response.json())

    def act(self, vmid: int, action: str) -> ContainerOut:
        """``POST /api/dev/{vmid}/{action}`` (stop, start, restart, rebuild): the container as
        it is now."""
        what = f"{action} container {vmid}"
        response = self.request("POST", f"/api/dev/{vmid}/{action}", what)
        if response.status_code not in (200, 202):
            raise api_error(response, what)
        return ContainerOut.model_validate(response.json())

    def share(self, vmid: int, user: str, role: str) -> ContainerOut:
        what = f"sharing container {vmid} with {user}"
        body = {"user": user, "role": role}
        response = self.request("POST", f"/api/dev/{vmid}/shares", what, json=body)
        if response.status_code not in (200, 201):
            raise api_error(response, what)
        return ContainerOut.model_validate(response.json())

    def unshare(self, vmid: int, user: str) -> None:
        what = f"taking back the share of container {vmid} with {user}"
        response = self.request("DELETE", f"/api/dev/{vmid}/shares/{quote(user, safe='')}", what)
        if response.status_code != 204:
            raise api_error(response, what)

    def create_token(self, body: TokenCreate) -> TokenCreated:
        what = f"making token {body.name!r}"
        payload = body.model_dump(mode="json", exclude_none=True)
        response = self.request("POST", "/api/tokens", what, json=payload)
        if response.status_code != 201:
            raise api_error(response, what)
        return TokenCreated.model_validate(response.json())

    def tokens(self, *, every_user: bool = False) -> list[TokenOut]:
        params = {"all": "true"} if every_user else {}
        response = self.request("GET", "/api/tokens", "listing tokens", params=params)
        if response.status_code != 200:
            raise api_error(response, "listing tokens")
        return [TokenOut.model_validate(t) for t in response.json()]

    def revoke_token(self, token_id: int) -> None:
        what = f"revoking token {token_id}"
        response = self.request("DELETE", f"/api/tokens/{token_id}", what)
        if response.status_code != 204:
            raise api_error(response, what)

    def events(self, vmid: int) -> Iterator[ContainerEvent]:
        """``/api/dev/{vmid}/events`` until the server ends the stream."""
        timeout = httpx.Timeout(30.0, read=EVENTS_READ_TIMEOUT_S)
        path = f"/api/dev/{vmid}/events"
        try:
            with self.http.stream("GET", path, timeout=timeout) as response:
                if response.status_code != 200:
                    response.read()
                    raise api_error(response, f"following container {vmid}")
                data: list[str] = []
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        yield ContainerEvent.model_validate(json.loads("\n".join(data)))
                        data = []
        except httpx.TransportError as exc:
            what = f"following container {vmid}: the platform stopped answering: {exc}"
            raise ZlhError(what) from exc
