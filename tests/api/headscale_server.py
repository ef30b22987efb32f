"""An in-test Headscale: the REST endpoints the platform calls, over real HTTP on loopback.

Headscale itself cannot run here (no registry carries it), so this stands in for it with the
request and answer shapes of Headscale 0.26/0.27's grpc-gateway API (``headscale.v1``):

- a missing or unknown ``Authorization: Bearer`` key: ``401`` with the text ``Unauthorized``;
- errors as a gRPC status ``{"code", "message", "details"}``; like Headscale, facts about the
  request ("user not found", "auth-key not found", duplicate user) come back as HTTP 500
  (gRPC code 2 or 13), malformed input as 400 (code 3);
- uint64 fields (``id``, ``user``) accepted as JSON numbers or decimal strings and answered as
  strings; a user *name* where the id belongs is refused like protojson refuses it;
- unknown request fields discarded, unpopulated answer fields emitted.

Every request is recorded (method, path, query, headers, JSON body) so tests can assert exact
fields. ``fail_next`` and ``drop_next`` inject outages for the retry tests.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

_USERNAME = re.compile(r"^[A-Za-z][A-Za-z0-9._@-]+$")


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class _User:
    id: int
    name: str
    created_at: datetime


@dataclass
class _Key:
    id: int
    key: str
    user_id: int
    reusable: bool
    ephemeral: bool
    expiration: datetime | None
    created_at: datetime
    acl_tags: list[str]
    used: bool = False


class _RpcError(Exception):
    def __init__(self, http_status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.message = message


def _ts(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _uint64(value: Any, field_name: str) -> int:
    """protojson's rule for uint64: a non-negative integer as a number or a decimal string."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _RpcError(400, 3, f"proto: invalid value for uint64 field {field_name}: {value!r}")
    text = str(value)
    if not text.isdigit():
        raise _RpcError(400, 3, f'proto: invalid value for uint64 field {field_name}: "{text}"')
    return int(text)


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str) or not value.endswith("Z"):
        raise _RpcError(400, 3, f"proto: invalid google.protobuf.Timestamp value {value!r}")
    try:
        return datetime.fromisoformat(value[:-1] + "+00:00")
    except ValueError:
        raise _RpcError(
            400, 3, f"proto: invalid google.protobuf.Timestamp value {value!r}"
        ) from None


def _validate_tag(tag: Any) -> str:
    if not isinstance(tag, str) or not tag.startswith("tag:"):
        raise _RpcError(400, 3, "tag must start with the string 'tag:'")
    if tag.lower() != tag:
        raise _RpcError(400, 3, "tag should be lowercase")
    if len(tag.split()) > 1:
        raise _RpcError(400, 3, "tag should not contains space")
    return tag


