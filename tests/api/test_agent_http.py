"""The API's HTTP client for the agents (zlh.api.agent_http through AgentClient), against real
TCP servers on loopback that answer as a tenant, root in the container, could make its agent
answer: forever, twice, early, never, garbage. None of it may reach another request's answer,
hold the API's memory or outlast the request's timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from zlh.api.agent_client import AgentClient
from zlh.api.agent_http import MAX_BODY, AgentHttp
from zlh.api.errors import AgentError, AgentUnreachable
from zlh.schemas import AgentState, AgentStatus

STATUS = AgentStatus(
    workspace_root="/home/dev/workspace", state=AgentState.READY, agent_version="test"
)
BODY = STATUS.model_dump_json(by_alias=True).encode()


Handler = Callable[["Agent", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def response(body: bytes = BODY, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


class Agent:
    """A TCP server on loopback; ``connections`` counts accepted connections, ``requests``
    holds every request head read."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.hung_up = asyncio.Event()  # a connection ended (the client closed it)

    async def __aenter__(self) -> Agent:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self._handler(self, reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
                self.hung_up.set()

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                await reader.readexactly(int(line.split(b":")[1]))
        return head


def run(scenario: Callable[[AgentClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        client = AgentClient()
        try:
            return await scenario(client)
        finally:
            await client.close()

    return asyncio.run(main())


async def keep_alive(
    agent: Agent, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    while True:
        await agent.read_request(reader)
        writer.write(response())
        await writer.drain()


def first_only(handler: Handler) -> Handler:
    """``handler`` on the agent's first connection, an honest keep-alive agent on the others."""

    async def either(
        agent: Agent, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await (handler if agent.connections == 1 else keep_alive)(agent, reader, writer)

    return either


def test_polls_of_one_agent_share_one_kept_alive_connection_and_carry_its_secret() -> None:
    async def scenario(client: AgentClient) -> None:
        async with Agent(keep_alive) as agent:
            for _ in range(5):
                assert await client.status(agent.url, "s3cret", timeout_s=5) == STATUS
            assert agent.connections == 1
            assert all(b"Authorization: Bearer s3cret\r\n" in r for r in agent.requests)
            assert all(r.startswith(b"GET /status HTTP/1.1\r\n") for r in agent.requests)

    run(scenario)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_agent_answering_without_end_is_cut_off_at_the_size_limit_not_held_in_memory(
    framing: str,
) -> None:
    sent = [0]

    async def endless(
        agent: Agent, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await agent.read_request(reader)
        if framing == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n")
        chunk = b"x" * 65536
        while True:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if framing == "chunked" else chunk)
            sent[0] += len(chunk)
            await writer.drain()

    async def scenario(client: AgentClient) -> float:
        async with Agent(endless) as agent:
            start = time.monotonic()
            with pytest.raises(AgentUnreachable, match=f"answered more than {MAX_BODY} bytes"):
                await client.status_body(agent.url, "s", timeout_s=30)
            return time.monotonic() - start

    took = run(scenario)
    assert took < 10  # cut off by the limit, not by the 30 s timeout
    assert sent[0] < 64 * MAX_BODY  # the connection was closed: the agent could not go on


def test_a_second_response_sent_with_the_first_is_never_read_as_the_next_answer() -> None:
    forged = (
        AgentStatus(
            workspace_root="/home/dev/workspace", state=AgentState.FAILED, agent_version="forged"
        )
        .model_dump_json(by_alias=True)
        .encode()
    )

    async def twice(
        agent: Agent, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            await agent.read_request(reader)
            writer.write(response() + response(forged))  # one request, two answers
            await writer.drain()

    async def scenario(client: AgentClient) -> None:
        async with Agent(twice) as agent:
            for _ in range(3):
                assert await client.status(agent.url, "s", timeout_s=5) == STATUS
            assert agent.connections == 3  # each connection that lied was dropped

    run(scenario)


def idle(http: AgentHttp) -> int:
    return sum(len(conns) for conns in http._idle.values())


def test_bytes_an_agent_sends_while_no_request_waits_close_its_connection() -> None:
    stray = asyncio.Event()

    async def early(
        agent: Agent, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await agent.read_request(reader)
        writer.write(response())
        await writer.drain()
        await stray.wait()
        writer.write(response(b'{"forged": true}'))  # an "answer" to a request not sent yet
        await writer.drain()
        await reader.read()

    async def scenario() -> None:
        http = AgentHttp()
        try:
            async with Agent(first_only(early)) as agent:
                status, body = await http.request(agent.url, "GET", "/status", "", None, 5)
                assert (status, body) == (200, BODY) and idle(http) == 1
                stray.set()
                await asyncio.wait_for(agent.hung_up.wait(), 5)
                assert idle(http) == 0  # dropped, not kept for the next request
                status, body = await http.request(agent.url, "GET", "/status", "", None, 5)
                assert (status, body) == (200, BODY) and agent.connections == 2
        finally:
            http.close()

    asyncio.run(scenario())


def test_a_poll_on_a_connection_the_agent_closed_while_idle_is_sent_again_on_a_new_one() -> None:
    async def one_answer_each(
        agent: Agent, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await agent.read_request(reader)
        writer.write(response())  # keep-alive announced, then closed: a restarted agent
        await writer.drain()

    async def scenario(client: AgentClient) -> None:
        async with Agent(one_answer_each) as agent:
            for _ in range(3):
                assert await client.status(agent.url, "s", timeout_s=5) == STATUS
            assert agent.connections >= 3

    run(scenario)


def test_a_request_other_than_a_get_is_never_sent_twice() -> None:
    async def closes_after_request(
        agent: Agent, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await agent.read_request(reader)  # and closes without answering

    async def scenario(client: AgentClient) -> None:
        async with Agent(closes_after_request) as agent:
            with pytest.raises(AgentUnreachable, match="closed the connection"):
                await client.change_token(agent.url, "s", "t" * 32, timeout_s=5)
            assert [r.split(b" ")[0] for r in agent.requests] == [b"PUT"]

    run(scenario)


def test_a_silent_agent_fails_at_the_timeout_and_its_late_answer_is_never_read() -> None:
    release = asyncio.Event()

    async def late(
        agent: Agent, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await agent.read_request(reader)
        await release.wait()
        writer.write(response(b'{"late": true}'))
        await writer.drain()

    async def scenario(client: AgentClient) -> None:
        async with Agent(first_only(late)) as agent:
            start = time.monotonic()
            with pytest.raises(AgentUnreachable, match=r"did not answer within 0\.3s"):
                await client.status_body(agent.url, "s", timeout_s=0.3)
            assert time.monotonic() - start < 3
            release.set()
            assert await client.status(agent.url, "s", timeout_s=5) == STATUS

    run(scenario)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n", "invalid HTTP response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "invalid HTTP response"),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: upgrade\r\n\r\n",
            "answered 101",
        ),
    ],
)
def test_an_agent_answering_garbage_fails_the_request_with_the_reason(
    answer: bytes, error: str
) -> None:
    async def garbage(
        agent: Agent, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await agent.read_request(reader)
        writer.write(answer)
        await writer.drain()
        await reader.read()

    async def scenario(client: AgentClient) -> None:
        async with Agent(garbage) as agent:
            with pytest.raises(AgentError, match=error):
                await client.status_body(agent.url, "s", timeout_s=5)

    run(scenario)


def test_refusals_and_errors_keep_their_meaning() -> None:
    answers = iter(
        [
            response(b"", "401 Unauthorized"),
            response(b"oops", "500 Internal Server Error", b"Connection: close\r\n"),
        ]
    )

    async def refusing(
        agent: Agent, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            await agent.read_request(reader)
            writer.write(next(answers))
            await writer.drain()

    async def scenario(client: AgentClient) -> None:
        async with Agent(refusing) as agent:
            url = agent.url
            with pytest.raises(AgentError, match="refused the container secret"):
                await client.status_body(agent.url, "s", timeout_s=5)
            with pytest.raises(AgentError, match="answered 500") as error:
                await client.status_body(agent.url, "s", timeout_s=5)
            assert error.value.reason == "oops"
        with pytest.raises(AgentUnreachable, match="unreachable: connection refused"):
            await client.status_body(url, "s", timeout_s=5)

    run(scenario)


def test_idle_connections_of_gone_agents_are_closed_after_the_idle_timeout() -> None:
    async def scenario() -> None:
        http = AgentHttp(idle_timeout_s=0.2)
        try:
            async with Agent(keep_alive) as agent:
                status, _ = await http.request(agent.url, "GET", "/status", "", None, 5)
                assert status == 200 and idle(http) == 1
                await asyncio.wait_for(agent.hung_up.wait(), 5)
                assert idle(http) == 0
        finally:
            http.close()

    asyncio.run(scenario())
