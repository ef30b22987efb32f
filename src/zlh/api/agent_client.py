"""HTTP client for the agents: ``GET /status``, ``POST /provision``, the runtime versions
(``POST /runtime``, ``DELETE /runtimes/<name>/<version>``) and the secret's rotation
(``PUT /token``), with the container secret.

The requests go over :class:`~zlh.api.agent_http.AgentHttp` (keep-alive, llhttp, answers
bounded in size): the poller talks to every agent every few seconds, and a general-purpose
client's request path was what bounded the agents one replica can poll (bench/poller.py).
Errors are translated here: connect errors, timeouts and broken HTTP become AgentUnreachable,
refusals AgentError.
"""

from __future__ import annotations

import os
from typing import TypeVar

from pydantic import ValidationError

from zlh.api.agent_http import AgentHttp, AgentHttpError
from zlh.api.errors import AgentError, AgentUnreachable, ApiError, Conflict, NotFound
from zlh.schemas import (
    AgentStatus,
    ErrorBody,
    ListeningPorts,
    ProvisionPayload,
    RuntimeSpec,
    TokenChange,
)
from zlh.schemas._base import WireModel

__all__ = ["AgentClient"]

ModelT = TypeVar("ModelT", bound=WireModel)


class AgentClient:
    def __init__(self) -> None:
        self._http = AgentHttp()

    async def close(self) -> None:
        self._http.close()

    async def status(self, base_url: str, secret: str, *, timeout_s: float) -> AgentStatus:
        body = await self.status_body(base_url, secret, timeout_s=timeout_s)
        return self.parse_status(base_url, body)

    async def status_body(self, base_url: str, secret: str, *, timeout_s: float) -> bytes:
        """The raw ``/status`` document (the poller skips parsing when it did not change)."""
        return await self._request("GET", base_url, "/status", secret, timeout_s, None, 200)

    @staticmethod
    def parse_status(base_url: str, body: bytes) -> AgentStatus:
        return _parsed(AgentStatus, base_url, "/status", body)

    async def provision(
        self, base_url: str, secret: str, payload: ProvisionPayload, *, timeout_s: float
    ) -> None:
        data = payload.json_with_secrets().encode()
        await self._request("POST", base_url, "/provision", secret, timeout_s, data, 202)

    async def change_runtime(
        self, base_url: str, secret: str, runtime: RuntimeSpec, *, timeout_s: float
    ) -> AgentStatus:
        """Have the agent install ``runtime`` and switch to it; its ``/status`` at once (202).
        Conflict when the agent is not ready or already changing."""
        data = runtime.model_dump_json().encode()
        body = await self._request(
            "POST", base_url, "/runtime", secret, timeout_s, data, 202, refusals=(409,)
        )
        return self.parse_status(base_url, body)

    async def remove_runtime(
        self, base_url: str, secret: str, name: str, version: str, *, timeout_s: float
    ) -> AgentStatus:
        """Remove an installed, inactive version. NotFound (not installed), Conflict (active or
        being installed)."""
        target = f"/runtimes/{name}/{version}"
        body = await self._request(
            "DELETE", base_url, target, secret, timeout_s, None, 200, refusals=(404, 409)
        )
        return self.parse_status(base_url, body)

    async def change_token(
        self, base_url: str, secret: str, new_secret: str, *, timeout_s: float
    ) -> None:
        """Have the agent accept ``new_secret`` instead of ``secret`` (``PUT /token``)."""
        data = TokenChange(token=new_secret).model_dump_json().encode()
        await self._request("PUT", base_url, "/token", secret, timeout_s, data, 204)

    async def ports(self, base_url: str, secret: str, *, timeout_s: float) -> ListeningPorts:
        """The TCP ports listening in the container (the platform's own left out)."""
        body = await self._request("GET", base_url, "/ports", secret, timeout_s, None, 200)
        return _parsed(ListeningPorts, base_url, "/ports", body)

    async def _request(
        self,
        method: str,
        base_url: str,
        target: str,
        secret: str,
        timeout_s: float,
        data: bytes | None,
        expected: int,
        *,
        refusals: tuple[int, ...] = (),
    ) -> bytes:
        url = base_url + target
        if "\r" in secret or "\n" in secret:
            raise ValueError("a container secret is one line")
        headers = f"Authorization: Bearer {secret}\r\n"
        if data is not None:
            headers += "Content-Type: application/json\r\n"
        try:
            status, body = await self._http.request(
                base_url, method, target, headers, data, timeout_s
            )
        except TimeoutError as exc:
            raise AgentUnreachable(f"agent at {url} did not answer within {timeout_s:g}s") from exc
        except OSError as exc:
            # asyncio's "Connect call failed ('10.0.3.5', 8080)" says less than the errno does.
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise AgentUnreachable(f"agent at {url} is unreachable: {reason}") from exc
        except AgentHttpError as exc:
            raise AgentUnreachable(f"agent at {url} is unreachable: it {exc}") from exc
        if status == expected:
            return body
        if status == 401:
            raise AgentError(f"agent at {url} refused the container secret (401)")
        if status in refusals:
            raise _refusal(status, body)
        detail = body[:500].decode(errors="replace")
        raise AgentError(f"agent at {url} answered {status}", reason=detail, status_code=502)


def _parsed(model: type[ModelT], base_url: str, route: str, body: bytes) -> ModelT:
    """``body`` as ``model``; AgentError naming the agent and its route otherwise."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise AgentError(
            f"agent at {base_url} sent an invalid {route} document",
            reason=str(exc).splitlines()[0],
        ) from exc


_REFUSALS: dict[int, type[ApiError]] = {404: NotFound, 409: Conflict}


def _refusal(status: int, body: bytes) -> ApiError:
    """An agent's 404/409 as the API's own error, with the agent's message."""
    try:
        message = ErrorBody.model_validate_json(body).message
    except ValidationError:
        message = body[:500].decode(errors="replace")
    return _REFUSALS[status](message)