@dataclass
class HeadscaleServer:
    api_keys: set[str] = field(default_factory=lambda: {"hs-test-" + secrets.token_hex(16)})
    requests: list[Recorded] = field(default_factory=list)
    users: dict[int, _User] = field(default_factory=dict)
    keys: dict[int, _Key] = field(default_factory=dict)
    url: str = ""
    _faults: list[tuple[str | None, int, str]] = field(default_factory=list)
    _skips: dict[str | None, int] = field(default_factory=dict)
    _drops: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- test controls -------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        return next(iter(self.api_keys))

    def fail_next(
        self,
        count: int,
        status: int = 503,
        body: str = "upstream unavailable",
        *,
        path: str | None = None,
        skip: int = 0,
    ) -> None:
        """The next ``count`` authenticated requests (to ``path`` only, if given, and after
        letting ``skip`` of them through) answer ``status`` with ``body``."""
        with self._lock:
            self._faults.extend([(path, status, body)] * count)
            self._skips[path] = skip

    def drop_next(self, count: int) -> None:
        """The next ``count`` requests get their connection closed without an answer."""
        with self._lock:
            self._drops += count

    def add_user(self, name: str) -> int:
        with self._lock:
            return self._create_user(name).id

    def keys_of(self, user_id: int) -> list[_Key]:
        with self._lock:
            return [k for k in self.keys.values() if k.user_id == user_id]

    def key(self, secret: str) -> _Key:
        with self._lock:
            return next(k for k in self.keys.values() if k.key == secret)

    def calls(self, method: str, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    def _fault_for(self, path: str) -> tuple[int, str] | None:
        for index, (wanted, status, text) in enumerate(self._faults):
            if wanted is not None and wanted != path:
                continue
            if self._skips.get(wanted, 0):
                self._skips[wanted] -= 1
                return None
            del self._faults[index]
            return status, text
        return None

    # -- model ---------------------------------------------------------------------------

    def _create_user(self, name: str) -> _User:
        if not _USERNAME.fullmatch(name):
            raise _RpcError(500, 13, f"failed to create user: invalid username {name!r}")
        if any(u.name == name for u in self.users.values()):
            raise _RpcError(
                500,
                13,
                "failed to create user: creating user: UNIQUE constraint failed: users.name",
            )
        user = _User(id=len(self.users) + 1, name=name, created_at=datetime.now(UTC))
        self.users[user.id] = user
        return user

    def _user(self, user_id: int) -> _User:
        user = self.users.get(user_id)
        if user is None:
            raise _RpcError(500, 2, "user not found")
        return user

    @staticmethod
    def _user_json(user: _User) -> dict[str, Any]:
        return {
            "id": str(user.id),
            "name": user.name,
            "createdAt": _ts(user.created_at),
            "displayName": "",
            "email": "",
            "providerId": "",
            "provider": "",
            "profilePicUrl": "",
        }

    def _key_json(self, key: _Key) -> dict[str, Any]:
        return {
            "user": self._user_json(self.users[key.user_id]),
            "id": str(key.id),
            "key": key.key,
            "reusable": key.reusable,
            "ephemeral": key.ephemeral,
            "used": key.used,
            "expiration": _ts(key.expiration),
            "createdAt": _ts(key.created_at),
            "aclTags": key.acl_tags,
        }

    # -- endpoints -----------------------------------------------------------------------

    def _list_users(self, query: dict[str, str], _body: Any) -> dict[str, Any]:
        users = sorted(self.users.values(), key=lambda u: u.id)
        if query.get("name"):
            users = [u for u in users if u.name == query["name"]]
        elif query.get("id"):
            wanted = _uint64(query["id"], "id")
            users = [u for u in users if u.id == wanted]
        return {"users": [self._user_json(u) for u in users]}

    def _post_user(self, _query: dict[str, str], body: Any) -> dict[str, Any]:
        return {"user": self._user_json(self._create_user(str(body.get("name", ""))))}

    def _post_preauthkey(self, _query: dict[str, str], body: Any) -> dict[str, Any]:
        user_id = _uint64(body.get("user", 0), "user")
        tags = body.get("aclTags", body.get("acl_tags")) or []
        tags = [_validate_tag(t) for t in tags]
        expiration = _timestamp(body["expiration"]) if body.get("expiration") else None
        user = self._user(user_id)
        key = _Key(
            id=len(self.keys) + 1,
            key=f"hskey-auth-{secrets.token_urlsafe(9)}-{secrets.token_urlsafe(48)}",
            user_id=user.id,
            reusable=bool(body.get("reusable", False)),
            ephemeral=bool(body.get("ephemeral", False)),
            expiration=expiration,
            created_at=datetime.now(UTC),
            acl_tags=sorted(set(tags)),
        )
        self.keys[key.id] = key
        return {"preAuthKey": self._key_json(key)}

    def _expire_preauthkey(self, _query: dict[str, str], body: Any) -> dict[str, Any]:
        user_id = _uint64(body.get("user", 0), "user")
        key = next((k for k in self.keys.values() if k.key == body.get("key")), None)
        if key is None:
            raise _RpcError(500, 2, "auth-key not found")
        if key.user_id != user_id:
            raise _RpcError(500, 2, "preauth key does not belong to user")
        key.expiration = datetime.now(UTC)
        return {}

    def _list_preauthkeys(self, query: dict[str, str], _body: Any) -> dict[str, Any]:
        user = self._user(_uint64(query.get("user", "0"), "user"))
        keys = sorted((k for k in self.keys.values() if k.user_id == user.id), key=lambda k: k.id)
        return {"preAuthKeys": [self._key_json(k) for k in keys]}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        with self._lock:
            self.requests.append(
                Recorded(
                    request.method, request.path, dict(request.query), dict(request.headers), body
                )
            )
            if self._drops:
                self._drops -= 1
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=500)
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth.removeprefix("Bearer ") not in self.api_keys:
                return web.Response(status=401, text="Unauthorized")
            fault = self._fault_for(request.path)
            if fault is not None:
                return web.Response(status=fault[0], text=fault[1])
            routes = {
                ("GET", "/api/v1/user"): self._list_users,
                ("POST", "/api/v1/user"): self._post_user,
                ("POST", "/api/v1/preauthkey"): self._post_preauthkey,
                ("POST", "/api/v1/preauthkey/expire"): self._expire_preauthkey,
                ("GET", "/api/v1/preauthkey"): self._list_preauthkeys,
            }
            route = routes.get((request.method, request.path))
            if route is None:
                return web.json_response(
                    {"code": 5, "message": "Not Found", "details": []}, status=404
                )
            try:
                if body is None or not isinstance(body, dict):
                    raise _RpcError(400, 3, "proto: syntax error (line 1:1): unexpected token")
                return web.json_response(route(dict(request.query), body))
            except _RpcError as exc:
                return web.json_response(
                    {"code": exc.code, "message": exc.message, "details": []},
                    status=exc.http_status,
                )


def serve_headscale(server: HeadscaleServer) -> Iterator[HeadscaleServer]:
    """Run ``server`` on 127.0.0.1 (a free port) in a thread of its own until the generator ends."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner_box: list[web.AppRunner] = []

    async def start() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", server._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        sockets = runner.addresses
        server.url = f"http://127.0.0.1:{sockets[0][1]}"
        runner_box.append(runner)

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="headscale-stand-in", daemon=True)
    thread.start()
    if not started.wait(10):
        raise AssertionError("the in-test Headscale did not start within 10 s")
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
