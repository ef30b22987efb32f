"""Fixtures of the API tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from headscale_server import HeadscaleServer, serve_headscale


@pytest.fixture
def headscale() -> Iterator[HeadscaleServer]:
    """A fresh in-test Headscale per test (starting one takes a few milliseconds)."""
    yield from serve_headscale(HeadscaleServer())
