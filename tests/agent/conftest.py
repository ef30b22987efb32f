"""Fixtures of the agent's integration tests: an artifact server, real agent processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent_helpers import AgentProcess, ArtifactServer, artifact_server


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    with artifact_server() as srv:
        yield srv


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    """Agent processes a test starts; all stopped at the end, however the test ends."""
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.stop()
